# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Port mappings of one task: validate, read the node, plan, apply (or only predict in check mode).

Everything is read from the node itself: the collection's own iptables chains and nft table, the proxy
devices of LXD/Incus instances, the labels of Docker containers, the listening sockets. Writing runs hold
the node lock from the read to the last write, so a port chosen here is still free when it is applied.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import BackendError, Conflict, InvalidSpec, NotFound
from ansible_collections.oneclickvirt.virt.plugins.module_utils.portmap import (
    BACKEND_METHODS, METHODS, Mapping, NodeShell, check_address, check_tag_part, native, nftables, parse_sections,
    parse_tag, persist, proxy_device, sections_script)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.portmap import iptables
from ansible_collections.oneclickvirt.virt.plugins.module_utils.portmap.allocate import listening_ports, pick_block
from ansible_collections.oneclickvirt.virt.plugins.module_utils.portmap.lock import NodeLock
from ansible_collections.oneclickvirt.virt.plugins.module_utils.units import check_name, check_port

STATES = ("present", "absent")
PROTOCOL_CHOICES = ("tcp", "udp", "both")
BLOCK_MODES = ("consecutive", "same_as_host")
DNAT_METHODS = ("iptables", "nftables")


@dataclass
class Request:
    """Everything virt_portmap was asked, validated."""
    instance: str
    state: str = "present"
    guest_port: int | None = None
    host_port: int | None = None
    count: int = 1
    block_guest_ports: str = "consecutive"
    protocols: tuple = ("tcp",)
    protocol_given: bool = False
    method: str = "auto"
    listen_address: str | None = None
    listen_given: bool = False
    ip_version: int = 4
    ip_version_given: bool = False
    description: str | None = None
    recreate: bool = False
    lock_timeout: int = 120

    def guest_port_at(self, index, base):
        if index == 0 or self.block_guest_ports == "consecutive":
            return self.guest_port + index
        return base + index


def build_request(params, node):
    """Validate the module parameters into a Request. Raises InvalidSpec naming the option and the fix."""
    check_tag_part(node.name, "node.name")
    instance = check_name(params.get("instance"), "instance")
    state = params.get("state") or "present"
    if state not in STATES:
        raise InvalidSpec(f"state: {state!r} is not a state; use present or absent")
    protocol = params.get("protocol")
    if protocol is not None and protocol not in PROTOCOL_CHOICES:
        raise InvalidSpec(f"protocol: {protocol!r} is not a protocol; use tcp, udp or both")
    protocols = ("tcp", "udp") if protocol == "both" else (protocol or "tcp",)
    method = params.get("method") or "auto"
    if method not in METHODS:
        raise InvalidSpec(f"method: {method!r} is not a method; use one of {', '.join(METHODS)}")
    allowed = BACKEND_METHODS[node.type]
    if method != "auto" and method not in allowed:
        raise InvalidSpec(f"method: {method} is not available on {node.type} node {node.name}; use auto or one of "
                          f"{', '.join(allowed)}")
    ip_version = params.get("ip_version")
    if ip_version is not None and ip_version not in (4, 6):
        raise InvalidSpec(f"ip_version: {ip_version!r} is not an IP version; use 4 or 6")
    if method == "native" and ip_version == 6:
        raise InvalidSpec("method: native publishing is done for IPv4 here; use ip_version 4, or iptables / "
                          "nftables for IPv6")
    count = params.get("count") or 1
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1000:
        raise InvalidSpec(f"count: {count!r} is not a number of ports; use an integer from 1 to 1000")
    block = params.get("block_guest_ports") or "consecutive"
    if block not in BLOCK_MODES:
        raise InvalidSpec(f"block_guest_ports: {block!r}; use consecutive or same_as_host")
    guest_port = params.get("guest_port")
    if guest_port is not None:
        check_port(guest_port, "guest_port")
        if block == "consecutive" and guest_port + count - 1 > 65535:
            raise InvalidSpec(f"guest_port: {guest_port} + count {count} runs past port 65535; lower guest_port or "
                              "count")
    elif state == "present":
        raise InvalidSpec("guest_port: required with state present; give the port inside the instance (1-65535)")
    host_port = params.get("host_port")
    start, end = node.port_range
    if host_port is not None:
        check_port(host_port, "host_port")
        if host_port < start or host_port + count - 1 > end:
            span = f"{host_port}" if count == 1 else f"{host_port}-{host_port + count - 1}"
            raise InvalidSpec(f"host_port: {span} is outside the port_range {start}-{end} of node {node.name}; "
                              "choose a port in the range, or omit host_port to allocate one")
    listen = params.get("listen_address")
    if listen is not None:
        listen = check_address(listen, ip_version or 4, "listen_address")
    lock_timeout = params.get("lock_timeout") or 120
    if lock_timeout <= 0:
        raise InvalidSpec("lock_timeout: must be a positive number of seconds")
    return Request(instance=instance, state=state, guest_port=guest_port, host_port=host_port, count=count,
                   block_guest_ports=block, protocols=protocols, protocol_given=protocol is not None, method=method,
                   listen_address=listen, listen_given=listen is not None, ip_version=ip_version or 4,
                   ip_version_given=ip_version is not None, description=params.get("description"),
                   recreate=bool(params.get("recreate")), lock_timeout=lock_timeout)


@dataclass
class NodeState:
    """What the node says about port mappings, read once per run."""
    rulesets: dict
    table: object
    devices: list
    native: list
    used: set
    descriptions: dict

    def mappings(self, node_name):
        """This node's mappings by (protocol, host_port, ip_version)."""
        found = {}
        for ruleset in self.rulesets.values():
            for mapping in ruleset.mappings():
                found.setdefault(mapping.key(), mapping)
        for mapping in self.table.mappings():
            found.setdefault(mapping.key(), mapping)
        for mapping in found.values():
            mapping.description = (self.descriptions.get(persist.description_key(mapping)) or {}).get("description")
        for mapping in self.devices + self.native:
            found.setdefault(mapping.key(), mapping)
        return {key: mapping for key, mapping in found.items() if mapping.node == node_name}


def _sorted(mappings):
    return sorted(mappings, key=lambda m: (m.instance, m.ip_version, m.host_port, m.protocol))


class PortMapper:
    def __init__(self, provider):
        self.provider = provider
        self.node = provider.node
        client = provider.router.ssh("port mapping (iptables, nftables and listening ports on the node)")
        self.shell = NodeShell(client.ssh, self.node.name)
        self.live = None  # the re-read that followed this run's firewall writes

    # -- reading -------------------------------------------------------------------------------------------
    def read_commands(self):
        """The node-side reads of a run, all in one SSH session (see NodeShell.run_many)."""
        return [
            ("iptables", ["iptables-save"], None),
            ("ip6tables", ["ip6tables-save"], None),
            ("nft", ["nft", "-a", "list", "table", *nftables.TABLE.split()], None),
            ("ss", ["ss", "-H", "-l", "-n", "-t", "-u"], None),
            ("descriptions", ["cat", f"{persist.PERSIST_DIR}/descriptions.json"], None),
        ]

    def read(self, results=None):
        """The node's state; `results` are the outputs of read_commands() when the lock already ran them."""
        if results is None:
            results = self.shell.run_many(self.read_commands())
        rulesets = {family: iptables.Ruleset.from_result(family, results["ip6tables" if family == 6 else "iptables"])
                    for family in (4, 6)}
        table = nftables.Table.from_result(results["nft"])
        if results["ss"].rc != 0:
            raise BackendError(f"node {self.node.name}: `ss -Hlntu` failed: {results['ss'].stdout.strip()}; the "
                               "port allocation needs it (iproute2)")
        used = listening_ports(results["ss"].stdout)
        for ruleset in rulesets.values():
            used |= ruleset.dnat_ports()
        used |= {mapping.host_port for mapping in table.mappings()}
        devices, natives = [], []
        if self.node.type in ("lxd", "incus"):
            devices, ports = proxy_device.read(self.provider)
            used |= ports
        if self.node.type == "docker":
            natives, ports = native.read(self.provider)
            used |= ports
        return NodeState(rulesets=rulesets, table=table, devices=devices, native=natives, used=used,
                         descriptions=persist.parse_descriptions(results["descriptions"]))

    def list(self, instance=None):
        mappings = self.read().mappings(self.node.name).values()
        return [m.to_dict() for m in _sorted(m for m in mappings if instance is None or m.instance == instance)]

    # -- planning ------------------------------------------------------------------------------------------
    def method_for_new(self, request, state):
        dnat = "nftables" if state.table.available else "iptables"
        if request.method == "auto":
            return "proxy_device" if self.node.type in ("lxd", "incus") else dnat
        if request.method == "native" and not request.recreate:
            return dnat  # Docker publishes only at creation: a live add is DNAT
        return request.method

    def accepted_methods(self, request):
        if request.method == "auto":
            return BACKEND_METHODS[self.node.type]
        if request.method == "native":
            return ("native",) if request.recreate else ("native",) + DNAT_METHODS
        return (request.method,)

    def target(self, method, instance, ip_version):
        if method == "native":
            return None
        if method == "proxy_device":
            return proxy_device.target_for(instance, ip_version)
        address = instance.private_ip if ip_version == 4 else instance.ipv6
        if not address:
            raise InvalidSpec(f"instance: {instance.name} has no IPv{ip_version} address on node {self.node.name} "
                              "(is it running, and on a network with that family?); a DNAT mapping needs one")
        return address

    def default_listen(self, request):
        if request.listen_given:
            return request.listen_address
        public = self.node.public_ip
        if public:
            try:
                return check_address(public, request.ip_version, "node.public_ip")
            except InvalidSpec:
                return None  # public_ip is of the other family: listen on every address of this one
        return None

    def select(self, request, mine):
        """The existing mappings of the instance that the request names (for absent)."""
        candidates = [m for m in mine.values() if m.instance == request.instance
                      and (not request.protocol_given or m.protocol in request.protocols)
                      and (not request.ip_version_given or m.ip_version == request.ip_version)]
        if request.host_port is not None:
            ports = range(request.host_port, request.host_port + request.count)
            return [m for m in candidates if m.host_port in ports]
        if request.guest_port is None:
            return candidates
        chosen = []
        for first in (m for m in candidates if m.guest_port == request.guest_port):
            for m in candidates:
                index = m.host_port - first.host_port
                if 0 <= index < request.count and m.guest_port == request.guest_port_at(index, first.host_port) \
                        and m.ip_version == first.ip_version and m not in chosen:
                    chosen.append(m)
        return chosen

    def check_native_removal(self, request, steps):
        published = sorted({m.host_port for op, m in steps if op == "remove" and m.method == "native"})
        if published and not request.recreate:
            raise InvalidSpec(f"recreate: host port(s) {', '.join(map(str, published))} of {request.instance} are "
                              "published natively by the container; Docker can unpublish them only by recreating it. "
                              "Set recreate: true (the container is recreated with the same configuration)")

    def leftovers(self, request, state, mine):
        """Forward ACCEPTs of the instance whose DNAT is gone (a run that failed half-way): removed with it."""
        steps = []
        for family, ruleset in state.rulesets.items():
            tags = {m.tag for m in mine.values() if m.ip_version == family}
            for tag in sorted(ruleset.forward_tags() - tags):
                owner = parse_tag(tag)
                if owner and owner[0] == self.node.name and owner[1] == request.instance \
                        and (not request.protocol_given or owner[2] in request.protocols) \
                        and (not request.ip_version_given or family == request.ip_version):
                    steps.append(("leftover", Mapping(node=owner[0], instance=owner[1], protocol=owner[2],
                                                      host_port=owner[3], guest_port=0, method="iptables",
                                                      ip_version=family)))
        return steps

    def existing_base(self, request, mine):
        firsts = [m.host_port for m in mine.values() if m.instance == request.instance
                  and m.guest_port == request.guest_port and m.protocol in request.protocols
                  and m.ip_version == request.ip_version]
        return min(firsts) if firsts else None

    def plan(self, request, state, instance):
        """(steps, before, after): steps are ('add' | 'remove' | 'describe', Mapping) in order."""
        mine = state.mappings(self.node.name)
        if request.state == "absent":
            chosen = _sorted(self.select(request, mine))
            steps = [("remove", m) for m in chosen] + self.leftovers(request, state, mine)
            self.check_native_removal(request, steps)
            return steps, chosen, []

        method = self.method_for_new(request, state)
        listen = self.default_listen(request)
        base = request.host_port if request.host_port is not None else self.existing_base(request, mine)
        allocated = base is None
        if allocated:
            base = pick_block(self.node.port_range, request.count, state.used, self.node.name)
        own_ports = {m.host_port for m in mine.values() if m.instance == request.instance}
        accepted = self.accepted_methods(request)
        steps, before, after = [], [], []
        for index in range(request.count):
            for protocol in request.protocols:
                wanted = Mapping(node=self.node.name, instance=request.instance, protocol=protocol,
                                 host_port=base + index, guest_port=request.guest_port_at(index, base), method=method,
                                 ip_version=request.ip_version, listen_address=listen,
                                 target_address=None, description=request.description)
                current = mine.get(wanted.key())
                if current is not None:
                    before.append(current)
                if current is None:
                    if not allocated and wanted.host_port in state.used and wanted.host_port not in own_ports:
                        raise Conflict(f"host_port: {wanted.host_port}/{protocol} is in use on node {self.node.name} "
                                       "(a socket listens on it, or something else maps it); choose another "
                                       "host_port, or omit it to allocate a free one")
                elif current.instance != request.instance:
                    raise Conflict(f"host_port: {wanted.host_port}/{protocol} (IPv{request.ip_version}) on node "
                                   f"{self.node.name} is already mapped to instance {current.instance} port "
                                   f"{current.guest_port} ({current.method}); remove that mapping first or choose "
                                   "another host_port")
                elif self.satisfies(current, wanted, accepted, instance, state):
                    kept = replace(current)
                    if request.description is not None and current.description != request.description:
                        if current.method == "native":
                            self.provider.warn(f"{request.instance}: the description of the native mapping of port "
                                               f"{current.host_port} was written when the container was created; "
                                               "it is left as it is")
                        else:
                            kept.description = request.description
                            steps.append(("describe", kept))
                    after.append(kept)
                    continue
                wanted.target_address = self.target(method, instance, request.ip_version)
                if current is not None:
                    steps.append(("remove", current))
                if wanted.description is None and current is not None:
                    wanted.description = current.description
                steps.append(("add", wanted))
                after.append(wanted)
        self.check_native_removal(request, steps)
        if method != request.method and request.method == "native" and any(step[0] == "add" for step in steps):
            self.provider.warn(f"{request.instance}: Docker publishes ports only when a container is created, so "
                               f"this mapping uses {method} DNAT; set recreate: true to publish it natively by "
                               "recreating the container")
        return steps, _sorted(before), _sorted(after)

    def satisfies(self, current, wanted, accepted, instance, state):
        if current.method not in accepted or current.guest_port != wanted.guest_port:
            return False
        if (current.listen_address or None) != (wanted.listen_address or None):
            return False
        if current.method == "native":
            return True
        if current.method in DNAT_METHODS and not state.rulesets[current.ip_version].complete(current):
            return False  # a jump or the forward ACCEPT went missing (a firewall reload, a half-done run): redo it
        try:
            target = self.target(current.method, instance, current.ip_version)
        except InvalidSpec:
            return True  # no address to compare with right now (instance stopped): leave the mapping as it is
        return current.target_address == target

    # -- applying ------------------------------------------------------------------------------------------
    def apply(self, steps, state, instance):
        removes = [m for op, m in steps if op == "remove"]
        adds = [m for op, m in steps if op == "add"]
        describes = [m for op, m in steps if op == "describe"]
        leftovers = [m for op, m in steps if op == "leftover"]
        batches = {family: iptables.Batch(state.rulesets[family]) for family in (4, 6)}
        nft = nftables.Batch(state.table)
        descriptions = dict(state.descriptions)
        firewall = False
        try:
            for name in sorted({m.instance for m in removes if m.method == "proxy_device"}):
                proxy_device.remove(self.provider, name, [m for m in removes if m.method == "proxy_device"
                                                          and m.instance == name])
            native_removes = [m for m in removes if m.method == "native"]
            native_adds = [m for m in adds if m.method == "native"]
            if native_removes or native_adds:
                native.recreate(self.provider, instance.name if instance else native_removes[0].instance,
                                native_adds, native_removes, timeout=self.provider.timeout)
            for mapping in removes:
                if mapping.method in DNAT_METHODS:
                    batches[mapping.ip_version].remove(mapping.tag)  # the DNAT (iptables) and the forward ACCEPT
                    if mapping.method == "nftables":
                        nft.remove(mapping.tag, mapping.ip_version)
                    descriptions.pop(persist.description_key(mapping), None)
                    firewall = True
            for mapping in leftovers:
                batches[mapping.ip_version].remove(mapping.tag)
                firewall = True
            for mapping in adds:
                if mapping.method in DNAT_METHODS:
                    batches[mapping.ip_version].remove(mapping.tag)  # whatever a half-done run left of it
                    if mapping.method == "iptables":
                        batches[mapping.ip_version].add_dnat(mapping)
                    else:
                        nft.add(mapping)
                    batches[mapping.ip_version].add_forward(mapping)
                    if mapping.description is not None:
                        descriptions[persist.description_key(mapping)] = {"description": mapping.description}
                    firewall = True
            writes = [command for command in (batches[4].command(), batches[6].command(), nft.command()) if command]
            if writes:
                # The writes and the re-read for the rules files, in one session.
                results = self.shell.run_many(writes + self.read_commands()[:3])
                self.live = results
                for name, argv, dummy in writes:
                    if results[name].rc != 0:
                        raise BackendError(f"node {self.node.name}: {argv[0]} failed: {results[name].stdout.strip()}")
            device_adds = [m for m in adds if m.method == "proxy_device"]
            if device_adds:
                proxy_device.add(self.provider, instance, device_adds)
            for mapping in describes:
                if mapping.method == "proxy_device":
                    proxy_device.describe(self.provider, mapping.instance, [mapping])
                else:
                    descriptions[persist.description_key(mapping)] = {"description": mapping.description}
                    firewall = True
        finally:
            if firewall:
                self.persist(descriptions)

    def persist(self, descriptions):
        """Write the own rules files from what is live now (every node of this host), and the restore script."""
        results = self.live or self.shell.run_many(self.read_commands()[:3])
        rulesets = {family: iptables.Ruleset.from_result(family, results["ip6tables" if family == 6 else "iptables"])
                    for family in (4, 6)}
        table = nftables.Table.from_result(results["nft"])
        live = {persist.description_key(m) for ruleset in rulesets.values() for m in ruleset.mappings()}
        live |= {persist.description_key(m) for m in table.mappings()}
        kept = {key: value for key, value in descriptions.items() if key in live}
        persist.save(self.shell, rulesets, table, kept)


def _action(op, mapping):
    if op == "leftover":
        return f"remove leftover forward rule {mapping.tag} (IPv{mapping.ip_version})"
    arrow = f"{mapping.protocol} {mapping.host_port} -> {mapping.instance}:{mapping.guest_port}"
    family = "" if mapping.ip_version == 4 else " IPv6"
    if op == "describe":
        return f"update description of {arrow}{family}"
    return f"{op} {arrow}{family} ({mapping.method})"


def ensure_portmap(provider, request, check_mode):
    mapper = PortMapper(provider)
    instance = None
    if request.state == "present":
        instance = provider.find_instance(request.instance)
        if instance is None:
            raise NotFound(f"instance: {request.instance} does not exist on node {provider.node.name}; create it "
                           "first (oneclickvirt.virt.virt_instance) or check the name")
    if check_mode:
        steps, before, after = mapper.plan(request, mapper.read(), instance)
    else:
        script, args = sections_script(mapper.read_commands())
        with NodeLock(mapper.shell.ssh, provider.node.name, timeout=request.lock_timeout, script=script,
                      args=args) as lock:
            state = mapper.read(mapper.shell.check_sections(mapper.read_commands(), parse_sections(lock.output),
                                                            lock.result()))
            steps, before, after = mapper.plan(request, state, instance)
            if steps:
                mapper.apply(steps, state, instance)
    mappings = [m.to_dict() for m in after]
    return {
        "changed": bool(steps),
        "mappings": mappings,
        "host_ports": sorted({m["host_port"] for m in mappings}),
        "actions": [_action(op, m) for op, m in steps],
        "diff": {"before": {"mappings": [m.to_dict() for m in before]}, "after": {"mappings": mappings}},
    }


def list_portmaps(provider, instance=None):
    return PortMapper(provider).list(instance)
