"""Secrets and trust: passwords, tokens and keys never show up in results, `-vvv` output, warnings, the argv
of any process on the node (the shims' argv.log and commands.log) or files left on the node; a wrong pinned
server certificate, an unknown SSH host key under `strict` and a changed one under `accept_new` are refused
before any write, counted where the daemon sees writes (`docker events`, `lxc monitor` / `incus monitor`).

Already proven elsewhere and run by `make reliability` as referenced scenarios (not repeated here):
tests/integration/test_docker_instance.py::test_password_is_set_and_never_leaks,
tests/integration/test_exec_password.py (given/generated passwords, action group, -vvv),
tests/integration/test_proxmox.py::test_password_is_set_and_never_leaks (pct over the simulator's sshd),
tests/integration/test_transports.py (host keys and pinned certificates at the transport level).
"""
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from rel_lab import (ARGV_LOG, COMMANDS_LOG, LAB_DIR, PVE_TEMPLATE, DockerEvents, LogTail, containers_named,
                     lxd_instances_with_prefix, node_with, nodes, rel_name, remove_containers, remove_lxd_instances,
                     run_module, run_playbook)

pytestmark = pytest.mark.reliability

# Places where a module run on this machine (the lab node is this machine) could leave a file behind.
NODE_FOLDERS = ["/tmp", "/var/tmp", "/root", "/run", "/etc/oneclickvirt", str(LAB_DIR / "ssh")]


def files_containing(secrets_list, since, skip):
    """Regular files changed since `since` that contain any of the secrets (skip: folders of the test's own,
    such as its playbook folder and its simulator's state, which holds the token by design)."""
    found = []
    for folder in NODE_FOLDERS:
        for dirpath, dirnames, filenames in os.walk(folder):
            if dirpath.startswith(tuple(skip)) or "/proc" in dirpath or "/.venv" in dirpath:
                dirnames[:] = []
                continue
            for filename in filenames:
                path = os.path.join(dirpath, filename)
                try:
                    info = os.lstat(path)
                    if not os.path.isfile(path) or os.path.islink(path) or info.st_mtime < since or \
                            info.st_size > 5_000_000:
                        continue
                    data = Path(path).read_bytes()
                except OSError:
                    continue
                if any(secret.encode() in data for secret in secrets_list):
                    found.append(path)
    return found


def test_secrets_stay_out_of_output_argv_and_files(tmp_path, own_sim, record_property):
    docker_name, lxd_name, pve_name = rel_name("sd"), rel_name("sl"), rel_name("sp")
    password = "rel-Pw'\"$(touch /tmp/rel-canary) `x` ;|&"
    lxd_password = "rel-lxd-" + os.urandom(6).hex()
    pve_password = "rel-pve-" + os.urandom(6).hex()
    key_text = (LAB_DIR / "ssh" / "id_ed25519").read_text()
    key_line = key_text.strip().splitlines()[1]
    docker = node_with(nodes()["docker"], execution_rule="ssh_only")
    docker["ssh"].pop("private_key_file")
    lxd = node_with(nodes()["lxd"], execution_rule="ssh_only")
    pve = own_sim.node()
    token_secret = pve["api"].pop("token_secret")   # from the environment, as AWX credentials supply it
    secrets_list = [password, lxd_password, token_secret, key_line]
    (tmp_path / "vars.yml").write_text(json.dumps({"docker_node": docker, "lxd_node": lxd, "pve_node": pve,
                                                   "pw": password, "lxd_pw": lxd_password, "pve_pw": pve_password,
                                                   "key": key_text}))
    docker["ssh"]["private_key"] = "{{ key }}"
    text = f"""
- hosts: localhost
  gather_facts: false
  vars_files: [vars.yml]
  tasks:
    - name: Docker over SSH, key given inline, with a password
      oneclickvirt.virt.virt_instance:
        node: "{{{{ docker_node | combine({{'ssh': docker_node.ssh | combine({{'private_key': key}})}}) }}}}"
        name: {docker_name}
        image: ocv-debian
        password: "{{{{ pw }}}}"
      register: docker_made
    - name: LXD container over SSH
      oneclickvirt.virt.virt_instance:
        node: "{{{{ lxd_node }}}}"
        name: {lxd_name}
        image: ocv-debian
      register: lxd_made
    - name: Its root password over SSH
      oneclickvirt.virt.virt_instance_password:
        node: "{{{{ lxd_node }}}}"
        name: {lxd_name}
        password: "{{{{ lxd_pw }}}}"
      register: lxd_password
    - name: Proxmox over the API, token secret from the environment (a password needs SSH to the node)
      oneclickvirt.virt.virt_instance:
        node: "{{{{ pve_node }}}}"
        name: {pve_name}
        image: {PVE_TEMPLATE}
      register: pve_made
    - name: Show every result
      ansible.builtin.debug:
        var: item
      loop: ["{{{{ docker_made }}}}", "{{{{ lxd_made }}}}", "{{{{ lxd_password }}}}", "{{{{ pve_made }}}}"]
"""
    logs = [LogTail(ARGV_LOG).start(), LogTail(COMMANDS_LOG).start(), own_sim.log()]
    since = time.time() - 1
    canary = Path("/tmp/rel-canary")
    canary.unlink(missing_ok=True)
    try:
        completed = run_playbook(text, tmp_path, extra_args=["-vvv"],
                                 env={"ONECLICKVIRT_API_TOKEN_SECRET": token_secret})
        output = completed.stdout + completed.stderr
        assert completed.returncode == 0, output[-4000:]
        assert "ok: [localhost]" in output and "changed: [localhost]" in output
        leaks = {secret[:12] + "...": where for secret in secrets_list
                 for where, text_ in [("output", output)] + [(str(log.path), log.text()) for log in logs]
                 if secret in text_ or json.dumps(secret)[1:-1] in text_}
        recorded = logs[0].text() + logs[1].text()
        # Docker over SSH tunnels its API (`docker system dial-stdio`); LXD runs `lxc` commands.
        assert "dial-stdio" in recorded and lxd_name in recorded, "the runs did not go over the lab's SSH node"
        left = files_containing(secrets_list, since, [str(tmp_path), str(own_sim.folder)])
        assert leaks == {}, leaks
        assert left == [], left
        assert not canary.exists()
        # The secrets did their work: the key logged in, the passwords were set.
        shadow = subprocess.run(["docker", "exec", docker_name, "getent", "shadow", "root"], capture_output=True,
                                text=True, check=True).stdout
        assert shadow.split(":")[1].startswith("$")
    finally:
        remove_containers(containers_named(docker_name))
        remove_lxd_instances("lxc", lxd_instances_with_prefix("lxc", lxd_name))
    record_property("secrets_checked", len(secrets_list))
    record_property("places_checked", "output -vvv, argv.log, commands.log, simulator request log, files under "
                                      + ", ".join(NODE_FOLDERS))
    record_property("leaks", 0)


# -- trust -----------------------------------------------------------------------------------------------------
class LxdMonitor:
    """Lifecycle events the daemon itself emits (`lxc monitor` / `incus monitor`) while a scenario runs."""

    def __init__(self, tool):
        self.process = subprocess.Popen([tool, "monitor", "--type=lifecycle", "--format=json"],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.lines = []
        threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True).start()
        time.sleep(0.5)

    def stop(self, name):
        time.sleep(0.5)
        self.process.terminate()
        self.process.wait(timeout=10)
        return [line for line in self.lines if name in line]


@pytest.mark.parametrize("backend", ["lxd", "incus"])
def test_a_wrong_pinned_certificate_is_refused_before_any_write(backend, record_property):
    tool = "lxc" if backend == "lxd" else "incus"
    other = "/var/lib/incus/server.crt" if backend == "lxd" else "/var/lib/lxd/server.crt"
    name = rel_name("pin")
    node = node_with(nodes()[backend], execution_rule="api_only", api={"server_cert": other})
    monitor = LxdMonitor(tool)
    try:
        result = run_module("virt_instance", {"node": node, "name": name, "image": "ocv-busybox"})
    finally:
        events = monitor.stop(name)
    try:
        assert result.get("failed") is True, result
        assert "pinned" in result["msg"] or "certificate" in result["msg"], result["msg"]
        assert events == [] and lxd_instances_with_prefix(tool, name) == []
        # Under auto the API is refused the same way; the run may continue over SSH (its own host key check),
        # and says why.
        auto = run_module("virt_instance", {"node": dict(node, execution_rule="auto"), "name": name,
                                            "image": "ocv-busybox"})
        assert auto.get("failed") is not True and auto["transport"] == "ssh", auto
        assert "pinned" in auto["fallback_reason"] or "certificate" in auto["fallback_reason"], auto
    finally:
        remove_lxd_instances(tool, lxd_instances_with_prefix(tool, name))
    record_property("writes_before_refusal", len(events))


def test_an_unknown_host_key_under_strict_is_refused_before_any_write(tmp_path, record_property):
    name = rel_name("hk")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    node = node_with(nodes()["docker"], execution_rule="ssh_only",
                     ssh={"host_key_checking": "strict", "known_hosts_file": str(known_hosts)})
    events = DockerEvents()
    events.start()
    argv = LogTail(ARGV_LOG).start()
    result = run_module("virt_instance", {"node": node, "name": name, "image": "ocv-busybox"})
    seen = events.collect(name)
    assert result.get("failed") is True and "host key" in result["msg"].lower(), result
    assert seen == [] and containers_named(name) == [] and name not in argv.text()
    assert known_hosts.read_text() == ""
    record_property("writes_before_refusal", len(seen))


def test_a_changed_host_key_under_accept_new_is_refused_before_any_write(tmp_path, record_property):
    name = rel_name("hk")
    other_key = (LAB_DIR / "ssh" / "id_ed25519.pub").read_text().split()
    known_hosts = tmp_path / "known_hosts"
    recorded = f"[127.0.0.1]:2222 {other_key[0]} {other_key[1]}\n"
    known_hosts.write_text(recorded)
    node = node_with(nodes()["docker"], execution_rule="ssh_only",
                     ssh={"host_key_checking": "accept_new", "known_hosts_file": str(known_hosts)})
    events = DockerEvents()
    events.start()
    argv = LogTail(ARGV_LOG).start()
    result = run_module("virt_instance", {"node": node, "name": name, "image": "ocv-busybox"})
    seen = events.collect(name)
    assert result.get("failed") is True and "changed" in result["msg"], result
    assert seen == [] and containers_named(name) == [] and name not in argv.text()
    assert known_hosts.read_text() == recorded, "a changed key must never be re-recorded"
    record_property("writes_before_refusal", len(seen))
