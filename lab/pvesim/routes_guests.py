"""API routes of guests: QEMU VMs and LXC containers, their tasks, and the QEMU guest agent.

What PVE does synchronously (parameter checks, "already exists", "is locked", "is running") happens here
before a task starts; what its workers do (allocate, start, stop, destroy) happens in the task, after the
configured delay and under the guest's config lock. A create writes the config with `lock: create` at
once, which is why `nextid` then skips the ID, and why a second create of the same ID fails.
"""
import copy
import re
import time
from urllib.parse import unquote

from . import guestos, params, propstr
from .node import BRIDGES, GIB, MIB, ApiError, random_mac
from .params import NODE, VMID, Bool, Int, Text
from .router import route
from .state import Guest
from .tasks import LockTimeout, TaskFailed

QEMU_DISK_RE = re.compile(r"^(scsi|virtio|sata|ide)\d+$|^efidisk0$")
LXC_DISK_RE = re.compile(r"^rootfs$|^mp\d+$")
ALLOC_RE = re.compile(r"^([a-z][a-z0-9\-_.]*[a-z0-9]):(\d+(?:\.\d+)?)$")
CONTROL_KEYS = ("node", "vmid", "delete", "revert", "digest", "skiplock", "force", "background_delay", "start",
                "pool", "storage", "unique", "archive", "bwlimit", "live-restore", "password", "ssh-public-keys",
                "ostemplate", "restore", "ignore-unpack-errors")
GUEST = {"node": NODE, "vmid": VMID}
MASKED = "**********"


# --- usage figures (status/current, lists, cluster resources) ----------------------------------------------

def memory_mib(guest):
    value = str(guest.config.get("memory", "512"))
    return int(value.rsplit("=", maxsplit=1)[-1])


def disk_format(kind, key):
    """The property-string format of a disk-like config key."""
    if kind == "qemu":
        return params.EFIDISK if key == "efidisk0" else params.QEMU_DISK
    return params.ROOTFS if key == "rootfs" else params.MOUNTPOINT


def volume_key(kind):
    """The key holding the volume ID inside a disk string: `file` for VMs, `volume` for containers."""
    return "file" if kind == "qemu" else "volume"


def disk_size(guest, key):
    value = guest.config.get(key)
    size = propstr.parse(value, disk_format(guest.kind, key)).get("size") if value else None
    return propstr.parse_size(size) if size else 0


def root_disk(guest):
    """The config key of the disk whose size is `maxdisk`: the boot disk for VMs, rootfs for containers."""
    if guest.kind == "lxc":
        return "rootfs"
    order = propstr.parse(guest.config.get("boot", ""), params.BOOT).get("order", "") if guest.config.get("boot") else ""
    for key in order.split(";") + sorted(k for k in guest.config if QEMU_DISK_RE.match(k)):
        value = guest.config.get(key)
        if value and "media=cdrom" not in value:
            return key
    return None


def usage(sim, guest):
    running = guest.status == "running"
    key = root_disk(guest)
    maxdisk = disk_size(guest, key) if key else 0
    maxmem = memory_mib(guest) * MIB
    cpus = guest.config.get("vcpus") or guest.config.get("cores", 1) * guest.config.get("sockets", 1)
    if guest.kind == "lxc":
        cpus = guest.config.get("cores", 8)
    uptime = int(time.time() - guest.started_at) if running else 0
    return {"cpus": cpus, "maxmem": maxmem, "maxdisk": maxdisk, "mem": maxmem // 3 if running else 0,
            "disk": maxdisk // 10 if running and guest.kind == "lxc" else 0,
            "cpu": 0.013 if running else 0, "uptime": uptime, "netin": 1500 * uptime, "netout": 900 * uptime,
            "diskread": 4096 * uptime, "diskwrite": 2048 * uptime}


def status_of(sim, guest):
    use = usage(sim, guest)
    item = {"vmid": guest.vmid, "status": guest.status, "name": guest.name, "cpus": use["cpus"],
            "maxmem": use["maxmem"], "maxdisk": use["maxdisk"], "mem": use["mem"], "disk": use["disk"],
            "cpu": use["cpu"], "uptime": use["uptime"], "netin": use["netin"], "netout": use["netout"],
            "diskread": use["diskread"], "diskwrite": use["diskwrite"], "ha": {"managed": 0}}
    if guest.kind == "qemu":
        del item["disk"]        # PVE reports no disk usage for VMs here
        item["qmpstatus"] = guest.status
        if agent_enabled(guest):
            item["agent"] = 1
        if guest.status == "running":
            item.update({"pid": 10000 + guest.vmid % 50000, "running-machine": "pc-i440fx-9.0+pve0",
                         "running-qemu": "9.0.2"})
    else:
        item["maxswap"] = guest.config.get("swap", 512) * MIB
    if guest.config.get("template"):
        item["template"] = 1
    for key in ("lock", "tags"):
        if guest.config.get(key):
            item[key] = guest.config[key]
    return item


def list_item(sim, guest):
    item = status_of(sim, guest)
    item.pop("ha")
    item.pop("agent", None)     # status/current says whether the agent is on; the list does not
    return item


# --- building configs ----------------------------------------------------------------------------------------

def allocate_qemu_disk(sim, vmid, key, value, allocated):
    """`local-lvm:8` / `local-lvm:0,import-from=...` / `local-lvm:cloudinit` -> the stored disk string."""
    fmt = disk_format("qemu", key)
    disk = propstr.parse(value, fmt, key)
    file = disk["file"]
    cloudinit = re.match(r"^([a-z][a-z0-9\-_.]*[a-z0-9]):cloudinit$", file)
    alloc = ALLOC_RE.match(file)
    if cloudinit:
        volid = sim.alloc_disk(cloudinit.group(1), vmid, 4 * MIB, name=f"vm-{vmid}-cloudinit")
        allocated.append(volid)
        disk.update({"file": volid, "media": "cdrom"})
    elif alloc:
        size = int(float(alloc.group(2)) * GIB)
        source = disk.pop("import-from", None)
        if source:
            found = sim.volume(source)
            if found is None:
                raise ApiError(f"volume '{source}' does not exist")
            size = max(size, found["size"])
        elif size == 0:
            raise ApiError(f"{key}: size 0 needs 'import-from'")
        if key == "efidisk0":
            size = 4 * MIB
        volid = sim.alloc_disk(alloc.group(1), vmid, size)
        allocated.append(volid)
        disk.update({"file": volid, "size": propstr.format_size(size)})
    elif file != "none" and not file.startswith("/dev/"):
        found = sim.volume(file)
        if found is None:
            raise ApiError(f"volume '{file}' does not exist")
        if "size" not in disk and disk.get("media") != "cdrom":
            disk["size"] = propstr.format_size(found["size"])
    return propstr.render(disk, fmt)


def qemu_net(value, old=None):
    nic = propstr.parse(value, params.QEMU_NET)
    if "macaddr" not in nic:
        previous = propstr.parse(old, params.QEMU_NET) if old else {}
        nic["macaddr"] = previous.get("macaddr") or random_mac()
    return propstr.render(nic, params.QEMU_NET)


def lxc_net(value, old=None):
    nic = propstr.parse(value, params.LXC_NET)
    if "hwaddr" not in nic:
        previous = propstr.parse(old, params.LXC_NET) if old else {}
        nic["hwaddr"] = previous.get("hwaddr") or random_mac()
    nic.setdefault("type", "veth")
    return propstr.render(nic, params.LXC_NET)


def allocate_lxc_volume(sim, vmid, key, value, default_storage, allocated):
    fmt = disk_format("lxc", key)
    mount = propstr.parse(value, fmt, key)
    alloc = ALLOC_RE.match(mount["volume"])
    if alloc:
        size = int(float(alloc.group(2)) * GIB)
        volid = sim.alloc_disk(alloc.group(1), vmid, size, content="rootdir")
        allocated.append(volid)
        mount.update({"volume": volid, "size": propstr.format_size(size)})
    elif re.fullmatch(r"\d+(?:\.\d+)?", mount["volume"]):
        size = int(float(mount["volume"]) * GIB)
        volid = sim.alloc_disk(default_storage, vmid, size, content="rootdir")
        allocated.append(volid)
        mount.update({"volume": volid, "size": propstr.format_size(size)})
    elif not mount["volume"].startswith("/"):
        if sim.volume(mount["volume"]) is None:
            raise ApiError(f"volume '{mount['volume']}' does not exist")
    return propstr.render(mount, fmt)


def apply_settings(sim, guest, values, allocated, default_storage="local"):
    """Write typed values into the config: disks allocated, NICs given MACs, passwords hashed."""
    config = guest.config
    for key, value in values.items():
        if key in CONTROL_KEYS:
            continue
        if guest.kind == "qemu" and QEMU_DISK_RE.match(key):
            value = allocate_qemu_disk(sim, guest.vmid, key, value, allocated)
            if key in config and volume_of(guest, key, config[key]) != volume_of(guest, key, value):
                detach(sim, guest, volume_of(guest, key, config[key]))
        elif guest.kind == "lxc" and LXC_DISK_RE.match(key):
            fmt = disk_format("lxc", key)
            if key in config and propstr.parse(value, fmt)["volume"] != propstr.parse(config[key], fmt)["volume"]:
                raise ApiError(f"unable to modify read-only option: '{key}' (use resize or move_volume)")
            value = allocate_lxc_volume(sim, guest.vmid, key, value, default_storage, allocated)
        elif re.fullmatch(r"net\d+", key):
            value = (qemu_net if guest.kind == "qemu" else lxc_net)(value, config.get(key))
        elif key == "cipassword" and not value.startswith("$"):
            value = guestos.sha512_crypt(value)
        elif key == "cdrom":
            key, value = "ide2", allocate_qemu_disk(sim, guest.vmid, "ide2", f"{value},media=cdrom", allocated)
        config[key] = value


def volume_of(guest, key, value):
    """The volume ID a disk-like config entry points at."""
    if key.startswith("unused"):
        return value
    return propstr.parse(value, disk_format(guest.kind, key))[volume_key(guest.kind)]


def delete_keys(sim, guest, names, force=False):
    """`delete=...` of a config update. A detached disk becomes `unused<n>`, as on PVE, unless forced."""
    disk_re = QEMU_DISK_RE if guest.kind == "qemu" else LXC_DISK_RE
    for key in filter(None, re.split(r"[,;\s]+", names)):
        if key not in guest.config:
            continue
        value = guest.config.pop(key)
        if not (disk_re.match(key) or key.startswith("unused")):
            continue
        volid = volume_of(guest, key, value)
        if volid not in sim.store.volumes:
            continue
        if force or key.startswith("unused") or volid.endswith("-cloudinit"):
            sim.free_volume(volid)
        else:
            detach(sim, guest, volid)


def detach(sim, guest, volid):
    """A disk replaced or removed from the config stays, as `unused<n>`, until deleted (as on PVE)."""
    if volid not in sim.store.volumes:
        return
    if volid.endswith("-cloudinit"):
        sim.free_volume(volid)
        return
    number = 0
    while f"unused{number}" in guest.config:
        number += 1
    guest.config[f"unused{number}"] = volid


def guest_volumes(sim, vmid):
    return [volid for volid, volume in sim.store.volumes.items() if volume.vmid == vmid]


def forget_guest(sim, vmid):
    """Undo of a failed create/clone, and the effect of destroy: the guest and its own volumes go."""
    with sim.store.lock:
        sim.store.guests.pop(vmid, None)
        for volid in guest_volumes(sim, vmid):
            sim.free_volume(volid)
        sim.store.save()


def locked_config(sim, guest):
    """Context for synchronous config writes: PVE's flock, waited for at most `lock_timeout`."""
    class Locked:
        def __enter__(self):
            try:
                sim.tasks.locks.acquire(guest.vmid, guest.kind, sim.settings.lock_timeout)
            except LockTimeout as error:
                raise ApiError(str(error)) from None

        def __exit__(self, *exc):
            sim.tasks.locks.release(guest.vmid)
    return Locked()


# --- cloud-init and the guest agent ----------------------------------------------------------------------------

def apply_cloudinit(guest):
    """At boot, as cloud-init would: the user, its password hash and its SSH keys inside the VM."""
    config = guest.config
    if not any(k for k in config if re.fullmatch(r"(ide|scsi|sata)\d+", k) and "cloudinit" in str(config[k])):
        return
    user = config.get("ciuser") or "root"
    fs = guest.fs
    home = "/root" if user == "root" else f"/home/{user}"
    passwd = fs["/etc/passwd"]["data"]
    if user != "root" and not any(line.split(":")[0] == user for line in passwd.splitlines()):
        fs["/etc/passwd"]["data"] = passwd + f"{user}:x:1000:1000:{user}:{home}:/bin/bash\n"
        fs["/etc/shadow"]["data"] += f"{user}:*:19700:0:99999:7:::\n"
        fs[home] = {"kind": "dir", "data": "", "mode": "0755"}
    if config.get("cipassword"):
        lines = []
        for line in fs["/etc/shadow"]["data"].splitlines():
            fields = line.split(":")
            if fields[0] == user:
                fields[1] = config["cipassword"]
            lines.append(":".join(fields))
        fs["/etc/shadow"]["data"] = "\n".join(lines) + "\n"
    if config.get("sshkeys"):
        fs[f"{home}/.ssh"] = {"kind": "dir", "data": "", "mode": "0700"}
        fs[f"{home}/.ssh/authorized_keys"] = {"kind": "file", "data": unquote(config["sshkeys"]).rstrip("\n") + "\n",
                                              "mode": "0600"}
    fs["/etc/hostname"]["data"] = f"{guest.name}\n"


def agent_enabled(guest):
    value = guest.config.get("agent")
    return bool(value) and propstr.parse(str(value), params.AGENT).get("enabled") in ("1", "true", "yes", "on")


def agent_guest(call):
    sim = call.sim
    guest = sim.guest(call.params["vmid"], "qemu")
    if not agent_enabled(guest):
        raise ApiError("No QEMU guest agent configured")
    if guest.status != "running":
        raise ApiError(f"VM {guest.vmid} is not running")
    return guest


def interfaces(sim, guest):
    """The NICs as the guest sees them: lo plus one per configured net[n], with stable addresses."""
    result = [{"name": "lo", "hardware-address": "00:00:00:00:00:00",
               "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8},
                                {"ip-address-type": "ipv6", "ip-address": "::1", "prefix": 128}]}]
    for key in sorted((k for k in guest.config if re.fullmatch(r"net\d+", k)), key=lambda k: int(k[3:])):
        index = int(key[3:])
        if guest.kind == "qemu":
            nic = propstr.parse(guest.config[key], params.QEMU_NET)
            name, mac = f"eth{index}", nic["macaddr"]
        else:
            nic = propstr.parse(guest.config[key], params.LXC_NET)
            name, mac = nic["name"], nic["hwaddr"]
        addresses = []
        ipv4, ipv6 = sim.addresses(guest, index)
        for family, value in (("ipv4", ipv4), ("ipv6", ipv6)):
            if value:
                address, prefix = value.split("/", 1)
                addresses.append({"ip-address-type": family, "ip-address": address, "prefix": int(prefix)})
        result.append({"name": name, "hardware-address": mac.lower(), "ip-addresses": addresses})
    return result


# --- routes shared by qemu and lxc -----------------------------------------------------------------------------

def register_common(kind):
    word = "VM" if kind == "qemu" else "CT"
    prefix = f"/nodes/{{node}}/{kind}"
    task_names = {"qemu": {"start": "qmstart", "stop": "qmstop", "shutdown": "qmshutdown", "reboot": "qmreboot",
                           "destroy": "qmdestroy", "resize": "resize"},
                  "lxc": {"start": "vzstart", "stop": "vzstop", "shutdown": "vzshutdown", "reboot": "vzreboot",
                          "destroy": "vzdestroy", "resize": "resize"}}[kind]

    @route("GET", prefix, {"node": NODE, **({"full": Bool()} if kind == "qemu" else {})})
    def guest_list(call):
        sim = call.sim
        with sim.store.lock:
            return [list_item(sim, g) for g in sorted(sim.store.guests.values(), key=lambda g: g.vmid)
                    if g.kind == kind]

    @route("GET", f"{prefix}/{{vmid}}", GUEST)
    def guest_index(call):
        call.sim.guest(call.params["vmid"], kind)
        names = ["config", "status", "snapshot", "pending" if kind == "qemu" else "interfaces"]
        return [{"subdir": name} for name in names]

    @route("GET", f"{prefix}/{{vmid}}/config", {**GUEST, "current": Bool(), "snapshot": Text()})
    def guest_config(call):
        sim = call.sim
        with sim.store.lock:
            guest = sim.guest(call.params["vmid"], kind)
            config = dict(guest.config)
            if "cipassword" in config:
                config["cipassword"] = MASKED
            config["digest"] = sim.config_digest(guest)
            return config

    @route("GET", f"{prefix}/{{vmid}}/status", GUEST)
    def guest_status_index(call):
        call.sim.guest(call.params["vmid"], kind)
        return [{"subdir": name} for name in ("current", "start", "stop", "shutdown", "reboot")]

    @route("GET", f"{prefix}/{{vmid}}/status/current", GUEST)
    def guest_current(call):
        sim = call.sim
        with sim.store.lock:
            return status_of(sim, sim.guest(call.params["vmid"], kind))

    @route("GET", f"{prefix}/{{vmid}}/snapshot", GUEST)
    def guest_snapshots(call):
        sim = call.sim
        with sim.store.lock:
            sim.guest(call.params["vmid"], kind)
            # Snapshots are not simulated: the list holds only the "current" state, as on a fresh guest.
            return [{"name": "current", "description": "You are here!"}]

    def power_task(call, action, effect, needs_running=False):
        sim = call.sim
        with sim.store.lock:
            guest = sim.guest(call.params["vmid"], kind)
            sim.check_lock(guest, call.params.get("skiplock"))
            if guest.config.get("template") and action == "start":
                raise ApiError("you can't start a vm if it's a template" if kind == "qemu"
                               else "cannot start container template")
            if needs_running and guest.status != "running":
                raise ApiError(f"{word} {guest.vmid} not running")

        def work(log):
            with sim.store.lock:
                effect(guest, log)
                sim.store.save()
        return sim.tasks.start(task_names[action], guest.vmid, call.user, work, guest=(guest.vmid, kind))

    def start_effect(guest, log):
        if guest.status == "running":
            raise TaskFailed(f"{word} {guest.vmid} already running")
        for key in (k for k in guest.config if re.fullmatch(r"net\d+", k)):
            fmt = params.QEMU_NET if kind == "qemu" else params.LXC_NET
            bridge = propstr.parse(guest.config[key], fmt).get("bridge")
            if bridge and bridge not in BRIDGES:
                raise TaskFailed(f"bridge '{bridge}' does not exist")
        guest.status, guest.started_at = "running", time.time()
        if kind == "qemu":
            apply_cloudinit(guest)
        log(f"{word} {guest.vmid} started")

    def stop_effect(guest, log):
        guest.status, guest.started_at = "stopped", 0.0
        log(f"{word} {guest.vmid} stopped")

    def reboot_effect(guest, log):
        guest.started_at = time.time()
        if kind == "qemu":
            apply_cloudinit(guest)

    if kind == "qemu":
        start_spec = {**GUEST, "skiplock": Bool(), "timeout": Int(minimum=0), "machine": Text(), "force-cpu": Text(),
                      "migratedfrom": Text(), "stateuri": Text(), "targetstorage": Text()}
    else:
        start_spec = {**GUEST, "skiplock": Bool(), "debug": Bool()}

    @route("POST", f"{prefix}/{{vmid}}/status/start", start_spec)
    def guest_start(call):
        return power_task(call, "start", start_effect)

    stop_spec = {**GUEST, "skiplock": Bool(), "overrule-shutdown": Bool(),
                 **({"timeout": Int(minimum=0), "keepActive": Bool(), "migratedfrom": Text()} if kind == "qemu" else {})}

    @route("POST", f"{prefix}/{{vmid}}/status/stop", stop_spec)
    def guest_stop(call):
        return power_task(call, "stop", stop_effect)

    shutdown_spec = {**GUEST, "forceStop": Bool(), "timeout": Int(minimum=0),
                     **({"keepActive": Bool(), "skiplock": Bool()} if kind == "qemu" else {})}

    @route("POST", f"{prefix}/{{vmid}}/status/shutdown", shutdown_spec)
    def guest_shutdown(call):
        return power_task(call, "shutdown", stop_effect, needs_running=True)

    @route("POST", f"{prefix}/{{vmid}}/status/reboot", {**GUEST, "timeout": Int(minimum=0)})
    def guest_reboot(call):
        return power_task(call, "reboot", reboot_effect, needs_running=True)

    destroy_spec = {**GUEST, "purge": Bool(), "destroy-unreferenced-disks": Bool(),
                    **({"skiplock": Bool()} if kind == "qemu" else {"force": Bool()})}

    @route("DELETE", f"{prefix}/{{vmid}}", destroy_spec)
    def guest_destroy(call):
        sim = call.sim
        with sim.store.lock:
            guest = sim.guest(call.params["vmid"], kind)
            sim.check_lock(guest, call.params.get("skiplock"))
            if guest.config.get("protection"):
                raise ApiError(f"can't remove {word} {guest.vmid} - protection mode enabled")
            if guest.status == "running" and not call.params.get("force"):
                raise ApiError(f"{word} {guest.vmid} is running - destroy failed")

        def work(log):
            forget_guest(sim, guest.vmid)
            log(f"destroyed {word} {guest.vmid}")
        return sim.tasks.start(task_names["destroy"], guest.vmid, call.user, work, guest=(guest.vmid, kind))

    disks = (tuple(f"{bus}{n}" for bus, count in (("ide", 4), ("scsi", 31), ("virtio", 16), ("sata", 6))
                   for n in range(count)) + ("efidisk0", "tpmstate0")) if kind == "qemu" else (
        ("rootfs",) + tuple(f"mp{n}" for n in range(256)))

    resize_spec = {**GUEST, "disk": Text(required=True, enum=disks), "size": Text(required=True),
                   "digest": Text(max_length=64), **({"skiplock": Bool()} if kind == "qemu" else {})}

    @route("PUT", f"{prefix}/{{vmid}}/resize", resize_spec)
    def guest_resize(call):
        sim = call.sim
        size_text = call.params["size"]
        match = re.fullmatch(r"(\+?)(\d+(?:\.\d+)?)([KMGT]?)", size_text)
        if not match:
            raise ApiError("Parameter verification failed.", status=400,
                           errors={"size": f"value '{size_text}' does not match the regex pattern"})
        with sim.store.lock:
            guest = sim.guest(call.params["vmid"], kind)
            sim.check_lock(guest, call.params.get("skiplock"))
            key = call.params["disk"]
            if key not in guest.config:
                raise ApiError(f"disk '{key}' does not exist")

        def work(log):
            with sim.store.lock:
                fmt = disk_format(kind, key)
                disk = propstr.parse(guest.config[key], fmt)
                volid = disk[volume_key(kind)]
                current = sim.store.volumes[volid].size if volid in sim.store.volumes else 0
                amount = propstr.parse_size(match.group(2) + match.group(3))
                new = current + amount if match.group(1) else amount
                if new < current:
                    raise TaskFailed("shrinking disks is not supported")
                if volid in sim.store.volumes:
                    sim.store.volumes[volid].size = new
                disk["size"] = propstr.format_size(new)
                guest.config[key] = propstr.render(disk, fmt)
                sim.store.save()
                log(f"resized {key} to {disk['size']}")
        return sim.tasks.start(task_names["resize"], guest.vmid, call.user, work, guest=(guest.vmid, kind))

    def update(call):
        """PUT .../config (and the work of POST .../config): PVE's update_vm."""
        sim, values = call.sim, call.params
        with sim.store.lock:
            guest = sim.guest(values["vmid"], kind)
        with locked_config(sim, guest), sim.store.lock:
            delete = values.get("delete", "")
            # `qm unlock` is delete=lock with skiplock; `pct unlock` is delete=lock alone (no skiplock there).
            deletes_lock = "lock" in re.split(r"[,;\s]+", delete)
            sim.check_lock(guest, values.get("skiplock") or (kind == "lxc" and deletes_lock))
            if values.get("digest") and values["digest"] != sim.config_digest(guest):
                raise ApiError("detected modified configuration - file changed by other user? Try again.")
            both = set(values) & set(re.split(r"[,;\s]+", delete))
            if both:
                raise ApiError("Parameter verification failed.", status=400,
                               errors={key: "conflicts with parameter 'delete'" for key in both})
            allocated = []
            try:
                apply_settings(sim, guest, values, allocated)
            except (ApiError, propstr.FormatError):
                for volid in allocated:
                    sim.free_volume(volid)
                raise
            delete_keys(sim, guest, delete, force=values.get("force"))
            sim.store.save()
        return None

    return update


# --- qemu ----------------------------------------------------------------------------------------------------

qemu_update = register_common("qemu")
lxc_update = register_common("lxc")
route("PUT", "/nodes/{node}/qemu/{vmid}/config", params.QEMU_UPDATE)(qemu_update)
route("PUT", "/nodes/{node}/lxc/{vmid}/config", params.LXC_UPDATE)(lxc_update)


@route("POST", "/nodes/{node}/qemu/{vmid}/config", params.QEMU_UPDATE_ASYNC)
def qemu_update_async(call):
    sim = call.sim
    with sim.store.lock:
        guest = sim.guest(call.params["vmid"], "qemu")
        sim.check_lock(guest, call.params.get("skiplock"))

    def work(log):
        try:
            qemu_update(call)
        except ApiError as error:
            raise TaskFailed(error.message) from None
        log("update VM {}: {}".format(guest.vmid, " ".join(sorted(k for k in call.params if k not in ("node", "vmid")))))
    # update() takes the config lock itself, so the task does not hold it around the work.
    return sim.tasks.start("qmconfig", guest.vmid, call.user, work)


def create_guest(call, kind, build):
    """Reserve the ID (config with `lock: create`) at once; the task finishes or undoes it."""
    sim, values = call.sim, call.params
    vmid = values["vmid"]
    with sim.store.lock:
        sim.check_unused(vmid)
        guest = Guest(vmid, kind, {})
        allocated = []
        try:
            build(guest, allocated)
        except (ApiError, propstr.FormatError) as error:
            for volid in allocated:
                sim.free_volume(volid)
            if isinstance(error, propstr.FormatError):
                raise ApiError(str(error)) from None
            raise
        guest.config["lock"] = "create"
        sim.store.guests[vmid] = guest
        sim.store.save()

    def work(log):
        with sim.store.lock:
            guest.config.pop("lock", None)
            if values.get("start"):
                guest.status, guest.started_at = "running", time.time()
                if kind == "qemu":
                    apply_cloudinit(guest)
            sim.store.save()
        log(f"created {'VM' if kind == 'qemu' else 'CT'} {vmid}")
    task_type = "qmcreate" if kind == "qemu" else "vzcreate"
    return sim.tasks.start(task_type, vmid, call.user, work, guest=(vmid, kind),
                           on_failure=lambda message: forget_guest(sim, vmid))


@route("POST", "/nodes/{node}/qemu", params.QEMU_CREATE)
def qemu_create(call):
    sim, values = call.sim, call.params
    if values.get("archive"):
        raise ApiError("pvesim: restoring a VM from a backup archive is not simulated")

    def build(guest, allocated):
        guest.fs = guestos.base_filesystem(values.get("name") or f"vm{guest.vmid}")
        apply_settings(sim, guest, values, allocated)
        now = int(time.time())
        guest.config.setdefault("smbios1", f"uuid={sim.new_uuid()}")
        guest.config.setdefault("vmgenid", sim.new_uuid())
        guest.config["meta"] = f"creation-qemu=9.0.2,ctime={now}"
    return create_guest(call, "qemu", build)


@route("POST", "/nodes/{node}/lxc", params.LXC_CREATE)
def lxc_create(call):
    sim, values = call.sim, call.params
    if values.get("restore"):
        raise ApiError("pvesim: restoring a container from a backup archive is not simulated")
    template = values["ostemplate"]
    found = sim.volume(template)
    if found is None or found["content"] != "vztmpl":
        raise ApiError(f"volume '{template}' does not exist" if found is None
                       else f"volume '{template}' is not a container template")

    def build(guest, allocated):
        hostname = values.get("hostname") or f"CT{guest.vmid}"
        guest.fs = guestos.base_filesystem(hostname)
        settings = dict(values)
        settings.setdefault("rootfs", f"{values.get('storage', 'local')}:4")
        apply_settings(sim, guest, settings, allocated, default_storage=values.get("storage", "local"))
        config = guest.config
        config.setdefault("hostname", hostname)
        config.setdefault("memory", 512)
        config.setdefault("swap", 512)
        config.setdefault("arch", "amd64")
        config.setdefault("ostype", "debian" if "debian" in template else "unmanaged")
        if values.get("password"):
            guestos.run(guest.fs, hostname, ["chpasswd"], f"root:{values['password']}\n")
        if values.get("ssh-public-keys"):
            guestos.run(guest.fs, hostname, ["sh", "-c", "mkdir -p -m 0700 /root/.ssh && cat >> /root/.ssh/authorized_keys"],
                        values["ssh-public-keys"].rstrip("\n") + "\n")
    return create_guest(call, "lxc", build)


def clone_guest(call, kind):
    sim, values = call.sim, call.params
    source_id, newid = values["vmid"], values["newid"]
    if values.get("target") and values["target"] != sim.node:
        raise ApiError(f"Node '{values['target']}' does not exist")
    with sim.store.lock:
        source = sim.guest(source_id, kind)
        is_template = bool(source.config.get("template"))
        if not is_template:
            sim.check_lock(source)
        full = values.get("full", 0 if is_template else 1)
        if not full and not is_template:
            raise ApiError("Parameter verification failed.", status=400,
                           errors={"full": "linked clones are only possible from templates"})
        if values.get("storage") and not full:
            raise ApiError("Parameter verification failed.", status=400,
                           errors={"storage": "parameter 'storage' not allowed for linked clones"})
        sim.check_unused(newid)
        config = {k: v for k, v in source.config.items() if k not in ("template", "lock") and not k.startswith("unused")}
        allocated = []
        disk_re = QEMU_DISK_RE if kind == "qemu" else LXC_DISK_RE
        for key in [k for k in config if disk_re.match(k)]:
            fmt, field = disk_format(kind, key), volume_key(kind)
            disk = propstr.parse(config[key], fmt)
            volid = disk[field]
            volume = sim.store.volumes.get(volid)
            if volume is None:           # an ISO or a bind mount: shared, not copied
                continue
            storage_name = values.get("storage") or volid.partition(":")[0]
            if volid.endswith("-cloudinit"):
                new = sim.alloc_disk(storage_name, newid, volume.size, name=f"vm-{newid}-cloudinit")
            elif full:
                new = sim.alloc_disk(storage_name, newid, volume.size, content="images" if kind == "qemu" else "rootdir")
            else:
                base = volid.partition(":")[2]
                number = len([v for v in allocated if "-disk-" in v])
                new = sim.alloc_disk(storage_name, newid, volume.size, name=f"{base}/vm-{newid}-disk-{number}")
            allocated.append(new)
            disk[field] = new
            config[key] = propstr.render(disk, fmt)
        for key in [k for k in config if re.fullmatch(r"net\d+", k)]:
            fmt = params.QEMU_NET if kind == "qemu" else params.LXC_NET
            nic = propstr.parse(config[key], fmt)
            nic["macaddr" if kind == "qemu" else "hwaddr"] = random_mac()
            config[key] = propstr.render(nic, fmt)
        name_key = "name" if kind == "qemu" else "hostname"
        config[name_key] = values.get(name_key) or f"Copy-of-{'VM' if kind == 'qemu' else 'CT'}-{source.name}"
        if values.get("description"):
            config["description"] = values["description"]
        if kind == "qemu":
            config["smbios1"] = f"uuid={sim.new_uuid()}"
            config["vmgenid"] = sim.new_uuid()
        config["lock"] = "create" if kind == "lxc" else "clone"
        clone = Guest(newid, kind, config, fs=copy.deepcopy(source.fs))
        clone.fs["/etc/hostname"] = {"kind": "file", "data": f"{config[name_key]}\n", "mode": "0644"}
        sim.store.guests[newid] = clone
        sim.store.save()

    def work(log):
        with sim.store.lock:
            clone.config.pop("lock", None)
            sim.store.save()
        log(f"{'full' if full else 'linked'} clone of {source_id} to {newid} finished")
    task_type = "qmclone" if kind == "qemu" else "vzclone"
    return sim.tasks.start(task_type, source_id, call.user, work, guest=(newid, kind),
                           on_failure=lambda message: forget_guest(sim, newid))


CLONE_COMMON = {**GUEST, "newid": VMID, "description": Text(), "full": Bool(), "pool": Text(), "snapname": Text(),
                "storage": Text(check=params.check_storage_id), "target": Text(check=params.check_node)}


@route("POST", "/nodes/{node}/qemu/{vmid}/clone", {**CLONE_COMMON, "name": Text(check=params.check_dns_name),
                                                   "format": Text(enum=("raw", "qcow2", "vmdk")),
                                                   "bwlimit": Int(minimum=0)})
def qemu_clone(call):
    return clone_guest(call, "qemu")


@route("POST", "/nodes/{node}/lxc/{vmid}/clone", {**CLONE_COMMON, "hostname": Text(check=params.check_dns_name),
                                                  "bwlimit": params.Num(minimum=0)})
def lxc_clone(call):
    return clone_guest(call, "lxc")


def make_template(sim, guest):
    """Disks become base volumes (`vm-100-disk-0` -> `base-100-disk-0`), the config gets template=1."""
    disk_re = QEMU_DISK_RE if guest.kind == "qemu" else LXC_DISK_RE
    for key in [k for k in guest.config if disk_re.match(k)]:
        fmt, field = disk_format(guest.kind, key), volume_key(guest.kind)
        disk = propstr.parse(guest.config[key], fmt)
        volume = sim.store.volumes.get(disk[field])
        if volume is None or volume.volid.endswith("-cloudinit") or ":vm-" not in volume.volid:
            continue
        new = volume.volid.replace(":vm-", ":base-", 1)
        sim.store.volumes.pop(volume.volid)
        volume.volid = new
        sim.store.volumes[new] = volume
        disk[field] = new
        guest.config[key] = propstr.render(disk, fmt)
    guest.config["template"] = 1


@route("POST", "/nodes/{node}/qemu/{vmid}/template", {**GUEST, "disk": Text()})
def qemu_template(call):
    sim = call.sim
    with sim.store.lock:
        guest = sim.guest(call.params["vmid"], "qemu")
        sim.check_lock(guest)
        if guest.status == "running":
            raise ApiError("you can't convert a running VM to a template")

    def work(log):
        with sim.store.lock:
            make_template(sim, guest)
            sim.store.save()
    return sim.tasks.start("qmtemplate", guest.vmid, call.user, work, guest=(guest.vmid, "qemu"))


@route("POST", "/nodes/{node}/lxc/{vmid}/template", GUEST)
def lxc_template(call):
    sim = call.sim
    with sim.store.lock:
        guest = sim.guest(call.params["vmid"], "lxc")
        sim.check_lock(guest)
        if guest.status == "running":
            raise ApiError("cannot convert running container to template")
    with locked_config(sim, guest), sim.store.lock:
        make_template(sim, guest)
        sim.store.save()
    return None


@route("GET", "/nodes/{node}/qemu/{vmid}/pending", GUEST)
def qemu_pending(call):
    sim = call.sim
    with sim.store.lock:
        guest = sim.guest(call.params["vmid"], "qemu")
        # Changes apply at once in the simulator, so nothing is ever pending.
        return [{"key": key, "value": MASKED if key == "cipassword" else str(value)}
                for key, value in sorted(guest.config.items())]


@route("GET", "/nodes/{node}/lxc/{vmid}/interfaces", GUEST)
def lxc_interfaces(call):
    sim = call.sim
    with sim.store.lock:
        guest = sim.guest(call.params["vmid"], "lxc")
        if guest.status != "running":
            raise ApiError(f"CT {guest.vmid} is not running")
        result = []
        for nic in interfaces(sim, guest):
            item = {"name": nic["name"], "hwaddr": nic["hardware-address"],
                    "hardware-address": nic["hardware-address"], "ip-addresses": nic["ip-addresses"]}
            for address in nic["ip-addresses"]:
                key = "inet" if address["ip-address-type"] == "ipv4" else "inet6"
                item.setdefault(key, f"{address['ip-address']}/{address['prefix']}")
            result.append(item)
        return result


# --- the QEMU guest agent ----------------------------------------------------------------------------------------

def agent_result(call, command):
    sim = call.sim
    with sim.store.lock:
        guest = agent_guest(call)
        if command == "ping":
            return {"result": {}}
        if command == "network-get-interfaces":
            return {"result": interfaces(sim, guest)}
        if command == "get-host-name":
            return {"result": {"host-name": guest.fs["/etc/hostname"]["data"].strip()}}
        if command == "get-osinfo":
            return {"result": {"id": "debian", "name": "Debian GNU/Linux", "pretty-name": "Debian GNU/Linux 12 (bookworm)",
                               "version": "12 (bookworm)", "version-id": "12", "kernel-release": "6.1.0-28-amd64",
                               "kernel-version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1", "machine": "x86_64"}}
        if command == "info":
            names = ("guest-ping", "guest-exec", "guest-exec-status", "guest-set-user-password",
                     "guest-network-get-interfaces", "guest-get-host-name", "guest-get-osinfo", "guest-info")
            return {"result": {"version": "7.2.0", "supported_commands": [{"name": n, "enabled": True,
                                                                           "success-response": True} for n in names]}}
        raise ApiError(f"pvesim: guest agent command '{command}' is not simulated")


AGENT_COMMANDS = ("fsfreeze-freeze", "fsfreeze-status", "fsfreeze-thaw", "fstrim", "get-fsinfo", "get-host-name",
                  "get-memory-block-info", "get-memory-blocks", "get-osinfo", "get-time", "get-timezone",
                  "get-users", "get-vcpus", "info", "network-get-interfaces", "ping", "shutdown", "suspend-disk",
                  "suspend-hybrid", "suspend-ram")


@route("POST", "/nodes/{node}/qemu/{vmid}/agent", {**GUEST, "command": Text(required=True, enum=AGENT_COMMANDS)})
def agent_command(call):
    return agent_result(call, call.params["command"])


for _name in ("network-get-interfaces", "info", "get-osinfo", "get-host-name"):
    route("GET", f"/nodes/{{node}}/qemu/{{vmid}}/agent/{_name}", GUEST)(
        lambda call, name=_name: agent_result(call, name))
route("POST", "/nodes/{node}/qemu/{vmid}/agent/ping", GUEST)(lambda call: agent_result(call, "ping"))


@route("POST", "/nodes/{node}/qemu/{vmid}/agent/exec", {**GUEST, "command": params.Param("array", required=True),
                                                        "input-data": Text(max_length=65536)})
def agent_exec(call):
    sim = call.sim
    with sim.store.lock:
        guest = agent_guest(call)
        fs = copy.deepcopy(guest.fs)
    with sim.exec_lock:
        code, out, err = guestos.run(fs, guest.name, call.params["command"], call.params.get("input-data", ""))
    with sim.store.lock:
        guest.fs = fs
        pid = guestos.new_exec_pid()
        while str(pid) in guest.execs:
            pid += 1
        guest.execs[str(pid)] = {"exitcode": code, "out-data": out, "err-data": err}
        for old in list(guest.execs)[:-50]:
            del guest.execs[old]
        sim.store.save()
    return {"pid": pid}


@route("GET", "/nodes/{node}/qemu/{vmid}/agent/exec-status", {**GUEST, "pid": Int(required=True)})
def agent_exec_status(call):
    sim = call.sim
    with sim.store.lock:
        guest = agent_guest(call)
        found = guest.execs.get(str(call.params["pid"]))
        if found is None:
            raise ApiError(f"Agent error: Invalid parameter 'pid': PID {call.params['pid']} does not exist")
        result = {"exited": 1, "exitcode": found["exitcode"]}
        for key in ("out-data", "err-data"):
            if found[key]:
                result[key] = found[key]
        return result


@route("POST", "/nodes/{node}/qemu/{vmid}/agent/set-user-password", {
    **GUEST, "username": Text(required=True), "password": Text(required=True, minimum=None), "crypted": Bool()})
def agent_set_password(call):
    sim = call.sim
    with sim.store.lock:
        guest = agent_guest(call)
        argv = ["chpasswd", "-e"] if call.params.get("crypted") else ["chpasswd"]
        line = f"{call.params['username']}:{call.params['password']}\n"
        code, unused_out, err = guestos.run(guest.fs, guest.name, argv, line)
        if code != 0:
            raise ApiError(f"Agent error: {err.strip()}")
        sim.store.save()
    return {"result": {}}
