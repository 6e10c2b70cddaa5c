# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The proxy_device method (LXD, Incus): one `proxy` device per mapping, named for it.

A device is named `ocv-<proto>-<host_port>` (`-v6` appended for IPv6) and listens on a concrete address of
the node. Next to it, the config key `user.ocv.portmap.<device>` holds the owner tag and the description, so
the device proves whose it is. Containers get the daemon's forkproxy, which connects to the guest port on the
container's own loopback (it keeps working when the container's address changes). VMs support only NAT mode
(`nat=true`): the daemon then wants a concrete listen address and the VM's own address as the target.

Requests go through the provider's router, so they travel over the API or over `lxc query` / `incus query`
as the node's execution rule says. Adding is a PATCH (the daemon merges devices and config keys); removing
needs a PUT of the whole instance config without the device, sent with the ETag of the read on the API road
(the CLI road cannot send one: there the node lock only guards against other port-mapping runs).
"""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import BackendError, InvalidSpec
from ansible_collections.oneclickvirt.virt.plugins.module_utils.portmap import Mapping, endpoint, is_unspecified

DEVICE_PREFIX = "ocv-"
CONFIG_PREFIX = "user.ocv.portmap."
WRITABLE = ("architecture", "config", "devices", "ephemeral", "profiles", "stateful", "description")


def device_name(mapping):
    return f"{DEVICE_PREFIX}{mapping.protocol}-{mapping.host_port}" + ("-v6" if mapping.ip_version == 6 else "")


def _path(provider, name=None, **params):
    path = "/1.0/instances" + (f"/{quote(name, safe='')}" if name else "")
    return path + "?" + urlencode(dict(params, project=provider.node.project))


def _listen_ports(listen):
    """Ports of a proxy listen value: 'tcp:1.2.3.4:80', 'udp:[::]:80-90,100'."""
    ports = set()
    spec = listen.rsplit(":", 1)[-1]
    for part in spec.split(","):
        low, dummy, high = part.partition("-")
        if low.isdigit():
            ports.update(range(int(low), int(high or low) + 1))
    return ports


def _parse(value):
    """(protocol, address, port) of 'tcp:10.0.0.1:80' / 'udp:[fd00::1]:53'; None if it is a range or socket."""
    protocol, dummy, rest = (value or "").partition(":")
    address, dummy, port = rest.rpartition(":")
    if protocol not in ("tcp", "udp") or not port.isdigit():
        return None
    return protocol, address.strip("[]"), int(port)


def read(provider):
    """(this node's mappings, every port any proxy device of the daemon listens on)."""
    instances = provider.router.request("GET", _path(provider, recursion=1), what="listing instances").metadata or []
    mappings, ports = [], set()
    for data in instances:
        for device in (data.get("expanded_devices") or {}).values():
            if device.get("type") == "proxy" and device.get("listen"):
                ports |= _listen_ports(device["listen"])
        config = data.get("config") or {}
        for name, device in (data.get("devices") or {}).items():
            if not name.startswith(DEVICE_PREFIX) or device.get("type") != "proxy":
                continue
            listen, connect = _parse(device.get("listen")), _parse(device.get("connect"))
            if listen is None or connect is None:
                continue
            try:
                record = json.loads(config.get(CONFIG_PREFIX + name) or "{}")
            except ValueError:
                record = {}
            ip_version = 6 if ":" in listen[1] else 4
            mappings.append(Mapping(
                node=provider.node.name, instance=data["name"], protocol=listen[0], host_port=listen[2],
                guest_port=connect[2], method="proxy_device", ip_version=ip_version,
                listen_address=None if is_unspecified(listen[1]) else listen[1], target_address=connect[1],
                description=record.get("description")))
    return mappings, ports


def target_for(instance, ip_version):
    """Where a new device connects: the container's loopback, or the VM's own address (NAT mode)."""
    if instance.type != "vm":
        return "127.0.0.1" if ip_version == 4 else "::1"
    address = instance.private_ip if ip_version == 4 else instance.ipv6
    if not address:
        raise InvalidSpec(f"instance: VM {instance.name} has no IPv{ip_version} address yet (is it running?); a "
                          "proxy device for a VM works in NAT mode and needs its address")
    return address


def device(mapping, vm):
    any_address = "0.0.0.0" if mapping.ip_version == 4 else "::"
    if vm and not mapping.listen_address:
        raise InvalidSpec("listen_address: a proxy device for a VM works in NAT mode, which needs a concrete "
                          "listen address; give listen_address (or node.public_ip)")
    entry = {"type": "proxy",
             "listen": f"{mapping.protocol}:{endpoint(mapping.listen_address or any_address, mapping.host_port)}",
             "connect": f"{mapping.protocol}:{endpoint(mapping.target_address, mapping.guest_port)}"}
    if vm:
        entry["nat"] = "true"
    return entry


def record(mapping):
    return json.dumps({"tag": mapping.tag, "description": mapping.description}, sort_keys=True)


def add(provider, instance, mappings):
    """One PATCH that adds the devices (and their config keys) of these mappings to the instance."""
    vm = instance.type == "vm"
    body = {"devices": {device_name(m): device(m, vm) for m in mappings},
            "config": {CONFIG_PREFIX + device_name(m): record(m) for m in mappings}}
    try:
        provider.router.request("PATCH", _path(provider, instance.name), body=body,
                                what=f"adding proxy devices to {instance.name}")
    except BackendError as error:
        raise BackendError(f"{error}; the proxy devices {', '.join(sorted(body['devices']))} were not added",
                           status=error.status, backend_message=error.backend_message)


def describe(provider, instance_name, mappings):
    """Update only the config keys (the description) of existing devices."""
    body = {"config": {CONFIG_PREFIX + device_name(m): record(m) for m in mappings}}
    provider.router.request("PATCH", _path(provider, instance_name), body=body,
                            what=f"updating proxy device records of {instance_name}")


def remove(provider, instance_name, mappings):
    """One PUT of the instance without these devices and their config keys (retried if it changed meanwhile)."""
    names = {device_name(m) for m in mappings}
    for attempt in range(3):
        reply = provider.router.request("GET", _path(provider, instance_name), what=f"reading {instance_name}")
        data = reply.metadata or {}
        body = {key: data[key] for key in WRITABLE if key in data}
        body["devices"] = {name: dev for name, dev in (data.get("devices") or {}).items() if name not in names}
        body["config"] = {key: value for key, value in (data.get("config") or {}).items()
                          if key not in {CONFIG_PREFIX + name for name in names}}
        if body["devices"] == data.get("devices") and body["config"] == data.get("config"):
            return
        try:
            provider.router.request("PUT", _path(provider, instance_name), body=body, etag=reply.etag,
                                    what=f"removing proxy devices from {instance_name}")
            return
        except BackendError as error:
            if error.status != 412 or attempt == 2:
                raise
