# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Proxmox VE backend: LXC containers (type container) and QEMU VMs (type vm).

Transports: the PVE REST API with an API token (HTTPS, the node's own TLS settings), or `pvesh` with JSON
output over the collection's SSH transport (host keys checked), plus `pct exec` / `qm guest exec` where the
API has no equivalent. Both answer the same `request(method, path, params)`, so every operation is written
once (see proxmox_images.py for the two clients and the image work).

Secrets never go on a command line: `pvesh` takes parameters only as arguments, so over SSH a secret
(`cipassword`, a guest-agent password) travels through the API tunnelled inside the SSH connection to the
node's own port 8006, with the node's API token; a container's password goes through `pct exec ... chpasswd`
with the password on stdin.

Identity: a guest is found by its exact name (`name` of a VM, `hostname` of a container) among the
non-template guests of the node; two guests of one name are an error, never a guess. The image a guest was
made from is kept in its description (`ocv-image: ...`), since PVE keeps no record of it.
"""

from __future__ import annotations

import json
import math
import re
import socket
import threading
import time
from urllib.parse import quote, unquote, urlsplit

from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends.base import Provider, count_statuses
from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends.proxmox_images import (
    PveApiClient, PveSshClient, ProxmoxImageMethods, segment)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import (
    BackendError, Conflict, InvalidSpec, NotFound, OperationTimeout, TransportError, Unsupported, VirtError)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.models import (
    ExecResult, Instance, NodeFacts, NodeResources)

MIB = 1024 * 1024
KIND = {"container": "lxc", "vm": "qemu"}
TYPE = {"lxc": "container", "qemu": "vm"}
IMAGE_MARK = "ocv-image: "
# Extras of `config` on Proxmox, and the type each applies to.
CONFIG_KEYS = {"vmid": ("container", "vm"), "storage": ("container", "vm"), "onboot": ("container", "vm"),
               "unprivileged": ("container",), "ciuser": ("vm",), "sshkeys": ("vm",), "nameserver": ("container", "vm"),
               "searchdomain": ("container", "vm")}
# Settled at creation; a different value means a new guest.
CREATE_ONLY = ("vmid", "storage", "unprivileged")
LOCKS_OF_CREATION = ("create", "clone")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)\Z")
# A deleted guest takes its disks along, and leaves no backup job, replication or HA entry naming its VMID.
DESTROY = {"purge": 1, "destroy-unreferenced-disks": 1}
_VOLUME = re.compile(r"^[a-z][a-z0-9\-_.]*[a-z0-9]:(vztmpl|iso|import)/[^/\s]+\Z")
NEXTID_ATTEMPTS = 25


def size_mib(text):
    """A PVE size (`8G`, `512M`, `4096`, bytes when bare) in MiB."""
    match = _SIZE.match(str(text or "").strip())
    if not match:
        return None
    number, unit = float(match.group(1)), match.group(2)
    factor = {"": 1.0 / MIB, "K": 1.0 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]
    return int(round(number * factor))


def options_of(value):
    """`virtio=BC:..,bridge=vmbr0,rate=12` -> ordered dict; the first bare word keyed as ''."""
    options = {}
    for part in str(value or "").split(","):
        key, sep, item = part.partition("=")
        if sep:
            options[key] = item
        elif part:
            options.setdefault("", part)
    return options


def render_options(options):
    return ",".join(value if key == "" else f"{key}={value}" for key, value in options.items())


def sshkeys_text(value):
    """PVE keeps `sshkeys` percent-encoded; compare and report it decoded, one key a line."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        lines = [str(line).strip() for line in value]
    else:
        lines = [line.strip() for line in unquote(str(value)).splitlines()]
    return "\n".join(line for line in lines if line)


def sshkeys_param(text):
    # PVE wants the keys percent-encoded with %20 for spaces (not `+`), and refuses them raw.
    return quote(text + "\n", safe="")


class _SocketPump:
    """A local socket pair whose far end is pumped to and from an SSH channel, so that ssl can wrap it."""

    def __init__(self, channel):
        self.channel = channel
        self.near, self.far = socket.socketpair()
        for target in (self._to_channel, self._from_channel):
            threading.Thread(target=target, daemon=True).start()

    def _to_channel(self):
        try:
            while True:
                data = self.far.recv(65536)
                if not data:
                    break
                self.channel.sendall(data)
        except OSError:
            pass
        finally:
            self.channel.close()

    def _from_channel(self):
        try:
            while True:
                data = self.channel.recv(65536)
                if not data:
                    break
                self.far.sendall(data)
        except (OSError, EOFError):
            pass
        finally:
            try:
                self.far.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def tunnel_client(node, ssh):
    """The API client over an SSH channel to the node's own port (8006 by default): the road for secrets when
    the run goes over SSH. It uses the node's API token and TLS settings; it never connects to api.url's host."""
    from ansible_collections.oneclickvirt.virt.plugins.module_utils.transport.http import SocketStream, tls_context

    api = node.api
    port = urlsplit(api.url).port or 8006
    context = tls_context(api.validate_certs, api.ca_file)

    def open_stream():
        client = ssh.connect()
        try:
            channel = client.get_transport().open_channel("direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 0),
                                                          timeout=ssh.settings.connect_timeout)
        except Exception as error:  # paramiko raises several unrelated types here
            raise TransportError(f"SSH: the node refused a tunnel to its port {port} ({error}); allow TCP "
                                 "forwarding in its sshd for this user")
        pump = _SocketPump(channel)
        pump.near.settimeout(api.timeout)
        try:
            return SocketStream(context.wrap_socket(pump.near, server_hostname="127.0.0.1"), tls=True)
        except OSError as error:
            pump.near.close()
            raise TransportError(f"TLS through the SSH tunnel to port {port} failed: {error}")

    return PveApiClient(api, open_stream=open_stream, host_header=f"127.0.0.1:{port}")


class _Progress:
    """What a task wait reports as it goes (the image methods' progress sink), kept for error messages."""

    def __init__(self):
        self.lines = []

    def progress(self, line):
        self.lines.append(line)


class ProxmoxProvider(ProxmoxImageMethods, Provider):
    backend = "proxmox"
    instance_types = ("container", "vm")
    in_place_fields = ("cpu", "memory", "disk", "network", "config")

    def __init__(self, node, warn=None):
        super().__init__(node, warn)
        self._configs = {}  # vmid -> the config read with the instance (drift compares against it)
        self._settled = {}  # name -> the VMID this run created or yielded to, when a racing run made a twin
        self._tunnel = None
        self._served_by_shell = False  # a command ran through `pct exec`: SSH served this run's work

    @property
    def transport(self):
        return "ssh" if self._served_by_shell else self.router.transport

    # -- transports ---------------------------------------------------------------------------------------------
    def make_api_client(self):
        return PveApiClient(self.node.api)

    def make_ssh_client(self):
        from ansible_collections.oneclickvirt.virt.plugins.module_utils.transport.ssh import SshTransport

        return PveSshClient(SshTransport(self.node.ssh, self.warn))

    def close(self):
        if self._tunnel is not None:
            self._tunnel.close()
            self._tunnel = None
        super().close()

    def _secret_client(self, what):
        """The client that may carry a secret: the API, or the API tunnelled over SSH (never pvesh's argv)."""
        if self.router.transport == "api":
            return self.router.client()
        api = self.node.api
        if api is None or not (api.token_id and api.token_secret):
            raise Unsupported(f"{what}: over SSH a secret goes to the node's own API through the SSH connection "
                              "(pvesh would show it in the node's process list); give node.api with url, token_id and "
                              "token_secret (under ssh_only only the url's port is used, on the node itself)")
        if self._tunnel is None:
            self._tunnel = tunnel_client(self.node, self.router.ssh(what).ssh)
        return self._tunnel

    def _guest_path(self, kind, vmid, suffix=""):
        return f"/nodes/{segment(self._pve_node())}/{kind}/{int(vmid)}{suffix}"

    # -- tasks --------------------------------------------------------------------------------------------------
    def _guest_task(self, send, what, progress=None):
        """Send a request that starts a task and wait for it (pvesh over SSH already waited and printed its log)."""
        progress = progress or _Progress()

        def action(client):
            answer = send(client)
            if client.label == "ssh":
                progress.lines.extend(getattr(client, "last_log", []) or [])
            elif isinstance(answer, str) and answer.startswith("UPID:"):
                self._wait_task(client, answer, progress, what)
            return answer

        try:
            return self.router.run(True, action)
        except BackendError as error:
            tail = [line for line in progress.lines if line][-5:]
            if tail and "last log lines" not in str(error):
                raise BackendError(f"{error}; last log lines: {' | '.join(tail)}",
                                   backend_message=error.backend_message) from None
            raise

    def _call(self, method, path, params=None, what=None):
        """One write that may or may not start a task; waits when it does."""
        return self._guest_task(lambda client: client.request(method, path, params, timeout=self._wait(client)),
                                what or f"{method} {path}")

    def _wait(self, client):
        """How long a task-starting request may take: over SSH pvesh waits for the task itself, so as long as
        the task may; over the API the answer (a UPID) comes at once, so the API's own timeout (None)."""
        return self.timeout + 30 if client.label == "ssh" else None

    # -- reads --------------------------------------------------------------------------------------------------
    def version(self):
        return (self._pve("GET", "/version") or {}).get("version")

    def _resources(self):
        """Every guest of this node: one /cluster/resources request."""
        resources = self._pve("GET", "/cluster/resources", {"type": "vm"}) or []
        wanted = self.node.proxmox_node
        return [item for item in resources if item.get("type") in ("qemu", "lxc")
                and (not wanted or item.get("node") == wanted)]

    def list_instances(self):
        instances = []
        for item in self._resources():
            if item.get("template"):
                continue  # a template is an image (`clone:<name>`), not an instance
            instances.append(Instance(
                name=item.get("name") or str(item["vmid"]), id=str(item["vmid"]), node=self.node.name,
                backend=self.backend, type=TYPE[item["type"]], status=_status(item.get("status")),
                cpu=_number(item.get("maxcpu")), memory=_mib(item.get("maxmem")), disk=_mib(item.get("maxdisk"))))
        return sorted(instances, key=lambda instance: instance.name)

    def _find(self, name, templates=False, kind=None):
        found = [item for item in self._resources() if (item.get("name") or "") == name
                 and bool(item.get("template")) == templates and (kind is None or item["type"] == kind)]
        settled = [item for item in found if not templates and int(item["vmid"]) == self._settled.get(name)]
        if len(found) > 1 and settled:
            return settled[0]  # the others are racing twins that their own runs delete (_yield_to_an_older_twin)
        if len(found) > 1:
            ids = ", ".join(str(item["vmid"]) for item in found)
            raise Conflict(f"{'template' if templates else 'name'} {name!r}: {len(found)} guests on Proxmox node "
                           f"{self.node.name} have this name (VMIDs {ids}); rename or remove all but one")
        return found[0] if found else None

    def get_instance(self, name):
        item = self._find(name)
        if item is None:
            return None
        kind, vmid = item["type"], item["vmid"]
        try:
            config = self._pve("GET", self._guest_path(kind, vmid, "/config")) or {}
            status = self._pve("GET", self._guest_path(kind, vmid, "/status/current")) or {}
        except NotFound:
            return None  # deleted between the listing and these reads
        except BackendError as error:
            if "does not exist" in str(error):
                return None
            raise
        self._configs[str(vmid)] = config
        state = "paused" if status.get("qmpstatus") in ("paused", "suspended") else _status(status.get("status"))
        ipv4, ipv6 = _static_addresses(config, kind)
        if (not ipv4 or not ipv6) and state == "running":
            found4, found6 = self._running_addresses(kind, vmid, config)
            ipv4, ipv6 = ipv4 or found4, ipv6 or found6
        return Instance(name=name, id=str(vmid), node=self.node.name, backend=self.backend, type=TYPE[kind],
                        status=state, image=_image_mark(config), cpu=_cpu(config, kind), memory=_memory(config),
                        disk=_disk(config, kind), private_ip=ipv4, ipv6=ipv6, created=_created(config))

    def find_instance(self, reference):
        """A name first; a number that names no guest is taken as a VMID (virt_portmap's `instance`)."""
        found = self.get_instance(reference)
        if found is None and str(reference).isdigit():
            by_id = [item for item in self._resources() if str(item["vmid"]) == str(reference) and not item.get("template")]
            if by_id and by_id[0].get("name"):
                found = self.get_instance(by_id[0]["name"])
        return found

    def _running_addresses(self, kind, vmid, config):
        try:
            if kind == "lxc":
                nics = self._pve("GET", self._guest_path(kind, vmid, "/interfaces")) or []
            elif _agent_on(config):
                nics = (self._pve("GET", self._guest_path(kind, vmid, "/agent/network-get-interfaces"))
                        or {}).get("result") or []
            else:
                return None, None
        except BackendError:
            return None, None  # the guest agent not up yet: addresses are a read, never a failure
        ipv4 = ipv6 = None
        for nic in nics:
            if nic.get("name") == "lo":
                continue
            for address in nic.get("ip-addresses") or []:
                value = address.get("ip-address") or ""
                if address.get("ip-address-type") == "ipv4" and not ipv4:
                    ipv4 = value
                elif address.get("ip-address-type") == "ipv6" and not ipv6 and not value.lower().startswith("fe80"):
                    ipv6 = value
        return ipv4, ipv6

    def node_facts(self):
        name = self._pve_node()
        status = self._pve("GET", f"/nodes/{segment(name)}/status") or {}
        resources = NodeResources()
        cpus = (status.get("cpuinfo") or {}).get("cpus")
        if cpus:
            resources.cpu_cores, resources.sources["cpu_cores"] = int(cpus), "api"
        for field_name, section, key in (("memory_total", "memory", "total"), ("memory_available", "memory", "free"),
                                         ("swap_total", "swap", "total"), ("swap_free", "swap", "free")):
            value = (status.get(section) or {}).get(key)
            if value is not None:
                setattr(resources, field_name, int(value) // MIB)
                resources.sources[field_name] = "api"
        self._storage_facts(name, resources)
        counts = [item.get("status") for item in self._resources() if not item.get("template")]
        return NodeFacts(version=self.version(), hostname=name, instance_types=list(self.instance_types),
                         instances=count_statuses(counts), resources=resources, shell_resources=False)

    def _storage_facts(self, name, resources):
        """The storage that holds guest disks (content rootdir, else images): its space, and its path if any."""
        storages = [item for item in self._pve("GET", f"/nodes/{segment(name)}/storage") or [] if item.get("active", 1)]
        storage = self._disk_storage(storages)
        if storage is None:
            return
        resources.storage_pool = storage.get("storage")
        if storage.get("total"):
            resources.disk_total = int(storage["total"]) // MIB
            resources.disk_free = int(storage.get("avail") or 0) // MIB
            resources.sources.update(disk_total="api", disk_free="api")
        try:
            resources.disk_path = (self._pve("GET", f"/storage/{segment(storage['storage'])}") or {}).get("path")
        except BackendError:
            pass  # the token may lack Datastore.Audit on /storage: the space above is what matters

    @staticmethod
    def _disk_storage(storages, kind=None):
        contents = {"lxc": ("rootdir",), "qemu": ("images",)}.get(kind, ("rootdir", "images"))
        for content in contents:
            chosen = [item for item in storages if content in str(item.get("content") or "").split(",")]
            if chosen:
                return sorted(chosen, key=lambda item: item.get("storage"))[0]
        return None

    # -- what was asked -----------------------------------------------------------------------------------------
    def check_spec(self, spec):
        self.check_type(spec)
        for key in spec.config:
            if key not in CONFIG_KEYS:
                raise InvalidSpec(f"config.{key}: not a Proxmox setting of this collection; use one of "
                                  f"{', '.join(sorted(CONFIG_KEYS))}")
            if spec.type not in CONFIG_KEYS[key]:
                raise InvalidSpec(f"config.{key}: applies to {' and '.join(CONFIG_KEYS[key])} guests only, "
                                  f"not to type {spec.type}")
        vmid = spec.config.get("vmid")
        if vmid is not None and (isinstance(vmid, bool) or not str(vmid).isdigit() or not 100 <= int(vmid) <= 999999999):
            raise InvalidSpec(f"config.vmid: {vmid!r} is not a VMID; give a number from 100 to 999999999")
        for option in ("env", "command", "ports", "hostname", "restart_policy"):
            if getattr(spec, option):
                raise Unsupported(f"{option}: not a Proxmox guest setting; Docker-only (ports of a Proxmox guest "
                                  "are mapped with oneclickvirt.virt.virt_portmap)")
        if spec.image:
            self._check_image(spec)
        self._network_settings(spec)
        bridge = (spec.network or {}).get("bridge")
        if bridge is not None:
            known = [item.get("iface") for item in self._pve("GET", f"/nodes/{segment(self._pve_node())}/network") or []
                     if item.get("type") in ("bridge", "OVSBridge")]
            if bridge not in known:
                raise InvalidSpec(f"network.bridge: there is no bridge {bridge!r} on Proxmox node {self.node.name}; "
                                  f"it has {', '.join(sorted(map(str, known))) or 'none'}")

    def check_inside_road(self, spec):
        if spec.type == "container":
            self.router.ssh("a password or keys inside a Proxmox container (pct exec)")
        elif self.router.transport == "ssh":
            api = self.node.api
            if api is None or not (api.token_id and api.token_secret):
                raise Unsupported("password: over SSH a VM's password goes to the node's own API through the SSH "
                                  "connection; give node.api.token_id and node.api.token_secret")

    def _check_image(self, spec):
        image = spec.image
        if image.startswith("clone:"):
            if not image[len("clone:"):]:
                raise InvalidSpec("image: give the template's name after clone:, e.g. clone:debian12-cloud")
            return
        match = _VOLUME.match(image)
        if not match:
            raise InvalidSpec(f"image: {image!r} is not a Proxmox image; give a volume such as "
                              "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst (container), "
                              "local:iso/x.iso or local:import/x.qcow2 (VM), or clone:<template name>")
        content = match.group(1)
        if (content == "vztmpl") != (spec.type == "container"):
            raise InvalidSpec(f"image: {image} is a {'container template' if content == 'vztmpl' else content + ' volume'}"
                              f", not for a {spec.type}; a container takes storage:vztmpl/..., a vm "
                              "storage:iso/..., storage:import/... or clone:<template>")
        if content == "iso":
            _refuse_without_cloudinit(spec, f"{spec.name} installs from {image}")

    def _network_settings(self, spec):
        """The net0 options and the cloud-init ipconfig0 the request asks for ({} where nothing is asked)."""
        network = spec.network or {}
        nic, ipconfig = {}, {}
        if network.get("bridge") is not None:
            nic["bridge"] = network["bridge"]
        rates = {network.get(key) for key in ("bandwidth_in", "bandwidth_out") if network.get(key) is not None}
        if len(rates) > 1:
            raise Unsupported("network.bandwidth_in / bandwidth_out: Proxmox has one rate for both directions of a "
                              "NIC; give the same value to both, or only one")
        if rates:
            rate = rates.pop()
            if rate <= 0:
                raise InvalidSpec("network.bandwidth_in / bandwidth_out: give a positive number of Mbit/s")
            nic["rate"] = _rate_text(rate)
        for key, word in (("ipv4", "ip"), ("ipv6", "ip6")):
            value = network.get(key)
            if value is None:
                continue
            if value not in ("auto", "none") and not re.match(r"^[0-9a-fA-F:.]+/\d{1,3}\Z", value):
                raise InvalidSpec(f"network.{key}: {value!r}; use auto, none or an address with its prefix (CIDR)")
            wanted = {"auto": "dhcp" if key == "ipv4" else "auto", "none": "manual"}.get(value, value)
            (nic if spec.type == "container" else ipconfig)[word] = wanted
        return nic, ipconfig

    # -- drift --------------------------------------------------------------------------------------------------
    def drift(self, instance, spec):
        config = self._configs.get(instance.id) or {}
        kind = KIND[instance.type]
        drift = {}
        if spec.type != instance.type:
            drift["type"] = (instance.type, spec.type)
        if spec.image and instance.image and spec.image != instance.image:
            drift["image"] = (instance.image, spec.image)
        if spec.config.get("vmid") is not None and str(spec.config["vmid"]) != instance.id:
            drift["vmid"] = (int(instance.id), int(spec.config["vmid"]))
        if spec.cpu is not None and instance.cpu != spec.cpu:
            drift["cpu"] = (instance.cpu, spec.cpu)
        if spec.memory is not None and instance.memory != spec.memory:
            drift["memory"] = (instance.memory, spec.memory)
        if spec.disk is not None and instance.disk != spec.disk:
            if instance.disk is not None and spec.disk < instance.disk:
                raise InvalidSpec(f"disk: {spec.disk} MiB is smaller than the {instance.disk} MiB of {instance.name}; "
                                  "Proxmox only grows disks (recreate with force: true to shrink)")
            drift["disk"] = (instance.disk, spec.disk)
        nic, ipconfig = self._network_settings(spec)
        current_nic = options_of(config.get("net0"))
        current_ip = options_of(config.get("ipconfig0"))
        network = {}
        for key, value in nic.items():
            if key == "rate" and _rate_value(current_nic.get(key)) != _rate_value(value):
                network[f"net0.{key}"] = (current_nic.get(key), value)
            elif key != "rate" and current_nic.get(key) != value:
                network[f"net0.{key}"] = (current_nic.get(key), value)
        if instance.type == "vm" and not _has_cloudinit(config):
            # No cloud-init drive (an ISO install): the guest sets its own address; auto is what it has.
            _refuse_without_cloudinit(spec, f"{instance.name} has no cloud-init drive")
            ipconfig = {}
        for key, value in ipconfig.items():
            if current_ip.get(key) != value:
                network[f"ipconfig0.{key}"] = (current_ip.get(key), value)
        if network:
            drift["network"] = ({key: pair[0] for key, pair in network.items()},
                                {key: pair[1] for key, pair in network.items()})
        extras = {}
        for key, wanted in spec.config.items():
            if key in ("vmid", "storage") or (key == "unprivileged" and kind != "lxc"):
                continue
            current, wanted = _config_value(key, config.get(key), kind), _config_value(key, wanted, kind)
            if current != wanted:
                if key in CREATE_ONLY:
                    drift[key] = (current, wanted)
                else:
                    extras[key] = (current, wanted)
        if extras:
            drift["config"] = ({key: pair[0] for key, pair in extras.items()},
                               {key: pair[1] for key, pair in extras.items()})
        return drift

    def restart_needed(self, instance, changes):
        # A running VM takes cores and memory at its next start (PVE's hotplug is off for both by default);
        # a container takes them at once. Network and cloud-init changes of a VM wait for the next boot too.
        if instance.type != "vm" or instance.status != "running":
            return []
        return sorted(name for name in changes if name in ("cpu", "memory", "network", "config"))

    # -- writes -------------------------------------------------------------------------------------------------
    def _settings(self, spec, kind, cloudinit):
        """A new guest's config parameters: cpu, memory, net0, cloud-init's ipconfig0, the extras."""
        params = _cpu_params(spec.cpu, kind, {}) if spec.cpu is not None else {}
        if spec.memory is not None:
            params["memory"] = spec.memory
        nic, ipconfig = self._network_settings(spec)
        base = {"name": "eth0", "bridge": "vmbr0", "ip": "dhcp", "ip6": "auto"} if kind == "lxc" \
            else {"": "virtio", "bridge": "vmbr0"}
        params["net0"] = render_options({**base, **nic})
        if kind == "qemu" and cloudinit:
            params["ipconfig0"] = render_options({"ip": "dhcp", "ip6": "auto", **ipconfig})
        params.update(_config_params({key: value for key, value in spec.config.items()
                                      if key not in ("vmid", "storage")}))
        return params

    def create_instance(self, spec, events):
        kind = KIND[spec.type]
        node = segment(self._pve_node())
        storage = spec.config.get("storage") or self._default_storage(kind)
        if spec.image.startswith("clone:"):
            self._create_by_clone(spec, kind, storage)
            return
        content = spec.image.partition(":")[2].split("/", 1)[0]
        # A cloud image (import) gets a cloud-init drive; an installer ISO does its own setup.
        params = self._settings(spec, kind, cloudinit=content == "import")
        params["description"] = IMAGE_MARK + spec.image
        if kind == "lxc":
            params.update(ostemplate=spec.image, hostname=spec.name, storage=storage,
                          rootfs=f"{storage}:{_gib(spec.disk or 4096)}")
            params.setdefault("unprivileged", 1)
        elif content == "iso":
            params.update(name=spec.name, scsihw="virtio-scsi-pci", ostype="l26", agent=1, boot="order=scsi0;ide2",
                          ide2=f"{spec.image},media=cdrom", scsi0=f"{storage}:{_gib(spec.disk or 8192)}")
        else:
            params.update(name=spec.name, scsihw="virtio-scsi-pci", ostype="l26", agent=1, boot="order=scsi0",
                          scsi0=f"{storage}:0,import-from={spec.image}", ide2=f"{storage}:cloudinit",
                          serial0="socket")
        vmid = self._with_vmid(spec, lambda client, vmid: client.request(
            "POST", f"/nodes/{node}/{kind}", dict(params, vmid=vmid), timeout=self._wait(client)))
        if self._yield_to_an_older_twin(spec, kind, vmid):
            return
        if kind == "qemu" and content == "import" and spec.disk is not None:
            self._grow_after_create(spec)

    def _create_by_clone(self, spec, kind, storage):
        template_name = spec.image[len("clone:"):]
        template = self._find(template_name, templates=True, kind=kind)
        if template is None:
            raise InvalidSpec(f"image: there is no {spec.type} template named {template_name!r} on Proxmox node "
                              f"{self.node.name}; see oneclickvirt.virt.virt_image_info")
        node = segment(self._pve_node())
        name_key = "name" if kind == "qemu" else "hostname"
        params = {name_key: spec.name, "full": 1}
        if spec.config.get("storage"):
            params["storage"] = storage
        vmid = self._with_vmid(spec, lambda client, vmid: client.request(
            "POST", f"/nodes/{node}/{kind}/{int(template['vmid'])}/clone", dict(params, newid=vmid),
            timeout=self._wait(client)))
        if self._yield_to_an_older_twin(spec, kind, vmid):
            return
        settings = self._settings(spec, kind, cloudinit=kind == "qemu")
        settings["description"] = IMAGE_MARK + spec.image
        self._call("PUT", self._guest_path(kind, vmid, "/config"), settings, f"configure {spec.name}")
        if spec.disk is not None:
            self._grow_after_create(spec)

    def _grow_after_create(self, spec):
        instance = self.get_instance(spec.name)
        if instance is not None and instance.disk is not None and spec.disk > instance.disk:
            self._resize(instance, spec.disk)

    def _yield_to_an_older_twin(self, spec, kind, vmid):
        """Proxmox VE keeps no name unique: a run racing this one (or the orphaned worker of a killed play) may
        have created a guest of the same name meanwhile. Every racer keeps the lowest VMID and deletes its own,
        newer guest, so the name ends with one guest whichever finishes first. True when this run's guest went."""
        oldest = min((int(item["vmid"]) for item in self._resources()
                      if (item.get("name") or "") == spec.name and not item.get("template")), default=vmid)
        self._settled[spec.name] = oldest
        if oldest >= vmid:
            return False
        self.warn(f"node {self.node.name}: another run created {spec.name} at the same time (VMID {oldest}); "
                  f"this run's guest {vmid} was deleted again and {oldest} is kept")
        self._call("DELETE", self._guest_path(kind, vmid), DESTROY, f"delete the newer twin {vmid} of {spec.name}")
        return True

    def _with_vmid(self, spec, send):
        """Create with the asked VMID, or with `nextid`, taking a fresh one while others race for the same ID."""
        explicit = spec.config.get("vmid")
        for attempt in range(NEXTID_ATTEMPTS):
            vmid = int(explicit) if explicit is not None else int(self._pve("GET", "/cluster/nextid"))
            try:
                self._guest_task(lambda client: send(client, vmid), f"create {spec.name} ({vmid})")
                return vmid
            except BackendError as error:
                if explicit is not None or "already exists" not in str(error):
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise Conflict(f"create {spec.name}: {NEXTID_ATTEMPTS} VMIDs from /cluster/nextid were taken by others in "
                       "between; give config.vmid, or retry")

    def _default_storage(self, kind):
        storages = [item for item in self._pve("GET", f"/nodes/{segment(self._pve_node())}/storage") or []
                    if item.get("active", 1)]
        storage = self._disk_storage(storages, kind)
        if storage is None:
            raise InvalidSpec(f"config.storage: Proxmox node {self.node.name} has no active storage for "
                              f"{'container root disks (rootdir)' if kind == 'lxc' else 'VM disks (images)'}; "
                              "give config.storage")
        return storage["storage"]

    def update_instance(self, instance, changes):
        kind = KIND[instance.type]
        self._wait_unlocked(instance)
        config = self._configs.get(instance.id) or {}
        params = {}
        if "cpu" in changes:
            params.update(_cpu_params(changes["cpu"], kind, config))
        if "memory" in changes:
            params["memory"] = changes["memory"]
        for prefix in ("net0", "ipconfig0"):
            wanted = {key.split(".", 1)[1]: value for key, value in (changes.get("network") or {}).items()
                      if key.startswith(prefix + ".")}
            if wanted:
                params[prefix] = render_options({**options_of(config.get(prefix)), **wanted})
        params.update(_config_params(changes.get("config") or {}))
        if params:
            if config.get("digest"):
                params["digest"] = config["digest"]  # refuse to overwrite a change made since our read
            self._call("PUT", self._guest_path(kind, instance.id, "/config"), params, f"update {instance.name}")
        if "disk" in changes:
            self._resize(instance, changes["disk"])

    def _resize(self, instance, mib):
        kind = KIND[instance.type]
        disk = "rootfs" if kind == "lxc" else (_root_disk(self._configs.get(instance.id) or {}) or "scsi0")
        self._call("PUT", self._guest_path(kind, instance.id, "/resize"), {"disk": disk, "size": f"{int(mib)}M"},
                   f"grow the disk of {instance.name}")

    def _wait_unlocked(self, instance):
        """A guest being created (by a run whose answer was lost, say) is locked until its task ends."""
        known = self._configs.get(instance.id)
        if known is not None and known.get("lock") not in LOCKS_OF_CREATION:
            return  # read with the instance in this run, and not being created: nothing to wait for
        kind = KIND[instance.type]
        deadline = time.monotonic() + self.timeout
        while True:
            config = self._pve("GET", self._guest_path(kind, instance.id, "/config")) or {}
            if config.get("lock") not in LOCKS_OF_CREATION:
                self._configs[instance.id] = config
                return
            if time.monotonic() > deadline:
                raise OperationTimeout(f"{instance.name}: still locked ({config['lock']}) after {self.timeout}s")
            time.sleep(0.2)

    def _power(self, instance, action, params=None):
        kind = KIND[instance.type]
        self._wait_unlocked(instance)
        try:
            self._call("POST", self._guest_path(kind, instance.id, f"/status/{action}"), params,
                       f"{action} {instance.name}")
        except BackendError as error:
            # Another run (a fork, a worker left by a killed play) got there first: the state asked for holds.
            done = "already running" if action == "start" else "not running"
            if action == "reboot" or done not in str(error):
                raise

    def start(self, instance, timeout):
        self._power(instance, "start")

    def stop(self, instance, timeout, force=False):
        if force or instance.status == "paused":
            self._power(instance, "stop")
        else:
            # A clean shutdown first; PVE stops the guest hard if it is not down within the timeout.
            self._power(instance, "shutdown", {"timeout": int(timeout), "forceStop": 1})

    def restart(self, instance, timeout):
        self._power(instance, "reboot")

    def delete(self, instance, timeout):
        kind = KIND[instance.type]
        self._wait_unlocked(instance)
        if instance.status in ("running", "paused"):  # read just before, with the instance
            self._power(instance, "stop")
        try:
            self._call("DELETE", self._guest_path(kind, instance.id), DESTROY, f"delete {instance.name}")
        except NotFound:
            pass  # gone already: what was asked

    # -- inside the guest ---------------------------------------------------------------------------------------
    def exec(self, instance, argv, stdin=None, env=None, cwd=None, user=None, timeout=None):
        argv = _wrapped(argv, env, cwd, user)
        timeout = timeout or self.timeout
        if instance.type == "container":
            ssh = self.router.ssh("running a command in a Proxmox container (pct exec)").ssh
            self._served_by_shell = True
            try:
                return ssh.run(["pct", "exec", instance.id, "--", *argv], stdin=stdin, timeout=timeout)
            except TransportError as error:
                if "no exit within" not in str(error):
                    raise
                raise OperationTimeout(f"exec in {instance.name}: {argv[0]} did not finish within {timeout}s; "
                                       "raise `timeout`")
        return self._agent_exec(instance, argv, stdin, timeout)

    def _agent_exec(self, instance, argv, stdin, timeout):
        """The QEMU guest agent: agent/exec, then exec-status until the command has exited."""
        base = self._guest_path("qemu", instance.id, "/agent")

        def action(client):
            if client.label == "ssh":
                command = ["qm", "guest", "exec", instance.id, "--timeout", str(int(timeout))]
                if stdin is not None:
                    command += ["--pass-stdin", "1"]
                result = client.ssh.run(command + ["--", *argv], stdin=stdin, timeout=timeout + 30)
                if result.rc != 0:
                    raise _agent_error(instance, result.stderr or result.stdout)
                return json.loads(result.stdout or "{}")
            params = {"command": list(argv)}
            if stdin is not None:
                params["input-data"] = stdin
            try:
                pid = (client.request("POST", f"{base}/exec", params) or {})["pid"]
            except BackendError as error:
                raise _agent_error(instance, str(error))
            deadline = time.monotonic() + timeout
            while True:
                status = client.request("GET", f"{base}/exec-status", {"pid": pid}) or {}
                if status.get("exited"):
                    return status
                if time.monotonic() > deadline:
                    raise OperationTimeout(f"exec in {instance.name}: {argv[0]} did not finish within {timeout}s; "
                                           "raise `timeout`")
                time.sleep(0.1)

        status = self.router.run(True, action)
        if "exitcode" not in status:
            raise OperationTimeout(f"exec in {instance.name}: {argv[0]} did not finish within {timeout}s; "
                                   "raise `timeout`")
        return ExecResult(rc=int(status["exitcode"]), stdout=status.get("out-data") or "",
                          stderr=status.get("err-data") or "")

    def set_password(self, instance, user, password, timeout=None):
        if instance.type == "container":
            return super().set_password(instance, user, password, timeout)
        # A VM: the guest agent sets it now; without a running agent, cloud-init's cipassword at the next boot.
        config = self._configs.get(instance.id) or {}
        client = self._secret_client(f"the password of {user!r} in {instance.name}")
        base = self._guest_path("qemu", instance.id)
        if instance.status == "running" and _agent_on(config):
            try:
                client.request("POST", f"{base}/agent/set-user-password", {"username": user, "password": password})
                return None
            except BackendError as error:
                raise VirtError(f"setting the password of {user!r} in {instance.name} through the guest agent "
                                f"failed: {str(error).replace(password, '********')}")
        if user != (config.get("ciuser") or "root"):
            raise Unsupported(f"user: {instance.name} has no running guest agent, and cloud-init sets the password of "
                              f"its ciuser ({config.get('ciuser') or 'root'}) only; start the VM with its agent, or "
                              "give that user")
        client.request("PUT", f"{base}/config", {"cipassword": password})
        return "the password was given to cloud-init (cipassword) and takes effect at the VM's next boot"


def _wrapped(argv, env, cwd, user):
    """pct exec and the guest agent run argv as root in /: env, cwd and user go through standard tools."""
    argv = list(argv)
    if env:
        argv = ["env", *[f"{key}={value}" for key, value in sorted(env.items())], *argv]
    if cwd:
        argv = ["env", "-C", cwd, *argv] if not env else ["env", "-C", cwd, *argv[1:]]
    if user is not None and str(user) not in ("root", "0"):
        argv = ["runuser", "-u", str(user), "--", *argv]
    return argv


def _cpu_params(cpu, kind, config):
    """cores (and sockets 1 for a VM); a fraction of a core as cpulimit, removed again for whole cores."""
    params = {"cores": max(1, math.ceil(cpu))}
    if kind == "qemu":
        params["sockets"] = 1
    if cpu != int(cpu):
        params["cpulimit"] = cpu
    elif config.get("cpulimit"):
        params["delete"] = "cpulimit"
    return params


def _config_params(extras):
    """Config extras as PVE takes them: booleans as 0/1, sshkeys percent-encoded."""
    params = {}
    for key, value in extras.items():
        if key == "sshkeys":
            params[key] = sshkeys_param(sshkeys_text(value))
        elif isinstance(value, bool):
            params[key] = int(value)
        else:
            params[key] = value
    return params


def _has_cloudinit(config):
    return any(re.match(r"^(ide|scsi|sata)\d+\Z", key) and "cloudinit" in str(value) for key, value in config.items())


def _refuse_without_cloudinit(spec, why):
    """Addresses and cloud-init settings of a VM need its cloud-init drive; `auto` needs nothing."""
    network = spec.network or {}
    for key in ("ipv4", "ipv6"):
        if network.get(key) not in (None, "auto"):
            raise InvalidSpec(f"network.{key}: {why}, so its address is set inside it, not by Proxmox; use auto, or "
                              "a cloud image (storage:import/...) or clone:<cloud-init template>")
    for key in ("ciuser", "sshkeys"):
        if key in spec.config:
            raise InvalidSpec(f"config.{key}: {why}; cloud-init settings need a cloud image (storage:import/...) or "
                              "clone:<cloud-init template>")


def _agent_error(instance, message):
    message = str(message).strip()
    if "not running" in message or "No QEMU guest agent" in message or "agent" in message.lower():
        return VirtError(f"exec in {instance.name}: the QEMU guest agent is not available ({message[:300]}); the VM "
                         "needs agent: 1 in its config and qemu-guest-agent running inside")
    return BackendError(f"exec in {instance.name}: {message[:500]}", backend_message=message)


def _status(value):
    return value if value in ("running", "stopped", "paused") else "unknown"


def _number(value):
    if value is None:
        return None
    number = float(value)
    return int(number) if number == int(number) else number


def _mib(value):
    return int(value) // MIB if value else None


def _gib(mib):
    """A new volume's size for PVE's `storage:size` syntax: GiB, a number that may have decimals."""
    gib = mib / 1024
    return int(gib) if gib == int(gib) else round(gib, 3)


def _rate_text(mbit):
    value = mbit / 8
    return str(int(value)) if value == int(value) else f"{value:g}"


def _rate_value(text):
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _cpu(config, kind):
    if config.get("cpulimit"):
        return _number(config["cpulimit"])
    cores = int(config.get("cores") or (1 if kind == "qemu" else 0)) or None
    if kind == "qemu" and cores:
        cores *= int(config.get("sockets") or 1)
    return cores


def _memory(config):
    value = config.get("memory")
    if value is None:
        return 512
    return int(str(value).rsplit("=", 1)[-1])


def _root_disk(config):
    order = options_of(config.get("boot")).get("order", "")
    keys = [key for key in order.split(";") if key] + sorted(
        key for key in config if re.match(r"^(scsi|virtio|sata|ide)\d+\Z", key))
    for key in keys:
        value = config.get(key)
        if value and "media=cdrom" not in str(value):
            return key
    return None


def _disk(config, kind):
    key = "rootfs" if kind == "lxc" else _root_disk(config)
    if not key or not config.get(key):
        return None
    return size_mib(options_of(config[key]).get("size"))


def _image_mark(config):
    for line in unquote(str(config.get("description") or "")).splitlines():
        if line.startswith(IMAGE_MARK):
            return line[len(IMAGE_MARK):].strip()
    return None


def _created(config):
    ctime = options_of(config.get("meta")).get("ctime")
    if ctime and ctime.isdigit():
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ctime)))
    return None


def _agent_on(config):
    value = options_of(config.get("agent"))
    return str(value.get("enabled", value.get("", "0"))) in ("1", "true", "yes", "on")


def _config_value(key, value, kind):
    """A config extra as PVE stores it, for comparison: booleans as 0/1, sshkeys decoded, text stripped."""
    if value is None:
        return 0 if key in ("onboot", "unprivileged") else None
    if key == "sshkeys":
        return sshkeys_text(value)
    if key in ("onboot", "unprivileged"):
        return int(bool(int(value))) if str(value).isdigit() else int(bool(value))
    return str(value).strip()


def _static_addresses(config, kind):
    """The first static `ip=` / `ip6=` of net0.. (containers) or ipconfig0.. (cloud-init VMs)."""
    prefix = "net" if kind == "lxc" else "ipconfig"
    ipv4 = ipv6 = None
    for key in sorted((k for k in config if k.startswith(prefix) and k[len(prefix):].isdigit()),
                      key=lambda k: int(k[len(prefix):])):
        options = options_of(config[key])
        value4, value6 = options.get("ip", ""), options.get("ip6", "")
        if not ipv4 and value4 and value4 not in ("dhcp", "manual"):
            ipv4 = value4.split("/")[0]
        if not ipv6 and value6 and value6 not in ("dhcp", "auto", "manual"):
            ipv6 = value6.split("/")[0]
    return ipv4, ipv6
