"""The example playbooks of playbooks/ run in sequence against the lab, as an ops team would copy them:
provision -> rotate_passwords -> expose -> health -> teardown, each checked by its real effect on the daemons.

The fleet is the one of playbooks/vars/fleet.yml with `fleet_prefix=ex`, so every instance is named `ex-*`.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, VENV_BIN, _collections_path, lab_nodes
from portmap_lab import purge, snapshot, tagged_lines

PREFIX = "ex"
INSTANCES = {"ex-web-docker": "docker", "ex-web-lxd": "lxd", "ex-web-incus": "incus", "ex-app-docker": "docker"}
CLI = {"docker": "docker", "lxd": "lxc", "incus": "incus"}

# Runs inside the container: does the password on stdin match root's hash in /etc/shadow?
CHECK_SHADOW = """
import crypt, sys
password = sys.stdin.read().rstrip("\\n")
hashed = next(line.split(":")[1] for line in open("/etc/shadow") if line.startswith("root:"))
print("match" if crypt.crypt(password, hashed) == hashed else "mismatch")
"""


def playbook(name, output_dir):
    """Run playbooks/<name>.yml as a user would, with the collection found through a collections path."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(_collections_path()), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOCALHOST_WARNING="False",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="False", ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    started = time.monotonic()
    completed = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(ROOT / "playbooks" / f"{name}.yml"),
         "-e", f"fleet_prefix={PREFIX}", "-e", f"fleet_output_dir={output_dir}"],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    print(f"{name}.yml: {time.monotonic() - started:.1f}s")
    assert completed.returncode == 0, f"{name}.yml failed:\n{completed.stdout[-5000:]}\n{completed.stderr[-2000:]}"
    return completed.stdout


def changed_count(output):
    recap = [line for line in output.splitlines() if line.startswith("localhost") and "changed=" in line]
    return int(recap[-1].split("changed=")[1].split()[0])


def instance_status(name, backend):
    """The instance's state as the daemon's own CLI reports it; None when it does not exist."""
    if backend == "docker":
        result = subprocess.run(["docker", "inspect", "--format", "{{.State.Status}}", name],
                                capture_output=True, text=True, check=False)
        return result.stdout.strip() if result.returncode == 0 else None
    result = subprocess.run([CLI[backend], "list", f"^{name}$", "--format", "json"], capture_output=True, text=True,
                            check=True)
    found = json.loads(result.stdout)
    return found[0]["status"].lower() if found else None


def remove_everything():
    """Last resort: whatever a failed run left behind, by exact name and owner tag."""
    for name, backend in INSTANCES.items():
        if backend == "docker":
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        else:
            subprocess.run([CLI[backend], "delete", "--force", name], capture_output=True, check=False)
    for name, backend in INSTANCES.items():
        purge(f"ocv:{backend}:{name}:")


@pytest.fixture
def fleet(tmp_path):
    lab_nodes()  # fails loudly when the lab is not up
    leftovers = [name for name, backend in INSTANCES.items() if instance_status(name, backend)]
    if leftovers:
        remove_everything()
    yield tmp_path / "fleet"
    remove_everything()


def test_example_playbooks_in_sequence(fleet):
    # -- provision: every instance exists and runs, Docker publishes the web port; a second run changes nothing
    first = playbook("provision", fleet)
    assert changed_count(first) == 1
    for name, backend in INSTANCES.items():
        assert instance_status(name, backend) == "running", name
    published = subprocess.run(["docker", "port", "ex-web-docker", "8080/tcp"], capture_output=True, text=True,
                               check=True).stdout
    assert "0.0.0.0:" in published, published
    assert changed_count(playbook("provision", fleet)) == 0

    # -- rotate: a new password, kept 0600 on the controller, is root's password inside the container
    output = playbook("rotate_passwords", fleet)
    secret_file = fleet / "passwords" / "ex-app-docker.root"
    assert oct(secret_file.stat().st_mode & 0o777) == "0o600"
    password = secret_file.read_text().strip()
    assert len(password) == 32 and password not in output
    check = subprocess.run(["docker", "exec", "-i", "ex-app-docker", "python3", "-W", "ignore", "-c", CHECK_SHADOW],
                           input=password + "\n", capture_output=True, text=True, check=True)
    assert check.stdout.strip() == "match", check.stdout + check.stderr

    # -- expose: a client outside the node reaches each service through its mapped host port
    playbook("expose", fleet)
    exposed = json.loads((fleet / "exposed.json").read_text())
    assert {(mapping["instance"], mapping["method"]) for mapping in exposed} == {
        ("ex-web-docker", "nftables"), ("ex-web-lxd", "proxy_device")}
    for mapping in exposed:
        answer = exchange_http(mapping["listen_address"], mapping["host_port"])
        assert answer == f"hello from {mapping['instance']}", (mapping, answer)
    assert changed_count(playbook("expose", fleet)) == 0, "a second expose keeps the same ports"

    # -- health: the report of the fleet's nodes exists, every node healthy
    playbook("health", fleet)
    report = json.loads((fleet / "health" / "health-report.json").read_text())
    assert {node["name"]: node["status"] for node in report["nodes"]} == {
        "docker": "healthy", "lxd": "healthy", "incus": "healthy"}
    for suffix in ("md", "html"):
        assert (fleet / "health" / f"health-report.{suffix}").stat().st_size > 0

    # -- teardown: no instance, no rule, no proxy device left; a second run has nothing to do
    playbook("teardown", fleet)
    for name, backend in INSTANCES.items():
        assert instance_status(name, backend) is None, name
    firewall = snapshot()
    for name, backend in INSTANCES.items():
        assert tagged_lines(firewall, f"ocv:{backend}:{name}:") == [], name
    assert changed_count(playbook("teardown", fleet)) == 0


HTTP_GET = """
import socket, sys
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
sock.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
data = b""
while chunk := sock.recv(4096):
    data += chunk
print(data.split(b"\\r\\n\\r\\n", 1)[-1].decode().strip())
"""


def exchange_http(host, port, seconds=15):
    """The page served at host:port, fetched from the lab's client network namespace (outside the node)."""
    deadline = time.monotonic() + seconds
    while True:
        result = subprocess.run(["ip", "netns", "exec", "ocv-client", sys.executable, "-c", HTTP_GET, host, str(port)],
                                capture_output=True, text=True, timeout=30, check=False)
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip()
        if time.monotonic() > deadline:
            return f"no answer: {result.stderr.strip()[-300:]}"
        time.sleep(0.3)
