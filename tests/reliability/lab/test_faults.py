"""Faults: an API that goes away mid-play, an SSH session cut mid-task, ansible-playbook killed mid-create,
a Proxmox API that answers 500, times out, holds a config lock or fails a task, and a daemon restarted between
two tasks. After each, the next run converges: exactly the instances asked for, no duplicate, no orphan.

Faults are injected only into things these tests start: proxies of their own in front of the lab's daemons,
and a Proxmox simulator of their own (conftest `own_sim`). The lab's shared daemons are never touched.
"""
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from rel_lab import (LAB_DIR, lab, PVE_TEMPLATE, FaultProxy, containers_named, containers_with_prefix, docker_cli,
                     lxd_instances_with_prefix, node_with, nodes, rel_name, remove_containers, remove_lxd_instances,
                     run_module, run_playbook, writes)

pytestmark = pytest.mark.reliability


def docker_node(rule="auto", **changes):
    return node_with(nodes()["docker"], execution_rule=rule, **changes)


@pytest.fixture
def docker_prefix():
    prefix = rel_name("f") + "-"
    yield prefix
    remove_containers(containers_with_prefix(prefix))


def play(node, names, image="ocv-busybox", state="started", extra=""):
    """A play that asks for `names` (one task, a loop) and writes the registered results to results.json."""
    return f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Instances
      oneclickvirt.virt.virt_instance:
        node: {json.dumps(node)}
        name: "{{{{ item }}}}"
        image: {image}
        state: {state}
        {extra}
      loop: {json.dumps(names)}
      register: made
      ignore_errors: true
    - name: Keep the results
      ansible.builtin.copy:
        content: "{{{{ made.results | to_json }}}}"
        dest: "{{{{ playbook_dir }}}}/results.json"
        mode: "0600"
"""


def play_results(tmp_path):
    return json.loads((tmp_path / "results.json").read_text())


# -- 1a: the API goes away in the middle of a play, right after the daemon got a write -------------------------
def test_docker_api_lost_mid_play_falls_back_to_ssh_without_duplicates(tmp_path, docker_prefix, record_property):
    names = [f"{docker_prefix}{index}" for index in range(4)]
    # The second create reaches dockerd; its answer never comes back and the API is gone from then on.
    proxy = FaultProxy(("unix", "/var/run/docker.sock"), listen_path=str(tmp_path / "docker.sock"),
                       cut_on_request=("POST", r"/containers/create", 2))
    try:
        node = docker_node("auto", api={"url": f"unix://{proxy.path}"})
        completed = run_playbook(play(node, names), tmp_path)
    finally:
        proxy.close()
    assert completed.returncode == 0, completed.stdout[-3000:]
    results = play_results(tmp_path)
    assert proxy.cut, "the fault never fired"
    transports = [result.get("transport") for result in results]
    assert [result.get("failed", False) for result in results] == [False] * 4, results
    assert transports[0] == "api" and transports[1:] == ["ssh"] * 3, transports
    # Ansible shows warnings and drops them from registered results; the reason stays in the result.
    assert "API transport failed" in results[1]["fallback_reason"], results[1]
    duplicates = sum(len(containers_named(name)) - 1 for name in names)
    assert [containers_named(name) for name in names] == [[name] for name in names]
    # Second pass over the real API: nothing to do.
    again = run_playbook(play(docker_node("api_only"), names), tmp_path)
    assert again.returncode == 0
    assert [result["changed"] for result in play_results(tmp_path)] == [False] * 4
    record_property("runs", 2)
    record_property("duplicates", duplicates)
    record_property("api_requests_before_cut", len(proxy.requests))


# -- 1b: the SSH connection drops during a task ----------------------------------------------------------------
def ssh_proxy_node(tmp_path, proxy):
    """The lab's Docker node reached through `proxy`, its host key known under the proxy's address."""
    host_key = (LAB_DIR / "ssh" / "host_ed25519.pub").read_text().split()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{proxy.port} {host_key[0]} {host_key[1]}\n")
    return docker_node("ssh_only", ssh={"port": proxy.port, "known_hosts_file": str(known_hosts)})


@pytest.fixture(scope="module")
def ssh_create_bytes(tmp_path_factory):
    """Bytes that one ssh_only create crosses on the wire (measured through a proxy that never cuts)."""
    tmp_path = tmp_path_factory.mktemp("ssh-measure")
    name = rel_name("measure")
    proxy = FaultProxy(("tcp", "127.0.0.1", 2222))
    try:
        result = run_module("virt_instance", {"node": ssh_proxy_node(tmp_path, proxy), "name": name,
                                              "image": "ocv-busybox"})
        assert result["changed"] is True, result
        return proxy.bytes_seen
    finally:
        proxy.close()
        remove_containers(containers_named(name))


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.8, 0.95])
def test_ssh_cut_mid_task_is_a_clear_error_and_the_next_run_converges(tmp_path, ssh_create_bytes, fraction,
                                                                     docker_prefix, record_property):
    name = f"{docker_prefix}ssh"
    proxy = FaultProxy(("tcp", "127.0.0.1", 2222), cut_after_bytes=int(ssh_create_bytes * fraction))
    try:
        node = ssh_proxy_node(tmp_path, proxy)
        first = run_module("virt_instance", {"node": node, "name": name, "image": "ocv-busybox"})
        left_after_cut = len(containers_named(name))
        assert proxy.cut
        if first.get("failed"):
            # A clear error: it names SSH, not a Python traceback.
            assert "Traceback" not in first["msg"] and "ssh" in first["msg"].lower(), first["msg"]
        # The next run (a fresh SSH connection through the same proxy, which now passes) converges.
        second = run_module("virt_instance", {"node": node, "name": name, "image": "ocv-busybox"})
        assert second.get("failed") is not True, second
        assert second["instance"]["status"] == "running"
        third = run_module("virt_instance", {"node": node, "name": name, "image": "ocv-busybox"})
        assert third["changed"] is False
    finally:
        proxy.close()
    assert containers_named(name) == [name]
    record_property("runs", 3)
    record_property("first_run", "failed: " + first["msg"][:160] if first.get("failed") else "succeeded")
    record_property("writes_before_failure", left_after_cut if first.get("failed") else 0)
    record_property("duplicates", len(containers_named(name)) - 1)


# -- 1c: ansible-playbook killed with SIGKILL during a loop of creates -----------------------------------------
# Two ways to kill a play. `tree`: every process of the run (ansible-playbook, its workers and the module
# processes), as when a machine or container dies. `main`: `kill -9` of ansible-playbook's process group only;
# Ansible's workers call setsid() (executor/process/worker.py), so the worker running the loop survives and
# finishes it, orphaned, while the next run starts: two runs on the same names at once.
KILL_MODES = ["tree", "main"]


def descendants(pid):
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid):
    """Freeze the whole tree first (so nothing forks past us), then SIGKILL every process of it, by PID."""
    frozen = set()
    while True:
        new = [child for child in descendants(pid) if child not in frozen]
        if not new:
            break
        for child in new:
            try:
                os.kill(child, signal.SIGSTOP)
            except ProcessLookupError:
                pass
            frozen.add(child)
    for child in [pid, *frozen]:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_play_midway(text, tmp_path, count_made, threshold, mode, timeout=300):
    """Start ansible-playbook; SIGKILL it (see KILL_MODES) once `count_made()` reaches `threshold`.
    Returns (made at kill time, whether the play had already ended, the orphaned worker PIDs)."""
    playbook = tmp_path / "killed.yml"
    playbook.write_text(text)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(lab._collections_path()), ANSIBLE_LOCALHOST_WARNING="False",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="False", ANSIBLE_PYTHON_INTERPRETER=lab.sys.executable)
    process = subprocess.Popen([str(lab.VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                                str(playbook)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + timeout
    made = 0
    while time.monotonic() < deadline and process.poll() is None:
        made = count_made()
        if made >= threshold:
            break
        time.sleep(0.05)
    finished_first = process.poll() is not None
    orphans = []
    if not finished_first:
        if mode == "tree":
            kill_tree(process.pid)
        else:
            orphans = [pid for pid in descendants(process.pid) if os.getsid(pid) != process.pid]
            os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    return made, finished_first, orphans


def wait_gone(pids, seconds=300):
    """Wait for the orphaned workers of a `main` kill to finish their loop (they are ours; never killed by name)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.2)


@pytest.mark.parametrize("mode", KILL_MODES)
def test_sigkill_during_docker_creates_then_converges(tmp_path, docker_prefix, mode, record_property):
    names = [f"{docker_prefix}{index}" for index in range(6)]
    node = docker_node("auto")
    made, finished, orphans = kill_play_midway(play(node, names), tmp_path,
                                               lambda: len(containers_with_prefix(docker_prefix)), 3, mode)
    assert not finished, "the play ended before it could be killed"
    before = containers_with_prefix(docker_prefix)
    completed = run_playbook(play(node, names), tmp_path)
    wait_gone(orphans)
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert all(not result.get("failed") for result in play_results(tmp_path)), play_results(tmp_path)
    assert sorted(containers_with_prefix(docker_prefix)) == sorted(names), "orphans or duplicates"
    states = json.loads(docker_cli("inspect", *names).stdout)
    assert all(state["State"]["Running"] for state in states)
    again = run_playbook(play(node, names), tmp_path)
    assert [result["changed"] for result in play_results(tmp_path)] == [False] * len(names)
    # The names stay usable: remove one, make it again.
    assert run_module("virt_instance", {"node": node, "name": names[0], "state": "absent"})["changed"] is True
    assert run_module("virt_instance", {"node": node, "name": names[0], "image": "ocv-busybox"})["changed"] is True
    assert again.returncode == 0
    record_property("runs", 3)
    record_property("existing_at_kill", len(before))
    record_property("orphaned_workers", len(orphans))
    record_property("duplicates", 0)


@pytest.mark.parametrize("mode", KILL_MODES)
@pytest.mark.parametrize("tool", ["lxd", "incus"])
def test_sigkill_during_lxd_incus_creates_then_converges(tmp_path, tool, mode, record_property):
    prefix = rel_name("k") + "-"
    names = [f"{prefix}{index}" for index in range(4)]
    node = node_with(nodes()[tool], execution_rule="auto")
    cli = "lxc" if tool == "lxd" else "incus"
    try:
        made, finished, orphans = kill_play_midway(play(node, names), tmp_path,
                                                   lambda: len(lxd_instances_with_prefix(cli, prefix)), 2, mode)
        assert not finished
        before = lxd_instances_with_prefix(cli, prefix)
        completed = run_playbook(play(node, names), tmp_path)
        wait_gone(orphans)
        assert completed.returncode == 0, completed.stdout[-3000:]
        results = play_results(tmp_path)
        assert all(not result.get("failed") for result in results), [result.get("msg") for result in results]
        assert sorted(lxd_instances_with_prefix(cli, prefix)) == sorted(names)
        assert {result["instance"]["status"] for result in results} == {"running"}
        run_playbook(play(node, names), tmp_path)
        assert [result["changed"] for result in play_results(tmp_path)] == [False] * len(names)
    finally:
        remove_lxd_instances(cli, lxd_instances_with_prefix(cli, prefix))
    record_property("runs", 3)
    record_property("existing_at_kill", len(before))
    record_property("orphaned_workers", len(orphans))
    record_property("duplicates", 0)


# `main` leaves the orphaned worker creating the same names as the next run: Proxmox VE keeps no name unique, so
# both may create one; each run keeps the lowest VMID and deletes its own newer twin (_yield_to_an_older_twin).
@pytest.mark.parametrize("mode", KILL_MODES)
def test_sigkill_during_proxmox_creates_then_converges(tmp_path, own_sim, mode, record_property):
    prefix = rel_name("k") + "-"
    names = [f"{prefix}{index}" for index in range(4)]
    own_sim.faults(task_delay=1.0)   # long enough that the kill lands while a create task still runs
    node = own_sim.node()

    def made():
        return len([item for item in own_sim.api.data("GET", "/cluster/resources", type="vm")
                    if str(item.get("name", "")).startswith(prefix)])
    orphans = []
    try:
        count, finished, orphans = kill_play_midway(play(node, names, image=PVE_TEMPLATE), tmp_path, made, 2, mode)
        assert not finished
        completed = run_playbook(play(node, names, image=PVE_TEMPLATE), tmp_path)
        wait_gone(orphans)
        assert completed.returncode == 0
        per_name = [len(own_sim.guests_named(name)) for name in names]
        results = play_results(tmp_path)
        record_property("guests_per_name", per_name)
        record_property("duplicates", sum(count - 1 for count in per_name))
        record_property("next_run_errors", [result["msg"][:160] for result in results if result.get("failed")])
        assert per_name == [1] * len(names)
        assert all(not result.get("failed") for result in results), [result.get("msg") for result in results]
        log = own_sim.log()
        run_playbook(play(node, names, image=PVE_TEMPLATE), tmp_path)
        assert [result["changed"] for result in play_results(tmp_path)] == [False] * len(names)
        assert writes(log.entries()) == []
    finally:
        wait_gone(orphans)
        own_sim.faults(task_delay=0.05)
    record_property("runs", 3)
    record_property("existing_at_kill", count)
    record_property("orphaned_workers", len(orphans))


# -- 1d: Proxmox API answers 500, times out, drops the connection, holds a lock, fails a task -------------------
PVE_FAULTS = {
    "500 on create": {"rules": [{"path": r"^/nodes/pve/lxc$", "method": "POST", "action": "error", "status": 500,
                                 "message": "rel: simulated failure", "count": 1}]},
    "500 on every read x2": {"rules": [{"path": r"/cluster/resources", "method": "GET", "action": "error",
                                        "status": 500, "message": "rel: read failure", "count": 2}]},
    "timeout on create": {"rules": [{"path": r"^/nodes/pve/lxc$", "method": "POST", "action": "timeout",
                                     "seconds": 8, "count": 1}]},
    "connection closed on create": {"rules": [{"path": r"^/nodes/pve/lxc$", "method": "POST", "action": "close",
                                               "count": 1}]},
    "create task fails": {"task_failures": [{"type": "vzcreate", "exitstatus": "rel: task failure"}]},
}


@pytest.mark.parametrize("fault", sorted(PVE_FAULTS))
def test_proxmox_fault_then_converges(own_sim, fault, record_property):
    name = rel_name("pf")
    node = own_sim.node(timeout=4)
    args = {"node": node, "name": name, "image": PVE_TEMPLATE, "memory": 256}
    log = own_sim.log()
    own_sim.faults(**PVE_FAULTS[fault])
    try:
        first = run_module("virt_instance", args)
    finally:
        own_sim.clear_faults()
        own_sim.faults(task_delay=0.05)
    first_writes = writes(log.entries())
    guests_after_fault = len(own_sim.guests_named(name))
    assert guests_after_fault <= 1
    if first.get("failed"):
        assert "Traceback" not in first["msg"], first["msg"]
        assert any(word in first["msg"] for word in ("500", "rel:", "timed out", "timeout", "closed", "connection",
                                                     "task")), first["msg"]
    second = run_module("virt_instance", args)
    assert second.get("failed") is not True, second
    log = own_sim.log()
    third = run_module("virt_instance", args)
    assert third["changed"] is False and writes(log.entries()) == []
    assert len(own_sim.guests_named(name)) == 1
    record_property("runs", 3)
    record_property("first_run", "failed: " + first["msg"][:200] if first.get("failed") else "succeeded")
    record_property("writes_before_failure", len(first_writes))
    record_property("duplicates", len(own_sim.guests_named(name)) - 1)


def test_proxmox_held_config_lock_is_a_clear_error_then_converges(own_sim, record_property):
    name = rel_name("lock")
    node = own_sim.node()
    made = run_module("virt_instance", {"node": node, "name": name, "image": PVE_TEMPLATE, "memory": 256})
    assert made["changed"] is True, made
    vmid = own_sim.guests_named(name)[0]["vmid"]
    own_sim.faults(lock_timeout=1)
    own_sim.api.control("POST", "/_sim/flock", {"vmid": vmid, "seconds": 4})
    log = own_sim.log()
    started = time.monotonic()
    blocked = run_module("virt_instance", {"node": node, "name": name, "image": PVE_TEMPLATE, "memory": 512})
    held_for = time.monotonic() - started
    assert blocked.get("failed") is True, blocked
    assert "lock" in blocked["msg"] and "Traceback" not in blocked["msg"], blocked["msg"]
    time.sleep(4)   # the simulator releases the held lock after 4 s
    own_sim.clear_faults()
    own_sim.faults(task_delay=0.05)
    converged = run_module("virt_instance", {"node": node, "name": name, "image": PVE_TEMPLATE, "memory": 512})
    assert converged.get("failed") is not True and converged["instance"]["memory"] == 512, converged
    assert run_module("virt_instance", {"node": node, "name": name, "image": PVE_TEMPLATE,
                                        "memory": 512})["changed"] is False
    assert len(own_sim.guests_named(name)) == 1
    record_property("runs", 4)
    record_property("first_run", "failed: " + blocked["msg"][:200])
    record_property("writes_before_failure", len(writes(log.entries())))
    record_property("seconds_until_error", round(held_for, 1))


# -- 1e: the daemon restarted (kill -9, start) between two tasks of one play -----------------------------------
def test_simulator_killed_and_restarted_between_two_tasks(own_sim, tmp_path, record_property):
    name = rel_name("rs")
    node = own_sim.node()
    reached, resume = tmp_path / "reached", tmp_path / "resume"
    text = f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Create
      oneclickvirt.virt.virt_instance:
        node: {json.dumps(node)}
        name: {name}
        image: {PVE_TEMPLATE}
        memory: 256
    - name: Tell the test, then wait while it restarts the simulator
      ansible.builtin.shell: "touch {reached}; while [ ! -e {resume} ]; do sleep 0.1; done"
      changed_when: false
    - name: Stop it, on the restarted simulator
      oneclickvirt.virt.virt_instance:
        node: {json.dumps(node)}
        name: {name}
        image: {PVE_TEMPLATE}
        memory: 256
        state: stopped
      register: stopped
    - name: Keep the result
      ansible.builtin.copy:
        content: "{{{{ stopped | to_json }}}}"
        dest: "{tmp_path}/results.json"
        mode: "0600"
"""
    pids = []

    def restart():
        deadline = time.monotonic() + 300
        while not reached.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        pids.append(own_sim.process.pid)
        own_sim.kill(signal.SIGKILL)
        own_sim.start()
        pids.append(own_sim.process.pid)
        resume.touch()
    worker = threading.Thread(target=restart)
    worker.start()
    try:
        completed = run_playbook(text, tmp_path)
    finally:
        resume.touch()
        worker.join(timeout=60)
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert len(pids) == 2 and pids[0] != pids[1], "the simulator was not restarted"
    stopped = json.loads((tmp_path / "results.json").read_text())
    assert stopped["changed"] is True and stopped["instance"]["status"] == "stopped"
    assert len(own_sim.guests_named(name)) == 1
    record_property("runs", 1)
    record_property("restarts", 1)
