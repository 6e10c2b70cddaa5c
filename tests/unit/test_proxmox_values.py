"""The Proxmox backend's value handling: sizes, property strings, sshkeys, the exec wrapper, secrets off pvesh."""
import pytest

from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends import proxmox
from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends.proxmox_images import PveSshClient
from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import Unsupported
from ansible_collections.oneclickvirt.virt.plugins.module_utils.models import ExecResult


@pytest.mark.parametrize("text, mib", [("8G", 8192), ("512M", 512), ("1.5G", 1536), ("1T", 1048576),
                                       ("2048K", 2), (str(4 * 1024 ** 3), 4096), ("x", None), ("", None)])
def test_sizes(text, mib):
    assert proxmox.size_mib(text) == mib


def test_property_strings_round_trip():
    text = "virtio=BC:24:11:00:00:01,bridge=vmbr0,rate=12.5,firewall=1"
    options = proxmox.options_of(text)
    assert options["virtio"] == "BC:24:11:00:00:01" and proxmox.render_options(options) == text
    assert options["bridge"] == "vmbr0" and options["rate"] == "12.5"
    assert proxmox.render_options(proxmox.options_of("virtio,bridge=vmbr0")) == "virtio,bridge=vmbr0"


def test_sshkeys_compare_decoded_and_are_sent_encoded():
    keys = ["ssh-ed25519 AAAA+/x= a b", "ssh-rsa BBBB c@d"]
    stored = proxmox.sshkeys_param(proxmox.sshkeys_text(keys))
    assert " " not in stored and "+" not in stored and "%20" in stored and "%2B" in stored
    assert proxmox.sshkeys_text(stored) == proxmox.sshkeys_text(keys) == "ssh-ed25519 AAAA+/x= a b\nssh-rsa BBBB c@d"
    assert proxmox._config_value("sshkeys", stored, "qemu") == proxmox._config_value("sshkeys", keys, "qemu")


@pytest.mark.parametrize("rate_mbit, text", [(80, "10"), (100, "12.5"), (1, "0.125")])
def test_rates_are_megabytes_per_second(rate_mbit, text):
    assert proxmox._rate_text(rate_mbit) == text
    assert proxmox._rate_value(text) * 8 == rate_mbit


def test_exec_wrapper_uses_standard_tools_and_keeps_argv_whole():
    argv = ["printf", "%s", "$(x) ; y"]
    assert proxmox._wrapped(argv, None, None, None) == argv
    assert proxmox._wrapped(argv, {"B": "2", "A": "1 1"}, "/tmp", "nobody") == [
        "runuser", "-u", "nobody", "--", "env", "-C", "/tmp", "A=1 1", "B=2", *argv]
    assert proxmox._wrapped(argv, None, "/srv", "root") == ["env", "-C", "/srv", *argv]


def test_cpu_params_and_back():
    assert proxmox._cpu_params(2, "qemu", {}) == {"cores": 2, "sockets": 1}
    assert proxmox._cpu_params(1.5, "lxc", {}) == {"cores": 2, "cpulimit": 1.5}
    assert proxmox._cpu_params(2, "lxc", {"cpulimit": "1.5"}) == {"cores": 2, "delete": "cpulimit"}
    assert proxmox._cpu({"cores": 2, "sockets": 2}, "qemu") == 4
    assert proxmox._cpu({"cores": 2, "cpulimit": "1.5"}, "lxc") == 1.5
    assert proxmox._cpu({}, "lxc") is None


def test_disk_of_a_vm_skips_the_cdrom():
    config = {"boot": "order=ide2;scsi0", "ide2": "local:iso/x.iso,media=cdrom", "scsi0": "local-lvm:vm-1-disk-0,size=10G"}
    assert proxmox._disk(config, "qemu") == 10240
    assert proxmox._disk({"rootfs": "local-lvm:subvol-1-disk-0,size=4G"}, "lxc") == 4096


class RecordingSsh:
    def __init__(self):
        self.argv = []

    def run(self, argv, stdin=None, timeout=None):
        self.argv.append(argv)
        return ExecResult(0, '"UPID:pve:1"\n', "")


@pytest.mark.parametrize("secret", ["password", "cipassword"])
def test_pvesh_never_carries_a_secret(secret):
    ssh = RecordingSsh()
    with pytest.raises(Unsupported, match=secret):
        PveSshClient(ssh).request("PUT", "/nodes/pve/qemu/100/config", {secret: "s3cret"})
    assert ssh.argv == []


def test_pvesh_repeats_list_parameters():
    ssh = RecordingSsh()
    PveSshClient(ssh).request("POST", "/nodes/pve/qemu/100/agent/exec", {"command": ["printf", "a b"]})
    assert ssh.argv == [["pvesh", "create", "/nodes/pve/qemu/100/agent/exec", "--command", "printf", "--command", "a b",
                         "--output-format", "json"]]
