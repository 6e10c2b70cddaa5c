"""The Proxmox VE simulator of the lab (lab/pvesim): behaviour that clients depend on and trip over.

Most tests talk to the lab's simulator (node `proxmox` of .lab/nodes.yml) through the raw API with
`requests`, so nothing of ours stands between the test and the wire. Tests that restart or reconfigure a
simulator as a whole use a private instance on a free port with its own state folder; its requests go to
the lab's request log too, so the conformance test checks them as well.
"""
import crypt
import hashlib
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paramiko
import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
LAB_DIR = Path(os.environ.get("OCV_LAB_DIR", "/var/lib/oneclickvirt-lab"))
PVESIM_DIR = LAB_DIR / "pvesim"
sys.path.insert(0, str(ROOT / "lab"))

from pvesim import guestos  # noqa: E402  (the simulator's own code, for the guest shell table)


from conftest import free_port, wait_port  # noqa: E402
from pve_helpers import Api, proxmox_node  # noqa: E402


class PrivateSimulator:
    """A simulator of the test's own (state folder, port, control socket); the lab's one is left alone."""

    def __init__(self, state_dir):
        self.state_dir = Path(state_dir)
        self.port = free_port()
        self.socket = self.state_dir / "control.sock"
        self.process = None

    def start(self):
        env = dict(os.environ, PYTHONPATH=str(ROOT / "lab"), PYTHONDONTWRITEBYTECODE="1")
        log = open(self.state_dir.parent / f"{self.state_dir.name}.out", "ab")
        self.process = subprocess.Popen(
            ["/usr/bin/python3", "-m", "pvesim", "--state-dir", str(self.state_dir), "--listen",
             f"127.0.0.1:{self.port}", "--socket", str(self.socket), "--request-log", str(PVESIM_DIR / "requests.log")],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(self.port)
        secrets = json.loads((self.state_dir / "secrets.json").read_text())
        token_id, token_secret = next(iter(secrets["tokens"].items()))
        self.api = Api(f"https://127.0.0.1:{self.port}", token_id, token_secret,
                       str(self.state_dir / "tls" / "pve-ssl.pem"))
        return self.api

    def running(self):
        """The API of this simulator, started when it is not running."""
        if self.process is None or self.process.poll() is not None:
            return self.start()
        return self.api

    def kill(self, sig=signal.SIGKILL):
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=20)

    def tool(self, name, *args, stdin=""):
        env = dict(os.environ, PVESIM_SOCKET=str(self.socket))
        return subprocess.run([str(PVESIM_DIR / "bin" / name), *args], input=stdin, text=True, capture_output=True, check=False,
                              env=env, timeout=60)


@pytest.fixture(scope="module")
def node():
    return proxmox_node()


@pytest.fixture(scope="module")
def api(node):
    client = Api(node["api"]["url"], node["api"]["token_id"], node["api"]["token_secret"], node["api"]["ca_file"])
    try:
        client.call("GET", "/version", timeout=10)
    except requests.ConnectionError as error:
        pytest.fail(f"the Proxmox simulator does not answer at {node['api']['url']}: {error}; run `make lab`",
                    pytrace=False)
    return client


@pytest.fixture
def faults(api):
    """Set simulator settings for one test; back to defaults afterwards, whatever happened."""
    def apply(**settings):
        return api.control("PUT", "/_sim/faults", settings)
    yield apply
    api.control("DELETE", "/_sim/faults")


@pytest.fixture
def guests(api):
    """VMIDs a test creates; each is stopped and destroyed afterwards."""
    created = []
    yield created
    api.control("DELETE", "/_sim/faults")
    for vmid in created:
        kind = None
        for candidate in ("qemu", "lxc"):
            if api.call("GET", f"/nodes/pve/{candidate}/{vmid}/status/current").status_code == 200:
                kind = candidate
        if kind is None:
            continue
        api.control("POST", "/_sim/lock", {"vmid": vmid, "lock": None})
        if api.data("GET", f"/nodes/pve/{kind}/{vmid}/status/current")["status"] == "running":
            api.wait(api.data("POST", f"/nodes/pve/{kind}/{vmid}/status/stop"))
        api.wait(api.data("DELETE", f"/nodes/pve/{kind}/{vmid}", purge=1))


@pytest.fixture(scope="module")
def private_sim(tmp_path_factory):
    sim = PrivateSimulator(tmp_path_factory.mktemp("pvesim") / "state")
    sim.state_dir.mkdir()
    yield sim
    sim.kill(signal.SIGTERM)


def next_vmid(api):
    return int(api.data("GET", "/cluster/nextid"))


def create_vm(api, guests, **params):
    vmid = next_vmid(api)
    upid = api.data("POST", "/nodes/pve/qemu", vmid=vmid, **params)
    guests.append(vmid)
    return vmid, upid


def create_ct(api, guests, **params):
    vmid = next_vmid(api)
    defaults = {"ostemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst", "rootfs": "local-lvm:4",
                "net0": "name=eth0,bridge=vmbr0,ip=dhcp,ip6=auto"}
    upid = api.data("POST", "/nodes/pve/lxc", vmid=vmid, **{**defaults, **params})
    guests.append(vmid)
    return vmid, upid


def ssh_client(node):
    client = paramiko.SSHClient()
    client.load_host_keys(node["ssh"]["known_hosts_file"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())   # strict: only the known host key
    client.connect(node["ssh"]["host"], port=node["ssh"]["port"], username=node["ssh"]["user"],
                   key_filename=node["ssh"]["private_key_file"], look_for_keys=False, allow_agent=False, timeout=10)
    return client


def ssh_run(client, command, stdin=None, timeout=60):
    channel = client.get_transport().open_session()
    channel.settimeout(timeout)
    channel.exec_command(command)
    if stdin is not None:
        channel.sendall(stdin.encode())
    channel.shutdown_write()
    out, err = b"", b""
    while True:
        if channel.recv_ready():
            out += channel.recv(65536)
        elif channel.recv_stderr_ready():
            err += channel.recv_stderr(65536)
        elif channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
            break
        else:
            time.sleep(0.01)
    code = channel.recv_exit_status()
    out += channel.recv(65536) if channel.recv_ready() else b""
    channel.close()
    return code, out.decode(), err.decode()


# --- auth and answers ------------------------------------------------------------------------------------------

def test_answers_are_wrapped_in_data(api):
    answer = api.call("GET", "/version")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    assert list(body) == ["data"]
    assert body["data"]["version"] == "8.4.1" and body["data"]["release"] == "8.4"


def test_wrong_or_missing_token_is_401(api, node):
    token_id, secret = node["api"]["token_id"], node["api"]["token_secret"]
    cases = {
        "wrong secret": f"PVEAPIToken={token_id}=00000000-0000-0000-0000-000000000000",
        "unknown token": f"PVEAPIToken={token_id.split('!')[0]}!nosuch={secret}",
        "garbage": "Bearer xyz",
    }
    for what, header in cases.items():
        answer = requests.get(f"{api.url}/api2/json/version", headers={"Authorization": header},
                              verify=api.ca_file, timeout=10)
        assert answer.status_code == 401, what
        assert answer.json()["data"] is None and answer.json()["message"], what
    answer = requests.get(f"{api.url}/api2/json/nodes", verify=api.ca_file, timeout=10)
    assert answer.status_code == 401 and answer.reason == "No ticket"


def test_ticket_auth_with_csrf_token(api):
    password = json.loads((PVESIM_DIR / "secrets.json").read_text())["root_password"]
    wrong = requests.post(f"{api.url}/api2/json/access/ticket", data={"username": "root@pam", "password": "nope"},
                          verify=api.ca_file, timeout=10)
    assert wrong.status_code == 401 and wrong.reason == "authentication failure"
    answer = requests.post(f"{api.url}/api2/json/access/ticket", data={"username": "root@pam", "password": password},
                           verify=api.ca_file, timeout=10)
    assert answer.status_code == 200
    ticket = answer.json()["data"]
    assert ticket["username"] == "root@pam" and ticket["ticket"].startswith("PVE:root@pam:")
    cookies = {"PVEAuthCookie": ticket["ticket"]}
    read = requests.get(f"{api.url}/api2/json/cluster/status", cookies=cookies, verify=api.ca_file, timeout=10)
    assert read.status_code == 200 and read.json()["data"][0]["name"] == "pve"
    # A write with a ticket needs the CSRF token too, as on PVE.
    bad = requests.put(f"{api.url}/api2/json/nodes/pve/qemu/9000/config", data={"description": "x"},
                       cookies=cookies, verify=api.ca_file, timeout=10)
    assert bad.status_code == 401 and "csrf" in bad.reason
    good = requests.put(f"{api.url}/api2/json/nodes/pve/qemu/9000/config", data={"description": "seed template"},
                        cookies=cookies, headers={"CSRFPreventionToken": ticket["CSRFPreventionToken"]},
                        verify=api.ca_file, timeout=10)
    assert good.status_code == 200 and good.json() == {"data": None}


def test_errors_come_in_pve_shape(api):
    missing = api.call("GET", "/nodes/pve/qemu/999999/config")
    assert missing.status_code == 500
    assert missing.reason == "Configuration file 'nodes/pve/qemu-server/999999.conf' does not exist"
    assert missing.json() == {"data": None, "message": missing.reason + "\n"}
    invalid = api.call("POST", "/nodes/pve/qemu", vmid="abc", cores="0", frobnicate="1")
    assert invalid.status_code == 400 and invalid.reason == "Parameter verification failed."
    errors = invalid.json()["errors"]
    assert set(errors) == {"vmid", "cores", "frobnicate"}
    assert "type check ('integer') failed" in errors["vmid"]
    assert errors["frobnicate"].startswith("property is not defined in schema")
    unknown = api.call("GET", "/nodes/pve/frobnicate")
    assert unknown.status_code == 501 and "not implemented" in unknown.reason
    raw_key = api.call("POST", "/nodes/pve/qemu", vmid="123456", sshkeys="ssh-ed25519 AAAAC3Nza key@host")
    assert raw_key.status_code == 400 and "urlencoded" in raw_key.json()["errors"]["sshkeys"]


# --- tasks, locks ------------------------------------------------------------------------------------------------

def test_tasks_run_asynchronously_with_their_delay(api, faults, guests):
    faults(task_delay=2.0)
    started = time.monotonic()
    vmid, upid = create_vm(api, guests, name="t-async", memory="512", scsi0="local-lvm:1")
    assert time.monotonic() - started < 1.5, "the API must answer before the task is done"
    assert re.fullmatch(r"UPID:pve:[0-9A-F]{8}:[0-9A-F]{8}:[0-9A-F]{8}:qmcreate:%d:root@pam!ocv:" % vmid, upid)
    status = api.data("GET", f"/nodes/pve/tasks/{upid}/status")
    assert status["status"] == "running" and "exitstatus" not in status
    # While the create runs, the config exists with `lock: create`: the ID is taken, changes refused.
    assert api.data("GET", f"/nodes/pve/qemu/{vmid}/config")["lock"] == "create"
    assert int(api.data("GET", "/cluster/nextid")) != vmid
    refused = api.call("POST", f"/nodes/pve/qemu/{vmid}/status/start")
    assert refused.status_code == 500 and refused.reason == "VM is locked (create)"
    final = api.wait(upid)
    assert final["exitstatus"] == "OK" and time.monotonic() - started >= 2.0
    log = api.call("GET", f"/nodes/pve/tasks/{upid}/log").json()
    assert log["data"][-1]["t"] == "TASK OK" and log["total"] == len(log["data"])
    assert "lock" not in api.data("GET", f"/nodes/pve/qemu/{vmid}/config")
    listed = api.data("GET", "/nodes/pve/tasks", vmid=vmid)
    assert any(t["upid"] == upid and t["status"] == "OK" for t in listed)


def test_config_is_locked_while_a_task_runs(api, faults, guests):
    vmid, upid = create_vm(api, guests, name="t-lock", scsi0="local-lvm:1")
    api.wait(upid)
    faults(task_delays={"qmstart": 2.0}, lock_timeout=0.5)
    start = api.data("POST", f"/nodes/pve/qemu/{vmid}/status/start")
    time.sleep(0.2)
    blocked = api.call("PUT", f"/nodes/pve/qemu/{vmid}/config", description="during start")
    assert blocked.status_code == 500
    assert blocked.reason == f"can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout"
    assert api.wait(start)["exitstatus"] == "OK"
    assert api.call("PUT", f"/nodes/pve/qemu/{vmid}/config", description="after start").status_code == 200


def test_a_failing_task_ends_with_its_exit_status(api, faults, guests):
    vmid, upid = create_vm(api, guests, name="t-fail", scsi0="local-lvm:1", net0="virtio,bridge=vmbr9")
    api.wait(upid)
    status = api.wait(api.data("POST", f"/nodes/pve/qemu/{vmid}/status/start"))
    assert status["status"] == "stopped" and status["exitstatus"] == "bridge 'vmbr9' does not exist"
    assert api.data("GET", f"/nodes/pve/qemu/{vmid}/status/current")["status"] == "stopped"
    api.data("PUT", f"/nodes/pve/qemu/{vmid}/config", net0="virtio,bridge=vmbr0")
    faults(task_failures=[{"type": "qmstart", "id": str(vmid), "exitstatus": "start failed: QEMU exited with code 1"}])
    upid = api.data("POST", f"/nodes/pve/qemu/{vmid}/status/start")
    assert api.wait(upid)["exitstatus"] == "start failed: QEMU exited with code 1"
    assert api.data("GET", f"/nodes/pve/tasks/{upid}/log")[-1]["t"] == "TASK ERROR: start failed: QEMU exited with code 1"
    assert api.data("GET", f"/nodes/pve/qemu/{vmid}/status/current")["status"] == "stopped"
    # A create whose task fails leaves nothing behind.
    faults(task_failures=[{"type": "qmcreate", "exitstatus": "unable to create VM: disk error"}])
    failed_id, failed = create_vm(api, guests, name="t-fail2", scsi0="local-lvm:1")
    assert api.wait(failed)["exitstatus"] == "unable to create VM: disk error"
    assert api.call("GET", f"/nodes/pve/qemu/{failed_id}/config").status_code == 500
    assert not api.data("GET", "/nodes/pve/storage/local-lvm/content", vmid=failed_id)


def test_ten_racing_creates_collide_on_nextid_like_pve(api, guests):
    """Each caller asks nextid, then creates with it. PVE reserves nothing at nextid, so racing callers get
    the same ID and all but one create fail with "already exists". A simulator that never collides fails."""
    barrier = threading.Barrier(10)
    outcomes = [None] * 10

    def racer(index):
        session = requests.Session()
        session.headers.update(api.session.headers)
        vmid = session.get(f"{api.url}/api2/json/cluster/nextid", verify=api.ca_file, timeout=30).json()["data"]
        barrier.wait()      # everybody has asked before anybody creates: the race as it happens with latency
        answer = session.post(f"{api.url}/api2/json/nodes/pve/qemu", data={"vmid": vmid, "name": f"t-race-{index}"},
                              verify=api.ca_file, timeout=30)
        outcomes[index] = (int(vmid), answer.status_code, answer.json())

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(outcomes), outcomes
    created = [(vmid, body["data"]) for vmid, status, body in outcomes if status == 200]
    failed = [(vmid, status, body) for vmid, status, body in outcomes if status != 200]
    guests.extend(vmid for vmid, upid in created)
    for vmid, upid in created:
        api.wait(upid)
    assert len({outcome[0] for outcome in outcomes}) == 1, "ten callers asking at once must all get the same ID"
    assert len(created) == 1 and len(failed) == 9, outcomes
    for vmid, status, body in failed:
        assert status == 500 and body["data"] is None
        assert body["message"] == f"VM {vmid} already exists on node 'pve'\n"
    print(f"racing creates: {len(created)} created, {len(failed)} failed with 'already exists'")


# --- fault injection -----------------------------------------------------------------------------------------------

def test_injected_500_timeout_close_and_latency(api, faults):
    faults(rules=[{"path": "^/version$", "status": 500, "message": "simulated outage", "count": 1}])
    first = api.call("GET", "/version")
    assert first.status_code == 500 and first.reason == "simulated outage"
    assert first.json() == {"data": None, "message": "simulated outage\n"}
    assert api.call("GET", "/version").status_code == 200, "a rule with count 1 fires once"

    faults(rules=[{"path": "^/cluster/status$", "action": "timeout", "seconds": 3, "count": 1}])
    with pytest.raises(requests.ReadTimeout):
        api.call("GET", "/cluster/status", timeout=1)

    faults(rules=[{"path": "^/cluster/status$", "action": "close", "count": 1}])
    with pytest.raises(requests.ConnectionError):
        api.call("GET", "/cluster/status")
    assert api.call("GET", "/cluster/status").status_code == 200

    faults(rules=[], latency=0.4)
    started = time.monotonic()
    api.call("GET", "/version")
    assert time.monotonic() - started >= 0.4


def test_a_held_lock_blocks_changes(api, faults, guests):
    vmid, upid = create_vm(api, guests, name="t-held", scsi0="local-lvm:1")
    api.wait(upid)
    api.control("POST", "/_sim/lock", {"vmid": vmid, "lock": "backup"})
    assert api.data("GET", f"/nodes/pve/qemu/{vmid}/config")["lock"] == "backup"
    for method, path in (("PUT", f"/nodes/pve/qemu/{vmid}/config"), ("POST", f"/nodes/pve/qemu/{vmid}/status/start")):
        answer = api.call(method, path, **({"description": "x"} if method == "PUT" else {}))
        assert answer.status_code == 500 and answer.reason == "VM is locked (backup)"
    # `qm unlock` is a config update deleting the lock, with skiplock.
    api.data("PUT", f"/nodes/pve/qemu/{vmid}/config", delete="lock", skiplock=1)
    assert "lock" not in api.data("GET", f"/nodes/pve/qemu/{vmid}/config")
    # The other kind of held lock: the config file lock itself, held by "another process".
    faults(lock_timeout=0.3)
    api.control("POST", "/_sim/flock", {"vmid": vmid, "seconds": 1.5})
    blocked = api.call("PUT", f"/nodes/pve/qemu/{vmid}/config", description="x")
    assert blocked.status_code == 500 and blocked.reason.endswith("got timeout")
    time.sleep(1.5)
    assert api.call("PUT", f"/nodes/pve/qemu/{vmid}/config", description="x").status_code == 200


# --- guests as the backend will use them ---------------------------------------------------------------------------

def test_vm_create_with_cloudinit_agent_and_addresses(api, guests):
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5 test@lab"
    vmid, upid = create_vm(api, guests, name="t-vm", cores=2, memory=2048, scsi0="local-lvm:8",
                           net0="virtio,bridge=vmbr0,rate=10", ide2="local-lvm:cloudinit", ciuser="ops",
                           cipassword="s3cret-pw", sshkeys=requests.utils.quote(key, safe=""),
                           ipconfig0="ip=dhcp,ip6=auto", agent=1)
    assert api.wait(upid)["exitstatus"] == "OK"
    config = api.data("GET", f"/nodes/pve/qemu/{vmid}/config")
    assert config["scsi0"] == f"local-lvm:vm-{vmid}-disk-0,size=8G"
    assert re.fullmatch(r"virtio=BC:24:11:[0-9A-F:]{8},bridge=vmbr0,rate=10", config["net0"])
    assert config["ide2"] == f"local-lvm:vm-{vmid}-cloudinit,media=cdrom"
    assert config["cipassword"] == "**********", "PVE never returns the cloud-init password"
    assert config["memory"] == "2048" and config["cores"] == 2
    agent_path = f"/nodes/pve/qemu/{vmid}/agent/network-get-interfaces"
    assert api.call("GET", agent_path).reason == f"VM {vmid} is not running"
    api.wait(api.data("POST", f"/nodes/pve/qemu/{vmid}/status/start"))
    current = api.data("GET", f"/nodes/pve/qemu/{vmid}/status/current")
    assert current["status"] == "running" and current["name"] == "t-vm" and current["cpus"] == 2
    assert current["maxmem"] == 2048 * 1024 ** 2 and current["maxdisk"] == 8 * 1024 ** 3 and current["agent"] == 1
    interfaces = api.data("GET", agent_path)["result"]
    eth0 = next(i for i in interfaces if i["name"] == "eth0")
    addresses = {a["ip-address-type"]: a for a in eth0["ip-addresses"]}
    assert re.fullmatch(r"10\.163\.[0-3]\.\d+", addresses["ipv4"]["ip-address"]) and addresses["ipv4"]["prefix"] == 22
    assert addresses["ipv6"]["ip-address"].startswith("fd42:4c58:163::")
    assert eth0["hardware-address"] == config["net0"].split(",")[0].split("=")[1].lower()
    assert api.data("GET", agent_path)["result"] == interfaces, "addresses are stable per guest"
    # cloud-init applied at boot: user, password hash and key inside the VM, read through the agent.
    pid = api.data("POST", f"/nodes/pve/qemu/{vmid}/agent/exec", command=["sh", "-c", "getent shadow ops; cat"],
                   **{"input-data": "from stdin"})["pid"]
    result = api.data("GET", f"/nodes/pve/qemu/{vmid}/agent/exec-status", pid=pid)
    assert result["exited"] == 1 and result["exitcode"] == 0
    shadow_hash = result["out-data"].split(":")[1]
    assert crypt.crypt("s3cret-pw", shadow_hash) == shadow_hash and result["out-data"].endswith("from stdin")
    pid = api.data("POST", f"/nodes/pve/qemu/{vmid}/agent/exec", command=["cat", "/home/ops/.ssh/authorized_keys"])["pid"]
    assert api.data("GET", f"/nodes/pve/qemu/{vmid}/agent/exec-status", pid=pid)["out-data"] == key + "\n"
    pid = api.data("POST", f"/nodes/pve/qemu/{vmid}/agent/exec", command=["nosuchprogram", "--flag"])["pid"]
    missing = api.data("GET", f"/nodes/pve/qemu/{vmid}/agent/exec-status", pid=pid)
    assert missing["exitcode"] == 127 and "not found" in missing["err-data"]
    api.data("POST", f"/nodes/pve/qemu/{vmid}/agent/set-user-password", username="ops", password="n3w-pw")
    pid = api.data("POST", f"/nodes/pve/qemu/{vmid}/agent/exec", command=["getent", "shadow", "ops"])["pid"]
    new_hash = api.data("GET", f"/nodes/pve/qemu/{vmid}/agent/exec-status", pid=pid)["out-data"].split(":")[1]
    assert new_hash.startswith("$6$") and crypt.crypt("n3w-pw", new_hash) == new_hash
    # Resize grows; shrinking fails in the task, as on PVE.
    assert api.wait(api.data("PUT", f"/nodes/pve/qemu/{vmid}/resize", disk="scsi0", size="+2G"))["exitstatus"] == "OK"
    assert api.data("GET", f"/nodes/pve/qemu/{vmid}/config")["scsi0"].endswith("size=10G")
    assert "shrinking" in api.wait(api.data("PUT", f"/nodes/pve/qemu/{vmid}/resize", disk="scsi0", size="4G"))["exitstatus"]
    running = api.call("DELETE", f"/nodes/pve/qemu/{vmid}")
    assert running.status_code == 500 and running.reason == f"VM {vmid} is running - destroy failed"


def test_clone_from_the_seeded_template(api, guests):
    template = api.data("GET", "/nodes/pve/qemu/9000/config")
    assert template["template"] == 1 and template["name"] == "debian12-cloud"
    linked_id = next_vmid(api)
    upid = api.data("POST", "/nodes/pve/qemu/9000/clone", newid=linked_id, name="t-linked")
    guests.append(linked_id)
    assert api.wait(upid)["exitstatus"] == "OK"
    linked = api.data("GET", f"/nodes/pve/qemu/{linked_id}/config")
    assert linked["scsi0"].startswith(f"local-lvm:base-9000-disk-0/vm-{linked_id}-disk-0")
    assert linked["net0"] != template["net0"] and "template" not in linked
    full_id = next_vmid(api)
    upid = api.data("POST", "/nodes/pve/qemu/9000/clone", newid=full_id, name="t-full", full=1)
    guests.append(full_id)
    assert api.wait(upid)["exitstatus"] == "OK"
    assert api.data("GET", f"/nodes/pve/qemu/{full_id}/config")["scsi0"] == f"local-lvm:vm-{full_id}-disk-0,size=2G"
    taken = api.call("POST", "/nodes/pve/qemu/9000/clone", newid=full_id, name="t-again")
    assert taken.status_code == 500 and "already exists" in taken.reason


def test_container_with_password_keys_and_interfaces(api, guests, node):
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5 ct@lab"
    vmid, upid = create_ct(api, guests, hostname="t-ct", cores=1, memory=512, swap=256, rootfs="local-lvm:8",
                           net0="name=eth0,bridge=vmbr0,ip=dhcp,ip6=auto,rate=5", password="ct-pass-1",
                           **{"ssh-public-keys": key}, unprivileged=1)
    assert api.wait(upid)["exitstatus"] == "OK"
    config = api.data("GET", f"/nodes/pve/lxc/{vmid}/config")
    assert config["rootfs"] == f"local-lvm:vm-{vmid}-disk-0,size=8G" and config["unprivileged"] == 1
    assert re.fullmatch(r"name=eth0,bridge=vmbr0,hwaddr=BC:24:11:[0-9A-F:]{8},ip=dhcp,ip6=auto,rate=5,type=veth",
                        config["net0"])
    assert "password" not in config
    api.wait(api.data("POST", f"/nodes/pve/lxc/{vmid}/status/start"))
    current = api.data("GET", f"/nodes/pve/lxc/{vmid}/status/current")
    assert current["status"] == "running" and current["maxswap"] == 256 * 1024 ** 2
    eth0 = next(i for i in api.data("GET", f"/nodes/pve/lxc/{vmid}/interfaces") if i["name"] == "eth0")
    assert re.fullmatch(r"10\.163\.[0-3]\.\d+/22", eth0["inet"]) and eth0["inet6"].startswith("fd42:4c58:163::")
    client = ssh_client(node)
    try:
        code, out, err = ssh_run(client, f"pct exec {vmid} -- getent shadow root")
        shadow_hash = out.split(":")[1]
        assert code == 0 and crypt.crypt("ct-pass-1", shadow_hash) == shadow_hash
        assert ssh_run(client, f"pct exec {vmid} -- cat /root/.ssh/authorized_keys")[1] == key + "\n"
        code, out, err = ssh_run(client, f"pct exec {vmid} -- chpasswd", stdin="root:ct-pass-2\n")
        assert code == 0, err
        shadow_hash = ssh_run(client, f"pct exec {vmid} -- getent shadow root")[1].split(":")[1]
        assert crypt.crypt("ct-pass-2", shadow_hash) == shadow_hash
    finally:
        client.close()


def test_download_url_fetches_and_verifies_checksums(api, guests, tmp_path):
    payload = b"pvesim download test " + os.urandom(64)
    (tmp_path / "served.iso").write_bytes(payload)

    def handler(*args, **kwargs):
        return http.server.SimpleHTTPRequestHandler(*args, directory=str(tmp_path), **kwargs)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/served.iso"
    name = f"t-dl-{os.getpid()}.iso"
    try:
        good = api.data("POST", "/nodes/pve/storage/local/download-url", url=url, filename=name, content="iso",
                        checksum=hashlib.sha256(payload).hexdigest(), **{"checksum-algorithm": "sha256"})
        assert api.wait(good)["exitstatus"] == "OK"
        listed = {v["volid"]: v for v in api.data("GET", "/nodes/pve/storage/local/content", content="iso")}
        assert listed[f"local:iso/{name}"]["size"] == len(payload)
        bad_name = f"t-dl-bad-{os.getpid()}.iso"
        bad = api.data("POST", "/nodes/pve/storage/local/download-url", url=url, filename=bad_name, content="iso",
                       checksum="0" * 64, **{"checksum-algorithm": "sha256"})
        assert api.wait(bad)["exitstatus"].startswith("checksum mismatch")
        assert f"local:iso/{bad_name}" not in {v["volid"] for v in api.data("GET", "/nodes/pve/storage/local/content")}
        assert not list((PVESIM_DIR / "storage" / "local" / "template" / "iso").glob(f"*{bad_name}*")), "no file left"
        remote = api.data("POST", "/nodes/pve/storage/local/download-url", url="http://192.0.2.1/x.iso",
                          filename="x.iso", content="iso")
        assert "loopback" in api.wait(remote)["exitstatus"]
        # upload, multipart as PVE takes it (proxmoxer's way)
        uploaded = api.call("POST", "/nodes/pve/storage/local/upload", content="iso",
                            files={"filename": (f"t-up-{os.getpid()}.iso", payload, "application/octet-stream")})
        assert uploaded.status_code == 200 and api.wait(uploaded.json()["data"])["exitstatus"] == "OK"
        assert f"local:iso/t-up-{os.getpid()}.iso" in {v["volid"] for v in api.data("GET", "/nodes/pve/storage/local/content")}
    finally:
        server.shutdown()
        for volume in (name, f"t-up-{os.getpid()}.iso"):
            answer = api.call("DELETE", f"/nodes/pve/storage/local/content/iso%2F{volume}")
            if answer.status_code == 200:
                api.wait(answer.json()["data"])


# --- the SSH endpoint ---------------------------------------------------------------------------------------------------

def test_ssh_endpoint_commands(api, node, guests):
    vmid, upid = create_ct(api, guests, hostname="t-ssh")
    api.wait(upid)
    client = ssh_client(node)
    try:
        assert ssh_run(client, "pveversion") == (0, "pve-manager/8.4.1/2a5fa54a8503f96d (running kernel: 6.8.12-9-pve)\n", "")
        code, out, err = ssh_run(client, "pvesh get /version --output-format json")
        assert code == 0 and json.loads(out)["release"] == "8.4"
        code, out, err = ssh_run(client, f"pvesh get /nodes/pve/lxc/{vmid}/config --output-format json")
        assert json.loads(out)["hostname"] == "t-ssh"
        assert f"{vmid:<10} stopped" in ssh_run(client, "pct list")[1]
        code, out, err = ssh_run(client, f"pct start {vmid}")
        assert code == 0, err
        assert ssh_run(client, f"pct status {vmid}")[1] == "status: running\n"
        code, out, err = ssh_run(client, f"pct exec {vmid} -- sh -c 'echo hi; cat'", stdin="through stdin\n")
        assert (code, out, err) == (0, "hi\nthrough stdin\n", "")
        assert ssh_run(client, f"pct exec {vmid} -- echo no-stdin-needed", stdin=None)[1] == "no-stdin-needed\n"
        code, out, err = ssh_run(client, f"pct exec {vmid} -- python3 -c 1")
        assert code == 127 and "not found" in err, "unknown commands never run on the host"
        code, out, err = ssh_run(client, f"pvesh set /nodes/pve/lxc/{vmid}/config --description from-pvesh")
        assert code == 0 and api.data("GET", f"/nodes/pve/lxc/{vmid}/config")["description"] == "from-pvesh"
        code, out, err = ssh_run(client, f"pvesh create /nodes/pve/lxc/{vmid}/status/stop --output-format json")
        assert code == 0 and json.loads(out.splitlines()[-1]).startswith("UPID:pve:"), (out, err)
        code, out, err = ssh_run(client, "pvesh get /nodes/pve/qemu/999999/config")
        assert code == 255 and "does not exist" in err
        code, out, err = ssh_run(client, "pvesm status")
        assert code == 0 and "local-lvm" in out
        assert "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst" in ssh_run(client, "pvesm list local")[1]
        assert ssh_run(client, "systemctl is-active pveproxy") == (0, "active\n", "")
        assert ssh_run(client, "systemctl is-active sshd")[0] == 3
        code, out, err = ssh_run(client, "qm config 9000")
        assert code == 0 and "name: debian12-cloud" in out
        code, out, err = ssh_run(client, "qm guest exec 9000 -- true")
        assert code == 255 and "not running" in err
    finally:
        client.close()
    # The session wrapper records every command line that reached the node.
    logged = [json.loads(line)["command"] for line in (PVESIM_DIR / "ssh" / "commands.log").read_text().splitlines()]
    assert "pveversion" in logged


def test_qm_guest_exec_over_ssh(api, node, guests):
    vmid, upid = create_vm(api, guests, name="t-qga", scsi0="local-lvm:1", agent=1, net0="virtio,bridge=vmbr0")
    api.wait(upid)
    client = ssh_client(node)
    try:
        assert ssh_run(client, f"qm start {vmid}")[0] == 0
        code, out, err = ssh_run(client, f"qm guest exec {vmid} --pass-stdin 1 -- sh -c 'echo out; cat; echo err >&2; exit 3'",
                                 stdin="piped")
        assert code == 0, err
        result = json.loads(out)
        assert result == {"exitcode": 3, "exited": 1, "out-data": "out\npiped", "err-data": "err\n"}
        code, out, err = ssh_run(client, f"qm guest cmd {vmid} network-get-interfaces")
        assert code == 0 and any(i["name"] == "eth0" for i in json.loads(out))
        assert ssh_run(client, f"qm stop {vmid}")[0] == 0
        assert ssh_run(client, f"qm status {vmid}")[1] == "status: stopped\n"
    finally:
        client.close()


# --- a private simulator: restart, services ----------------------------------------------------------------------------

def test_state_survives_a_restart_even_after_kill_9(private_sim):
    api = private_sim.start()
    vmid = int(api.data("GET", "/cluster/nextid"))
    api.wait(api.data("POST", "/nodes/pve/lxc", vmid=vmid, hostname="t-persist", rootfs="local-lvm:2",
                      ostemplate="local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
                      net0="name=eth0,bridge=vmbr0,ip=dhcp"))
    api.wait(api.data("POST", f"/nodes/pve/lxc/{vmid}/status/start"))
    assert private_sim.tool("pct", "exec", str(vmid), "--", "sh", "-c", "echo kept > /root/note").returncode == 0
    api.control("PUT", "/_sim/faults", {"task_delay": 30})
    interrupted = api.data("POST", "/nodes/pve/qemu", vmid=vmid + 1, name="t-interrupted")
    private_sim.kill(signal.SIGKILL)

    api = private_sim.start()       # same state folder: same secrets, same token
    config = api.data("GET", f"/nodes/pve/lxc/{vmid}/config")
    assert config["hostname"] == "t-persist" and config["rootfs"] == f"local-lvm:vm-{vmid}-disk-0,size=2G"
    assert api.data("GET", f"/nodes/pve/lxc/{vmid}/status/current")["status"] == "running"
    assert private_sim.tool("pct", "exec", str(vmid), "--", "cat", "/root/note").stdout == "kept\n"
    # The task that died with the process reads as PVE shows such tasks; its guest keeps the create lock.
    assert api.data("GET", f"/nodes/pve/tasks/{interrupted}/status")["exitstatus"] == "unexpected status"
    assert api.data("GET", f"/nodes/pve/qemu/{vmid + 1}/config")["lock"] == "create"
    assert api.control("GET", "/_sim/faults")["task_delay"] != 30, "faults live in memory only"


def test_stopping_pveproxy_closes_https_but_not_the_node_tools(private_sim):
    api = private_sim.running()
    stopped = private_sim.tool("systemctl", "stop", "pveproxy")
    assert stopped.returncode == 0, stopped.stderr
    try:
        with pytest.raises(requests.ConnectionError):
            api.call("GET", "/version", timeout=5)
        assert private_sim.tool("systemctl", "is-active", "pveproxy").stdout == "inactive\n"
        assert json.loads(private_sim.tool("pvesh", "get", "/version", "--output-format", "json").stdout)["version"] == "8.4.1"
    finally:
        assert private_sim.tool("systemctl", "start", "pveproxy").returncode == 0
    assert api.call("GET", "/version").status_code == 200
    unknown = private_sim.tool("systemctl", "status", "nginx")
    assert unknown.returncode == 4 and "could not be found" in unknown.stderr


def test_reset_brings_back_the_seed(private_sim):
    api = private_sim.running()
    vmid = int(api.data("GET", "/cluster/nextid"))
    api.wait(api.data("POST", "/nodes/pve/qemu", vmid=vmid, name="t-wiped", scsi0="local-lvm:1"))
    api.control("PUT", "/_sim/faults", {"latency": 0.2})
    api.control("POST", "/_sim/reset")
    assert api.call("GET", f"/nodes/pve/qemu/{vmid}/config").status_code == 500
    assert [g["vmid"] for g in api.data("GET", "/nodes/pve/qemu")] == [9000]
    assert api.control("GET", "/_sim/faults")["latency"] == 0.0
    volids = {v["volid"] for v in api.data("GET", "/nodes/pve/storage/local/content")}
    assert "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst" in volids
    assert any(v.startswith("local:iso/") for v in volids)


def test_lab_ensure_leaves_a_running_simulator_alone(node):
    """`make lab` again while all is up: nothing restarted, the same node description."""
    sys.path.insert(0, str(ROOT / "lab"))
    import lab as kit
    import pvesim_lab
    pids = {name: (LAB_DIR / "pids" / f"{name}.pid").read_text() for name in ("pvesim", "pvesim-sshd")
            if (LAB_DIR / "pids" / f"{name}.pid").exists()}
    before = (PVESIM_DIR / "node.json").read_text()
    pvesim_lab.ensure(kit)
    assert (PVESIM_DIR / "node.json").read_text() == before
    assert {name: (LAB_DIR / "pids" / f"{name}.pid").read_text() for name in pids} == pids
    assert json.loads(before) == node


# --- the guest shell (no simulator needed) ------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, stdin, expected", [
    (["sh", "-c", "echo hi; cat"], "in\n", (0, "hi\nin\n", "")),
    (["sh", "-c", "mkdir -p /root/.ssh && cat >> /root/.ssh/authorized_keys && cat /root/.ssh/authorized_keys"],
     "k1\n", (0, "k1\n", "")),
    (["sh", "-c", "test -e /nope || echo missing; test -f /etc/passwd && echo file"], "", (0, "missing\nfile\n", "")),
    (["sh", "-c", "X=1; echo $X $HOME; false; echo $?"], "", (0, "1 /root\n1\n", "")),
    (["sh", "-c", "echo a | grep -q a && echo found"], "", (0, "found\n", "")),
    (["sh", "-c", "touch /tmp/f; ls /tmp"], "", (0, "f\n", "")),
    (["sh", "-c", "exit 7"], "", (7, "", "")),
    (["bash", "-c", "echo $(id)"], "", (2, "", "sh: command substitution is not supported by the simulator\n")),
    (["apt-get", "install", "x"], "", (127, "", "sh: 1: apt-get: not found\n")),
])
def test_guest_shell_runs_only_its_own_commands(argv, stdin, expected):
    fs = guestos.base_filesystem("t")
    assert guestos.run(fs, "t", argv, stdin) == expected


def test_guest_chpasswd_writes_sha512_crypt():
    fs = guestos.base_filesystem("t")
    assert guestos.run(fs, "t", ["chpasswd"], "root:pw-1\n") == (0, "", "")
    entry = guestos.run(fs, "t", ["getent", "shadow", "root"])[1]
    hashed = entry.split(":")[1]
    assert hashed.startswith("$6$") and crypt.crypt("pw-1", hashed) == hashed
    code, out, err = guestos.run(fs, "t", ["chpasswd"], "nobody-here:pw\n")
    assert code == 1 and "does not exist" in err
    assert set(guestos.COMMANDS) >= {"echo", "cat", "true", "false", "test", "touch", "sh", "chpasswd", "getent", "mkdir"}
