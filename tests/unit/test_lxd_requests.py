"""LXD/Incus requests as they leave the collection: bodies, ETags, waits, errors, argv, TLS settings.

A fake daemon answers the shared client logic (`LxdClient.request`, the waits) exactly as the real
daemons' raw responses look, so these tests exercise the code both transports run.
"""

import json

import pytest

from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends import lxd_common
from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends.incus import IncusProvider
from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends.lxd import LxdProvider
from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import (
    BackendError, NotFound, OperationTimeout, TransportError, Unsupported)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.instance import build_request, ensure_instance
from ansible_collections.oneclickvirt.virt.plugins.module_utils.models import ExecResult, InstanceSpec
from ansible_collections.oneclickvirt.virt.plugins.module_utils.node import validate_node_dict

FP = "7b87dd157314835c4e229606a6f166d2a1fa4cb88ebd2dd7ca800218934b7ea6"


def sync(metadata, code=200):
    return {"type": "sync", "status": "Success", "status_code": code, "error_code": 0, "error": "",
            "metadata": metadata}


def error(code, message):
    return {"type": "error", "status": "", "status_code": 0, "error_code": code, "error": message, "metadata": None}


class FakeDaemon(lxd_common.LxdClient):
    """Just enough of the LXD/Incus REST API, with ETags and async operations."""

    label = "api"

    def __init__(self):
        self.calls = []
        self.instances = {}
        self.operations = {}
        self.op_status = "Success"
        self.op_err = ""
        self.fail_if_match = 0
        self.profiles = {"default": {"devices": {"root": {"type": "disk", "path": "/", "pool": "default"},
                                                 "eth0": {"type": "nic", "network": "lxdbr0", "name": "eth0"}}}}

    def etag(self, name):
        data = self.instances[name]
        return json.dumps([data["config"], data["devices"], data["profiles"]], sort_keys=True)

    def operation(self, description, name):
        op_id = f"op-{len(self.operations) + 1}"
        self.operations[op_id] = {"id": op_id, "description": description, "status": self.op_status,
                                  "err": self.op_err, "resources": {"instances": [f"/1.0/instances/{name}"]},
                                  "metadata": {"return": 0}}
        return 202, None, {"type": "async", "status": "Operation created", "status_code": 100,
                           "operation": f"/1.0/operations/{op_id}", "metadata": self.operations[op_id]}

    def _send(self, method, path, body, etag):
        self.calls.append((method, path, body, etag))
        route, mark, query = path.partition("?")
        parts = route.strip("/").split("/")
        if parts[:2] == ["1.0", "operations"] and parts[-1] == "wait":
            return 200, None, sync(self.operations[parts[2]])
        if route == "/1.0/images/aliases/ocv-busybox":
            return 200, None, sync({"name": "ocv-busybox", "target": FP})
        if route.startswith("/1.0/images/"):
            key = parts[2]
            return (200, None, sync({"fingerprint": FP})) if FP.startswith(key) else (404, None,
                                                                                      error(404, "Image not found"))
        if route.startswith("/1.0/profiles/"):
            profile = self.profiles.get(parts[2])
            return (200, None, sync(profile)) if profile else (404, None, error(404, "Profile not found"))
        if route.startswith("/1.0/networks/"):
            return 200, None, sync({"managed": True, "config": {}})  # hands out no address: no wait
        if route.startswith("/1.0/storage-pools/default/volumes"):
            if route.endswith("/state"):
                return 200, None, sync({"usage": None})
            return 200, None, sync(["/1.0/storage-pools/default/volumes/container/other"])
        if route.startswith("/1.0/storage-pools/"):
            return 200, None, sync({"driver": "dir"})
        if route == "/1.0/instances" and method == "POST":
            self.instances[body["name"]] = {
                "name": body["name"], "type": body["type"], "status": "Stopped", "created_at": "now",
                "profiles": body.get("profiles", ["default"]),
                "config": dict(body["config"], **{"volatile.base_image": FP}),
                "devices": dict(body["devices"])}
            return self.operation("Creating instance", body["name"])
        if parts[:2] == ["1.0", "instances"] and len(parts) >= 3:
            name = parts[2]
            if name not in self.instances:
                return 404, None, error(404, "Instance not found")
            data = self.instances[name]
            if len(parts) == 4 and parts[3] == "state":
                data["status"] = "Running" if body["action"] in ("start", "restart") else "Stopped"
                return self.operation(f"{body['action'].title()}ing instance", name)
            if len(parts) == 4 and parts[3] == "exec":
                return self.operation("Executing command", name)
            if method == "GET":
                full = dict(data, expanded_config=dict(data["config"]),
                            expanded_devices=dict(self.profiles["default"]["devices"], **data["devices"]),
                            state={"network": {}})
                return 200, self.etag(name), sync(full)
            if method == "PATCH":
                if etag is not None and etag != self.etag(name):
                    return 412, None, error(412, "ETag doesn't match")
                if self.fail_if_match:
                    self.fail_if_match -= 1
                    data["config"]["volatile.churn"] = str(self.fail_if_match)
                    return 412, None, error(412, "ETag doesn't match")
                for key, value in body.get("config", {}).items():
                    if value == "":
                        data["config"].pop(key, None)
                    else:
                        data["config"][key] = value
                data["devices"].update(body.get("devices", {}))
                if "profiles" in body:
                    data["profiles"] = body["profiles"]
                return self.operation("Updating instance", name)
            if method == "DELETE":
                del self.instances[name]
                return self.operation("Deleting instance", name)
        return 404, None, error(404, f"no route {method} {path}")

    def writes(self):
        return [call for call in self.calls if call[0] != "GET"]


def provider(backend="lxd", project="default", daemon=None):
    raw = {"name": "n1", "type": backend, "execution_rule": "api_only", "project": project,
           "api": {"url": "unix:///nonexistent.sock"}}
    cls = LxdProvider if backend == "lxd" else IncusProvider
    made = cls(validate_node_dict(raw))
    daemon = daemon or FakeDaemon()
    made.router.make_api = lambda: daemon
    made._created_here = set()
    return made, daemon


def params(**extra):
    base = {"name": "web-1", "state": "present", "type": "container", "image": "ocv-busybox", "cpu": None,
            "memory": None, "disk": None, "env": None, "hostname": None, "command": None, "ports": None,
            "network": None, "password": None, "update_password": "on_create", "ssh_authorized_keys": None,
            "update_ssh_keys": "on_create", "config": None, "force": False, "timeout": 30}
    base.update(extra)
    return base


# -- create ----------------------------------------------------------------------------------------------------------
def test_create_body_for_a_container_by_alias_with_limits():
    made, daemon = provider(project="team-a")
    ensure_instance(made, build_request(params(cpu=0.5, memory=64, env={"A": "1"},
                                               config={"user.note": True, "profiles": ["default"]})), False)
    method, path, body = daemon.writes()[0][:3]
    assert (method, path) == ("POST", "/1.0/instances?project=team-a")
    assert body == {"name": "web-1", "type": "container", "source": {"type": "image", "alias": "ocv-busybox"},
                    "config": {"limits.cpu": "1", "limits.cpu.allowance": "50ms/100ms", "limits.memory": "64MiB",
                               "environment.A": "1", "user.note": "true", "user.ocv.image": "ocv-busybox"},
                    "devices": {}, "profiles": ["default"]}
    assert all("project=team-a" in call[1] for call in daemon.calls if "/instances" in call[1])


def test_a_vm_request_is_well_formed_and_uses_the_fingerprint():
    made, daemon = provider("incus")
    made.create_instance(InstanceSpec(name="vm-1", type="vm", image=FP[:12]), [])
    body = daemon.writes()[0][2]
    assert body["type"] == "virtual-machine"
    assert body["source"] == {"type": "image", "fingerprint": FP}
    assert body["config"]["user.ocv.image"] == FP[:12]


def test_the_daemons_refusal_of_a_vm_reaches_the_user():
    made, daemon = provider()
    daemon.op_status = "Failure"
    daemon.op_err = ('Failed creating instance record: Instance type "virtual-machine" is not supported on this '
                     "server: vhost_vsock kernel module not loaded")
    with pytest.raises(BackendError) as caught:
        made.create_instance(InstanceSpec(name="vm-1", type="vm", image="ocv-busybox"), [])
    assert str(caught.value).startswith("create of vm-1 failed: Failed creating instance record")
    assert "vhost_vsock" in str(caught.value) and "type: vm needs" in str(caught.value)


def test_missing_image_fails_before_any_write():
    made, daemon = provider()
    with pytest.raises(NotFound, match="'nope' is neither an alias nor a fingerprint"):
        made.create_instance(InstanceSpec(name="web-1", image="nope"), [])
    assert daemon.writes() == []


def test_network_limits_become_an_eth0_device_over_the_profile():
    made, daemon = provider()
    made.create_instance(InstanceSpec(name="web-1", image="ocv-busybox",
                                      network={"bandwidth_in": 10, "bandwidth_out": 20, "ipv4": "10.0.0.9/24"}), [])
    assert daemon.writes()[0][2]["devices"] == {"eth0": {
        "type": "nic", "network": "lxdbr0", "name": "eth0", "limits.ingress": "10Mbit", "limits.egress": "20Mbit",
        "ipv4.address": "10.0.0.9"}}


def test_disk_on_a_dir_pool_without_quota_is_refused_before_any_write():
    made, daemon = provider()
    with pytest.raises(Unsupported, match="^disk: .*driver dir.*usage: null"):
        ensure_instance(made, build_request(params(disk="1GiB")), False)
    assert daemon.writes() == []


def test_unsupported_options_fail_clearly():
    made = provider()[0]
    for extra, message in ((dict(ports=[{"guest_port": 80}]), "^ports:"), (dict(command=["sleep", "1"]), "^command:"),
                           (dict(hostname="other"), "^hostname:"), (dict(network={"ipv4": "none"}), "^network.ipv4"),
                           (dict(config={"restart_policy": "always"}), "restart_policy")):
        with pytest.raises(Unsupported, match=message):
            ensure_instance(made, build_request(params(**extra)), False)
    for config, message in (({"volatile.x": "1"}, "belongs to the daemon"), ({"init": True}, "not an LXD/Incus"),
                            ({"limits.memory": "1GiB"}, "both set")):
        with pytest.raises(Exception, match=message):
            ensure_instance(made, build_request(params(config=config, memory=64)), False)


# -- updates ---------------------------------------------------------------------------------------------------------
def created(made, **extra):
    ensure_instance(made, build_request(params(**extra)), False)
    daemon = made.router.client()
    daemon.calls.clear()
    return daemon


def test_update_patches_only_its_keys_with_the_etag_it_read():
    made, daemon = provider()
    created(made, memory=64, config={"user.a": "1"})
    daemon.instances["web-1"]["config"]["user.theirs"] = "kept"
    etag = daemon.etag("web-1")
    result = ensure_instance(made, build_request(params(memory=96, config={"user.a": "2"})), False)
    assert result["actions"] == ["update config, memory"]
    patches = [call for call in daemon.writes() if call[0] == "PATCH"]
    assert patches == [("PATCH", "/1.0/instances/web-1?project=default",
                        {"config": {"limits.memory": "96MiB", "user.a": "2"}}, etag)]
    assert daemon.instances["web-1"]["config"]["user.theirs"] == "kept"


def test_an_etag_mismatch_rereads_and_reapplies():
    made, daemon = provider()
    created(made, memory=64)
    daemon.fail_if_match = 2
    ensure_instance(made, build_request(params(memory=128)), False)
    patches = [call for call in daemon.writes() if call[0] == "PATCH"]
    assert len(patches) == 3 and daemon.instances["web-1"]["config"]["limits.memory"] == "128MiB"


def test_volatile_churn_is_not_drift_and_sends_nothing():
    made, daemon = provider()
    created(made, memory=64, cpu=2, config={"user.a": "1"}, env={"E": "x"})
    daemon.instances["web-1"]["config"].update({"volatile.last_state.power": "STOPPED", "volatile.uuid": "new",
                                                "volatile.eth0.host_name": "veth9"})
    result = ensure_instance(made, build_request(params(memory=64, cpu=2, config={"user.a": "1"}, env={"E": "x"})),
                             False)
    assert result["changed"] is False and daemon.writes() == []


def test_a_whole_cpu_after_a_fraction_unsets_the_allowance():
    made, daemon = provider()
    created(made, cpu=0.5)
    ensure_instance(made, build_request(params(cpu=2)), False)
    assert daemon.writes()[0][2] == {"config": {"limits.cpu": "2", "limits.cpu.allowance": ""}}
    assert "limits.cpu.allowance" not in daemon.instances["web-1"]["config"]


def test_disk_change_keeps_the_root_device_fields():
    made, daemon = provider()
    created(made)
    data = daemon.instances["web-1"]
    body = made._update_body(dict(data, expanded_devices=daemon.profiles["default"]["devices"]), {"disk": 2048})
    assert body == {"devices": {"root": {"type": "disk", "path": "/", "pool": "default", "size": "2048MiB"}}}


def test_restart_needed_is_reported_for_a_running_instance():
    made, daemon = provider()
    created(made, state="started")
    result = ensure_instance(made, build_request(params(state="started", config={"security.privileged": True})),
                             check_mode=True)
    assert result["actions"] == ["update config", "restart needed: security.privileged"]
    assert daemon.writes() == []


def test_an_image_change_needs_force_and_an_alias_of_the_same_image_does_not():
    made, daemon = provider()
    created(made)
    same = ensure_instance(made, build_request(params(image=FP)), False)
    assert same["changed"] is False
    daemon.instances["web-1"]["config"]["volatile.base_image"] = "0" * 64
    with pytest.raises(Exception, match="image.*force: true"):
        ensure_instance(made, build_request(params(image=FP)), False)


# -- waits and errors ----------------------------------------------------------------------------------------------
class SlowDaemon(FakeDaemon):
    def _send(self, method, path, body, etag):
        if path.endswith("/wait?timeout=1"):
            self.calls.append((method, path, body, etag))
            return 200, None, sync({"id": "op-1", "description": "Stopping instance", "status": "Running"})
        return super()._send(method, path, body, etag)


def test_a_timeout_names_the_operation_and_what_was_last_seen():
    made, daemon = provider(daemon=SlowDaemon())
    created(made, state="started")
    with pytest.raises(OperationTimeout) as caught:
        made.stop(made.get_instance("web-1"), timeout=1, force=True)
    assert "stop of web-1" in str(caught.value) and "'Stopping instance'" in str(caught.value)
    assert "still Running after 1s" in str(caught.value)


class IncusSlowDaemon(FakeDaemon):
    """Incus answers a wait that runs out with an error, not with the running operation."""

    def _send(self, method, path, body, etag):
        if path.endswith("/wait?timeout=1"):
            self.calls.append((method, path, body, etag))
            return 500, None, error(500, "context deadline exceeded")
        if path.startswith("/1.0/operations/") and method == "GET":
            self.calls.append((method, path, body, etag))
            return 200, None, sync({"id": "op-9", "description": "Executing command", "status": "Running"})
        return super()._send(method, path, body, etag)


def test_an_incus_wait_that_runs_out_reads_the_operation():
    daemon = IncusSlowDaemon()
    with pytest.raises(OperationTimeout, match="^exec in c1: operation 'Executing command' .* still Running after 1s"):
        daemon.wait_operation("/1.0/operations/op-9", 1, "exec in c1")
    assert ("GET", "/1.0/operations/op-9", None, None) in daemon.calls


def test_wait_slices_stay_inside_the_http_timeout():
    daemon = FakeDaemon()
    daemon.wait_slice = 5
    daemon.instances["x"] = {"name": "x"}
    daemon.operation("Creating instance", "x")
    daemon.wait_operation("/1.0/operations/op-1", 120, "create of x")
    assert daemon.calls[-1][1] == "/1.0/operations/op-1/wait?timeout=5"


class BusyDaemon(FakeDaemon):
    """The instance is still being created by an earlier request whose answer was lost."""

    def __init__(self):
        super().__init__()
        self.busy = 1

    def _send(self, method, path, body, etag):
        if path.endswith("/state?project=default") and self.busy:
            self.busy -= 1
            self.calls.append((method, path, body, etag))
            return 400, None, error(400, 'Failed to create instance start operation: Instance is busy running a '
                                         '"create" operation')
        if path.startswith("/1.0/operations?"):
            self.calls.append((method, path, body, etag))
            return 200, None, sync({"running": [{"id": "op-create", "resources": {
                "instances": ["/1.0/instances/web-1"]}}]})
        if path.startswith("/1.0/operations/op-create/wait"):
            self.calls.append((method, path, body, etag))
            return 200, None, sync({"id": "op-create", "status": "Success"})
        return super()._send(method, path, body, etag)


def test_a_write_refused_because_the_instance_is_busy_waits_and_is_sent_again():
    made, daemon = provider(daemon=BusyDaemon())
    created(made)
    made.start(made.get_instance("web-1"), 30)
    paths = [call[1] for call in daemon.calls]
    assert paths.count("/1.0/instances/web-1/state?project=default") == 2
    assert "/1.0/operations/op-create/wait?timeout=20" in paths
    assert daemon.instances["web-1"]["status"] == "Running"


class BrokenWaitDaemon(FakeDaemon):
    def _send(self, method, path, body, etag):
        if "/wait" in path:
            raise TransportError("connection refused", sent=False)
        return super()._send(method, path, body, etag)


def test_a_broken_wait_after_an_accepted_write_counts_as_sent():
    daemon = BrokenWaitDaemon()
    daemon.instances["x"] = {"name": "x"}
    with pytest.raises(TransportError) as caught:
        daemon.request("PUT", "/1.0/instances/x/state", body={"action": "start"}, what="start of x")
    assert caught.value.sent is True, "the write was taken: a fallback must re-read, never replay it"
    assert "start of x: waiting on /1.0/operations/op-1" in str(caught.value)


def test_daemon_errors_keep_the_daemons_words():
    daemon = FakeDaemon()
    with pytest.raises(NotFound, match="^reading x failed: Instance not found$"):
        daemon.request("GET", "/1.0/instances/x", what="reading x")
    daemon.instances["x"] = {"name": "x"}
    daemon.op_status, daemon.op_err = "Failure", "The instance is already running"
    with pytest.raises(BackendError, match="^start of x failed: The instance is already running$"):
        daemon.request("PUT", "/1.0/instances/x/state", body={"action": "start"}, what="start of x")


# -- the SSH road --------------------------------------------------------------------------------------------------
class FakeSsh:
    def __init__(self, *answers):
        self.answers = list(answers)
        self.runs = []
        self.settings = type("S", (), {"command_timeout": 120})()

    def run(self, argv, stdin=None, timeout=None):
        self.runs.append((argv, stdin))
        return self.answers.pop(0) if self.answers else ExecResult(0, json.dumps(sync({})), "")


@pytest.mark.parametrize("cli", ["lxc", "incus"])
def test_ssh_query_argv(cli):
    ssh = FakeSsh(ExecResult(0, json.dumps(sync({"ok": 1})), ""))
    client = lxd_common.LxdSshClient(ssh, cli)
    assert client.request("PATCH", "/1.0/instances/x?project=p", body={"config": {"user.v": "$(id) 'q'"}}).metadata \
        == {"ok": 1}
    argv, stdin = ssh.runs[0]
    assert argv == [cli, "query", "--force-local", "--raw", "-X", "PATCH", "-d",
                    '{"config":{"user.v":"$(id) \'q\'"}}', "/1.0/instances/x?project=p"]
    assert stdin is None


def test_ssh_errors_of_both_clis_are_understood():
    lxd = lxd_common.LxdSshClient(FakeSsh(ExecResult(1, "", "Error: Instance not found\n")), "lxc")
    with pytest.raises(NotFound, match="Instance not found"):
        lxd.request("GET", "/1.0/instances/x")
    raw = json.dumps(error(404, 'Failed to fetch instance "x" in project "default": Instance not found'))
    incus = lxd_common.LxdSshClient(FakeSsh(ExecResult(0, raw, "")), "incus")
    with pytest.raises(NotFound, match="Failed to fetch instance"):
        incus.request("GET", "/1.0/instances/x")
    missing = lxd_common.LxdSshClient(FakeSsh(ExecResult(127, "", "sh: 1: lxc: not found")), "lxc")
    with pytest.raises(BackendError, match="lxc is not installed"):
        missing.request("GET", "/1.0")


def test_ssh_async_answers_are_waited_on_with_the_wait_endpoint():
    created_op = {"type": "async", "status_code": 100, "operation": "/1.0/operations/abc",
                  "metadata": {"id": "abc", "status": "Running"}}
    done = sync({"id": "abc", "status": "Success", "metadata": {"x": 1}})
    ssh = FakeSsh(ExecResult(0, json.dumps(created_op), ""), ExecResult(0, json.dumps(done), ""))
    reply = lxd_common.LxdSshClient(ssh, "incus").request("DELETE", "/1.0/instances/x", timeout=30)
    assert reply.metadata == {"x": 1}
    assert ssh.runs[1][0][-1] == "/1.0/operations/abc/wait?timeout=20"


def test_password_over_ssh_travels_only_on_stdin():
    raw = {"name": "n1", "type": "incus", "execution_rule": "ssh_only", "project": "p1",
           "ssh": {"host": "127.0.0.1"}}
    made = IncusProvider(validate_node_dict(raw))
    ssh = FakeSsh(ExecResult(0, "", ""))
    made.router.make_ssh = lambda: lxd_common.LxdSshClient(ssh, "incus")
    instance = made._instance({"name": "c1", "type": "container", "status": "Running"})
    made.set_password(instance, "root", "s3cret 'pw'")
    argv, stdin = ssh.runs[0]
    assert argv == ["incus", "exec", "--force-local", "c1", "--project", "p1", "--force-noninteractive", "--",
                    "chpasswd"]
    assert stdin == "root:s3cret 'pw'\n" and "s3cret" not in json.dumps(argv)


def test_exec_needs_a_running_instance():
    made = provider()[0]
    with pytest.raises(Unsupported, match="is stopped"):
        made.exec(made._instance({"name": "c1", "status": "Stopped"}), ["true"])


# -- the API road ---------------------------------------------------------------------------------------------------
class HttpDaemon:
    """A threaded HTTP server (on a unix socket, or TLS on a loopback port) that answers every request with
    `answer(method, target)` and records what it saw."""

    def __init__(self, answer, unix_path=None, tls=None):
        import http.server
        import socketserver
        import ssl
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                self.server.seen.append((self.command, self.path, dict(self.headers), body))
                data = json.dumps(answer(self.command, self.path)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _reply

            def log_message(self, *args):
                pass

        if unix_path:
            class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
                daemon_threads = True

                def get_request(self):
                    request, dummy = super().get_request()
                    return request, ("unix", 0)  # BaseHTTPRequestHandler wants a (host, port) pair

            self.server = Server(str(unix_path), Handler)
        else:
            class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
                daemon_threads = True

            self.server = Server(("127.0.0.1", 0), Handler)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.server.seen = []
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def seen(self):
        return self.server.seen

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def self_signed(tmp_path, name):
    import subprocess

    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}"], check=True,
                   capture_output=True)
    return str(cert), str(key)


def test_api_road_speaks_plain_http_over_the_socket_with_encoded_paths_and_etags(tmp_path):
    answers = {"/1.0/images/aliases/debian%2F12?project=p1": sync({"target": "abc"})}
    daemon = HttpDaemon(lambda method, target: answers.get(target, sync({})), unix_path=tmp_path / "unix.socket")
    try:
        raw = {"name": "n1", "type": "incus", "execution_rule": "api_only", "project": "p1",
               "api": {"url": f"unix://{tmp_path / 'unix.socket'}"}}
        client = IncusProvider(validate_node_dict(raw)).make_api_client()
        reply = client.request("GET", "/1.0/images/aliases/debian%2F12?project=p1")
        client.request("PUT", "/1.0/instances/c1?project=p1", body={"config": {"a": "b"}}, etag='"e1"')
        client.close()
    finally:
        daemon.stop()
    assert reply.metadata == {"target": "abc"}
    # A name quoted by the provider reaches the daemon as it was quoted, not quoted twice (or unquoted). The
    # socket's clients are all trusted: no GET /1.0 first.
    assert [(method, target) for method, target, headers, body in daemon.seen] == [
        ("GET", "/1.0/images/aliases/debian%2F12?project=p1"), ("PUT", "/1.0/instances/c1?project=p1")]
    put = daemon.seen[1]
    assert put[2]["If-Match"] == '"e1"' and json.loads(put[3]) == {"config": {"a": "b"}}


def test_https_road_pins_the_server_checks_trust_and_ignores_requests_ca_bundle(monkeypatch, tmp_path):
    server_cert, server_key = self_signed(tmp_path, "server")
    client_cert, client_key = self_signed(tmp_path, "client")
    other_cert, dummy = self_signed(tmp_path, "other")
    trusted = {"value": "trusted"}
    daemon = HttpDaemon(lambda method, target: sync({"auth": trusted["value"]}), tls=(server_cert, server_key))
    # The environment's CA bundle would refuse this self-signed server: the pin must win.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    try:
        def client(pin):
            raw = {"name": "n1", "type": "lxd", "execution_rule": "api_only",
                   "api": {"url": daemon.url, "client_cert": client_cert, "client_key": client_key,
                           "server_cert": pin}}
            return LxdProvider(validate_node_dict(raw)).make_api_client()

        client(server_cert).close()
        assert [target for method, target, headers, body in daemon.seen] == ["/1.0"]
        with pytest.raises(TransportError, match="is not the pinned api.server_cert") as refused:
            client(other_cert)
        assert refused.value.sent is False
        assert len(daemon.seen) == 1, "a wrong pin sends nothing"
        trusted["value"] = "untrusted"
        with pytest.raises(TransportError, match="does not trust the client certificate"):
            client(server_cert)
    finally:
        daemon.stop()


def test_missing_socket_is_a_transport_failure(monkeypatch):
    monkeypatch.setattr(IncusProvider, "default_socket", "/nonexistent/incus/unix.socket")
    raw = {"name": "n1", "type": "incus", "execution_rule": "api_only", "api": {"url": "unix:///"}}
    with pytest.raises(TransportError, match="does not exist"):
        IncusProvider(validate_node_dict(raw)).make_api_client()  # the default socket is not on this test host


def test_api_road_imports_neither_pylxd_nor_requests_nor_ssl():
    """What a task on a unix socket pays for at import: none of these (ssl only when TLS is used)."""
    import os
    import subprocess
    import sys

    code = ("import sys\n"
            "from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends import docker, lxd_common\n"
            "print(sorted(name for name in ('pylxd', 'requests', 'urllib3', 'ssl', 'paramiko', 'tarfile')"
            " if name in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.stdout.strip() == "[]", result.stdout
