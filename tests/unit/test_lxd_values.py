"""LXD/Incus values: sizes and cpu as the daemons write them, addresses, status, images, registration."""

import pytest

from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends import lxd_common, provider_for
from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends.incus import IncusProvider
from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends.lxd import LxdProvider
from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import InvalidSpec
from ansible_collections.oneclickvirt.virt.plugins.module_utils.node import validate_node_dict


def node(backend="lxd", **extra):
    raw = {"name": "n1", "type": backend, "execution_rule": "ssh_only", "ssh": {"host": "127.0.0.1"}, **extra}
    return validate_node_dict(raw)


@pytest.mark.parametrize("text, mib", [("512MiB", 512), ("1GiB", 1024), ("1GB", 954), ("2147483648", 2048),
                                       ("1.5GiB", 1536), ("100kB", 1), ("0", None), ("50%", None), ("", None),
                                       (None, None), ("12parsecs", None)])
def test_lxd_sizes_in_mib(text, mib):
    assert lxd_common.lxd_size_to_mib(text) == mib


@pytest.mark.parametrize("text, cores", [("2", 2), ("0-1", 2), ("0,2", 2), ("0-3,8", 5), ("", None), (None, None),
                                         ("x", None)])
def test_cpu_count(text, cores):
    assert lxd_common.cpu_count(text) == cores


def test_cpu_fractions_are_a_hard_allowance():
    assert lxd_common.cpu_config(2) == {"limits.cpu": "2", "limits.cpu.allowance": ""}
    assert lxd_common.cpu_config(0.5) == {"limits.cpu": "1", "limits.cpu.allowance": "50ms/100ms"}
    assert lxd_common.cpu_config(1.5) == {"limits.cpu": "2", "limits.cpu.allowance": "150ms/100ms"}
    assert lxd_common.cpu_of({"limits.cpu": "1", "limits.cpu.allowance": "50ms/100ms"}) == 0.5
    assert lxd_common.cpu_of({"limits.cpu": "2", "limits.cpu.allowance": "200ms/100ms"}) == 2
    assert lxd_common.cpu_of({"limits.cpu": "0-3", "limits.cpu.allowance": "50%"}) == 4  # soft share: the count
    assert lxd_common.cpu_of({}) is None


def test_config_values_are_written_as_the_daemon_reads_them():
    assert lxd_common.config_value("security.nesting", True) == "true"
    assert lxd_common.config_value("boot.autostart", False) == "false"
    assert lxd_common.config_value("limits.processes", 500) == "500"
    assert lxd_common.config_value("user.x", "$(id)") == "$(id)"
    with pytest.raises(InvalidSpec, match="config.user.x"):
        lxd_common.config_value("user.x", ["a"])


def test_addresses_are_global_only_and_prefer_eth0():
    state = {"network": {
        "lo": {"addresses": [{"family": "inet", "address": "127.0.0.1", "scope": "local"}]},
        "eth1": {"addresses": [{"family": "inet", "address": "192.0.2.9", "scope": "global"}]},
        "eth0": {"addresses": [{"family": "inet6", "address": "fe80::1", "scope": "link"},
                               {"family": "inet6", "address": "fd42::5", "scope": "global"},
                               {"family": "inet", "address": "10.161.0.5", "scope": "global"}]}}}
    assert lxd_common._addresses(state) == ("10.161.0.5", "fd42::5")
    assert lxd_common._addresses({"network": {"eth0": {"addresses": [
        {"family": "inet6", "address": "fe80::1", "scope": "link"}]}}}) == (None, None)
    assert lxd_common._addresses({}) == (None, None)


RAW = {
    "name": "web-1", "type": "container", "status": "Frozen", "created_at": "2026-01-01T00:00:00Z",
    "profiles": ["default"],
    "config": {"user.ocv.image": "ocv-busybox", "limits.memory": "1GB", "volatile.base_image": "ab" * 32},
    "expanded_config": {"user.ocv.image": "ocv-busybox", "limits.memory": "1GB", "limits.cpu": "0-1",
                        "volatile.base_image": "ab" * 32, "volatile.last_state.power": "RUNNING"},
    "devices": {},
    "expanded_devices": {"root": {"type": "disk", "path": "/", "pool": "default", "size": "10GiB"},
                         "eth0": {"type": "nic", "network": "lxdbr0", "name": "eth0"}},
    "state": {"network": {"eth0": {"addresses": [{"family": "inet", "address": "10.1.1.2", "scope": "global"}]}}},
}


@pytest.mark.parametrize("status, expected", [("Running", "running"), ("Stopped", "stopped"), ("Frozen", "paused"),
                                              ("Error", "error"), ("Freezing", "unknown"), ("", "unknown")])
def test_status_mapping(status, expected):
    instance = LxdProvider(node())._instance(dict(RAW, status=status))
    assert instance.status == expected


def test_instance_is_normalised():
    instance = LxdProvider(node())._instance(RAW).to_dict()
    assert instance == {"name": "web-1", "id": "web-1", "node": "n1", "backend": "lxd", "type": "container",
                        "status": "paused", "image": "ocv-busybox", "cpu": 2, "memory": 954, "disk": 10240,
                        "private_ip": "10.1.1.2", "ipv6": None, "ports": [], "created": "2026-01-01T00:00:00Z"}
    vm = IncusProvider(node("incus"))._instance(dict(RAW, type="virtual-machine", expanded_config={
        "volatile.base_image": "cd" * 32}))
    assert vm.type == "vm" and vm.backend == "incus"
    assert vm.image == "cd" * 32, "without the collection's key, the fingerprint it was made from"


def test_backends_are_registered_and_lazy():
    assert isinstance(provider_for(node("lxd")), LxdProvider)
    assert isinstance(provider_for(node("incus")), IncusProvider)
    assert (LxdProvider.cli, IncusProvider.cli) == ("lxc", "incus")
    assert LxdProvider.default_socket == "/var/lib/lxd/unix.socket"
    assert IncusProvider.default_socket == "/var/lib/incus/unix.socket"
    assert IncusProvider(node("incus")).monitor_command(("lifecycle",)) == [
        "incus", "monitor", "--format=json", "--all-projects", "--type=lifecycle"]


def test_every_backend_entry_names_its_module_and_class():
    """The action plugin packs `backends/<module>.py` for a node type; the module loads the class from it."""
    from ansible_collections.oneclickvirt.virt.plugins.module_utils import backends

    assert backends.PROVIDERS["lxd"] == ("lxd", "LxdProvider")
    assert backends.PROVIDERS["incus"] == ("incus", "IncusProvider")
    for kind, (module_name, class_name) in backends.PROVIDERS.items():
        assert backends._LOADERS[kind]().__name__ == class_name
        assert backends._LOADERS[kind]().__module__.endswith(f".backends.{module_name}")
