"""The Proxmox VE backend against the lab's simulator: virt_instance, virt_instance_info, virt_exec and
virt_instance_password on LXC containers and QEMU VMs, under api_only, ssh_only and auto.

Writes are counted where the simulator sees them (its request log records every API request and every
request of its node tools, `pvesh` / `pct` / `qm`), and results are cross-read through the raw API.
"""
import crypt
import json
import os
import threading
from urllib.parse import unquote

import pytest
from conftest import free_port, node_with, run_module, run_playbook, unique
from pve_helpers import COMMAND_LOG, Api, RequestLog, proxmox_node

TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
VM_TEMPLATE = "clone:debian12-cloud"
IMAGES = {"container": TEMPLATE, "vm": VM_TEMPLATE}
RULES = ("api_only", "ssh_only", "auto")
KIND = {"container": "lxc", "vm": "qemu"}


@pytest.fixture(scope="module")
def pve():
    node = proxmox_node()
    return Api(node["api"]["url"], node["api"]["token_id"], node["api"]["token_secret"], node["api"]["ca_file"])


@pytest.fixture
def names(pve):
    """Guest names a test makes; every guest of those names is removed afterwards, whatever happened."""
    made = []
    yield lambda prefix="t-pve": made.append(unique(prefix)) or made[-1]
    for item in pve.data("GET", "/cluster/resources", type="vm"):
        if item.get("name") in made:
            path = f"/nodes/pve/{item['type']}/{item['vmid']}"
            pve.control("POST", "/_sim/lock", {"vmid": item["vmid"], "lock": None})
            if item["status"] == "running":
                pve.wait(pve.data("POST", f"{path}/status/stop"))
            pve.wait(pve.data("DELETE", path, purge=1))


def guests_named(pve, name):
    return [item for item in pve.data("GET", "/cluster/resources", type="vm") if item.get("name") == name]


def config_of(pve, guest):
    return pve.data("GET", f"/nodes/pve/{guest['type']}/{guest['vmid']}/config")


def instance(node, name, check=False, **args):
    return run_module("virt_instance", dict(args, node=node, name=name), check=check)


def pve_node(rule):
    return node_with(proxmox_node(), execution_rule=rule)


# -- lifecycle, idempotence, check mode, parity ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["container", "vm"])
@pytest.mark.parametrize("rule", RULES)
def test_lifecycle(pve, names, rule, kind):
    node, name = pve_node(rule), names()
    transport = "ssh" if rule == "ssh_only" else "api"
    args = {"type": kind, "image": IMAGES[kind], "cpu": 2, "memory": "1GiB", "disk": "10G"}

    log = RequestLog().start()
    predicted = instance(node, name, check=True, **args)
    assert predicted["changed"] is True and predicted["actions"] == ["create", "start"], predicted
    assert predicted["diff"]["before"] == {} and predicted["diff"]["after"]["status"] == "running"
    assert log.writes() == [], "check mode wrote"
    assert guests_named(pve, name) == []

    created = instance(node, name, **args)
    assert created.get("failed") is not True, created
    assert created["changed"] is True and created["transport"] == transport
    got = created["instance"]
    assert (got["type"], got["status"], got["cpu"], got["memory"], got["disk"], got["image"]) == (
        kind, "running", 2, 1024, 10240, IMAGES[kind])
    [guest] = guests_named(pve, name)
    assert got["id"] == str(guest["vmid"]) and guest["type"] == KIND[kind] and guest["status"] == "running"
    assert guest["maxmem"] == 1024 * 1024 ** 2 and guest["maxdisk"] == 10 * 1024 ** 3
    assert got["private_ip"] and got["ipv6"]

    log.start()
    again = instance(node, name, **args)
    assert again["changed"] is False and again["actions"] == [] and again["instance"] == got
    assert log.writes() == [], "a second identical run wrote"
    assert log.entries(), "the simulator logged not even the reads: the count proves nothing"

    stopped = instance(node, name, state="stopped")
    assert stopped["changed"] is True and stopped["instance"]["status"] == "stopped"
    assert guests_named(pve, name)[0]["status"] == "stopped"
    log.start()
    assert instance(node, name, state="stopped")["changed"] is False
    assert log.writes() == []

    log.start()
    assert instance(node, name, state="absent", check=True)["changed"] is True
    assert log.writes() == []
    gone = instance(node, name, state="absent")
    assert gone["changed"] is True and gone["instance"] is None and gone["diff"]["after"] == {}
    assert guests_named(pve, name) == []
    log.start()
    assert instance(node, name, state="absent")["changed"] is False
    assert log.writes() == []


def test_parity_and_cross_read(pve, names):
    """The same guest read under api_only and ssh_only gives the same result, and the raw API agrees."""
    name = names()
    created = instance(pve_node("auto"), name, type="container", image=TEMPLATE, cpu=1, memory=512,
                       network={"ipv4": "10.163.1.50/22", "bandwidth_out": 80})
    assert created.get("failed") is not True, created
    via_api = run_module("virt_instance_info", {"node": pve_node("api_only"), "name": name})
    via_ssh = run_module("virt_instance_info", {"node": pve_node("ssh_only"), "name": name})
    assert via_api["transport"] == "api" and via_ssh["transport"] == "ssh"
    assert via_api["exists"] is True and via_api["instance"] == via_ssh["instance"] == created["instance"]
    [guest] = guests_named(pve, name)
    config = config_of(pve, guest)
    assert "ip=10.163.1.50/22" in config["net0"] and "rate=10" in config["net0"]
    assert via_api["instance"]["private_ip"] == "10.163.1.50"
    assert config["cores"] == 1 and int(config["memory"]) == 512
    listing = run_module("virt_instance_info", {"node": pve_node("ssh_only")})
    listed = {item["name"]: item for item in listing["instances"]}
    assert listed[name]["id"] == str(guest["vmid"]) and listed[name]["status"] == "running"
    templates = [item["name"] for item in pve.data("GET", "/cluster/resources", type="vm") if item.get("template")]
    assert templates and not set(templates) & set(listed), "templates are images, not instances"


def test_drift_out_of_band_is_reported_and_converged(pve, names):
    name = names()
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOcv+test/key== ops@example"
    args = {"type": "vm", "image": VM_TEMPLATE, "cpu": 2, "memory": 2048, "state": "stopped",
            "config": {"ciuser": "ops", "sshkeys": [key], "onboot": True}}
    created = instance(pve_node("auto"), name, **args)
    assert created.get("failed") is not True, created
    [guest] = guests_named(pve, name)
    path = f"/nodes/pve/qemu/{guest['vmid']}/config"
    # The sshkeys are stored percent-encoded: a second run must not see that as a change.
    assert "%20" in config_of(pve, guest)["sshkeys"]
    log = RequestLog().start()
    assert instance(pve_node("api_only"), name, **args)["changed"] is False
    assert instance(pve_node("ssh_only"), name, **args)["changed"] is False
    assert log.writes() == []

    pve.data("PUT", path, cores=4, memory=4096, ciuser="intruder", onboot=0)
    predicted = instance(pve_node("ssh_only"), name, check=True, **args)
    assert predicted["changed"] is True and predicted["actions"] == ["update config, cpu, memory"], predicted
    assert predicted["diff"]["before"]["cpu"] == 4 and predicted["diff"]["after"]["cpu"] == 2
    fixed = instance(pve_node("ssh_only"), name, **args)
    assert fixed["changed"] is True and fixed["instance"]["cpu"] == 2 and fixed["instance"]["memory"] == 2048
    config = config_of(pve, guest)
    assert (config["cores"], int(config["memory"]), config["ciuser"], config["onboot"]) == (2, 2048, "ops", 1)
    log.start()
    assert instance(pve_node("api_only"), name, **args)["changed"] is False
    assert log.writes() == []


def test_disk_grows_only_and_recreate_needs_force(pve, names):
    name = names()
    node = pve_node("auto")
    assert instance(node, name, type="container", image=TEMPLATE, disk="4G")["instance"]["disk"] == 4096
    grown = instance(node, name, type="container", image=TEMPLATE, disk="6G")
    assert grown["actions"] == ["update disk"] and grown["instance"]["disk"] == 6144
    log = RequestLog().start()
    shrink = instance(node, name, type="container", image=TEMPLATE, disk="2G")
    assert shrink["failed"] is True and shrink["msg"].startswith("disk:") and "only grows" in shrink["msg"]
    other = instance(node, name, type="vm", image=VM_TEMPLATE)
    assert other["failed"] is True and "force: true" in other["msg"]
    assert log.writes() == []
    vmid = guests_named(pve, name)[0]["vmid"]
    recreated = instance(node, name, type="vm", image=VM_TEMPLATE, force=True)
    assert recreated["actions"][:2] == ["delete (recreate)", "create"] and recreated["instance"]["type"] == "vm"
    assert [(g["type"], g["vmid"] == vmid) for g in guests_named(pve, name)] in ([("qemu", True)], [("qemu", False)])


# -- the execution rules ---------------------------------------------------------------------------------------
def test_auto_falls_back_when_https_is_down(pve, names):
    node = node_with(pve_node("auto"), api={"url": f"https://127.0.0.1:{free_port()}"})
    name = names()
    result = instance(node, name, type="container", image=TEMPLATE)
    assert result.get("failed") is not True, result
    assert result["transport"] == "ssh" and "continuing over SSH" in json.dumps(result["warnings"])
    assert len(guests_named(pve, name)) == 1


@pytest.mark.parametrize("rule", ["auto", "api_only"])
def test_a_lost_answer_to_a_create_leaves_exactly_one_guest(pve, names, rule):
    """The create reaches the node but its answer never comes back (held past the client's timeout)."""
    name = names()
    node = node_with(pve_node(rule), api={"timeout": 3})
    pve.control("PUT", "/_sim/faults", {"rules": [
        {"path": "^/nodes/pve/lxc$", "method": "POST", "via": "api", "body": f'"hostname": "{name}"',
         "action": "timeout", "seconds": 6, "count": 1}]})
    try:
        first = instance(node, name, type="container", image=TEMPLATE)
    finally:
        pve.control("DELETE", "/_sim/faults")
    if rule == "auto":
        assert first.get("failed") is not True, first
        assert "answer to a write was lost" in json.dumps(first["warnings"])
        assert first["instance"]["status"] == "running"
    else:
        assert first["failed"] is True and "no answer" in first["msg"], first
        second = instance(node, name, type="container", image=TEMPLATE)
        assert second.get("failed") is not True and second["actions"] == ["start"], second
    assert len(guests_named(pve, name)) == 1


def test_ten_parallel_creates_without_vmids(pve, names):
    """Forks racing for /cluster/nextid: every create that collides takes a fresh ID and goes on."""
    wanted = [names("t-race") for _ in range(10)]
    results = {}

    def create(name):
        results[name] = instance(pve_node("api_only"), name, type="container", image=TEMPLATE, state="present")

    threads = [threading.Thread(target=create, args=(name,)) for name in wanted]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    failures = {name: result.get("msg") for name, result in results.items() if result.get("failed")}
    assert len(results) == 10 and not failures, failures
    vmids = [guest["vmid"] for name in wanted for guest in guests_named(pve, name)]
    assert len(vmids) == 10 and len(set(vmids)) == 10


def test_two_runs_creating_one_name_at_once_leave_one_guest(pve, names):
    """Proxmox VE keeps no name unique. Two runs that both found the name absent (their /cluster/nextid answers
    are held until both have looked) each create a guest; each keeps the lowest VMID, the newer twin is deleted
    again, and both runs report the one guest that is left."""
    name = names("t-twin")
    results = []
    pve.control("PUT", "/_sim/faults", {"rules": [
        {"path": "^/cluster/nextid$", "method": "GET", "via": "api", "action": "timeout", "seconds": 2, "count": 2}]})
    try:
        threads = [threading.Thread(target=lambda: results.append(
            instance(pve_node("api_only"), name, type="container", image=TEMPLATE))) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
    finally:
        pve.control("DELETE", "/_sim/faults")
    assert len(results) == 2 and not [result["msg"] for result in results if result.get("failed")], results
    guests = guests_named(pve, name)
    assert len(guests) == 1, guests
    assert {result["instance"]["id"] for result in results} == {str(guests[0]["vmid"])}
    assert {result["instance"]["status"] for result in results} == {"running"}
    assert sum("another run created" in json.dumps(result.get("warnings")) for result in results) == 1
    again = instance(pve_node("api_only"), name, type="container", image=TEMPLATE)
    assert again["changed"] is False and again["instance"]["id"] == str(guests[0]["vmid"])


def test_an_explicit_vmid_wins_and_a_taken_one_is_an_error(pve, names):
    free = pve.data("GET", "/cluster/nextid") + 500
    name = names()
    created = instance(pve_node("auto"), name, type="container", image=TEMPLATE, state="present",
                       config={"vmid": free})
    assert created["instance"]["id"] == str(free)
    clash = instance(pve_node("auto"), names(), type="container", image=TEMPLATE, state="present",
                     config={"vmid": free})
    assert clash["failed"] is True and "already exists" in clash["msg"]


# -- bad input, hostile values, duplicate names ------------------------------------------------------------------
@pytest.mark.parametrize("bad, option", [
    ({"name": "a;touch /tmp/x"}, "name"),
    ({"name": "-rf"}, "name"),
    ({"name": "ok", "image": "debian-12.tar.zst"}, "image"),
    ({"name": "ok", "image": "local:iso/x.iso"}, "image"),
    ({"name": "ok", "type": "vm", "image": TEMPLATE}, "image"),
    ({"name": "ok", "config": {"vmid": 5}}, "config.vmid"),
    ({"name": "ok", "config": {"hookscript": "local:snippets/x"}}, "config.hookscript"),
    ({"name": "ok", "config": {"ciuser": "x"}}, "config.ciuser"),
    ({"name": "ok", "network": {"bridge": "vmbr9"}}, "network.bridge"),
    ({"name": "ok", "network": {"bandwidth_in": 10, "bandwidth_out": 20}}, "network.bandwidth_in"),
    ({"name": "ok", "env": {"A": "b"}}, "env"),
])
def test_bad_input_fails_before_any_write(bad, option):
    log = RequestLog().start()
    args = dict({"type": "container", "image": TEMPLATE}, **bad)
    result = instance(pve_node("auto"), args.pop("name"), **args)
    assert result["failed"] is True and result["msg"].startswith(option), result["msg"]
    assert log.writes() == []


def test_hostile_values_arrive_literally_over_ssh(pve, names):
    canary = f"/tmp/{unique('ocv-pve-canary')}"
    key = f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI+x/y== $(touch {canary});`touch {canary}`&'\"%20"
    name = names()
    result = instance(pve_node("ssh_only"), name, type="vm", image=VM_TEMPLATE, state="present",
                      config={"ciuser": "ops", "sshkeys": [key]})
    assert result.get("failed") is not True, result
    assert unquote(config_of(pve, guests_named(pve, name)[0])["sshkeys"]).strip() == key
    assert not os.path.exists(canary)


def test_two_guests_of_one_name_are_an_error(pve, names):
    name = names()
    for dummy in (0, 1):
        vmid = pve.data("GET", "/cluster/nextid")
        pve.wait(pve.data("POST", "/nodes/pve/lxc", vmid=vmid, ostemplate=TEMPLATE, hostname=name, storage="local-lvm"))
    result = instance(pve_node("auto"), name, type="container", image=TEMPLATE)
    assert result["failed"] is True and "2 guests" in result["msg"] and "rename" in result["msg"]
    info = run_module("virt_instance_info", {"node": pve_node("auto"), "name": name})
    assert info["failed"] is True
    assert instance(pve_node("auto"), name[:-1], type="container", image=TEMPLATE, state="absent")["changed"] is False


# -- virt_exec and virt_instance_password --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def guests(pve):
    """A running container, a stopped container and a running VM (guest agent on), made with the raw API."""
    made = {}
    for label, kind, params in (("ct", "lxc", {"ostemplate": TEMPLATE, "storage": "local-lvm"}),
                                ("stopped", "lxc", {"ostemplate": TEMPLATE, "storage": "local-lvm"}),
                                ("vm", "qemu", None)):
        name = unique(f"t-pvex-{label}")
        vmid = pve.data("GET", "/cluster/nextid")
        if kind == "qemu":
            pve.wait(pve.data("POST", "/nodes/pve/qemu/9000/clone", newid=vmid, name=name, full=1))
        else:
            pve.wait(pve.data("POST", "/nodes/pve/lxc", vmid=vmid, hostname=name, **params))
        if label != "stopped":
            pve.wait(pve.data("POST", f"/nodes/pve/{kind}/{vmid}/status/start"))
        made[label] = {"name": name, "vmid": vmid, "kind": kind}
    yield made
    for guest in made.values():
        path = f"/nodes/pve/{guest['kind']}/{guest['vmid']}"
        if pve.data("GET", f"{path}/status/current")["status"] == "running":
            pve.wait(pve.data("POST", f"{path}/status/stop"))
        pve.wait(pve.data("DELETE", path, purge=1))


def shadow_hash(pve, guest, user="root"):
    """The stored hash, read inside the guest (the container's `pct exec`, the VM's guest agent)."""
    if guest["kind"] == "lxc":
        answer = pve.control("POST", "/_sim/exec", {"vmid": guest["vmid"], "argv": ["getent", "shadow", user]})
        return answer["stdout"].split(":")[1]
    pid = pve.data("POST", f"/nodes/pve/qemu/{guest['vmid']}/agent/exec", command=["getent", "shadow", user])["pid"]
    status = pve.data("GET", f"/nodes/pve/qemu/{guest['vmid']}/agent/exec-status", pid=pid)
    return status["out-data"].split(":")[1]


EXEC_CASES = [("ct", "ssh_only"), ("ct", "auto"), ("vm", "api_only"), ("vm", "ssh_only")]


@pytest.mark.parametrize("label, rule", EXEC_CASES)
def test_exec_with_stdin_env_cwd_and_user(guests, label, rule):
    guest = guests[label]
    result = run_module("virt_exec", {"node": pve_node(rule), "name": guest["name"], "argv": ["sh", "-c",
                        'printf "%s|" "$OCV_GREETING"; pwd; whoami; cat'], "stdin": "in put",
                        "env": {"OCV_GREETING": "hello  there"}, "cwd": "/tmp", "user": "nobody"})
    assert result.get("failed") is not True, result
    assert result["stdout_lines"] == ["hello  there|/tmp", "nobody", "in put"]
    assert result["changed"] is True and result["transport"] == ("api" if rule == "api_only" else "ssh")


@pytest.mark.parametrize("label, rule", EXEC_CASES)
def test_exec_creates_and_literal_argv(guests, label, rule):
    guest, node = guests[label], pve_node(rule)
    marker = f"/tmp/{unique('made')}"
    hostile = ["$(touch /tmp/ocv-canary)", "`id`", "a b", ";", "'", '"', "*"]
    args = {"node": node, "name": guest["name"], "argv": ["sh", "-c", f"touch {marker}"], "creates": marker}
    assert run_module("virt_exec", args)["changed"] is True
    log = RequestLog().start()
    again = run_module("virt_exec", args)
    assert again["changed"] is False and again["msg"].startswith("Did not run")
    printed = run_module("virt_exec", {"node": node, "name": guest["name"], "argv": ["printf", "%s\\n", *hostile]})
    assert printed["stdout_lines"] == hostile
    assert run_module("virt_exec", {"node": node, "name": guest["name"],
                                    "argv": ["test", "-e", "/tmp/ocv-canary"]})["rc"] == 1
    assert not [write for write in log.writes() if "/status/" in write or "/config" in write]


def test_exec_errors_are_clear(guests):
    stopped = run_module("virt_exec", {"node": pve_node("auto"), "name": guests["stopped"]["name"], "argv": ["true"]})
    assert stopped["failed"] is True and "is stopped" in stopped["msg"]
    api_only = run_module("virt_exec", {"node": pve_node("api_only"), "name": guests["ct"]["name"], "argv": ["true"]})
    assert api_only["failed"] is True and "api_only" in api_only["msg"] and "pct exec" in api_only["msg"]
    failing = run_module("virt_exec", {"node": pve_node("auto"), "name": guests["vm"]["name"],
                                       "argv": ["sh", "-c", "echo out; echo err >&2; exit 3"]})
    assert failing["failed"] is True and (failing["rc"], failing["stdout"], failing["stderr"]) == (3, "out", "err")


@pytest.mark.parametrize("label, rule", [("ct", "ssh_only"), ("ct", "auto"), ("vm", "ssh_only"), ("vm", "api_only")])
def test_password_is_set_and_never_leaks(pve, guests, tmp_path, label, rule):
    guest = guests[label]
    password = f"it's a \"pass\"; $(x) `y` {unique('pw')}"
    commands_before = COMMAND_LOG.stat().st_size if COMMAND_LOG.exists() else 0
    playbook = f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Set the password
      oneclickvirt.virt.virt_instance_password:
        node: {json.dumps(pve_node(rule))}
        name: {guest['name']}
        password: {json.dumps(password)}
"""
    completed = run_playbook(playbook, tmp_path, extra_args=["-vvv"])
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0 and "changed=1" in output, output
    assert password not in output and json.dumps(password)[1:-1] not in output
    with open(COMMAND_LOG, "rb") as handle:
        handle.seek(commands_before)
        commands = handle.read().decode("utf-8", "replace")
    assert password not in commands and json.dumps(password)[1:-1] not in commands, "the password reached argv"
    token_secret = proxmox_node()["api"]["token_secret"]
    assert token_secret not in output and token_secret not in commands, "the API token leaked"
    if rule == "ssh_only":
        assert commands, "the run did not go over the node's SSH"
        if label == "ct":
            assert f"pct exec {guest['vmid']} -- chpasswd" in commands
    stored = shadow_hash(pve, guest)
    assert stored.startswith("$6$") and crypt.crypt(password, stored) == stored


def test_generated_password_for_a_vm_over_ssh(pve, guests):
    guest = guests["vm"]
    result = run_module("virt_instance_password", {"node": pve_node("ssh_only"), "name": guest["name"],
                                                   "generate": True})
    assert result.get("failed") is not True, result
    password = result["generated_password"]
    assert json.dumps(result).count(password) == 1
    stored = shadow_hash(pve, guest)
    assert crypt.crypt(password, stored) == stored


def test_virt_instance_password_option_on_a_new_vm(pve, names):
    """`password` at creation: the running VM's guest agent sets it (through the API, or tunnelled under ssh_only)."""
    name = names()
    password = unique("Vm-pass-1!")
    created = instance(pve_node("ssh_only"), name, type="vm", image=VM_TEMPLATE, password=password)
    assert created.get("failed") is not True, created
    assert "set password" in created["actions"] and password not in json.dumps(created)
    guest = guests_named(pve, name)[0]
    stored = shadow_hash(pve, {"kind": "qemu", "vmid": guest["vmid"]})
    assert crypt.crypt(password, stored) == stored


@pytest.mark.parametrize("rule", ["api_only", "ssh_only"])
def test_a_failed_task_says_its_exit_status(pve, names, rule):
    name = names()
    node = pve_node(rule)
    created = instance(node, name, type="container", image=TEMPLATE, state="present")
    vmid = created["instance"]["id"]
    pve.control("PUT", "/_sim/faults", {"task_failures": [
        {"type": "vzstart", "id": vmid, "exitstatus": "startup for container failed (simulated)", "count": 1}]})
    try:
        failed = instance(node, name, type="container", image=TEMPLATE)
    finally:
        pve.control("DELETE", "/_sim/faults")
    assert failed["failed"] is True and "startup for container failed (simulated)" in failed["msg"], failed["msg"]
    assert guests_named(pve, name)[0]["status"] == "stopped"
    assert instance(node, name, type="container", image=TEMPLATE)["instance"]["status"] == "running"
