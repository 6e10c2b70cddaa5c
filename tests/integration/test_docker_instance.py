"""virt_instance, virt_instance_info and virt_image_info against the lab's real dockerd and sshd."""

import crypt
import json
import socket
import threading
from pathlib import Path

import pytest

from conftest import LAB_DIR, docker_cli, free_port, node_with, run_module, run_playbook, unique

RULES = ("api_only", "ssh_only", "auto")


def docker_node(nodes, rule="auto", **changes):
    return node_with(nodes["docker"], execution_rule=rule, **changes)


def inspect(name):
    return json.loads(docker_cli("inspect", name).stdout)[0]


def containers_named(name):
    listing = docker_cli("ps", "-a", "--filter", f"name=^/{name}$", "--format", "{{.Names}}").stdout.split()
    return [entry for entry in listing if entry == name]


@pytest.mark.parametrize("rule", RULES)
def test_lifecycle_under_each_rule(nodes, rule, docker_name, docker_events):
    node = docker_node(nodes, rule)
    base = {"node": node, "name": docker_name, "image": "ocv-busybox", "cpu": 0.5, "memory": "64MiB"}
    expected_transport = "ssh" if rule == "ssh_only" else "api"

    created = run_module("virt_instance", base)
    assert created["changed"] is True, created
    assert created["transport"] == expected_transport
    assert created["instance"]["status"] == "running"
    assert created["instance"]["memory"] == 64 and created["instance"]["cpu"] == 0.5
    assert [event["step"] for event in created["events"]][:2] == ["create", "start"]
    assert all(event["seconds"] >= 0 for event in created["events"])

    for state, status in (("started", "running"), ("stopped", "stopped"), ("started", "running"),
                          ("present", "running")):
        args = dict(base, state=state)
        predicted = run_module("virt_instance", args, check=True)
        docker_events.start()
        first = run_module("virt_instance", args)
        assert first["changed"] is predicted["changed"], (state, predicted, first)
        assert first["instance"]["status"] == status
        docker_events.start()
        second = run_module("virt_instance", args)
        assert second["changed"] is False, (state, second)
        assert docker_events.collect(docker_name) == [], f"a no-op {state} run made the daemon emit events"

    restarted = run_module("virt_instance", dict(base, state="restarted"))
    assert restarted["changed"] is True and restarted["instance"]["status"] == "running"

    gone = run_module("virt_instance", dict(base, state="absent"))
    assert gone["changed"] is True and gone["instance"] is None
    assert containers_named(docker_name) == []
    again = run_module("virt_instance", dict(base, state="absent"))
    assert again["changed"] is False


def test_check_mode_predicts_and_sends_nothing(nodes, docker_name, docker_events):
    args = {"node": docker_node(nodes), "name": docker_name, "image": "ocv-busybox", "memory": 32}
    docker_events.start()
    predicted = run_module("virt_instance", args, check=True)
    assert predicted["changed"] is True
    assert predicted["actions"] == ["create", "start"]
    assert predicted["diff"]["before"] == {} and predicted["diff"]["after"]["memory"] == 32
    assert docker_events.collect() == [], "check mode must not make the daemon emit any event"
    assert containers_named(docker_name) == []

    run_module("virt_instance", args)
    docker_events.start()
    for state in ("started", "stopped", "absent"):
        result = run_module("virt_instance", dict(args, state=state), check=True)
        assert result["changed"] is (state != "started"), (state, result)
    assert docker_events.collect() == []
    assert inspect(docker_name)["State"]["Running"] is True


def test_parity_and_cross_read(nodes, docker_name):
    made = run_module("virt_instance", {"node": docker_node(nodes, "api_only"), "name": docker_name,
                                        "image": "ocv-busybox", "memory": "48MiB"})
    over_api = run_module("virt_instance_info", {"node": docker_node(nodes, "api_only"), "name": docker_name})
    over_ssh = run_module("virt_instance_info", {"node": docker_node(nodes, "ssh_only"), "name": docker_name})
    assert over_api["transport"] == "api" and over_ssh["transport"] == "ssh"
    assert over_api["instance"] == over_ssh["instance"] == made["instance"]
    truth = inspect(docker_name)
    assert over_ssh["instance"]["id"] == truth["Id"]
    assert over_ssh["instance"]["created"] == truth["Created"]
    assert over_ssh["instance"]["private_ip"] == truth["NetworkSettings"]["IPAddress"]

    listed_api = run_module("virt_instance_info", {"node": docker_node(nodes, "api_only")})["instances"]
    listed_ssh = run_module("virt_instance_info", {"node": docker_node(nodes, "ssh_only")})["instances"]
    assert listed_api == listed_ssh
    assert [i for i in listed_api if i["name"] == docker_name] == [over_api["instance"]]


def test_created_over_ssh_read_over_api(nodes, docker_name):
    made = run_module("virt_instance", {"node": docker_node(nodes, "ssh_only"), "name": docker_name,
                                        "image": "ocv-busybox"})
    assert made["transport"] == "ssh"
    read = run_module("virt_instance_info", {"node": docker_node(nodes, "api_only"), "name": docker_name})
    truth = inspect(docker_name)
    assert read["instance"]["id"] == truth["Id"] == made["instance"]["id"]
    assert read["instance"]["private_ip"] == truth["NetworkSettings"]["IPAddress"]


def test_info_for_a_missing_instance_is_not_a_failure(nodes):
    result = run_module("virt_instance_info", {"node": docker_node(nodes), "name": unique("nothing")})
    assert result.get("failed") is not True
    assert result["exists"] is False and result["instance"] is None


def test_auto_falls_back_when_the_api_is_unreachable(nodes, docker_name):
    node = docker_node(nodes, "auto", api={"url": "unix:///run/ocv-no-such-docker.sock"})
    result = run_module("virt_instance", {"node": node, "name": docker_name, "image": "ocv-busybox"})
    assert result["changed"] is True and result["transport"] == "ssh"
    assert "ocv-no-such-docker.sock" in result["fallback_reason"]
    assert "continuing over SSH" in json.dumps(result.get("warnings", []))
    assert containers_named(docker_name) == [docker_name]


def test_a_port_left_to_docker_reports_the_port_docker_chose(nodes, docker_name):
    fixed = free_port()
    args = {"node": docker_node(nodes, "api_only"), "name": docker_name, "image": "ocv-busybox",
            "ports": [{"guest_port": 8080}, {"guest_port": 9090, "host_port": fixed, "listen_address": "127.0.0.1"},
                      {"guest_port": 5353, "protocol": "udp", "listen_address": "127.0.0.1"}]}
    created = run_module("virt_instance", args)
    bound = inspect(docker_name)["NetworkSettings"]["Ports"]
    chosen_tcp, chosen_udp = int(bound["8080/tcp"][0]["HostPort"]), int(bound["5353/udp"][0]["HostPort"])
    assert chosen_tcp > 0 and chosen_udp > 0
    expected = sorted([{"guest_port": 8080, "host_port": chosen_tcp, "protocol": "tcp", "listen_address": None},
                       {"guest_port": 9090, "host_port": fixed, "protocol": "tcp", "listen_address": "127.0.0.1"},
                       {"guest_port": 5353, "host_port": chosen_udp, "protocol": "udp",
                        "listen_address": "127.0.0.1"}], key=lambda port: (port["guest_port"], port["protocol"]))
    assert created["instance"]["ports"] == expected, created

    # The chosen port is no drift from "any port": a second run changes nothing, over either transport.
    for rule in ("api_only", "ssh_only"):
        again = run_module("virt_instance", dict(args, node=docker_node(nodes, rule)))
        assert again["changed"] is False and again["instance"]["ports"] == expected, (rule, again)
    listed = run_module("virt_instance_info", {"node": docker_node(nodes, "ssh_only"), "name": docker_name})
    assert listed["instance"]["ports"] == expected

    # A stopped container holds no port: the one left to Docker is unknown (null), the fixed one stays.
    stopped = run_module("virt_instance", dict(args, state="stopped"))
    assert {port["guest_port"]: port["host_port"] for port in stopped["instance"]["ports"]} == \
        {8080: None, 9090: fixed, 5353: None}


def test_both_transports_failing_names_both(nodes, docker_name):
    node = docker_node(nodes, "auto", api={"url": "unix:///run/ocv-no-such-docker.sock"},
                       ssh={"port": 1})
    result = run_module("virt_instance", {"node": node, "name": docker_name, "image": "ocv-busybox"})
    assert result["failed"] is True
    assert "both transports failed" in result["msg"]
    assert "ocv-no-such-docker.sock" in result["msg"] and "SSH" in result["msg"]


class LosingProxy:
    """A unix-socket proxy to dockerd that forwards the create request, then drops the connection
    before the answer reaches the client: the write happened, its answer is lost."""

    def __init__(self, path):
        self.path = path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(16)
        self.creates_forwarded = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client):
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect("/var/run/docker.sock")
        try:
            while True:
                request = client.recv(65536)
                if not request:
                    return
                upstream.sendall(request)
                if b"/containers/create" in request.split(b"\r\n", 1)[0]:
                    self.creates_forwarded += 1
                    upstream.recv(65536)  # the daemon answered; the client never hears it
                    return
                client.sendall(upstream.recv(65536))
        finally:
            client.close()
            upstream.close()

    def close(self):
        self.server.close()
        Path(self.path).unlink(missing_ok=True)


@pytest.mark.parametrize("rule", ["auto", "api_only"])
def test_lost_answer_to_create_leaves_exactly_one(nodes, docker_name, tmp_path, rule):
    proxy = LosingProxy(str(tmp_path / "docker.sock"))
    try:
        node = docker_node(nodes, rule, api={"url": f"unix://{proxy.path}"})
        result = run_module("virt_instance", {"node": node, "name": docker_name, "image": "ocv-busybox"})
    finally:
        proxy.close()
    assert proxy.creates_forwarded == 1
    assert containers_named(docker_name) == [docker_name], "exactly one container, never a duplicate"
    if rule == "auto":
        assert result["changed"] is True and result["transport"] == "ssh", result
        assert result["instance"]["status"] == "running"
    else:
        assert result["failed"] is True and "create" in result["msg"]
    # Whatever happened, the next run converges and the one after is a no-op.
    node = docker_node(nodes, "api_only")
    run_module("virt_instance", {"node": node, "name": docker_name, "image": "ocv-busybox"})
    final = run_module("virt_instance", {"node": node, "name": docker_name, "image": "ocv-busybox"})
    assert final["changed"] is False and final["instance"]["status"] == "running"
    assert containers_named(docker_name) == [docker_name]


def test_out_of_band_drift_is_reported_and_converged(nodes, docker_name):
    args = {"node": docker_node(nodes), "name": docker_name, "image": "ocv-busybox", "memory": "64MiB", "cpu": 1}
    run_module("virt_instance", args)
    docker_cli("update", "--memory", "96m", "--memory-swap", "192m", docker_name)
    predicted = run_module("virt_instance", args, check=True)
    assert predicted["changed"] is True and predicted["actions"] == ["update memory"]
    converged = run_module("virt_instance", args)
    assert converged["changed"] is True
    assert converged["diff"]["before"]["memory"] == 96 and converged["diff"]["after"]["memory"] == 64
    assert inspect(docker_name)["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert inspect(docker_name)["State"]["Running"] is True, "memory is applied in place"
    assert run_module("virt_instance", args)["changed"] is False


def test_change_that_needs_recreate_fails_without_force(nodes, docker_name):
    args = {"node": docker_node(nodes), "name": docker_name, "image": "ocv-busybox", "env": {"A": "1"}}
    first = run_module("virt_instance", args)
    changed_env = run_module("virt_instance", dict(args, env={"A": "2"}))
    assert changed_env["failed"] is True
    assert "env" in changed_env["msg"] and "force: true" in changed_env["msg"]
    assert inspect(docker_name)["Id"] == first["instance"]["id"]
    recreated = run_module("virt_instance", dict(args, env={"A": "2"}, force=True))
    assert recreated["changed"] is True and recreated["instance"]["id"] != first["instance"]["id"]
    assert "A=2" in inspect(docker_name)["Config"]["Env"]


@pytest.mark.parametrize("bad_name", ["a;touch /tmp/ocv-canary", "a b", "ünïcode", "$(id)", "-rf", "a/b", "x" * 64,
                                      "name'quote", ""])
def test_hostile_names_are_rejected_before_anything_is_sent(nodes, bad_name, docker_events):
    docker_events.start()
    result = run_module("virt_instance", {"node": docker_node(nodes), "name": bad_name, "image": "ocv-busybox"})
    assert result["failed"] is True and "name" in result["msg"]
    assert docker_events.collect() == []
    assert not Path("/tmp/ocv-canary").exists()


def test_vm_and_disk_on_docker_fail_clearly(nodes, docker_name, docker_events):
    docker_events.start()
    vm = run_module("virt_instance", {"node": docker_node(nodes), "name": docker_name, "image": "ocv-busybox",
                                      "type": "vm"})
    assert vm["failed"] is True and "'vm'" in vm["msg"] and "docker" in vm["msg"]
    disk = run_module("virt_instance", {"node": docker_node(nodes), "name": docker_name, "image": "ocv-busybox",
                                        "disk": "1GiB"})
    assert disk["failed"] is True and disk["msg"].startswith("disk:") and "quota" in disk["msg"]
    bad_size = run_module("virt_instance", {"node": docker_node(nodes), "name": docker_name, "image": "ocv-busybox",
                                            "memory": "12 parsecs"})
    assert bad_size["failed"] is True and bad_size["msg"].startswith("memory:")
    assert docker_events.collect() == []


@pytest.mark.parametrize("rule", ["api_only", "ssh_only"])
def test_hostile_values_arrive_literally(nodes, docker_name, rule):
    canary = Path("/tmp/ocv-env-canary")
    canary.unlink(missing_ok=True)
    value = "$(touch /tmp/ocv-env-canary); `touch /tmp/ocv-env-canary` 'q' \"dq\" ; & | > <"
    result = run_module("virt_instance", {"node": docker_node(nodes, rule), "name": docker_name,
                                          "image": "ocv-busybox", "env": {"HOSTILE": value}})
    assert result["changed"] is True
    inside = docker_cli("exec", docker_name, "env").stdout.splitlines()
    assert f"HOSTILE={value}" in inside
    assert not canary.exists()
    assert docker_cli("exec", docker_name, "test", "-e", "/tmp/ocv-env-canary", check=False).returncode != 0


def _stored_hash(name, user="root"):
    shadow = docker_cli("exec", name, "getent", "shadow", user).stdout
    return shadow.split(":")[1]


def test_password_is_set_and_never_leaks(nodes, docker_name, tmp_path):
    password = "it's a \"pass\"; with $(spaces) & `ticks`"
    argv_log = LAB_DIR / "ssh" / "argv.log"
    commands_log = LAB_DIR / "ssh" / "commands.log"
    logs_before = {path: path.stat().st_size if path.exists() else 0 for path in (argv_log, commands_log)}
    node = docker_node(nodes, "ssh_only")
    playbook = f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Create with a password
      oneclickvirt.virt.virt_instance:
        node: {json.dumps(node)}
        name: {docker_name}
        image: ocv-debian
        password: {json.dumps(password)}
      register: made
    - name: Show the result
      ansible.builtin.debug:
        var: made
"""
    completed = run_playbook(playbook, tmp_path, extra_args=["-vvv"])
    assert completed.returncode == 0, completed.stdout + completed.stderr
    output = completed.stdout + completed.stderr
    assert password not in output
    assert "chpasswd" not in output or password not in output
    for path, offset in logs_before.items():
        with open(path, "rb") as handle:
            handle.seek(offset)
            recorded = handle.read().decode("utf-8", "replace")
        assert recorded, f"{path} recorded nothing: the run did not go over the lab's SSH node"
        assert password not in recorded and json.dumps(password)[1:-1] not in recorded
    stored = _stored_hash(docker_name)
    assert stored.startswith("$") and crypt.crypt(password, stored) == stored
    assert crypt.crypt("wrong" + password, stored) != stored


def test_ssh_keys_written_on_create(nodes, docker_name):
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOCVtestkeyonlyforthelab0000000000000000 lab@test"
    result = run_module("virt_instance", {"node": docker_node(nodes), "name": docker_name, "image": "ocv-busybox",
                                          "ssh_authorized_keys": [key]})
    assert "add ssh keys" in result["actions"]
    assert docker_cli("exec", docker_name, "cat", "/root/.ssh/authorized_keys").stdout == key + "\n"
    again = run_module("virt_instance", {"node": docker_node(nodes), "name": docker_name, "image": "ocv-busybox",
                                         "ssh_authorized_keys": [key], "update_ssh_keys": "always"})
    assert again["changed"] is False


def test_image_info_lists_the_lab_images(nodes):
    api = run_module("virt_image_info", {"node": docker_node(nodes, "api_only")})
    ssh = run_module("virt_image_info", {"node": docker_node(nodes, "ssh_only")})
    assert api["images"] == ssh["images"]
    names = {image["name"] for image in api["images"]}
    assert {"ocv-busybox:latest", "ocv-debian:latest"} <= names
    one = run_module("virt_image_info", {"node": docker_node(nodes), "name": "ocv-busybox:latest"})
    assert [image["name"] for image in one["images"]] == ["ocv-busybox:latest"]
    assert one["images"][0]["id"].startswith("sha256:")
