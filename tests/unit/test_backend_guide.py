"""The "adding a backend" guide, proved: a fifth backend that keeps its instances in memory, registered with
`backends.register(name, loader)` like the real ones, driven through the real virt_instance module
(AnsibleModule, common.run_module, instance.ensure_instance) for present, idempotence, check mode, in-place
updates, recreate refusal and absent.

The backend counts its writes, as the integration tests count writes where a daemon sees them: an idempotent
second run must send none, and check mode must send none.
"""

from __future__ import annotations

import contextlib
import json
from unittest import mock

import pytest

from ansible.module_utils import basic

from ansible_collections.oneclickvirt.virt.plugins.module_utils import backends, node as node_module
from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends.base import Provider
from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import NotFound
from ansible_collections.oneclickvirt.virt.plugins.module_utils.models import Instance
from ansible_collections.oneclickvirt.virt.plugins.modules import virt_instance

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core 2.18 has no helper yet: set the module's input the way it reads it
    @contextlib.contextmanager
    def patch_module_args(args=None):
        with mock.patch.object(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}).encode()):
            yield


class MemoryDaemon:
    """What a real daemon holds: instances by name, and every write it was sent."""

    def __init__(self):
        self.instances = {}
        self.writes = []


DAEMON = MemoryDaemon()


class MemoryProvider(Provider):
    """The whole backend. A real one sends requests through self.router; this one answers from DAEMON."""

    backend = "memory"
    instance_types = ("container",)
    in_place_fields = ("cpu", "memory")

    def make_api_client(self):
        raise AssertionError("the memory backend has no transport")

    make_ssh_client = make_api_client

    def version(self):
        return "memory 1.0"

    def list_instances(self):
        return [self._copy(instance) for instance in DAEMON.instances.values()]

    def get_instance(self, name):
        # Names match exactly: `web` is not `web-1`.
        instance = DAEMON.instances.get(name)
        return self._copy(instance) if instance else None

    def drift(self, instance, spec):
        changes = {}
        for field in ("image", "cpu", "memory"):
            wanted = getattr(spec, field)
            if wanted is not None and wanted != getattr(instance, field):
                changes[field] = (getattr(instance, field), wanted)
        return changes

    def create_instance(self, spec, events):
        DAEMON.writes.append(f"create {spec.name}")
        DAEMON.instances[spec.name] = Instance(
            name=spec.name, id=f"mem-{len(DAEMON.writes)}", node=self.node.name, backend=self.backend, type=spec.type,
            status="stopped", image=spec.image, cpu=spec.cpu, memory=spec.memory, created="2026-11-28T00:00:00Z")

    def update_instance(self, instance, changes):
        DAEMON.writes.append(f"update {instance.name} {sorted(changes)}")
        for field, value in changes.items():
            setattr(self._stored(instance), field, value)

    def start(self, instance, timeout):
        DAEMON.writes.append(f"start {instance.name}")
        self._stored(instance).status = "running"

    def stop(self, instance, timeout, force=False):
        DAEMON.writes.append(f"stop {instance.name}")
        self._stored(instance).status = "stopped"

    def restart(self, instance, timeout):
        DAEMON.writes.append(f"restart {instance.name}")
        self._stored(instance).status = "running"

    def delete(self, instance, timeout):
        DAEMON.writes.append(f"delete {instance.name}")
        del DAEMON.instances[self._stored(instance).name]

    @staticmethod
    def _stored(instance):
        if instance.name not in DAEMON.instances:
            raise NotFound(f"{instance.name} does not exist")
        return DAEMON.instances[instance.name]

    @staticmethod
    def _copy(instance):
        # Callers get a snapshot, as they would get a parsed API answer, never the daemon's own object.
        return Instance(**instance.to_dict())


LOADED = []


def _memory():
    LOADED.append("memory")
    return MemoryProvider


NODE = {"name": "mem-1", "type": "memory", "ssh": {"host": "in-memory.invalid"}}


@pytest.fixture(autouse=True)
def memory_backend(monkeypatch):
    """Register the backend exactly as a backend file's entry in backends/__init__.py does, and add its name to
    the node description's backends (node.BACKENDS and the `type` choices), the other edit the guide lists."""
    monkeypatch.setattr(backends, "_LOADERS", dict(backends._LOADERS))
    backends.register("memory", _memory)
    monkeypatch.setattr(node_module, "BACKENDS", node_module.BACKENDS + ("memory",))
    monkeypatch.setitem(node_module.NODE_SPEC["type"], "choices", list(node_module.BACKENDS) + ["memory"])
    DAEMON.instances.clear()
    DAEMON.writes.clear()
    LOADED.clear()


def run(capsys, args, check=False):
    """One run of the real virt_instance module with these arguments; returns its JSON result."""
    with patch_module_args(dict(args, node=NODE, _ansible_check_mode=check, _ansible_diff=True)):
        with pytest.raises(SystemExit):
            virt_instance.main()
    return json.loads(capsys.readouterr().out)


def test_registered_lazily_by_name():
    assert "memory" in backends.registered() and {"docker", "lxd", "incus"} <= set(backends.registered())
    assert LOADED == [], "registering must not import the backend"
    provider = backends.provider_for(node_module.validate_node_dict(NODE))
    assert isinstance(provider, MemoryProvider) and LOADED == ["memory"]


def test_present_idempotent_check_mode_update_absent(capsys):
    want = {"name": "web-1", "image": "busybox", "cpu": 1, "memory": "128MiB", "state": "started"}

    predicted = run(capsys, want, check=True)
    assert predicted["changed"] is True and predicted["actions"] == ["create", "start"]
    assert predicted["instance"]["status"] == "running" and predicted["instance"]["memory"] == 128
    assert DAEMON.writes == [] and DAEMON.instances == {}, "check mode writes nothing"

    created = run(capsys, want)
    assert created["changed"] is True and created["actions"] == predicted["actions"]
    assert created["instance"]["status"] == "running" and created["instance"]["backend"] == "memory"
    assert created["diff"]["before"] == {} and created["diff"]["after"]["name"] == "web-1"
    assert DAEMON.writes == ["create web-1", "start web-1"]

    again = run(capsys, want)
    assert again["changed"] is False and again["actions"] == [] and len(DAEMON.writes) == 2

    bigger = dict(want, memory="256MiB")
    assert run(capsys, bigger, check=True)["actions"] == ["update memory"] and len(DAEMON.writes) == 2
    updated = run(capsys, bigger)
    assert updated["changed"] is True and updated["instance"]["memory"] == 256
    assert DAEMON.writes[-1] == "update web-1 ['memory']"
    assert run(capsys, bigger)["changed"] is False

    stopped = run(capsys, {"name": "web-1", "state": "stopped"})
    assert stopped["actions"] == ["stop"] and DAEMON.instances["web-1"].status == "stopped"

    # An image change needs a new instance: refused without force, before anything is written.
    writes = len(DAEMON.writes)
    refused = run(capsys, dict(want, image="debian"))
    assert refused["failed"] is True and "force: true" in refused["msg"] and len(DAEMON.writes) == writes

    assert run(capsys, {"name": "web-1", "state": "absent"}, check=True)["actions"] == ["delete"]
    assert "web-1" in DAEMON.instances
    gone = run(capsys, {"name": "web-1", "state": "absent"})
    assert gone["changed"] is True and gone["instance"] is None and DAEMON.instances == {}
    assert run(capsys, {"name": "web-1", "state": "absent"})["changed"] is False


def test_names_are_exact_and_bad_input_writes_nothing(capsys):
    run(capsys, {"name": "web-10", "image": "busybox", "state": "present"})
    # `web-1` is a different instance from `web-10`: it is created, not found by prefix.
    assert run(capsys, {"name": "web-1", "image": "busybox", "state": "present"})["actions"] == ["create"]
    writes = list(DAEMON.writes)
    bad = run(capsys, {"name": "web-2", "image": "busybox", "memory": "lots"})
    assert bad["failed"] is True and "memory" in bad["msg"] and DAEMON.writes == writes
    vm = run(capsys, {"name": "web-3", "image": "busybox", "type": "vm"})
    assert vm["failed"] is True and "vm" in vm["msg"] and DAEMON.writes == writes
