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
        result = asdict(self)
        result["ports"] = sorted(result["ports"], key=lambda port: (port["guest_port"], port["protocol"]))
        return result


@dataclass
class InstanceSpec:
    """What the user asked for. None means "not asked": the current value is kept, never a drift."""
    name: str
    type: str = "container"
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
