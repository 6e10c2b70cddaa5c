"""virt_instance, virt_instance_info and virt_image_info against the lab's real LXD and real Incus.

Every test runs for both daemons. Writes are counted where the daemon sees them (`lxc monitor` /
`incus monitor`), and results are compared with what the daemon's own CLI reports.
"""

import crypt
import json
import sys
import time
from pathlib import Path

import pytest

from conftest import COLLECTIONS, LAB_DIR, _collections_path, node_with, run_module, run_playbook, unique
from lxd_helpers import (BACKENDS, RULES, LosingTlsProxy, Monitor, cli, closed_port, delete, instances_named,
                         truth)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOCVtestkeyonlyforthelab0000000000000000 lab@test"


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def name(backend):
    """A fresh instance name, deleted after the test whatever happened."""
    instance = unique(f"t-{backend}")
    yield instance
    delete(backend, instance)


def lab_node(nodes, backend, rule="auto", **changes):
    return node_with(nodes[backend], execution_rule=rule, **changes)


def api_port(nodes, backend):
    return int(nodes[backend]["api"]["url"].rsplit(":", 1)[1])


def config_of(backend, name):
    return truth(backend, name)["config"]


# -- lifecycle ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", RULES)
def test_lifecycle_under_each_rule(nodes, backend, rule, name):
    base = {"node": lab_node(nodes, backend, rule), "name": name, "image": "ocv-busybox", "cpu": 0.5,
            "memory": "64MiB"}
    expected_transport = "ssh" if rule == "ssh_only" else "api"

    created = run_module("virt_instance", base)
    assert created["changed"] is True, created
    assert created["transport"] == expected_transport
    instance = created["instance"]
    assert instance["status"] == "running" and instance["backend"] == backend
    assert instance["memory"] == 64 and instance["cpu"] == 0.5 and instance["image"] == "ocv-busybox"
    assert [event["step"] for event in created["events"]][:2] == ["create", "start"]
    real = truth(backend, name)
    assert real["config"]["limits.memory"] == "64MiB"
    assert real["config"]["limits.cpu"] == "1" and real["config"]["limits.cpu.allowance"] == "50ms/100ms"
    eth0 = real["state"]["network"]["eth0"]["addresses"]
    assert instance["private_ip"] == next(a["address"] for a in eth0 if a["family"] == "inet")
    # IPv6 is not waited for unless asked (network.ipv6): SLAAC takes about a second more than DHCP.
    global6 = [a["address"] for a in eth0 if a["family"] == "inet6" and a["scope"] == "global"]
    assert instance["ipv6"] is None or instance["ipv6"] == global6[0], (instance, global6)

    for state, status in (("started", "running"), ("stopped", "stopped"), ("started", "running"),
                          ("present", "running")):
        args = dict(base, state=state)
        predicted = run_module("virt_instance", args, check=True)
        first = run_module("virt_instance", args)
        assert first["changed"] is predicted["changed"], (state, predicted, first)
        assert first["actions"] == predicted["actions"]
        assert first["instance"]["status"] == status
        with Monitor(backend) as monitor:
            second = run_module("virt_instance", args)
        assert second["changed"] is False, (state, second)
        assert monitor.writes(name) == [], f"a no-op {state} run made the daemon write"

    restarted = run_module("virt_instance", dict(base, state="restarted"))
    assert restarted["changed"] is True and restarted["instance"]["status"] == "running"

    gone = run_module("virt_instance", dict(base, state="absent"))
    assert gone["changed"] is True and gone["instance"] is None
    assert instances_named(backend, name) == []
    again = run_module("virt_instance", dict(base, state="absent"))
    assert again["changed"] is False


def test_check_mode_predicts_and_the_daemon_sees_no_event(nodes, backend, name):
    args = {"node": lab_node(nodes, backend), "name": name, "image": "ocv-busybox", "memory": 32}
    with Monitor(backend) as monitor:
        predicted = run_module("virt_instance", args, check=True)
    assert predicted["changed"] is True and predicted["actions"] == ["create", "start"]
    assert predicted["diff"]["before"] == {} and predicted["diff"]["after"]["memory"] == 32
    assert monitor.not_reads(name) == [], "check mode made the daemon emit an event other than logging a read"
    assert monitor.events(name), "the monitor saw not even the reads: it proves nothing"
    assert instances_named(backend, name) == []

    run_module("virt_instance", args)
    with Monitor(backend) as monitor:
        for state in ("started", "stopped", "restarted", "absent"):
            result = run_module("virt_instance", dict(args, state=state, memory=48), check=True)
            assert result["changed"] is True, (state, result)
    assert monitor.writes(name) == [], "check mode sent a write"
    assert truth(backend, name)["status"] == "Running"
    assert truth(backend, name)["config"]["limits.memory"] == "32MiB"


def test_parity_and_cross_read(nodes, backend, name):
    # network.ipv6 makes the start wait for the IPv6 address too, so every later read sees the same addresses.
    made = run_module("virt_instance", {"node": lab_node(nodes, backend, "api_only"), "name": name,
                                        "image": "ocv-busybox", "memory": "48MiB", "network": {"ipv6": "auto"}})
    assert made["instance"]["private_ip"] and made["instance"]["ipv6"], made["instance"]
    over_api = run_module("virt_instance_info", {"node": lab_node(nodes, backend, "api_only"), "name": name})
    over_ssh = run_module("virt_instance_info", {"node": lab_node(nodes, backend, "ssh_only"), "name": name})
    socket_node = lab_node(nodes, backend, "api_only", api={"url": f"unix:///var/lib/{backend}/unix.socket"})
    over_socket = run_module("virt_instance_info", {"node": socket_node, "name": name})
    assert over_api["transport"] == over_socket["transport"] == "api" and over_ssh["transport"] == "ssh"
    assert over_api["instance"] == over_ssh["instance"] == over_socket["instance"] == made["instance"]
    real = truth(backend, name)
    assert over_ssh["instance"]["created"] == real["created_at"]
    assert over_ssh["instance"]["id"] == name

    listed_api = run_module("virt_instance_info", {"node": lab_node(nodes, backend, "api_only")})["instances"]
    listed_ssh = run_module("virt_instance_info", {"node": lab_node(nodes, backend, "ssh_only")})["instances"]
    mine_api = [i for i in listed_api if i["name"] == name]
    assert mine_api == [i for i in listed_ssh if i["name"] == name] == [over_api["instance"]]


def test_created_over_ssh_read_over_api(nodes, backend, name):
    made = run_module("virt_instance", {"node": lab_node(nodes, backend, "ssh_only"), "name": name,
                                        "image": "ocv-busybox", "network": {"ipv6": "auto"}})
    assert made["transport"] == "ssh"
    read = run_module("virt_instance_info", {"node": lab_node(nodes, backend, "api_only"), "name": name})
    assert read["instance"] == made["instance"]


def test_info_for_a_missing_instance_is_not_a_failure(nodes, backend):
    for rule in ("api_only", "ssh_only"):
        result = run_module("virt_instance_info", {"node": lab_node(nodes, backend, rule), "name": unique("nothing")})
        assert result.get("failed") is not True, result
        assert result["exists"] is False and result["instance"] is None


def test_stop_of_an_init_that_ignores_shutdown_is_forced_after_the_grace(nodes, backend, name):
    # The daemon asks the init to halt with a signal it ignores: a clean stop cannot happen.
    args = {"node": lab_node(nodes, backend), "name": name, "image": "ocv-busybox", "timeout": 4,
            "config": {"raw.lxc": "lxc.signal.halt=SIGWINCH"}}
    run_module("virt_instance", args)
    started = time.monotonic()
    stopped = run_module("virt_instance", dict(args, state="stopped"))
    seconds = time.monotonic() - started
    assert stopped["changed"] is True and stopped["instance"]["status"] == "stopped", stopped
    assert truth(backend, name)["status"] == "Stopped"
    assert 2 <= seconds < 15, f"stopped after {seconds:.1f}s: not the grace (timeout / 2), then force"


@pytest.mark.parametrize("rule", ["api_only", "ssh_only"])
def test_a_timeout_names_the_operation(nodes, backend, name, rule):
    _collections_path()
    if str(COLLECTIONS) not in sys.path:
        sys.path.insert(0, str(COLLECTIONS))
    from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends import provider_for
    from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import OperationTimeout
    from ansible_collections.oneclickvirt.virt.plugins.module_utils.node import validate_node_dict

    run_module("virt_instance", {"node": lab_node(nodes, backend), "name": name, "image": "ocv-busybox"})
    provider = provider_for(validate_node_dict(lab_node(nodes, backend, rule)))
    try:
        instance = provider.get_instance(name)
        started = time.monotonic()
        with pytest.raises(OperationTimeout) as caught:
            provider.exec(instance, ["sleep", "60"], timeout=2)
        assert time.monotonic() - started < 10
    finally:
        provider.close()
    assert str(caught.value).startswith(f"exec in {name}: ")
    assert ("'Executing command'" in str(caught.value)) if rule == "api_only" else ("sleep" in str(caught.value))


@pytest.mark.parametrize("rule", ["api_only", "ssh_only"])
def test_delete_of_an_instance_that_stopped_since_it_was_read(nodes, backend, name, rule):
    """The delete trusts the read the task made a moment before (no second read); when the instance stopped in
    between, the daemon's "already stopped" is no failure."""
    _collections_path()
    if str(COLLECTIONS) not in sys.path:
        sys.path.insert(0, str(COLLECTIONS))
    from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends import provider_for
    from ansible_collections.oneclickvirt.virt.plugins.module_utils.node import validate_node_dict

    run_module("virt_instance", {"node": lab_node(nodes, backend), "name": name, "image": "ocv-busybox",
                                 "state": "started"})
    provider = provider_for(validate_node_dict(lab_node(nodes, backend, rule)))
    try:
        instance = provider.get_instance(name)
        assert instance.status == "running"
        cli(backend, "stop", "--force", name)
        provider.delete(instance, 60)
    finally:
        provider.close()
    assert instances_named(backend, name) == []


# -- transports ------------------------------------------------------------------------------------------------
def test_auto_falls_back_when_the_api_is_unreachable(nodes, backend, name):
    port = closed_port()
    node = lab_node(nodes, backend, "auto", api={"url": f"https://127.0.0.1:{port}"})
    result = run_module("virt_instance", {"node": node, "name": name, "image": "ocv-busybox"})
    assert result["changed"] is True and result["transport"] == "ssh", result
    assert f"127.0.0.1:{port}" in result["fallback_reason"] and "refused" in result["fallback_reason"]
    assert "continuing over SSH" in json.dumps(result.get("warnings", []))
    assert instances_named(backend, name) == [name]


def test_both_transports_failing_names_both(nodes, backend, name):
    port = closed_port()
    node = lab_node(nodes, backend, "auto", api={"url": f"https://127.0.0.1:{port}"}, ssh={"port": 1})
    result = run_module("virt_instance", {"node": node, "name": name, "image": "ocv-busybox"})
    assert result["failed"] is True
    assert "both transports failed" in result["msg"]
    assert f"127.0.0.1:{port}" in result["msg"] and "SSH" in result["msg"]


@pytest.mark.parametrize("rule", ["auto", "api_only"])
def test_lost_answer_to_create_leaves_exactly_one(nodes, backend, name, rule):
    proxy = LosingTlsProxy(api_port(nodes, backend))
    padding = {"user.padding": "p" * 12000}  # makes the create request the one big burst the proxy drops on
    try:
        node = lab_node(nodes, backend, rule, api={"url": f"https://127.0.0.1:{proxy.port}"})
        result = run_module("virt_instance", {"node": node, "name": name, "image": "ocv-busybox",
                                              "config": padding})
    finally:
        proxy.close()
    assert proxy.dropped == 1, "the proxy never saw the create request"
    assert instances_named(backend, name) == [name], "exactly one instance, never a duplicate"
    if rule == "auto":
        assert result["changed"] is True and result["transport"] == "ssh", result
        assert result["instance"]["status"] == "running"
        assert "answer to a write was lost" in json.dumps(result.get("warnings", []))
    else:
        assert result["failed"] is True and "create" in result["msg"], result
    node = lab_node(nodes, backend, "api_only")
    args = {"node": node, "name": name, "image": "ocv-busybox", "config": padding}
    run_module("virt_instance", args)
    final = run_module("virt_instance", args)
    assert final["changed"] is False and final["instance"]["status"] == "running"
    assert instances_named(backend, name) == [name]


def test_wrong_pinned_certificate_is_refused_before_any_write(nodes, backend, name):
    other = "incus" if backend == "lxd" else "lxd"
    node = lab_node(nodes, backend, "api_only", api={"server_cert": nodes[other]["api"]["server_cert"]})
    with Monitor(backend) as monitor:
        result = run_module("virt_instance", {"node": node, "name": name, "image": "ocv-busybox"})
    assert result["failed"] is True
    assert "pinned api.server_cert" in result["msg"], result["msg"]
    assert instances_named(backend, name) == []
    assert monitor.events(name) == [], "not even a read reached the daemon"


def test_project_of_the_node_description(nodes, backend, name):
    project = unique("ocv-p")
    cli(backend, "project", "create", project, "-c", "features.images=false", "-c", "features.profiles=false")
    try:
        for rule in ("api_only", "ssh_only"):
            node = lab_node(nodes, backend, rule, project=project)
            made = run_module("virt_instance", {"node": node, "name": name, "image": "ocv-busybox"})
            assert made["changed"] is (rule == "api_only"), made
            assert instances_named(backend, name, project=project) == [name]
            assert instances_named(backend, name) == [], "the instance went to the default project"
            listed = run_module("virt_instance_info", {"node": node})["instances"]
            assert [instance["name"] for instance in listed] == [name]
        gone = run_module("virt_instance", {"node": node, "name": name, "state": "absent"})
        assert gone["changed"] is True and instances_named(backend, name, project=project) == []
    finally:
        delete(backend, name, project=project)
        cli(backend, "project", "delete", project, check=False)


# -- drift and updates ------------------------------------------------------------------------------------------
def test_out_of_band_drift_is_reported_and_converged_in_place(nodes, backend, name):
    args = {"node": lab_node(nodes, backend), "name": name, "image": "ocv-busybox", "memory": "64MiB", "cpu": 1}
    run_module("virt_instance", args)
    pid = truth(backend, name)["state"]["pid"]
    cli(backend, "config", "set", name, "limits.memory", "96MiB")
    predicted = run_module("virt_instance", args, check=True)
    assert predicted["changed"] is True and predicted["actions"] == ["update memory"]
    with Monitor(backend) as monitor:
        converged = run_module("virt_instance", args)
    assert converged["changed"] is True and converged["actions"] == ["update memory"]
    assert converged["diff"]["before"]["memory"] == 96 and converged["diff"]["after"]["memory"] == 64
    assert [e["metadata"]["action"] for e in monitor.writes(name) if e["type"] == "lifecycle"] == ["instance-updated"]
    real = truth(backend, name)
    assert real["config"]["limits.memory"] == "64MiB"
    assert real["status"] == "Running" and real["state"]["pid"] == pid, "memory is applied in place, no restart"
    assert run_module("virt_instance", args)["changed"] is False


def test_volatile_churn_is_not_a_change(nodes, backend, name):
    args = {"node": lab_node(nodes, backend), "name": name, "image": "ocv-busybox", "memory": "64MiB",
            "config": {"user.note": "kept"}}
    run_module("virt_instance", args)
    before = {k: v for k, v in config_of(backend, name).items() if k.startswith("volatile.")}
    cli(backend, "restart", "--force", name)  # the daemon rewrites its volatile.* keys
    after = {k: v for k, v in config_of(backend, name).items() if k.startswith("volatile.")}
    assert before != after, "the restart did not churn any volatile key"
    with Monitor(backend) as monitor:
        result = run_module("virt_instance", args)
    assert result["changed"] is False, result
    assert monitor.writes(name) == []


def test_update_preserves_fields_it_does_not_own(nodes, backend, name):
    args = {"node": lab_node(nodes, backend, "api_only"), "name": name, "image": "ocv-busybox", "memory": "64MiB"}
    run_module("virt_instance", args)
    cli(backend, "config", "set", name, "user.someone-else", "theirs")
    cli(backend, "config", "device", "add", name, "scratch", "disk", "source=/tmp", "path=/mnt/scratch")
    for rule in ("api_only", "ssh_only"):
        memory = 80 if rule == "api_only" else 96
        result = run_module("virt_instance", dict(args, node=lab_node(nodes, backend, rule), memory=memory,
                                                  config={"user.mine": rule}))
        assert result["changed"] is True and result["actions"] == ["update config, memory"], result
    real = truth(backend, name)
    assert real["config"]["user.someone-else"] == "theirs" and real["config"]["user.mine"] == "ssh_only"
    assert real["devices"]["scratch"]["path"] == "/mnt/scratch"
    assert real["config"]["limits.memory"] == "96MiB"
    assert real["profiles"] == ["default"]


def test_change_that_needs_a_restart_says_so(nodes, backend, name):
    args = {"node": lab_node(nodes, backend), "name": name, "image": "ocv-busybox"}
    run_module("virt_instance", args)
    pid = truth(backend, name)["state"]["pid"]
    result = run_module("virt_instance", dict(args, config={"security.privileged": True}))
    assert result["changed"] is True
    assert result["actions"] == ["update config", "restart needed: security.privileged"]
    assert "next restart" in json.dumps(result.get("warnings", []))
    real = truth(backend, name)
    assert real["config"]["security.privileged"] == "true" and real["state"]["pid"] == pid
    assert run_module("virt_instance", dict(args, config={"security.privileged": True}))["changed"] is False
    restarted = run_module("virt_instance", dict(args, config={"security.privileged": True}, state="restarted"))
    assert restarted["actions"] == ["restart"] and truth(backend, name)["state"]["pid"] != pid


def test_change_that_needs_recreate_fails_without_force(nodes, backend, name):
    args = {"node": lab_node(nodes, backend), "name": name, "image": "ocv-busybox"}
    first = run_module("virt_instance", args)
    other = run_module("virt_instance", dict(args, image="ocv-debian"))
    assert other["failed"] is True
    assert "image" in other["msg"] and "force: true" in other["msg"]
    assert truth(backend, name)["created_at"] == first["instance"]["created"]
    recreated = run_module("virt_instance", dict(args, image="ocv-debian", force=True))
    assert recreated["changed"] is True and recreated["actions"][:2] == ["delete (recreate)", "create"]
    assert recreated["instance"]["image"] == "ocv-debian"
    assert truth(backend, name)["created_at"] != first["instance"]["created"]


def test_image_by_fingerprint_and_profiles(nodes, backend, name):
    fingerprint = json.loads(cli(backend, "image", "list", "ocv-busybox", "--format", "json").stdout)[0]["fingerprint"]
    args = {"node": lab_node(nodes, backend), "name": name, "image": fingerprint[:12],
            "config": {"profiles": ["default"]}}
    made = run_module("virt_instance", args)
    assert made["changed"] is True and made["instance"]["image"] == fingerprint[:12]
    assert config_of(backend, name)["volatile.base_image"] == fingerprint
    assert run_module("virt_instance", args)["changed"] is False
    by_alias = run_module("virt_instance", dict(args, image="ocv-busybox"))
    assert by_alias["changed"] is False, "the alias names the same image: no recreate"
    missing = run_module("virt_instance", dict(args, config={"profiles": ["default", "ocv-no-such-profile"]}))
    assert missing["failed"] is True and "ocv-no-such-profile" in missing["msg"]


# -- refusals ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad_name", ["a;touch /tmp/ocv-canary", "a b", "ünïcode", "$(id)", "-rf", "a/b", "x" * 64,
                                      "name'quote", ""])
def test_hostile_names_are_rejected_before_anything_is_sent(nodes, backend, bad_name):
    with Monitor(backend) as monitor:
        result = run_module("virt_instance", {"node": lab_node(nodes, backend), "name": bad_name,
                                              "image": "ocv-busybox"})
    assert result["failed"] is True and "name" in result["msg"]
    assert not Path("/tmp/ocv-canary").exists()
    assert [event for event in monitor.lines if event["type"] in ("lifecycle", "operation")
            and "ocv-canary" in json.dumps(event)] == []


def test_vm_request_reaches_the_daemon_and_its_refusal_is_clear(nodes, backend, name):
    for rule in ("api_only", "ssh_only"):
        result = run_module("virt_instance", {"node": lab_node(nodes, backend, rule), "name": name,
                                              "image": "ocv-busybox", "type": "vm"})
        assert result["failed"] is True
        assert result["msg"].startswith(f"create of {name} failed: ") and "virtual-machine" in result["msg"]
        assert "type: vm needs" in result["msg"]
        assert instances_named(backend, name) == []


def test_root_disk_size_on_the_dir_pool_is_refused_clearly(nodes, backend, name):
    with Monitor(backend) as monitor:
        result = run_module("virt_instance", {"node": lab_node(nodes, backend), "name": name, "image": "ocv-busybox",
                                              "disk": "1GiB"})
    assert result["failed"] is True and result["msg"].startswith("disk:")
    assert "dir" in result["msg"] and "quota" in result["msg"]
    assert monitor.writes(name) == [] and instances_named(backend, name) == []


def test_bandwidth_limits(nodes, backend, name):
    node = lab_node(nodes, backend)
    refused = run_module("virt_instance", {"node": node, "name": name, "image": "ocv-busybox",
                                           "network": {"bandwidth_out": 10}})
    assert refused["failed"] is True
    assert "limits.egress" in refused["msg"] and "traffic control" in refused["msg"]
    assert "deleted again" in refused["msg"] and instances_named(backend, name) == []

    made = run_module("virt_instance", {"node": node, "name": name, "image": "ocv-busybox",
                                        "network": {"bandwidth_in": 10}})
    assert made["changed"] is True and made["instance"]["status"] == "running"
    assert truth(backend, name)["devices"]["eth0"]["limits.ingress"] == "10Mbit"
    again = run_module("virt_instance", {"node": node, "name": name, "image": "ocv-busybox",
                                         "network": {"bandwidth_in": 10}})
    assert again["changed"] is False


@pytest.mark.parametrize("rule", ["api_only", "ssh_only"])
def test_hostile_values_arrive_literally(nodes, backend, name, rule):
    canary = Path("/tmp/ocv-lxd-canary")
    canary.unlink(missing_ok=True)
    value = "$(touch /tmp/ocv-lxd-canary); `touch /tmp/ocv-lxd-canary` 'q' \"dq\" ; & | > < \\ \t{}"
    result = run_module("virt_instance", {"node": lab_node(nodes, backend, rule), "name": name,
                                          "image": "ocv-busybox", "env": {"HOSTILE": value},
                                          "config": {"user.hostile": value}})
    assert result["changed"] is True, result
    real = truth(backend, name)
    assert real["config"]["environment.HOSTILE"] == value and real["config"]["user.hostile"] == value
    inside = cli(backend, "exec", name, "--", "env").stdout.splitlines()
    assert f"HOSTILE={value}" in inside
    assert not canary.exists()
    assert cli(backend, "exec", name, "--", "test", "-e", str(canary), check=False).returncode != 0


# -- secrets inside the instance ---------------------------------------------------------------------------------
def _stored_hash(backend, name, user="root"):
    return cli(backend, "exec", name, "--", "getent", "shadow", user).stdout.split(":")[1]


@pytest.mark.parametrize("rule", ["ssh_only", "api_only"])
def test_password_is_set_and_never_leaks(nodes, backend, name, tmp_path, rule):
    password = "it's a \"pass\"; with $(spaces) & `ticks`"
    logs = [LAB_DIR / "ssh" / "argv.log", LAB_DIR / "ssh" / "commands.log"]
    offsets = {path: path.stat().st_size if path.exists() else 0 for path in logs}
    node = lab_node(nodes, backend, rule)
    playbook = f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Create with a password
      oneclickvirt.virt.virt_instance:
        node: {json.dumps(node)}
        name: {name}
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
    assert password not in output and "set password" in output
    for path, offset in offsets.items():
        with open(path, "rb") as handle:
            handle.seek(offset)
            recorded = handle.read().decode("utf-8", "replace")
        if rule == "ssh_only":
            assert recorded, f"{path} recorded nothing: the run did not go over the lab's SSH node"
        assert password not in recorded and json.dumps(password)[1:-1] not in recorded
    stored = _stored_hash(backend, name)
    assert stored.startswith("$") and crypt.crypt(password, stored) == stored
    assert crypt.crypt("wrong" + password, stored) != stored


@pytest.mark.parametrize("rule", ["api_only", "ssh_only"])
def test_ssh_keys_written_on_create(nodes, backend, name, rule):
    args = {"node": lab_node(nodes, backend, rule), "name": name, "image": "ocv-busybox",
            "ssh_authorized_keys": [KEY]}
    result = run_module("virt_instance", args)
    assert "add ssh keys" in result["actions"]
    assert cli(backend, "exec", name, "--", "cat", "/root/.ssh/authorized_keys").stdout == KEY + "\n"
    again = run_module("virt_instance", dict(args, update_ssh_keys="always"))
    assert again["changed"] is False


# -- images ------------------------------------------------------------------------------------------------------
def test_image_info_lists_the_lab_images(nodes, backend):
    api = run_module("virt_image_info", {"node": lab_node(nodes, backend, "api_only")})
    ssh = run_module("virt_image_info", {"node": lab_node(nodes, backend, "ssh_only")})
    assert api["transport"] == "api" and ssh["transport"] == "ssh"
    assert api["images"] == ssh["images"]
    listing = json.loads(cli(backend, "image", "list", "--format", "json").stdout)
    real = {image["fingerprint"]: image for image in listing}
    by_name = {image["name"]: image for image in api["images"]}
    assert {"ocv-busybox", "ocv-debian"} <= set(by_name)
    busybox = by_name["ocv-busybox"]
    assert busybox["id"] in real and busybox["aliases"] == ["ocv-busybox"] and busybox["type"] == "container"
    assert busybox["size"] == real[busybox["id"]]["size"] and busybox["backend"] == backend
    one = run_module("virt_image_info", {"node": lab_node(nodes, backend), "name": "ocv-debian"})
    assert [image["name"] for image in one["images"]] == ["ocv-debian"]
