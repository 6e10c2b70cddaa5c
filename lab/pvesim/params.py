"""Parameter checking, the way PVE's JSONSchema layer answers: 400 "Parameter verification failed." with
one message per parameter.

These tables are the simulator's own, hand-written knowledge of the parameters it implements; they are not
taken from the official schema (which must stay out of the repository). The conformance test checks every
request the simulator served against the official schema, in both directions: what we accepted must be
valid there, and what we refused with 400 must be invalid there.
"""
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import unquote

from . import propstr
from .propstr import FormatError, PropFormat

MISSING = "property is missing and it is not optional"
UNKNOWN = "property is not defined in schema and the schema does not allow additional properties"


class ParamError(Exception):
    """400 with PVE's per-parameter messages."""

    def __init__(self, errors):
        super().__init__("Parameter verification failed.")
        self.errors = errors


@dataclass(frozen=True)
class Param:
    type: str = "string"            # string | integer | number | boolean | array
    required: bool = False
    enum: tuple = ()
    minimum: float = None
    maximum: float = None
    max_index: int = None           # for `net[n]`-style names: the highest n
    fmt: PropFormat = None          # a property string the simulator parses
    check: object = None            # callable(text) raising FormatError
    max_length: int = None


def Text(**kw):
    return Param("string", **kw)


def Int(**kw):
    return Param("integer", **kw)


def Num(**kw):
    return Param("number", **kw)


def Bool(**kw):
    return Param("boolean", **kw)


# --- value checks for named formats ---------------------------------------------------------------

def check_regex(pattern, what):
    compiled = re.compile(pattern)

    def check(value):
        if not compiled.fullmatch(value):
            raise FormatError(f"value does not look like a valid {what}")
    return check


check_node = check_regex(r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?", "node name")
check_dns_name = check_regex(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?)*",
                             "DNS name")
check_storage_id = check_regex(r"[a-z][a-z0-9\-_.]*[a-z0-9]", "storage ID")
check_configid_list = check_regex(r"[a-z][a-z_\-0-9]*(?:[,;\s]+[a-z][a-z_\-0-9]*)*", "configuration ID list")
check_mac = check_regex(r"[a-fA-F0-9]{2}(?::[a-fA-F0-9]{2}){5}", "MAC address")


def check_urlencoded(value):
    # PVE refuses a raw key ("invalid urlencoded string"): clients must percent-encode sshkeys.
    if not re.fullmatch(r"[-%a-zA-Z0-9_.!~*'()]*", value):
        raise FormatError(f"invalid urlencoded string: {value}")
    unquote(value)


def check_tags(value):
    for tag in re.split(r"[;, ]", value):
        if tag and not re.fullmatch(r"[a-z0-9_][a-z0-9_\-+.]*", tag, re.IGNORECASE):
            raise FormatError(f"invalid tag '{tag}'")


def ip_config_check(family, specials):
    def check(value):
        if value in specials:
            return
        try:
            network = ipaddress.ip_interface(value)
        except ValueError:
            raise FormatError(f"invalid IPv{family} address/CIDR '{value}'") from None
        if network.version != family or "/" not in value:
            raise FormatError(f"invalid IPv{family} address/CIDR '{value}'")
    return check


def ip_check(family):
    def check(value):
        try:
            if ipaddress.ip_address(value).version != family:
                raise ValueError
        except ValueError:
            raise FormatError(f"invalid IPv{family} address '{value}'") from None
    return check


# --- property-string formats the simulator parses ------------------------------------------------------

QEMU_NIC_MODELS = ("e1000", "e1000-82540em", "e1000-82544gc", "e1000-82545em", "e1000e", "i82551", "i82557b",
                   "i82559er", "ne2k_isa", "ne2k_pci", "pcnet", "rtl8139", "virtio", "vmxnet3")

KEY_TYPES = {}   # (format name, key) -> Param, for values inside property strings


def prop_format(name, keys, key_params=None, **kw):
    fmt = PropFormat(keys=frozenset(keys), **kw)
    for key, param in (key_params or {}).items():
        KEY_TYPES[(id(fmt), key)] = param
    return fmt


QEMU_NET = prop_format(
    "net", (*QEMU_NIC_MODELS, "model", "macaddr", "bridge", "firewall", "link_down", "mtu", "queues", "rate",
            "tag", "trunks"),
    {"model": Text(enum=QEMU_NIC_MODELS), "macaddr": Text(check=check_mac), "firewall": Bool(), "link_down": Bool(),
     "mtu": Int(minimum=1, maximum=65520), "queues": Int(minimum=0, maximum=64), "rate": Num(minimum=0),
     "tag": Int(minimum=1, maximum=4094)},
    default_key="model", required=frozenset({"model"}),
    key_aliases={model: ("model", "macaddr") for model in QEMU_NIC_MODELS})

DISK_KEYS = ("file", "media", "size", "cache", "discard", "iothread", "ssd", "backup", "format", "import-from",
             "aio", "replicate", "ro", "serial", "snapshot", "detect_zeroes", "shared", "werror", "rerror",
             "mbps", "mbps_rd", "mbps_wr", "iops", "iops_rd", "iops_wr", "wwn")
QEMU_DISK = prop_format(
    "disk", DISK_KEYS,
    {"media": Text(enum=("cdrom", "disk")), "cache": Text(enum=("none", "writethrough", "writeback", "unsafe", "directsync")),
     "discard": Text(enum=("ignore", "on")), "iothread": Bool(), "ssd": Bool(), "backup": Bool(), "replicate": Bool(), "ro": Bool(),
     "snapshot": Bool(), "detect_zeroes": Bool(), "shared": Bool(), "aio": Text(enum=("native", "threads", "io_uring")),
     "format": Text(enum=("raw", "cow", "qcow", "qed", "qcow2", "vmdk", "cloop")),
     "mbps": Num(minimum=1), "mbps_rd": Num(minimum=1), "mbps_wr": Num(minimum=1),
     "iops": Int(minimum=10), "iops_rd": Int(minimum=10), "iops_wr": Int(minimum=10)},
    default_key="file", required=frozenset({"file"}))
EFIDISK = prop_format(
    "efidisk", ("file", "efitype", "format", "pre-enrolled-keys", "size", "import-from"),
    {"efitype": Text(enum=("2m", "4m")), "pre-enrolled-keys": Bool()},
    default_key="file", required=frozenset({"file"}))
AGENT = prop_format(
    "agent", ("enabled", "freeze-fs-on-backup", "fstrim_cloned_disks", "type"),
    {"enabled": Bool(), "freeze-fs-on-backup": Bool(), "fstrim_cloned_disks": Bool(), "type": Text(enum=("virtio", "isa"))},
    default_key="enabled", required=frozenset({"enabled"}))
IPCONFIG = prop_format(
    "ipconfig", ("ip", "gw", "ip6", "gw6"),
    {"ip": Text(check=ip_config_check(4, ("dhcp",))), "gw": Text(check=ip_check(4)),
     "ip6": Text(check=ip_config_check(6, ("dhcp", "auto"))), "gw6": Text(check=ip_check(6))})
MEMORY = prop_format("memory", ("current",), {"current": Int(minimum=16)}, default_key="current")
CPU = prop_format("cpu", ("cputype", "flags", "hidden", "hv-vendor-id", "phys-bits", "reported-model"),
                  {"hidden": Bool()}, default_key="cputype")
BOOT = prop_format("boot", ("legacy", "order"), default_key="legacy")
STARTUP = prop_format("startup", ("order", "up", "down"),
                      {"order": Int(minimum=0), "up": Int(minimum=0), "down": Int(minimum=0)}, default_key="order")
LXC_NET = prop_format(
    "lxc-net", ("name", "bridge", "firewall", "gw", "gw6", "hwaddr", "ip", "ip6", "link_down", "mtu", "rate",
                "tag", "trunks", "type"),
    {"firewall": Bool(), "link_down": Bool(), "mtu": Int(minimum=64, maximum=65535), "rate": Num(minimum=0),
     "tag": Int(minimum=1, maximum=4094), "type": Text(enum=("veth",)), "hwaddr": Text(check=check_mac),
     "ip": Text(check=ip_config_check(4, ("dhcp", "manual"))), "ip6": Text(check=ip_config_check(6, ("dhcp", "auto", "manual"))),
     "gw": Text(check=ip_check(4)), "gw6": Text(check=ip_check(6))},
    required=frozenset({"name"}), first=("name",))
ROOTFS = prop_format(
    "rootfs", ("volume", "size", "acl", "mountoptions", "quota", "replicate", "ro", "shared"),
    {"acl": Bool(), "quota": Bool(), "replicate": Bool(), "ro": Bool(), "shared": Bool()},
    default_key="volume", required=frozenset({"volume"}))
MOUNTPOINT = prop_format(
    "mp", ("volume", "mp", "size", "acl", "backup", "mountoptions", "quota", "replicate", "ro", "shared"),
    {"acl": Bool(), "backup": Bool(), "quota": Bool(), "replicate": Bool(), "ro": Bool(), "shared": Bool()},
    default_key="volume", required=frozenset({"volume", "mp"}), first=("mp",))
FEATURES = prop_format("features", ("force_rw_sys", "fuse", "keyctl", "mknod", "mount", "nesting"),
                       {"force_rw_sys": Bool(), "fuse": Bool(), "keyctl": Bool(), "mknod": Bool(), "nesting": Bool()})


# --- the checking ------------------------------------------------------------------------------------------

BOOL_TRUE = ("1", "true", "yes", "on")
BOOL_FALSE = ("0", "false", "no", "off")


def convert(name, param, raw):
    """One value from the wire (text, or a list for arrays) -> its typed value, or FormatError."""
    if param.type == "array":
        values = raw if isinstance(raw, list) else [raw]
        return [str(v) for v in values]
    if isinstance(raw, list):
        if len(raw) != 1:
            raise FormatError("duplicate parameter")
        raw = raw[0]
    text = str(raw)
    if param.type == "integer":
        if not re.fullmatch(r"[+-]?\d+", text):
            raise FormatError(f"type check ('integer') failed - got '{text}'")
        value = int(text)
    elif param.type == "number":
        try:
            value = float(text)
        except ValueError:
            raise FormatError(f"type check ('number') failed - got '{text}'") from None
        value = int(value) if value.is_integer() and re.fullmatch(r"[+-]?\d+", text) else value
    elif param.type == "boolean":
        lowered = text.lower()
        if lowered not in BOOL_TRUE + BOOL_FALSE:
            raise FormatError(f"type check ('boolean') failed - got '{text}'")
        value = 1 if lowered in BOOL_TRUE else 0
    else:
        value = text
    if param.enum and value not in param.enum:
        raise FormatError(f"value '{value}' does not have a value in the enumeration '{', '.join(param.enum)}'")
    if param.minimum is not None and value < param.minimum:
        raise FormatError(f"value must have a minimum value of {param.minimum}")
    if param.maximum is not None and value > param.maximum:
        raise FormatError(f"value may have a maximum value of {param.maximum}")
    if param.max_length is not None and len(text) > param.max_length:
        raise FormatError(f"value may only be {param.max_length} characters long")
    if param.check:
        try:
            param.check(text)
        except FormatError as error:
            raise FormatError(f"invalid format - {error}") from None
    if param.fmt:
        try:
            parsed = propstr.parse(text, param.fmt, name)
            for key, inner in parsed.items():
                inner_param = KEY_TYPES.get((id(param.fmt), key))
                if inner_param:
                    try:
                        convert(f"{name}.{key}", inner_param, inner)
                    except FormatError as error:
                        raise FormatError(f"{name}.{key}: {error}") from None
        except FormatError as error:
            raise FormatError(f"invalid format - format error\n{error}") from None
    return value


def lookup(spec, name):
    """The Param for `name`, resolving `net0` to the `net[n]` entry."""
    if name in spec:
        return spec[name]
    match = re.fullmatch(r"([a-z]+)(\d+)", name)
    if match:
        param = spec.get(f"{match.group(1)}[n]")
        if param and int(match.group(2)) <= param.max_index:
            return param
    return None


def verify(spec, raw_params):
    """Check raw wire parameters against `spec`; return typed values or raise ParamError."""
    errors, values = {}, {}
    for name, raw in raw_params.items():
        param = lookup(spec, name)
        if param is None:
            errors[name] = UNKNOWN
            continue
        try:
            values[name] = convert(name, param, raw)
        except FormatError as error:
            errors[name] = str(error)
    for name, param in spec.items():
        if param.required and name not in raw_params:
            errors[name] = MISSING
    if errors:
        raise ParamError(errors)
    return values


# --- the specs ---------------------------------------------------------------------------------------------

NODE = Text(required=True, check=check_node)
VMID = Int(required=True, minimum=100, maximum=999999999)
OSTYPES_QEMU = ("other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11", "l24", "l26",
                "solaris")
OSTYPES_LXC = ("debian", "devuan", "ubuntu", "centos", "fedora", "opensuse", "archlinux", "alpine", "gentoo",
               "nixos", "unmanaged")
QEMU_LOCKS = ("backup", "clone", "create", "migrate", "rollback", "snapshot", "snapshot-delete", "suspending",
              "suspended")
LXC_LOCKS = ("backup", "create", "destroyed", "disk", "fstrim", "migrate", "mounted", "rollback", "snapshot",
             "snapshot-delete")

# Keys a qemu config may hold and a client may set (create and update alike).
QEMU_CONFIG = {
    "name": Text(check=check_dns_name), "description": Text(max_length=8192), "tags": Text(check=check_tags),
    "cores": Int(minimum=1), "sockets": Int(minimum=1), "vcpus": Int(minimum=1), "cpu": Text(fmt=CPU),
    "cpulimit": Num(minimum=0, maximum=128), "cpuunits": Int(minimum=1, maximum=262144),
    "memory": Text(fmt=MEMORY), "balloon": Int(minimum=0), "numa": Bool(), "hugepages": Text(enum=("any", "2", "1024")),
    "ostype": Text(enum=OSTYPES_QEMU), "agent": Text(fmt=AGENT), "onboot": Bool(), "protection": Bool(), "template": Bool(),
    "kvm": Bool(), "acpi": Bool(), "tablet": Bool(), "localtime": Bool(), "freeze": Bool(), "autostart": Bool(), "reboot": Bool(),
    "bios": Text(enum=("seabios", "ovmf")), "machine": Text(), "vga": Text(), "boot": Text(fmt=BOOT), "bootdisk": Text(),
    "scsihw": Text(enum=("lsi", "lsi53c810", "virtio-scsi-pci", "virtio-scsi-single", "megasas", "pvscsi")),
    "scsi[n]": Text(fmt=QEMU_DISK, max_index=30), "virtio[n]": Text(fmt=QEMU_DISK, max_index=15),
    "sata[n]": Text(fmt=QEMU_DISK, max_index=5), "ide[n]": Text(fmt=QEMU_DISK, max_index=3),
    "efidisk0": Text(fmt=EFIDISK), "net[n]": Text(fmt=QEMU_NET, max_index=31),
    "ipconfig[n]": Text(fmt=IPCONFIG, max_index=31), "serial[n]": Text(max_index=3),
    "ciuser": Text(), "cipassword": Text(), "citype": Text(enum=("configdrive2", "nocloud", "opennebula")),
    "ciupgrade": Bool(), "cicustom": Text(), "sshkeys": Text(check=check_urlencoded), "nameserver": Text(),
    "searchdomain": Text(), "startup": Text(fmt=STARTUP), "hookscript": Text(), "args": Text(), "hotplug": Text(),
    "smbios1": Text(), "vmgenid": Text(), "lock": Text(enum=QEMU_LOCKS), "shares": Int(minimum=0, maximum=50000),
    "cdrom": Text(), "keyboard": Text(), "startdate": Text(), "tdf": Bool(), "watchdog": Text(),
    "migrate_downtime": Num(minimum=0), "migrate_speed": Int(minimum=0),
}
QEMU_CREATE = {
    "node": NODE, "vmid": VMID, **QEMU_CONFIG,
    "start": Bool(), "pool": Text(), "storage": Text(check=check_storage_id), "unique": Bool(), "force": Bool(),
    "archive": Text(), "bwlimit": Int(minimum=0), "live-restore": Bool(),
}
QEMU_UPDATE = {
    "node": NODE, "vmid": VMID, **QEMU_CONFIG,
    "delete": Text(check=check_configid_list), "revert": Text(check=check_configid_list), "digest": Text(max_length=64),
    "skiplock": Bool(), "force": Bool(),
}
QEMU_UPDATE_ASYNC = {**QEMU_UPDATE, "background_delay": Int(minimum=1, maximum=30)}

LXC_CONFIG = {
    "hostname": Text(check=check_dns_name), "description": Text(max_length=8192), "tags": Text(check=check_tags),
    "cores": Int(minimum=1, maximum=8192), "cpulimit": Num(minimum=0, maximum=8192), "cpuunits": Int(minimum=0, maximum=500000),
    "memory": Int(minimum=16), "swap": Int(minimum=0), "rootfs": Text(fmt=ROOTFS), "mp[n]": Text(fmt=MOUNTPOINT, max_index=255),
    "net[n]": Text(fmt=LXC_NET, max_index=31), "ostype": Text(enum=OSTYPES_LXC),
    "arch": Text(enum=("amd64", "i386", "arm64", "armhf", "riscv32", "riscv64")), "unprivileged": Bool(),
    "features": Text(fmt=FEATURES), "onboot": Bool(), "protection": Bool(), "template": Bool(), "nameserver": Text(),
    "searchdomain": Text(), "startup": Text(fmt=STARTUP), "timezone": Text(), "tty": Int(minimum=0, maximum=6),
    "console": Bool(), "cmode": Text(enum=("shell", "console", "tty")), "hookscript": Text(), "debug": Bool(),
    "lock": Text(enum=LXC_LOCKS),
}
LXC_CREATE = {
    "node": NODE, "vmid": VMID, **LXC_CONFIG,
    "ostemplate": Text(required=True, max_length=255), "password": Text(), "ssh-public-keys": Text(),
    "storage": Text(check=check_storage_id), "pool": Text(), "start": Bool(), "unique": Bool(), "restore": Bool(),
    "force": Bool(), "ignore-unpack-errors": Bool(), "bwlimit": Num(minimum=0),
}
LXC_UPDATE = {
    "node": NODE, "vmid": VMID, **LXC_CONFIG,
    "delete": Text(check=check_configid_list), "revert": Text(check=check_configid_list), "digest": Text(max_length=64),
}
