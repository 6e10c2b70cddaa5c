"""virt_node_info and the health role against the lab's real daemons, molecule, and the HTML report in Chromium.

A stopped daemon is a throwaway dockerd of the test's own (started and stopped by its PID), reached through a
throwaway sshd of the test's own whose sessions point the docker CLI at it: the lab's daemons stay untouched.
"""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import (COLLECTIONS, LAB_DIR, ROOT, VENV_BIN, _collections_path, free_port, node_with, run_module,
                      run_playbook)

OUTPUT = ROOT / "tests" / "output" / "health"
MIB = 1024 * 1024
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]



def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return True
    except OSError:
        return False


def wait_for(predicate, what, timeout=30):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come up within {timeout}s")
        time.sleep(0.1)


def node_info(node, **options):
    result = run_module("virt_node_info", dict(options, node=node))
    assert "Traceback" not in result["_stderr"], result["_stderr"]
    assert result.get("failed") is not True, result
    return result


def checks_of(result):
    return result["health"]["checks"]


def real_versions(nodes):
    """Each lab daemon's version as the daemon itself reports it, read without the collection."""
    versions = {
        "docker": subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                                 text=True, check=True).stdout.strip(),
        "lxd": json.loads(subprocess.run(["lxc", "query", "/1.0"], capture_output=True, text=True,
                                         check=True).stdout)["environment"]["server_version"],
        "incus": json.loads(subprocess.run(["incus", "query", "/1.0"], capture_output=True, text=True,
                                           check=True).stdout)["environment"]["server_version"],
    }
    api = nodes["proxmox"]["api"]
    request = urllib.request.Request(api["url"] + "/api2/json/version",
                                     headers={"Authorization": f"PVEAPIToken={api['token_id']}={api['token_secret']}"})
    with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=api["ca_file"]), timeout=10) as answer:
        versions["proxmox"] = json.load(answer)["data"]["version"]
    return versions


def host_memory_mib():
    values = dict(re.findall(r"^(\w+):\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE))
    return int(values["MemTotal"]) // 1024


# -- the verdict and the parsers, without a node -----------------------------------------------------------------
def health_module():
    _collections_path()
    if str(COLLECTIONS) not in sys.path:
        sys.path.insert(0, str(COLLECTIONS))
    from ansible_collections.oneclickvirt.virt.plugins.module_utils import health
    return health


def test_verdict_counts_only_enabled_checks():
    health = health_module()
    from ansible_collections.oneclickvirt.virt.plugins.module_utils.models import CheckResult

    def checks(*outcomes):
        return [CheckResult(name=str(index), enabled=outcome is not None, success=outcome)
                for index, outcome in enumerate(outcomes)]

    assert health.verdict(checks(True, True, None)) == "healthy"
    assert health.verdict(checks(True, False, None)) == "partial"
    assert health.verdict(checks(False, False, None)) == "unhealthy"
    assert health.verdict(checks(None, None)) == "unknown"
    assert health.verdict([]) == "unknown"


def test_failures_are_classified_and_never_raised():
    health = health_module()
    from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import BackendError, TransportError

    assert health.classify(BackendError("refused", status=401)) == "authentication"
    assert health.classify(TransportError("SSH to root@h:22 failed: Authentication failed.")) == "authentication"
    assert health.classify(TransportError("SSH: the host key of h:22 changed (ssh-ed25519)")) == "host_key"
    assert health.classify(TransportError("GET /1.0: timed out")) == "timeout"
    assert health.classify(TransportError("TLS handshake with https://h failed")) == "tls"
    assert health.classify(TransportError("cannot connect to unix:///x.sock: [Errno 2]")) == "connection"
    assert health.classify(BackendError("docker GET /info failed (500)", status=500)) == "backend"

    def broken():
        raise KeyError("version")

    check = health.run_check("api", broken)
    assert check.success is False and check.error_kind == "internal" and "KeyError" in check.error
    assert check.duration >= 0


def test_shell_outputs_are_parsed():
    health = health_module()
    df = ("Filesystem     1-blocks        Used   Available Capacity Mounted on\n"
          "/dev/vda   2147483648  1073741824  1048576000      51% /srv/my pools/default\n")
    assert health.parse_df(df) == (2048, 1000)
    meminfo = "MemTotal:       2097152 kB\nMemFree:  1024 kB\nMemAvailable:    1048576 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n"
    assert health.parse_meminfo(meminfo) == {"memory_total": 2048, "memory_available": 1024, "swap_total": 0,
                                             "swap_free": 0}
    with pytest.raises(ValueError):
        health.parse_df("df: /nowhere: No such file or directory\n")


# -- virt_node_info on the lab's real nodes ----------------------------------------------------------------------
def test_every_lab_node_is_healthy_with_real_versions_and_resources(nodes):
    assert {"docker", "lxd", "incus", "proxmox"} <= set(nodes), "the lab must have all four nodes"
    versions = real_versions(nodes)
    for name in ("docker", "lxd", "incus", "proxmox"):
        result = node_info(nodes[name])
        health = result["health"]
        assert health["status"] == "healthy", (name, health)
        assert health["failed_checks"] == []
        for check_name in ("ssh", "api", "service"):
            check = checks_of(result)[check_name]
            assert check["enabled"] and check["success"] and check["error"] is None, (name, check_name, check)
            assert 0 < check["duration"] < 60
        assert result["version"] == versions[name], name
        assert result["hostname"]
        resources = result["resources"]
        assert resources["cpu_cores"] >= 1 and resources["memory_total"] > 0
        assert 0 < resources["memory_available"] <= resources["memory_total"]
        assert 0 < resources["disk_free"] <= resources["disk_total"]
        assert resources["swap_total"] is not None and resources["swap_free"] is not None
        instances = result["instances"]
        assert set(instances) == {"running", "stopped", "paused", "error", "unknown", "total"}
        assert instances["total"] == sum(value for key, value in instances.items() if key != "total")
        assert result["facts_errors"] == [] and result["transport"] == "api"
        if name == "proxmox":
            # The simulated node reports its own resources through its API; guest disks live on local-lvm.
            assert result["instance_types"] == ["container", "vm"]
            assert set(resources["sources"].values()) == {"api"}
            assert resources["storage_pool"] == "local-lvm" and resources["memory_total"] == 65536
            assert checks_of(result)["service"]["details"]["services"] == {
                "pvedaemon": "active", "pveproxy": "active", "pvestatd": "active"}
        else:
            # This machine is the node: the figures are this machine's own.
            assert result["instance_types"] == ["container"]  # no qemu driver here, so no VMs
            assert resources["cpu_cores"] == len(os.sched_getaffinity(0))
            assert abs(resources["memory_total"] - host_memory_mib()) <= 1
            assert resources["disk_total"] == shutil.disk_usage(resources["disk_path"]).total // MIB
            assert resources["sources"]["disk_free"] == "ssh"
    docker = node_info(nodes["docker"])["resources"]
    assert docker["disk_path"] == "/var/lib/docker" and docker["storage_pool"] == "overlay2"
    lxd = node_info(nodes["lxd"])["resources"]
    assert lxd["storage_pool"] == "default" and lxd["disk_path"] == "/var/lib/lxd/storage-pools/default"


@pytest.mark.parametrize("backend", ["docker", "lxd", "incus", "proxmox"])
def test_api_only_and_ssh_only_agree(nodes, backend):
    over_api = node_info(node_with(nodes[backend], execution_rule="api_only"))
    over_ssh = node_info(node_with(nodes[backend], execution_rule="ssh_only"))
    assert over_api["health"]["status"] == over_ssh["health"]["status"] == "healthy"
    # Each rule enables only its own road; the service check goes over that road.
    assert checks_of(over_api)["ssh"]["enabled"] is False and checks_of(over_ssh)["api"]["enabled"] is False
    assert checks_of(over_api)["service"]["details"]["daemon"]["transport"] == "api"
    assert checks_of(over_ssh)["service"]["details"]["daemon"]["transport"] == "ssh"
    assert over_api["transport"] == "api" and over_ssh["transport"] == "ssh"
    for key in ("version", "instance_types"):
        assert over_api[key] == over_ssh[key], key
    assert over_api["resources"]["cpu_cores"] == over_ssh["resources"]["cpu_cores"]
    if backend == "docker":
        # Without the node's shell, what only the shell knows stays unknown, and says so nowhere as an error.
        assert over_api["resources"]["memory_available"] is None and over_api["resources"]["disk_free"] is None


def lab_docker0():
    return subprocess.run(["ip", "-br", "addr", "show", "docker0"], capture_output=True, text=True,
                          check=False).stdout.split()


def test_a_node_whose_daemon_stopped_reports_the_failing_checks(nodes):
    """A throwaway dockerd behind a throwaway sshd: healthy while it runs, partial once it is stopped.

    The throwaway daemon gets a bridge of its own: dockerd deletes `docker0` when started with `--bridge none`,
    and would take over the lab's `docker0` with the default settings.
    """
    docker0 = lab_docker0()
    assert docker0, "the lab's docker0 bridge is missing"
    bridge = f"ocvh{secrets.token_hex(3)}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", "10.254.77.1/24", "dev", bridge], check=True)
    base = Path(tempfile.mkdtemp(prefix="ocvh-", dir="/tmp"))  # short: containerd's socket path has a limit
    sock = base / "docker.sock"
    ssh_port = free_port()
    host_key = base / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    (base / "known_hosts").write_text(f"[127.0.0.1]:{ssh_port} {' '.join(Path(f'{host_key}.pub').read_text().split()[:2])}\n")
    (base / "sshd_config").write_text(
        f"Port {ssh_port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {base / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {LAB_DIR / 'ssh' / 'id_ed25519.pub'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        # The node's sessions reach the throwaway daemon, as a node whose only daemon it is would.
        f"SetEnv DOCKER_HOST=unix://{sock}\n")
    Path("/run/sshd").mkdir(exist_ok=True)
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(base / "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=open(base / "sshd.log", "w"))
    dockerd = subprocess.Popen(
        ["dockerd", "--host", f"unix://{sock}", "--data-root", str(base / "data"), "--exec-root", str(base / "exec"),
         "--pidfile", str(base / "docker.pid"), "--bridge", bridge, "--iptables=false", "--ip6tables=false",
         "--storage-driver", "vfs"],
        stdout=subprocess.DEVNULL, stderr=open(base / "dockerd.log", "w"), start_new_session=True)
    try:
        wait_for(sock.exists, "the throwaway dockerd")
        wait_for(lambda: port_open(ssh_port), "the throwaway sshd")
        node = node_with(nodes["docker"], name="docker-throwaway", api={"url": f"unix://{sock}"},
                         ssh={"port": ssh_port, "known_hosts_file": str(base / "known_hosts")})
        running = node_info(node)
        assert running["health"]["status"] == "healthy", running["health"]
        assert checks_of(running)["service"]["details"]["cli"]["output"] == running["version"]

        dockerd.send_signal(signal.SIGTERM)
        dockerd.wait(60)
        stopped = node_info(node)
        health = stopped["health"]
        assert health["status"] == "partial"
        assert health["failed_checks"] == ["api", "service"]
        api, service = checks_of(stopped)["api"], checks_of(stopped)["service"]
        assert api["error_kind"] == "connection" and str(sock) in api["error"], api
        assert service["error_kind"] == "connection"
        assert "Cannot connect to the Docker daemon" in service["error"], service
        assert service["details"]["daemon"]["answers"] is False
        assert checks_of(stopped)["ssh"]["success"] is True
        assert stopped["version"] is None
        assert any("did not answer" in line for line in stopped["facts_errors"])
        assert stopped["resources"]["memory_total"] > 0  # the node's shell still answers
    finally:
        for process in (dockerd, sshd):
            if process.poll() is None:
                process.terminate()
                process.wait(60)
        subprocess.run(["ip", "link", "del", bridge], check=False)
        shutil.rmtree(base, ignore_errors=True)
    assert lab_docker0() == docker0, "the lab's docker0 must be untouched"


def test_a_wrong_api_token_is_an_authentication_failure(nodes):
    wrong = f"wrong-{secrets.token_hex(8)}"
    node = node_with(nodes["proxmox"], api={"token_secret": wrong})
    result = node_info(node)
    api = checks_of(result)["api"]
    assert api["success"] is False and api["error_kind"] == "authentication"
    assert "authentication failed" in api["error"] and "401" in api["error"], api
    # The daemon answers (over SSH, after the refused API) and its services run: partial, not unhealthy.
    assert result["health"]["status"] == "partial" and result["health"]["failed_checks"] == ["api"]
    assert result["transport"] == "ssh" and "authentication failed" in result["fallback_reason"]
    assert result["version"] == node_info(nodes["proxmox"])["version"]
    assert wrong not in json.dumps(result)


@pytest.mark.parametrize("rule, status", [("ssh_only", "unhealthy"), ("auto", "partial")])
def test_an_unreachable_ssh_port_is_reported_without_a_traceback(nodes, rule, status):
    node = node_with(nodes["docker"], execution_rule=rule, ssh={"port": free_port(), "connect_timeout": 5})
    result = node_info(node)
    assert result["health"]["status"] == status
    ssh = checks_of(result)["ssh"]
    assert ssh["success"] is False and ssh["error_kind"] == "connection"
    assert "unable to connect" in ssh["error"].lower() or "refused" in ssh["error"].lower(), ssh
    if rule == "ssh_only":
        assert result["health"]["failed_checks"] == ["ssh", "service"]
        assert checks_of(result)["api"]["enabled"] is False
    else:
        assert result["health"]["failed_checks"] == ["ssh"]
        assert checks_of(result)["service"]["details"]["cli"]["checked"] is False


@pytest.mark.parametrize("backend", ["lxd", "incus"])
def test_a_closed_api_port_falls_back_and_is_partial(nodes, backend):
    node = node_with(nodes[backend], api={"url": f"https://127.0.0.1:{free_port()}"})
    result = node_info(node)
    assert result["health"]["status"] == "partial" and result["health"]["failed_checks"] == ["api"]
    assert checks_of(result)["api"]["error_kind"] == "connection"
    assert result["transport"] == "ssh" and result["version"]
    assert result["instances"]["total"] >= 0 and result["resources"]["storage_pool"] == "default"


def test_thresholds_add_checks(nodes):
    result = node_info(nodes["docker"], min_free_memory="1TiB", min_free_disk_percent=0.001)
    memory, disk = checks_of(result)["memory"], checks_of(result)["disk"]
    assert memory["success"] is False and memory["error_kind"] == "threshold"
    assert "below the minimum 1048576 MiB" in memory["error"]
    assert disk["success"] is True and disk["details"]["free_percent"] > 0.001
    assert result["health"]["status"] == "partial" and result["health"]["failed_checks"] == ["memory"]
    # Over the API alone, Docker does not know free memory: the threshold cannot be checked, and says why.
    blind = node_info(node_with(nodes["docker"], execution_rule="api_only"), min_free_memory=1)
    assert checks_of(blind)["memory"]["error_kind"] == "unknown"


def test_bad_input_fails_before_anything_is_contacted(nodes):
    result = run_module("virt_node_info", {"node": {"name": "x", "type": "docker"}})
    assert result["failed"] is True and "neither node.api.url nor node.ssh.host" in result["msg"]
    result = run_module("virt_node_info", {"node": nodes["docker"], "min_free_disk_percent": 120})
    assert result["failed"] is True and "min_free_disk_percent" in result["msg"]
    result = run_module("virt_node_info", {"node": nodes["docker"], "min_free_memory": "12 parsecs"})
    assert result["failed"] is True and "min_free_memory" in result["msg"]


# -- the role --------------------------------------------------------------------------------------------------------
def role_play(report_dir, nodes_expression, **variables):
    lines = "".join(f"        {key}: {json.dumps(value)}\n" for key, value in variables.items())
    return f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: oneclickvirt.virt.health
      vars:
        virt_nodes: {nodes_expression}
        health_report_dir: {report_dir}
{lines}"""


def recap(output):
    match = re.search(r"localhost\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output)
    assert match, output
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, match.groups())))


def test_role_rewrites_the_report_only_when_its_content_changes(nodes, tmp_path):
    report = tmp_path / "report"
    nodes_json = json.dumps([nodes["docker"]])
    first = run_playbook(role_play(report, nodes_json), tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert recap(first.stdout)["changed"] > 0 and "report written" in first.stdout
    files = {path.name: path.stat().st_mtime_ns for path in report.iterdir()}
    assert sorted(files) == ["health-report.html", "health-report.json", "health-report.md"]
    written = json.loads((report / "health-report.json").read_text())

    second = run_playbook(role_play(report, nodes_json), tmp_path)
    assert second.returncode == 0 and recap(second.stdout)["changed"] == 0, second.stdout
    assert "report unchanged" in second.stdout
    assert {path.name: path.stat().st_mtime_ns for path in report.iterdir()} == files

    # New content (a threshold, so a new check) rewrites every file; so does a missing file.
    third = run_playbook(role_play(report, nodes_json, health_min_free_disk_percent=1), tmp_path)
    assert third.returncode == 0 and recap(third.stdout)["changed"] == 1 and "report written" in third.stdout
    rewritten = json.loads((report / "health-report.json").read_text())
    assert rewritten["digest"] != written["digest"] and "disk" in rewritten["nodes"][0]["checks"]
    (report / "health-report.md").unlink()
    fourth = run_playbook(role_play(report, nodes_json, health_min_free_disk_percent=1), tmp_path)
    assert recap(fourth.stdout)["changed"] == 1 and (report / "health-report.md").exists()


def test_role_fail_on(nodes, tmp_path):
    partial = node_with(nodes["docker"], name="docker-no-api", api={"url": "unix:///run/ocv-no-such-docker.sock"})
    nodes_json = json.dumps([partial])
    for fail_on, fails in (("partial", True), ("unhealthy", False), ("never", False)):
        run = run_playbook(role_play(tmp_path / fail_on, nodes_json, health_fail_on=fail_on), tmp_path)
        assert (run.returncode != 0) is fails, (fail_on, run.stdout)
        assert "docker-no-api: partial - api (connection)" in run.stdout
        if fails:
            assert "1 of 1 nodes are not healthy" in run.stdout
        # The report is written in every case, before the play fails.
        report = json.loads((tmp_path / fail_on / "health-report.json").read_text())
        assert report["nodes"][0]["status"] == "partial" and report["fail_on"] == fail_on


def test_role_argument_specs_validate_every_input(nodes, tmp_path):
    bad = run_playbook(role_play(tmp_path / "r", json.dumps([nodes["docker"]]), health_fail_on="sometimes"), tmp_path)
    assert bad.returncode != 0 and "health_fail_on" in bad.stdout and "sometimes" in bad.stdout
    bad = run_playbook(role_play(tmp_path / "r", json.dumps([{"name": "x"}])), tmp_path)
    assert bad.returncode != 0 and "type" in bad.stdout and "virt_nodes" in bad.stdout
    bad = run_playbook(role_play(tmp_path / "r", json.dumps([nodes["docker"]]), health_report_formats=["pdf"]),
                       tmp_path)
    assert bad.returncode != 0 and "health_report_formats" in bad.stdout
    assert not (tmp_path / "r").exists(), "nothing may run before the inputs are valid"


# -- molecule ------------------------------------------------------------------------------------------------------
def test_molecule_scenario(tmp_path):
    """`molecule test -s health` from extensions/: converge, idempotence, verify against the lab."""
    report_dir = OUTPUT / "molecule"
    shutil.rmtree(report_dir, ignore_errors=True)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(_collections_path()), OCV_HEALTH_REPORT_DIR=str(report_dir),
               PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", MOLECULE_REPORT="0", NO_COLOR="1",
               ANSIBLE_NOCOLOR="1")
    completed = subprocess.run([str(VENV_BIN / "molecule"), "test", "-s", "health"], cwd=ROOT / "extensions",
                               capture_output=True, text=True, env=env, timeout=1200, check=False)
    output = completed.stdout + completed.stderr
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "molecule.log").write_text(output)
    assert completed.returncode == 0, output[-6000:]
    for step in ("converge", "idempotence", "verify"):
        assert re.search(rf"health\W+{step}\W+Executed: Successful", output), (step, output[-3000:])
    assert sorted(path.name for path in report_dir.iterdir()) == [
        "health-report.html", "health-report.json", "health-report.md"]


# -- the HTML report in a real browser --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium, installed when missing (about 80 s on a fresh machine; nothing when present)."""
    path = shutil.which("chromium")
    if path is None:
        started = time.monotonic()
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], check=True,
                       capture_output=True, timeout=1800, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        print(f"chromium installed in {time.monotonic() - started:.0f}s")
        path = shutil.which("chromium")
    assert path, "chromium is not installed and apt-get could not install it"
    return path


class RowParser(HTMLParser):
    """Every node row of the rendered table: its classes, its data-node and the text of its name cell."""

    def __init__(self):
        super().__init__()
        self.rows, self.tags, self._cell = [], set(), None

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attributes = dict(attrs)
        if tag == "tr" and "node" in (attributes.get("class") or "").split():
            self.rows.append({"classes": attributes["class"].split(), "node": attributes.get("data-node"),
                              "name": "", "failures": 0})
        elif self.rows and tag == "td" and attributes.get("class") == "name":
            self._cell = self.rows[-1]
        elif self.rows and tag == "li" and self._cell is None:
            self.rows[-1]["failures"] += 1

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["name"] += data.strip()


def run_chromium(chromium, profile, *arguments):
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *arguments],
                          capture_output=True, text=True, timeout=120, check=False)


def test_html_report_renders_in_chromium(nodes, tmp_path, chromium):
    """Lab nodes and broken ones in one report; Chromium renders it; the DOM has every node and its status."""
    wrong_secret = f"wrong-{secrets.token_hex(8)}"
    broken = [
        node_with(nodes["docker"], name="docker-<no-ssh>", execution_rule="ssh_only", ssh={"port": free_port()}),
        node_with(nodes["proxmox"], name="pve-bad-token", api={"token_secret": wrong_secret}),
        {"name": "not-a-node", "type": "docker"},
    ]
    described = [nodes[name] for name in ("docker", "lxd", "incus", "proxmox")] + broken
    report_dir = OUTPUT / "browser"
    shutil.rmtree(report_dir, ignore_errors=True)
    run = run_playbook(role_play(report_dir, json.dumps(described), health_fail_on="never"), tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads((report_dir / "health-report.json").read_text())
    expected = {node["name"]: node["status"] for node in report["nodes"]}
    assert expected == {"docker": "healthy", "lxd": "healthy", "incus": "healthy", "proxmox": "healthy",
                        "docker-<no-ssh>": "unhealthy", "pve-bad-token": "partial", "not-a-node": "unknown"}

    page = (report_dir / "health-report.html").resolve()
    profile = tmp_path / "chromium-profile"
    dom = run_chromium(chromium, profile, "--dump-dom", page.as_uri())
    assert dom.returncode == 0 and "</html>" in dom.stdout, dom.stderr[-2000:]
    parser = RowParser()
    parser.feed(dom.stdout)
    seen = {row["node"]: row for row in parser.rows}
    assert list(seen) == list(expected), "one row per node, in order"
    for name, status in expected.items():
        assert seen[name]["name"] == name, "the name cell shows the name (escaped in the source)"
        assert f"status-{status}" in seen[name]["classes"], (name, seen[name])
        assert (seen[name]["failures"] > 0) is (status != "healthy"), (name, seen[name])
    assert "no-ssh" not in parser.tags, "a name is text, never markup"
    assert "authentication failed" in dom.stdout
    assert wrong_secret not in dom.stdout and wrong_secret not in json.dumps(report)

    screenshot = OUTPUT / "health-report.png"
    screenshot.unlink(missing_ok=True)
    shot = run_chromium(chromium, profile, "--hide-scrollbars", "--window-size=1600,1300",
                        f"--screenshot={screenshot}", page.as_uri())
    assert shot.returncode == 0 and screenshot.stat().st_size > 20000, shot.stderr[-2000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
