"""API routes of the node and the cluster: version, resources, nextid, storage, tasks, tickets, pools."""
import hashlib
import ipaddress
import os
import socket
import ssl
import time
import urllib.request
from urllib.parse import urlsplit

from . import KERNEL, PVE_RELEASE, PVE_REPOID, PVE_VERSION
from .node import CONTENT_DIRS, GIB, MIB, ApiError, file_format
from .params import NODE, Bool, Int, Text, check_storage_id
from .router import Result, route
from .tasks import TaskFailed, upid_decode

STORAGE = Text(required=True, check=check_storage_id)
UPID = Text(required=True)
CHECKSUM_ALGORITHMS = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")
NODE_CPUS = 8
NODE_MEMORY = 64 * GIB


def node_check(call):
    if call.params["node"] != call.sim.node:
        # PVE would try to proxy to another cluster node; a single node knows only itself.
        raise ApiError(f"no such cluster node '{call.params['node']}'", status=595)


# --- version, cluster -----------------------------------------------------------------------------------

@route("GET", "/version")
def version(call):
    return {"version": PVE_VERSION, "release": PVE_RELEASE, "repoid": PVE_REPOID, "console": "html5"}


@route("GET", "/nodes/{node}/version", {"node": NODE})
def node_version(call):
    node_check(call)
    return {"version": PVE_VERSION, "release": PVE_RELEASE, "repoid": PVE_REPOID}


def guest_resource(sim, guest):
    from .routes_guests import usage   # the guests module owns the usage model
    use = usage(sim, guest)
    item = {"id": f"{guest.kind}/{guest.vmid}", "type": guest.kind, "vmid": guest.vmid, "name": guest.name,
            "node": sim.node, "status": guest.status, "template": int(bool(guest.config.get("template"))),
            "maxcpu": use["cpus"], "maxmem": use["maxmem"], "maxdisk": use["maxdisk"], "mem": use["mem"],
            "disk": use["disk"], "cpu": use["cpu"], "uptime": use["uptime"], "netin": use["netin"],
            "netout": use["netout"], "diskread": use["diskread"], "diskwrite": use["diskwrite"]}
    for key in ("lock", "tags"):
        if guest.config.get(key):
            item[key] = guest.config[key]
    return item


def node_usage(sim):
    guests = sim.store.guests.values()
    running = [g for g in guests if g.status == "running"]
    from .routes_guests import memory_mib
    mem = 2 * GIB + sum(memory_mib(g) * MIB // 3 for g in running)
    return {"cpu": round(0.02 + 0.01 * len(running), 4), "maxcpu": NODE_CPUS, "mem": min(mem, NODE_MEMORY),
            "maxmem": NODE_MEMORY, "uptime": int(time.time() - sim.boot_time) + 3600}


@route("GET", "/cluster/resources", {"type": Text(enum=("vm", "storage", "node", "sdn"))})
def cluster_resources(call):
    sim, wanted = call.sim, call.params.get("type")
    items = []
    with sim.store.lock:
        if wanted in (None, "node"):
            use = node_usage(sim)
            items.append({"id": f"node/{sim.node}", "type": "node", "node": sim.node, "status": "online",
                          "level": "", "cgroup-mode": 2, "disk": 8 * GIB, "maxdisk": 32 * GIB, **use})
        if wanted in (None, "vm"):
            items.extend(guest_resource(sim, g) for g in sorted(sim.store.guests.values(), key=lambda g: g.vmid))
        if wanted in (None, "storage"):
            for storage in sim.storages.values():
                items.append({"id": f"storage/{sim.node}/{storage.name}", "type": "storage",
                              "storage": storage.name, "node": sim.node, "status": "available",
                              "content": ",".join(storage.content), "plugintype": storage.type,
                              "disk": sim.used_bytes(storage), "maxdisk": storage.total})
    return items


@route("GET", "/cluster/nextid", {"vmid": Int(minimum=100, maximum=999999999)})
def cluster_nextid(call):
    sim = call.sim
    with sim.store.lock:
        wanted = call.params.get("vmid")
        if wanted is not None:
            if wanted in sim.store.guests:
                raise ApiError("Parameter verification failed.", status=400,
                               errors={"vmid": f"VM {wanted} already exists"})
            return wanted
        # Like PVE: the lowest free ID at the time of asking. Nothing is reserved, so callers that race
        # between asking and creating get the same ID, and all but one create fail with "already exists".
        return sim.next_free_id()


@route("GET", "/cluster/status")
def cluster_status(call):
    return [{"type": "node", "id": f"node/{call.sim.node}", "name": call.sim.node, "ip": "127.0.0.1",
             "local": 1, "online": 1, "nodeid": 0, "level": ""}]


@route("GET", "/nodes")
def nodes(call):
    sim = call.sim
    with sim.store.lock:
        use = node_usage(sim)
    # `id`, `type`, `disk` and `maxdisk` are not in the schema, but PVE returns them (the list is built from
    # the cluster resources) and clients read them: the peer inventory plugin keys on `type`.
    return [{"node": sim.node, "status": "online", "level": "", "ssl_fingerprint": call.sim.fingerprint,
             "cpu": use["cpu"], "maxcpu": use["maxcpu"], "mem": use["mem"], "maxmem": use["maxmem"],
             "uptime": use["uptime"], "id": f"node/{sim.node}", "type": "node", "disk": 8 * GIB, "maxdisk": 32 * GIB}]


@route("GET", "/nodes/{node}", {"node": NODE})
def node_index(call):
    node_check(call)
    return [{"name": name} for name in ("qemu", "lxc", "storage", "tasks", "network", "status", "version")]


@route("GET", "/nodes/{node}/status", {"node": NODE})
def node_status(call):
    node_check(call)
    sim = call.sim
    with sim.store.lock:
        use = node_usage(sim)
    return {
        "cpu": use["cpu"], "uptime": use["uptime"], "wait": 0.0, "idle": 0,
        "loadavg": ["0.12", "0.10", "0.08"], "kversion": f"Linux {KERNEL} #1 SMP PREEMPT_DYNAMIC PMX",
        "pveversion": f"pve-manager/{PVE_VERSION}/{PVE_REPOID}",
        "cpuinfo": {"model": "pvesim virtual CPU", "cores": NODE_CPUS // 2, "cpus": NODE_CPUS, "sockets": 1},
        "memory": {"total": use["maxmem"], "used": use["mem"], "free": use["maxmem"] - use["mem"],
                   "available": use["maxmem"] - use["mem"]},
        "swap": {"total": 8 * GIB, "used": 0, "free": 8 * GIB},
        "rootfs": {"total": 32 * GIB, "used": 8 * GIB, "free": 24 * GIB, "avail": 24 * GIB},
        "ksm": {"shared": 0},
        "boot-info": {"mode": "efi", "secureboot": 0},
        "current-kernel": {"sysname": "Linux", "release": KERNEL, "machine": "x86_64",
                           "version": "#1 SMP PREEMPT_DYNAMIC PMX"},
    }


@route("GET", "/nodes/{node}/network", {"node": NODE, "type": Text()})
def node_network(call):
    """A NIC and the bridge on it. (PVE also lists `lo`, typed `loopback`, which its own schema does not allow;
    the simulator keeps to the schema.)"""
    node_check(call)
    nic = {"iface": "eno1", "type": "eth", "active": 1, "autostart": 1, "method": "manual", "method6": "manual",
           "families": ["inet"], "exists": 1, "priority": 2}
    bridge = {"iface": "vmbr0", "type": "bridge", "active": 1, "autostart": 1, "method": "static",
              "method6": "static", "families": ["inet", "inet6"], "address": "10.163.0.1", "netmask": "255.255.252.0",
              "cidr": "10.163.0.1/22", "address6": "fd42:4c58:163::1", "netmask6": 64,
              "cidr6": "fd42:4c58:163::1/64", "bridge_ports": "eno1", "priority": 3}
    wanted = call.params.get("type")
    bridges = ("bridge", "OVSBridge")
    return [item for item in (nic, bridge)
            if wanted is None or wanted == item["type"] or (wanted == "any_bridge" and item["type"] in bridges)]


@route("GET", "/pools", {"poolid": Text(), "type": Text(enum=("qemu", "lxc", "storage"))})
def pools(call):
    return []


@route("GET", "/pools/{poolid}", {"poolid": Text(required=True), "type": Text(enum=("qemu", "lxc", "storage"))})
def pool(call):
    raise ApiError(f"pool '{call.params['poolid']}' does not exist")


# --- tickets (the authentication itself happens in server.py) ---------------------------------------------

TICKET_SPEC = {"username": Text(required=True), "password": Text(required=True), "realm": Text(), "otp": Text(),
               "path": Text(), "privs": Text(), "new-format": Bool(), "tfa-challenge": Text()}


@route("POST", "/access/ticket", TICKET_SPEC)
def access_ticket(call):
    from .auth import AuthError
    username = call.params["username"]
    if call.params.get("realm") and "@" not in username:
        username = f"{username}@{call.params['realm']}"
    try:
        ticket = call.sim.auth.create_ticket(username, call.params["password"])
    except AuthError as error:
        raise ApiError(str(error), status=401) from None
    ticket.pop("cap")
    return ticket


# --- storage -----------------------------------------------------------------------------------------------

def storage_entry(sim, storage):
    used = sim.used_bytes(storage)
    return {"storage": storage.name, "type": storage.type, "content": ",".join(storage.content),
            "active": 1, "enabled": 1, "shared": 0, "total": storage.total, "used": used,
            "avail": storage.total - used, "used_fraction": round(used / storage.total, 6)}


@route("GET", "/nodes/{node}/storage", {"node": NODE, "content": Text(), "enabled": Bool(), "format": Bool(),
                                        "storage": Text(check=check_storage_id), "target": Text()})
def node_storage(call):
    node_check(call)
    sim, params = call.sim, call.params
    items = []
    with sim.store.lock:
        for storage in sim.storages.values():
            if params.get("storage") and storage.name != params["storage"]:
                continue
            if params.get("content") and not set(params["content"].split(",")) & set(storage.content):
                continue
            items.append(storage_entry(sim, storage))
    return items


@route("GET", "/nodes/{node}/storage/{storage}", {"node": NODE, "storage": STORAGE})
def storage_index(call):
    node_check(call)
    call.sim.storage(call.params["storage"])
    return [{"subdir": name} for name in ("content", "download-url", "status", "upload")]


@route("GET", "/nodes/{node}/storage/{storage}/status", {"node": NODE, "storage": STORAGE})
def storage_status(call):
    node_check(call)
    sim = call.sim
    with sim.store.lock:
        entry = storage_entry(sim, sim.storage(call.params["storage"]))
    entry.pop("storage")
    entry.pop("used_fraction")
    return entry


@route("GET", "/storage", {"type": Text()})
def storage_config_list(call):
    items = []
    for storage in call.sim.storages.values():
        if call.params.get("type") and storage.type != call.params["type"]:
            continue
        items.append({"storage": storage.name, "type": storage.type, "content": ",".join(storage.content),
                      "digest": hashlib.sha1(storage.name.encode()).hexdigest(), **storage.extra})
    return items


@route("GET", "/storage/{storage}", {"storage": STORAGE})
def storage_config(call):
    storage = call.sim.storage(call.params["storage"])
    return {"storage": storage.name, "type": storage.type, "content": ",".join(storage.content),
            "digest": hashlib.sha1(storage.name.encode()).hexdigest(), **storage.extra}


@route("GET", "/nodes/{node}/storage/{storage}/content", {"node": NODE, "storage": STORAGE, "content": Text(),
                                                          "vmid": Int(minimum=100, maximum=999999999)})
def storage_content(call):
    node_check(call)
    sim = call.sim
    with sim.store.lock:
        return sim.list_volumes(call.params["storage"], call.params.get("content"), call.params.get("vmid"))


def full_volid(storage_name, volume):
    return volume if ":" in volume else f"{storage_name}:{volume}"


@route("GET", "/nodes/{node}/storage/{storage}/content/{volume}", {"node": NODE, "storage": STORAGE,
                                                                   "volume": Text(required=True)})
def storage_volume(call):
    node_check(call)
    sim = call.sim
    volid = full_volid(call.params["storage"], call.params["volume"])
    with sim.store.lock:
        item = sim.volume(volid)
        if item is None:
            raise ApiError(f"volume '{volid}' does not exist")
        return {"path": sim.volume_path(volid), "size": item["size"], "used": item["size"],
                "format": item["format"]}


@route("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}", {"node": NODE, "storage": STORAGE,
                                                                      "volume": Text(required=True),
                                                                      "delay": Int(minimum=1, maximum=30)})
def storage_volume_delete(call):
    node_check(call)
    sim = call.sim
    volid = full_volid(call.params["storage"], call.params["volume"])
    with sim.store.lock:
        item = sim.volume(volid)
        if item is None:
            raise ApiError(f"volume '{volid}' does not exist")
        owner = item.get("vmid")
        if owner in sim.store.guests:
            raise ApiError(f"unable to delete volume '{volid}' - volume is still in use by VM {owner}")

    def work(log):
        with sim.store.lock:
            storage = sim.storage(volid.partition(":")[0])
            if storage.type == "dir":
                content, filename = volid.split(":", 1)[1].split("/", 1)
                sim.content_path(content, filename).unlink(missing_ok=True)
            else:
                sim.free_volume(volid)
            log(f"Removed volume '{volid}'")
    return sim.tasks.start("imgdel", "", call.user, work)


def check_upload_target(sim, storage_name, content, filename):
    storage = sim.storage(storage_name)
    if content not in CONTENT_DIRS or content not in storage.content:
        raise ApiError(f"storage '{storage_name}' does not support content-type '{content}'")
    if "/" in filename or filename.startswith(".") or file_format(content, filename) is None:
        raise ApiError("Parameter verification failed.", status=400,
                       errors={"filename": f"wrong file extension for content type '{content}'"})
    return sim.content_path(content, filename)


def loopback_only(url):
    """The simulator fetches from loopback addresses only: test traffic must never leave the machine."""
    host = urlsplit(url).hostname or ""
    for info in socket.getaddrinfo(host, None):
        if not ipaddress.ip_address(info[4][0]).is_loopback:
            raise TaskFailed(f"pvesim downloads only from loopback addresses, not '{host}'")


@route("POST", "/nodes/{node}/storage/{storage}/download-url", {
    "node": NODE, "storage": STORAGE, "url": Text(required=True), "filename": Text(required=True),
    "content": Text(required=True, enum=("iso", "vztmpl", "import")), "checksum": Text(),
    "checksum-algorithm": Text(enum=CHECKSUM_ALGORITHMS), "compression": Text(), "verify-certificates": Bool()})
def download_url(call):
    node_check(call)
    sim, params = call.sim, call.params
    target = check_upload_target(sim, params["storage"], params["content"], params["filename"])
    if bool(params.get("checksum")) != bool(params.get("checksum-algorithm")):
        raise ApiError("Parameter verification failed.", status=400,
                       errors={"checksum-algorithm": "'checksum' and 'checksum-algorithm' go together"})
    url = params["url"]
    if urlsplit(url).scheme not in ("http", "https", "ftp"):
        raise ApiError("Parameter verification failed.", status=400, errors={"url": "invalid URL"})

    def work(log):
        loopback_only(url)
        log(f"downloading {url} to {target}")
        context = ssl.create_default_context()
        if not params.get("verify-certificates", 1):
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        partial = target.with_name(f".{target.name}.tmp_dwnl.{os.getpid()}")
        digest = hashlib.new(params.get("checksum-algorithm") or "sha256")
        try:
            with urllib.request.urlopen(url, timeout=30, context=context) as answer, open(partial, "wb") as out:
                while chunk := answer.read(1 << 16):
                    digest.update(chunk)
                    out.write(chunk)
            if params.get("checksum"):
                expected = params["checksum"].lower()
                if digest.hexdigest() != expected:
                    raise TaskFailed(f"checksum mismatch: got '{digest.hexdigest()}' != expect '{expected}'")
                log("calculating checksum...OK, checksum verified")
            partial.replace(target)
        except OSError as error:
            raise TaskFailed(f"download failed: {error}") from None
        finally:
            partial.unlink(missing_ok=True)
        log(f"download of '{url}' to '{target}' finished")
    return sim.tasks.start("download", params["filename"], call.user, work)


@route("POST", "/nodes/{node}/storage/{storage}/upload", {
    "node": NODE, "storage": STORAGE, "content": Text(required=True, enum=("iso", "vztmpl", "import")),
    "filename": Text(required=True), "checksum": Text(), "checksum-algorithm": Text(enum=CHECKSUM_ALGORITHMS),
    "tmpfilename": Text()})
def upload(call):
    node_check(call)
    sim, params = call.sim, call.params
    target = check_upload_target(sim, params["storage"], params["content"], params["filename"])
    data = call.upload or b""
    if params.get("checksum"):
        actual = hashlib.new(params.get("checksum-algorithm") or "sha256", data).hexdigest()
        if actual != params["checksum"].lower():
            raise ApiError(f"checksum mismatch: got '{actual}' != expect '{params['checksum'].lower()}'")

    def work(log):
        partial = target.with_name(f".{target.name}.upload")
        partial.write_bytes(data)
        partial.replace(target)
        log(f"target file: {target}")
        log(f"file size is: {len(data)}")
    return sim.tasks.start("imgcopy", "", call.user, work)


# --- tasks -------------------------------------------------------------------------------------------------

def task_or_error(sim, upid):
    try:
        upid_decode(upid)
    except ValueError as error:
        raise ApiError("Parameter verification failed.", status=400, errors={"upid": str(error)}) from None
    task = sim.store.tasks.get(upid)
    if task is None:
        raise ApiError(f"no such task '{upid}'")
    return task


def task_item(task):
    item = {"upid": task.upid, "node": task.node, "pid": task.pid, "pstart": task.pstart,
            "starttime": task.starttime, "type": task.type, "id": task.id, "user": task.user}
    if task.status == "stopped":
        item["status"] = task.exitstatus
        item["endtime"] = task.endtime
    return item


@route("GET", "/nodes/{node}/tasks", {"node": NODE, "limit": Int(minimum=0), "start": Int(minimum=0), "errors": Bool(),
                                      "typefilter": Text(), "userfilter": Text(), "vmid": Int(minimum=100, maximum=999999999),
                                      "source": Text(enum=("archive", "active", "all")), "since": Int(), "until": Int(),
                                      "statusfilter": Text()})
def node_tasks(call):
    node_check(call)
    params = call.params
    with call.sim.store.lock:
        tasks = sorted(call.sim.store.tasks.values(), key=lambda t: (t.starttime, t.pid), reverse=True)
        source = params.get("source", "archive")
        if source == "active":
            tasks = [t for t in tasks if t.status == "running"]
        elif source == "archive":
            tasks = [t for t in tasks if t.status != "running"]
        if params.get("errors"):
            tasks = [t for t in tasks if t.status != "running" and t.exitstatus != "OK"]
        if params.get("typefilter"):
            tasks = [t for t in tasks if t.type == params["typefilter"]]
        if params.get("userfilter"):
            tasks = [t for t in tasks if params["userfilter"] in t.user]
        if params.get("vmid") is not None:
            tasks = [t for t in tasks if t.id == str(params["vmid"])]
        if params.get("since") is not None:
            tasks = [t for t in tasks if t.starttime >= params["since"]]
        if params.get("until") is not None:
            tasks = [t for t in tasks if t.starttime <= params["until"]]
        start, limit = params.get("start", 0), params.get("limit", 50)
        selected = tasks[start:start + limit] if limit else tasks[start:]
        return Result([task_item(t) for t in selected], {"total": len(tasks)})


@route("GET", "/nodes/{node}/tasks/{upid}", {"node": NODE, "upid": UPID})
def task_index(call):
    node_check(call)
    with call.sim.store.lock:
        task_or_error(call.sim, call.params["upid"])
    return [{"name": "log"}, {"name": "status"}]


@route("GET", "/nodes/{node}/tasks/{upid}/status", {"node": NODE, "upid": UPID})
def task_status(call):
    node_check(call)
    with call.sim.store.lock:
        task = task_or_error(call.sim, call.params["upid"])
        item = {"upid": task.upid, "node": task.node, "pid": task.pid, "pstart": task.pstart,
                "starttime": task.starttime, "type": task.type, "id": task.id, "user": task.user,
                "status": task.status}
        if task.status == "stopped":
            item["exitstatus"] = task.exitstatus
        return item


@route("GET", "/nodes/{node}/tasks/{upid}/log", {"node": NODE, "upid": UPID, "start": Int(minimum=0),
                                                 "limit": Int(minimum=0), "download": Bool()})
def task_log(call):
    node_check(call)
    with call.sim.store.lock:
        task = task_or_error(call.sim, call.params["upid"])
        lines = list(task.log) or ["no content"]
    start, limit = call.params.get("start", 0), call.params.get("limit", 50)
    chosen = lines[start:start + limit] if limit else lines[start:]
    return Result([{"n": start + index + 1, "t": text} for index, text in enumerate(chosen)],
                  {"total": len(lines)})


@route("DELETE", "/nodes/{node}/tasks/{upid}", {"node": NODE, "upid": UPID})
def task_stop(call):
    node_check(call)
    with call.sim.store.lock:
        task_or_error(call.sim, call.params["upid"])
    call.sim.tasks.stop(call.params["upid"])
    return None
