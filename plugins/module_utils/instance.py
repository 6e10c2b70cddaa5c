# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Instance lifecycle: read, plan, apply (or only predict, in check mode). The same for every backend."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import InvalidSpec, UncertainWrite, VirtError
from ansible_collections.oneclickvirt.virt.plugins.module_utils.models import (
    INSTANCE_TYPES, Event, Instance, InstanceSpec, PublishedPort)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.units import (
    check_name, check_port, cpu_value, size_to_mib)

STATES = ("present", "started", "stopped", "restarted", "absent")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")


@dataclass
class Request:
    """Everything virt_instance was asked, validated."""
    spec: InstanceSpec
    state: str = "started"
    password: str | None = None
    update_password: str = "on_create"
    ssh_authorized_keys: list = field(default_factory=list)
    update_ssh_keys: str = "on_create"
    force: bool = False
    timeout: int = 120


def build_request(params):
    """Validate the module parameters into a Request. Raises InvalidSpec naming the option and the fix."""
    name = check_name(params["name"])
    instance_type = params.get("type")  # None: the existing instance's type, or container for a new one
    if instance_type is not None and instance_type not in INSTANCE_TYPES:
        raise InvalidSpec(f"type: {instance_type!r} is not a type; use container or vm")
    env = params.get("env")
    if env is not None:
        for key, value in env.items():
            if not _ENV_KEY.match(str(key)):
                raise InvalidSpec(f"env: {key!r} is not a variable name; use letters, digits and _ (not first a digit)")
            if value is None or "\0" in str(value):
                raise InvalidSpec(f"env.{key}: give a string value (no NUL bytes)")
        env = {str(key): str(value) for key, value in env.items()}
    hostname = params.get("hostname")
    if hostname is not None:
        check_name(hostname, "hostname")
    ports = None
    if params.get("ports") is not None:
        ports = []
        for index, port in enumerate(params["ports"]):
            check_port(port["guest_port"], f"ports[{index}].guest_port")
            if port.get("host_port") is not None:
                check_port(port["host_port"], f"ports[{index}].host_port")
            ports.append(PublishedPort(guest_port=port["guest_port"], host_port=port.get("host_port"),
                                       protocol=port.get("protocol") or "tcp",
                                       listen_address=port.get("listen_address") or None))
    command = params.get("command")
    if command is not None and (not command or not all(isinstance(arg, str) for arg in command)):
        raise InvalidSpec("command: give a non-empty list of strings (an argv), e.g. ['sleep', 'infinity']")
    config = dict(params.get("config") or {})
    timeout = params.get("timeout") or 120
    if timeout <= 0:
        raise InvalidSpec("timeout: must be a positive number of seconds")
    password = params.get("password")
    if password is not None and ("\n" in password or "\0" in password):
        raise InvalidSpec("password: must not contain a newline or NUL byte")
    keys = params.get("ssh_authorized_keys") or []
    for key in keys:
        if "\n" in key or not key.strip() or len(key.split()) < 2:
            raise InvalidSpec("ssh_authorized_keys: each entry is one public key line such as 'ssh-ed25519 AAAA... user'")
    spec = InstanceSpec(
        name=name, type=instance_type, image=params.get("image"), cpu=cpu_value(params.get("cpu")),
        memory=size_to_mib(params.get("memory"), "memory"), disk=size_to_mib(params.get("disk"), "disk"),
        env=env, hostname=hostname, ports=ports, command=command,
        restart_policy=config.pop("restart_policy", None), network=params.get("network"), config=config)
    return Request(spec=spec, state=params.get("state") or "started", password=password,
                   update_password=params.get("update_password") or "on_create", ssh_authorized_keys=keys,
                   update_ssh_keys=params.get("update_ssh_keys") or "on_create", force=bool(params.get("force")),
                   timeout=timeout)


class Plan:
    """The writes of one run, applied in order, or only recorded in check mode."""

    def __init__(self, check_mode):
        self.check_mode = check_mode
        self.actions = []
        self.events = []

    def do(self, description, apply):
        self.actions.append(description)
        if self.check_mode:
            return None
        started = time.monotonic()
        try:
            return apply()
        finally:
            self.events.append(Event(description, time.monotonic() - started))


def ensure_instance(provider, request, check_mode):
    """Converge one instance. After a lost answer to a write, re-read and converge once more (never replay)."""
    plan = Plan(check_mode)
    provider.timeout = request.timeout
    if request.state != "absent" and request.spec.type is not None:
        provider.check_type(request.spec)
    before = provider.get_instance(request.spec.name)
    before_dict = before.to_dict() if before else None
    try:
        after = _converge(provider, request, plan, before)
    except UncertainWrite as error:
        provider.warn(f"the answer to a write was lost ({error}); re-reading {request.spec.name} and converging")
        after = _converge(provider, request, plan, provider.get_instance(request.spec.name))
    after_dict = after.to_dict() if after else None
    result = {
        "changed": bool(plan.actions),
        "actions": plan.actions,
        "instance": after_dict,
        "events": [event.to_dict() for event in plan.events],
        "diff": {"before": _diffable(before_dict), "after": _diffable(after_dict)},
    }
    return result


def _diffable(instance):
    return {key: value for key, value in (instance or {}).items() if key not in ("created",)}


def _converge(provider, request, plan, current):
    spec, timeout = request.spec, request.timeout
    if request.state == "absent":
        if current is not None:
            plan.do("delete", lambda: provider.delete(current, timeout))
        return None

    if spec.type is None:
        spec = replace(spec, type=current.type if current is not None else "container")
    provider.check_spec(spec)
    if request.password or request.ssh_authorized_keys:
        provider.check_inside_road(spec)
    wants_running = request.state in ("started", "restarted")
    if (request.password or request.ssh_authorized_keys) and not wants_running and (
            current is None or current.status != "running"):
        raise InvalidSpec("password / ssh_authorized_keys: they are set inside the instance, which needs it running; "
                          "use state: started (or set them later with virt_instance_password)")

    created = False
    if current is None:
        if not spec.image:
            raise InvalidSpec(f"image: {spec.name} does not exist on node {provider.node.name}; give `image` to create it")
        plan.do("create", lambda: provider.create_instance(spec, plan.events))
        current = _reread(provider, plan, spec, status="stopped")
        created = True
    else:
        drift = provider.drift(current, spec)
        recreate = sorted(name for name in drift if name not in provider.in_place_fields)
        if recreate:
            if not request.force:
                details = "; ".join(f"{name}: {drift[name][0]!r} -> {drift[name][1]!r}" for name in recreate)
                raise VirtError(f"{spec.name}: {details}. These can only change by recreating the instance; set "
                                "force: true to recreate it (its data is lost)")
            was = current
            plan.do("delete (recreate)", lambda: provider.delete(was, timeout))
            plan.do("create", lambda: provider.create_instance(spec, plan.events))
            current = _reread(provider, plan, spec, status="stopped")
            created = True
        elif drift:
            changes = {name: values[1] for name, values in drift.items()}
            pending = provider.restart_needed(current, changes)
            plan.do("update " + ", ".join(sorted(changes)), lambda: provider.update_instance(current, changes))
            current = _reread(provider, plan, spec, predicted=current, changes=changes)
            if pending and request.state in ("started", "present"):
                plan.actions.append("restart needed: " + ", ".join(pending))
                provider.warn(f"{spec.name}: the change of {', '.join(pending)} takes effect at the next restart of "
                              "the running instance; use state: restarted when it suits")

    if request.state == "started" and current.status != "running":
        plan.do("start", lambda: provider.start(current, timeout))
        current = _reread(provider, plan, spec, predicted=current, status="running")
    elif request.state == "restarted":
        action = "restart" if current.status == "running" else "start"
        plan.do(action, lambda: (provider.restart if action == "restart" else provider.start)(current, timeout))
        current = _reread(provider, plan, spec, predicted=current, status="running")
    elif request.state == "stopped" and current.status in ("running", "paused"):
        plan.do("stop", lambda: provider.stop(current, timeout))
        current = _reread(provider, plan, spec, predicted=current, status="stopped")

    if request.password and (created or request.update_password == "always"):
        plan.do("set password", lambda: provider.set_password(current, "root", request.password, timeout))
    if request.ssh_authorized_keys and (created or request.update_ssh_keys == "always"):
        present = set() if created else set(provider.authorized_keys(current, timeout=timeout))
        missing = [key for key in request.ssh_authorized_keys if key not in present]
        if missing:
            plan.do("add ssh keys", lambda: provider.add_authorized_keys(current, missing, timeout=timeout))
    return current


def _reread(provider, plan, spec, predicted=None, status=None, changes=None):
    """After a write: the instance as the backend now reports it; in check mode, what it would be."""
    if not plan.check_mode:
        instance = provider.get_instance(spec.name)
        if instance is None:
            raise VirtError(f"{spec.name} vanished from node {provider.node.name} during the run")
        return instance
    if predicted is None:
        predicted = Instance(name=spec.name, id="", node=provider.node.name, backend=provider.backend,
                             type=spec.type, status="stopped", image=spec.image, cpu=spec.cpu, memory=spec.memory,
                             disk=spec.disk, ports=[port.__dict__ for port in spec.ports or []])
    else:
        predicted = Instance(**predicted.to_dict())
    for name, value in (changes or {}).items():
        if hasattr(predicted, name):
            setattr(predicted, name, value)
    if status:
        predicted.status = status
    return predicted
