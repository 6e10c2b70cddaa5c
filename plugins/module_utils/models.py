# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plain dataclasses of the shared vocabulary. Backends fill them; modules turn them into results."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

STATUSES = ("running", "stopped", "paused", "error", "unknown")
INSTANCE_TYPES = ("container", "vm")


@dataclass
class PublishedPort:
    """A port published by the instance itself at creation (Docker publish). Not a virt_portmap mapping."""
    guest_port: int
    host_port: int | None = None
    protocol: str = "tcp"
    listen_address: str | None = None

    def key(self):
        return (self.guest_port, self.host_port, self.protocol, self.listen_address or "")


@dataclass
class Instance:
    name: str
    id: str
    node: str
    backend: str
    type: str
    status: str
    image: str | None = None
    cpu: float | None = None
    memory: int | None = None
    disk: int | None = None
    private_ip: str | None = None
    ipv6: str | None = None
    ports: list = field(default_factory=list)
    created: str | None = None

    def to_dict(self):
        # Not asdict(): its deep copy of every value was the largest share of our own time in an inventory. The
        # values are scalars, except the ports: dicts of scalars, copied here.
        result = dict(self.__dict__)
        result["ports"] = sorted((dict(port) for port in self.ports),
                                 key=lambda port: (port["guest_port"], port["protocol"]))
        return result


@dataclass
class InstanceSpec:
    """What the user asked for. None means "not asked": the current value is kept, never a drift."""
    name: str
    type: str | None = "container"
    image: str | None = None
    cpu: float | None = None
    memory: int | None = None
    disk: int | None = None
    env: dict | None = None
    hostname: str | None = None
    ports: list | None = None
    command: list | None = None
    restart_policy: str | None = None
    network: dict | None = None
    config: dict = field(default_factory=dict)


@dataclass
class Image:
    name: str
    id: str
    node: str
    backend: str
    aliases: list = field(default_factory=list)
    size: int | None = None
    created: str | None = None
    architecture: str | None = None
    type: str | None = None
    checksum: str | None = None
    used_by: list = field(default_factory=list)
    # Docker: the registry digests (`repo@sha256:...`) the image is known by; empty elsewhere.
    digests: list = field(default_factory=list)

    def to_dict(self):
        return asdict(self)


@dataclass
class ExecResult:
    rc: int
    stdout: str
    stderr: str


@dataclass
class Change:
    """One planned write: what it does, and the callable that does it (run only outside check mode)."""
    description: str
    apply: object = None
    field_name: str | None = None
    before: object = None
    after: object = None


@dataclass
class Event:
    step: str
    seconds: float

    def to_dict(self):
        return {"step": self.step, "seconds": round(self.seconds, 3)}


@dataclass
class NodeResources:
    """A node's capacity and what is free of it, in integer MiB (cores as a number). None: not known."""
    cpu_cores: int | None = None
    memory_total: int | None = None
    memory_available: int | None = None
    swap_total: int | None = None
    swap_free: int | None = None
    storage_pool: str | None = None
    disk_path: str | None = None
    disk_total: int | None = None
    disk_free: int | None = None
    # Where each known value came from: {"memory_total": "api", "disk_free": "ssh", ...}.
    sources: dict = field(default_factory=dict)

    def to_dict(self):
        return asdict(self)


@dataclass
class NodeFacts:
    """What a backend knows about its node (Provider.node_facts())."""
    version: str | None = None
    hostname: str | None = None
    instance_types: list = field(default_factory=list)
    # Instances by normalised status, plus `total`.
    instances: dict = field(default_factory=dict)
    resources: NodeResources = field(default_factory=NodeResources)
    # Whether the node's shell (nproc, /proc/meminfo, df of the pool path) is the better source for the
    # resources; False where the backend's API reports them from the node itself (Proxmox).
    shell_resources: bool = True


@dataclass
class CheckResult:
    """One health check: ssh, api, service, or a threshold (memory, disk)."""
    name: str
    enabled: bool = True
    success: bool | None = None
    duration: float = 0.0
    error: str | None = None
    # authentication, connection, timeout, tls, host_key, service, command, backend, threshold, internal
    error_kind: str | None = None
    details: dict = field(default_factory=dict)

    def to_dict(self):
        result = asdict(self)
        result["duration"] = round(self.duration, 3)
        return result


@dataclass
class HealthResult:
    node: str
    backend: str
    status: str = "unknown"  # healthy, partial, unhealthy, unknown
    checks: list = field(default_factory=list)
    facts: NodeFacts = field(default_factory=NodeFacts)
    # Facts that could not be gathered, and why (they never change the verdict).
    facts_errors: list = field(default_factory=list)
    transport: str | None = None
    fallback_reason: str | None = None
    duration: float = 0.0

    def to_dict(self):
        return {
            "node": self.node, "backend": self.backend,
            "health": {
                "status": self.status,
                "checks": {check.name: _without_name(check.to_dict()) for check in self.checks},
                "failed_checks": [check.name for check in self.checks if check.enabled and check.success is False],
            },
            "version": self.facts.version, "hostname": self.facts.hostname,
            "instance_types": list(self.facts.instance_types), "instances": dict(self.facts.instances),
            "resources": self.facts.resources.to_dict(), "facts_errors": list(self.facts_errors),
            "transport": self.transport, "fallback_reason": self.fallback_reason,
            "duration": round(self.duration, 3),
        }


def _without_name(check):
    check.pop("name", None)
    return check
