"""The simulated node: its storages, guests, addresses and services, on top of the state store.

Storage `local` is a real directory (dir storage: iso, vztmpl, backup, import), so what an SFTP upload or
`download-url` puts there is listed like on PVE; `local-lvm` (lvmthin: images, rootdir) is bookkeeping in
the state file, since nothing ever reads the disks' contents.
"""
import hashlib
import ipaddress
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import NODE, guestos, propstr
from .faults import Settings
from .params import IPCONFIG, LXC_NET
from .state import Guest, Store, Volume
from .tasks import TaskRunner

GIB = 1024 ** 3
MIB = 1024 ** 2
IPV4_NET = ipaddress.ip_network("10.163.0.0/22")
IPV6_NET = ipaddress.ip_network("fd42:4c58:163::/64")
BRIDGES = ("vmbr0",)
CONTENT_DIRS = {"vztmpl": "template/cache", "iso": "template/iso", "import": "import", "backup": "dump"}
CONTENT_EXTENSIONS = {
    "vztmpl": {".tar.gz": "tgz", ".tar.xz": "txz", ".tar.zst": "tzst"},
    "iso": {".iso": "iso", ".img": "iso"},
    "import": {".qcow2": "qcow2", ".raw": "raw", ".vmdk": "vmdk", ".ova": "ova"},
    "backup": {".tar.zst": "tar.zst", ".tar.gz": "tar.gz", ".vma.zst": "vma.zst", ".tar": "tar", ".vma": "vma"},
}
SEED_TEMPLATE = "debian-12-standard_12.7-1_amd64.tar.zst"
SEED_ISO = "debian-12.8.0-amd64-netinst.iso"
SEED_IMPORT = "debian-12-genericcloud-amd64.qcow2"
TEMPLATE_VMID = 9000
SERVICES = ("pve-cluster", "pvedaemon", "pveproxy", "pvestatd", "pve-firewall", "pvescheduler", "spiceproxy",
            "pve-ha-lrm", "pve-ha-crm")


class ApiError(Exception):
    """An API failure in PVE's shape: HTTP status, a message, and per-parameter errors for 400s."""

    def __init__(self, message, status=500, errors=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


@dataclass
class StorageDef:
    name: str
    type: str
    content: tuple
    total: int
    extra: dict = field(default_factory=dict)


def random_mac():
    # BC:24:11 is the prefix PVE uses for generated MAC addresses.
    return "BC:24:11:" + ":".join(f"{secrets.randbelow(256):02X}" for byte in range(3))


class Simulator:
    def __init__(self, state_dir, node=NODE):
        self.state_dir = Path(state_dir)
        self.node = node
        self.local_dir = self.state_dir / "storage" / "local"
        for sub in CONTENT_DIRS.values():
            (self.local_dir / sub).mkdir(parents=True, exist_ok=True)
        self.settings = Settings()
        self.store = Store(self.state_dir / "state.json", self.seed)
        self.tasks = TaskRunner(self.store, self.settings, node)
        self.boot_time = time.time()
        self.services = {name: "active" for name in SERVICES}   # memory only: a restart brings all back
        self.service_hooks = {}                                 # name -> callable(state), e.g. pveproxy
        self.exec_lock = threading.Lock()
        self.auth = None          # set by the server (auth.Auth)
        self.fingerprint = ""     # SHA-256 fingerprint of the HTTPS certificate, for GET /nodes
        self.storages = {
            "local": StorageDef("local", "dir", ("backup", "import", "iso", "vztmpl"), 100 * GIB,
                                {"path": str(self.local_dir)}),
            "local-lvm": StorageDef("local-lvm", "lvmthin", ("images", "rootdir"), 400 * GIB,
                                    {"thinpool": "data", "vgname": "pve"}),
        }

    # --- seed --------------------------------------------------------------------------------------

    def seed(self, store):
        """What a fresh node has: a container template, an ISO, a cloud image and a VM template."""
        files = {("vztmpl", SEED_TEMPLATE): b"pvesim container template placeholder\n",
                 ("iso", SEED_ISO): b"pvesim installer ISO placeholder\n",
                 ("import", SEED_IMPORT): b"pvesim cloud image placeholder\n"}
        for (content, name), data in files.items():
            path = self.local_dir / CONTENT_DIRS[content] / name
            if not path.exists():
                path.write_bytes(data)
        now = int(time.time())
        disk = f"local-lvm:base-{TEMPLATE_VMID}-disk-0"
        store.volumes[disk] = Volume(disk, 2 * GIB, TEMPLATE_VMID, "raw", now)
        cloudinit = f"local-lvm:vm-{TEMPLATE_VMID}-cloudinit"
        store.volumes[cloudinit] = Volume(cloudinit, 4 * MIB, TEMPLATE_VMID, "raw", now)
        config = {
            "name": "debian12-cloud", "template": 1, "cores": 1, "sockets": 1, "memory": "1024",
            "ostype": "l26", "agent": "1", "scsihw": "virtio-scsi-pci", "boot": "order=scsi0",
            "scsi0": f"{disk},size=2G", "ide2": f"{cloudinit},media=cdrom",
            "net0": f"virtio={random_mac()},bridge=vmbr0", "serial0": "socket", "vga": "serial0",
            "ipconfig0": "ip=dhcp,ip6=auto", "ciuser": "debian",
            "smbios1": f"uuid={self.new_uuid()}", "vmgenid": self.new_uuid(),
            "meta": f"creation-qemu=9.0.2,ctime={now}",
        }
        store.guests[TEMPLATE_VMID] = Guest(TEMPLATE_VMID, "qemu", config,
                                            fs=guestos.base_filesystem("debian12-cloud"))

    @staticmethod
    def new_uuid():
        raw = secrets.token_hex(16)
        return f"{raw[:8]}-{raw[8:12]}-4{raw[13:16]}-a{raw[17:20]}-{raw[20:]}"

    # --- guests -------------------------------------------------------------------------------------

    def guest(self, vmid, kind=None):
        guest = self.store.guests.get(int(vmid))
        if guest is None or (kind and guest.kind != kind):
            directory = "qemu-server" if (kind or "qemu") == "qemu" else "lxc"
            raise ApiError(f"Configuration file 'nodes/{self.node}/{directory}/{vmid}.conf' does not exist")
        return guest

    def check_unused(self, vmid):
        existing = self.store.guests.get(int(vmid))
        if existing:
            raise ApiError(f"{existing.word} {vmid} already exists on node '{self.node}'")

    def next_free_id(self):
        vmid = 100
        while vmid in self.store.guests:
            vmid += 1
        return vmid

    @staticmethod
    def config_digest(guest):
        text = json.dumps(guest.config, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()

    def check_lock(self, guest, skiplock=False):
        if guest.config.get("lock") and not skiplock:
            raise ApiError(f"{guest.word} is locked ({guest.config['lock']})")

    # --- addresses: stable per guest, in the lab's reserved simulator subnets ------------------------

    @staticmethod
    def guest_ipv4(vmid):
        return IPV4_NET.network_address + (vmid % 1000) + 10

    @staticmethod
    def guest_ipv6(vmid):
        return IPV6_NET.network_address + vmid

    def addresses(self, guest, index=0):
        """(ipv4/prefix or None, ipv6/prefix or None) of NIC `index`: static config, else simulated.

        DHCP gets a stable address of the simulated 10.163.0.0/22; IPv6 is autoconfigured (SLAAC from the
        bridge's ULA prefix) unless set static or `manual`, as a Linux guest does by default. A VM without
        ipconfig gets DHCP on its first NIC, as cloud-init does.
        """
        if guest.kind == "qemu":
            settings = guest.config.get(f"ipconfig{index}")
            settings = propstr.parse(settings, IPCONFIG) if settings else ({"ip": "dhcp"} if index == 0 else {})
        else:
            net = guest.config.get(f"net{index}")
            settings = propstr.parse(net, LXC_NET) if net else {}
        ipv4, ipv6 = settings.get("ip"), settings.get("ip6")
        if ipv4 == "dhcp":
            ipv4 = f"{self.guest_ipv4(guest.vmid)}/22" if index == 0 else None
        elif not ipv4 or "/" not in ipv4:
            ipv4 = None
        if ipv6 in (None, "auto", "dhcp"):
            ipv6 = f"{self.guest_ipv6(guest.vmid)}/64" if index == 0 else None
        elif "/" not in ipv6:
            ipv6 = None
        return ipv4, ipv6

    # --- storage ------------------------------------------------------------------------------------------

    def storage(self, name):
        storage = self.storages.get(name)
        if storage is None:
            raise ApiError(f"storage '{name}' does not exist")
        return storage

    def require_content(self, storage, content):
        if content not in storage.content:
            words = {"images": "disk image", "rootdir": "container directories", "vztmpl": "container template",
                     "iso": "ISO image", "import": "import", "backup": "backup"}
            raise ApiError(f"storage '{storage.name}' does not support content-type '{content}'"
                           if content != "rootdir" else
                           f"storage '{storage.name}' does not support {words[content]}")

    def content_path(self, content, filename):
        return self.local_dir / CONTENT_DIRS[content] / filename

    def list_volumes(self, storage_name, content=None, vmid=None):
        storage = self.storage(storage_name)
        items = []
        if storage.type == "dir":
            for kind, sub in CONTENT_DIRS.items():
                for path in sorted((self.local_dir / sub).iterdir()):
                    fmt = file_format(kind, path.name)
                    if not path.is_file() or fmt is None or path.name.startswith("."):
                        continue
                    stat = path.stat()
                    items.append({"volid": f"{storage.name}:{kind}/{path.name}", "content": kind, "format": fmt,
                                  "size": stat.st_size, "ctime": int(stat.st_mtime)})
        else:
            for volume in self.store.volumes.values():
                if not volume.volid.startswith(f"{storage.name}:"):
                    continue
                guest = self.store.guests.get(volume.vmid)
                kind = "rootdir" if guest and guest.kind == "lxc" else "images"
                items.append({"volid": volume.volid, "content": kind, "format": volume.format,
                              "size": volume.size, "vmid": volume.vmid, "ctime": volume.ctime})
        if content:
            items = [item for item in items if item["content"] == content]
        if vmid is not None:
            items = [item for item in items if item.get("vmid") == vmid]
        return sorted(items, key=lambda item: item["volid"])

    def volume(self, volid):
        """The listing entry of a volume, or None."""
        storage_name = volid.split(":", 1)[0]
        if storage_name not in self.storages:
            return None
        return next((item for item in self.list_volumes(storage_name) if item["volid"] == volid), None)

    def volume_path(self, volid):
        storage_name, name = (volid.split(":", 1) + [""])[:2]
        storage = self.storage(storage_name)
        if storage.type == "dir":
            content, filename = (name.split("/", 1) + [""])[:2]
            return str(self.content_path(content, filename))
        return f"/dev/{storage.extra['vgname']}/{name}"

    def used_bytes(self, storage):
        return sum(item["size"] for item in self.list_volumes(storage.name))

    def alloc_disk(self, storage_name, vmid, size, content="images", name=None):
        storage = self.storage(storage_name)
        self.require_content(storage, content)
        if storage.type == "dir":
            raise ApiError(f"storage '{storage_name}' does not support content-type 'images'")
        if name is None:
            taken = {v.volid for v in self.store.volumes.values()}
            number = 0
            while any(f"{storage_name}:{prefix}-{vmid}-disk-{number}" in taken for prefix in ("vm", "base")):
                number += 1
            name = f"vm-{vmid}-disk-{number}"
        volid = f"{storage_name}:{name}"
        if volid in self.store.volumes:
            raise ApiError(f"lvcreate '{storage.extra['vgname']}/{name}' error: Logical Volume \"{name}\" already exists")
        self.store.volumes[volid] = Volume(volid, size, vmid, "raw", int(time.time()))
        return volid

    def free_volume(self, volid):
        self.store.volumes.pop(volid, None)


def file_format(content, filename):
    for extension, fmt in CONTENT_EXTENSIONS[content].items():
        if filename.endswith(extension):
            return fmt
    return None
