"""Bad input through the real modules against the lab: refused before anything mutating is sent (counted in
`docker events`, `lxc monitor`, and the request log of a simulator of our own), and hostile values that are
valid arrive literally: a canary file on the node is never created, and the argv the node's shims recorded
holds each value as exactly one argument.

Already proven elsewhere (referenced by the report, not repeated): hostile instance names on Docker
(test_docker_instance.py::test_hostile_names_are_rejected_before_anything_is_sent), hostile env values over
API and SSH (::test_hostile_values_arrive_literally), exec argv (test_exec_password.py::
test_exec_argv_arrives_literally), Proxmox bad input (test_proxmox.py::test_bad_input_fails_before_any_write).
"""
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from rel_lab import (ARGV_LOG, PVE_TEMPLATE, DockerEvents, LogTail, node_with, nodes, rel_name,
                     remove_lxd_instances, run_module, writes)

pytestmark = pytest.mark.reliability
CANARY = "/tmp/rel-input-canary"
TOUCH = f"touch {CANARY}"
HOSTILE_VALUES = [f"$({TOUCH})", f"`{TOUCH}`", f"; {TOUCH}", f"| {TOUCH}", f"&& {TOUCH}", f"'; {TOUCH}; '",
                  f'"; {TOUCH}; "', f"\n{TOUCH}\n", "-rf", "--help", "*", "~root", "${IFS}", "a\\", "%s%n"]

# (module, option, bad value, args): each must fail naming the option, before any write.
BAD = [
    ("virt_instance", "memory", "12 parsecs", {"name": "rel-bad", "image": "ocv-busybox"}),
    ("virt_instance", "memory", "-5MiB", {"name": "rel-bad", "image": "ocv-busybox"}),
    ("virt_instance", "cpu", -1, {"name": "rel-bad", "image": "ocv-busybox"}),
    ("virt_instance", "env", {"A B": "1"}, {"name": "rel-bad", "image": "ocv-busybox"}),
    ("virt_instance", "env", {f"$({TOUCH})": "1"}, {"name": "rel-bad", "image": "ocv-busybox"}),
    ("virt_instance", "ports", [{"guest_port": 70000}], {"name": "rel-bad", "image": "ocv-busybox"}),
    ("virt_instance", "name", f"rel;{TOUCH}", {"image": "ocv-busybox"}),
    ("virt_instance", "hostname", f"$({TOUCH})", {"name": "rel-bad", "image": "ocv-busybox"}),
    ("virt_instance", "password", "two\nlines", {"name": "rel-bad", "image": "ocv-busybox"}),
    ("virt_image", "name", f"busybox;{TOUCH}", {"source": "pull"}),
    ("virt_image", "name", "UPPER/Case", {"source": "pull"}),
    ("virt_image", "path", "relative/file.tar", {"name": "rel-img", "source": "file"}),
    ("virt_exec", "argv", f"sh -c '{TOUCH}'", {"name": "rel-bad"}),
    ("virt_exec", "user", f"root;{TOUCH}", {"name": "rel-bad", "argv": ["true"]}),
    ("virt_exec", "cwd", "relative", {"name": "rel-bad", "argv": ["true"]}),
    ("virt_portmap", "guest_port", 0, {"instance": "rel-bad"}),
    ("virt_portmap", "host_port", 1, {"instance": "rel-bad", "guest_port": 80}),
    ("virt_portmap", "listen_address", f"1.2.3.4;{TOUCH}", {"instance": "rel-bad", "guest_port": 80}),
    ("virt_instance_password", "user", f"root;{TOUCH}", {"name": "rel-bad", "password": "x"}),
]


@pytest.mark.parametrize("module,option,value,args", BAD, ids=[f"{m}-{o}-{i}" for i, (m, o, _v, _a) in enumerate(BAD)])
def test_bad_input_on_docker_over_ssh_sends_nothing(module, option, value, args, record_property):
    node = node_with(nodes()["docker"], execution_rule="ssh_only")
    events = DockerEvents()
    events.start()
    argv = LogTail(ARGV_LOG).start()
    result = run_module(module, dict(args, node=node, **{option: value}))
    seen = events.collect()
    recorded = [entry["argv"] for entry in argv.entries()]
    assert result.get("failed") is True, result
    assert option in result["msg"] and "Traceback" not in result["msg"], result["msg"]
    # Nothing mutating reached dockerd; nothing ran on the node with the value in it.
    assert [event for event in seen if "rel-bad" in json.dumps(event) or "rel-img" in json.dumps(event)] == []
    assert not any(str(value) in json.dumps(entry) for entry in recorded if isinstance(value, str))
    assert not Path(CANARY).exists()
    record_property("writes_before_failure", 0)


@pytest.mark.parametrize("option,value", [("memory", "12 parsecs"), ("cpu", 0), ("env", {"1A": "x"}),
                                          ("name", f"rel;{TOUCH}"), ("image", "local:vztmpl/../../etc/passwd")])
def test_bad_input_on_proxmox_sends_no_write(own_sim, option, value):
    args = {"node": own_sim.node(), "name": "rel-bad", "image": PVE_TEMPLATE, option: value}
    log = own_sim.log()
    result = run_module("virt_instance", args)
    assert result.get("failed") is True, result
    assert writes(log.entries()) == []
    assert own_sim.guests_named("rel-bad") == []


@pytest.fixture(scope="module", params=["lxd", "incus"])
def target(request):
    """One running container that exec and env values are sent into over SSH. LXD and Incus: over SSH their
    backends run `lxc exec` / `incus exec`, so the node's shim records the argv (Docker tunnels its API through
    `docker system dial-stdio`, where no value is on any command line)."""
    tool = "lxc" if request.param == "lxd" else "incus"
    name = rel_name("in")
    node = node_with(nodes()[request.param], execution_rule="ssh_only")
    made = run_module("virt_instance", {"node": node, "name": name, "image": "ocv-busybox"})
    assert made.get("failed") is not True, made
    yield node, name
    remove_lxd_instances(tool, [name])


VALUES = st.one_of(st.sampled_from(HOSTILE_VALUES),
                   st.text(alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
                           min_size=1, max_size=40),
                   st.builds(lambda a, b: a + b, st.sampled_from(HOSTILE_VALUES), st.text(max_size=10)))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=VALUES)
def test_exec_argv_and_env_values_arrive_literally_over_ssh(target, value):
    assert "\0" not in value
    node, name = target
    argv = LogTail(ARGV_LOG).start()
    result = run_module("virt_exec", {"node": node, "name": name, "argv": ["printf", "%s|%s", value],
                                      "env": {"REL_VALUE": value}, "strip_empty_ends": False})
    assert result.get("failed") is not True, result
    assert result["stdout"] == f"{value}|", (value, result["stdout"])
    echoed = run_module("virt_exec", {"node": node, "name": name, "argv": ["sh", "-c", 'printf %s "$REL_VALUE"'],
                                      "env": {"REL_VALUE": value}, "strip_empty_ends": False})
    assert echoed["stdout"] == value, (value, echoed)
    # The node's docker shim saw the value as one argument, exactly.
    recorded = [entry["argv"] for entry in argv.entries()]
    assert any(value in entry for entry in recorded), recorded[-3:]
    assert not Path(CANARY).exists()


@pytest.mark.parametrize("value", HOSTILE_VALUES[:8])
def test_hostile_image_references_never_reach_a_shell(value):
    """An image reference with shell syntax is refused on every backend before anything is sent."""
    for backend in ("docker", "lxd", "incus"):
        node = node_with(nodes()[backend], execution_rule="ssh_only")
        argv = LogTail(ARGV_LOG).start()
        result = run_module("virt_image", {"node": node, "name": f"rel{value}", "state": "absent"})
        assert result.get("failed") is True and "name" in result["msg"], (backend, result)
        assert all(value not in json.dumps(entry) for entry in argv.entries())
    assert not Path(CANARY).exists()


def test_proxmox_password_under_api_only_fails_before_any_write(own_sim, record_property):
    """Setting a password needs `pct exec` (SSH); under api_only that must fail before the guest is made."""
    name = rel_name("pw")
    args = {"node": own_sim.node(), "name": name, "image": PVE_TEMPLATE, "password": "rel-secret-pass"}
    log = own_sim.log()
    result = run_module("virt_instance", args)
    made = writes(log.entries())
    again = run_module("virt_instance", args)
    record_property("writes_before_failure", len(made))
    record_property("first_run", result.get("msg", "succeeded")[:160])
    record_property("second_run", "failed" if again.get("failed") else f"changed={again.get('changed')}")
    assert result.get("failed") is True and "api_only" in result["msg"], result
    assert made == [] and own_sim.guests_named(name) == [], made
