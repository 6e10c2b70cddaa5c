# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The native method (Docker): a port published by the container itself.

Docker publishes ports only when a container is created. So a native mapping on an existing container either
recreates it with the extra port (only with `recreate: true`), or is done live with DNAT by the manager.
A recreate keeps the container's whole configuration (config, host config, networks, volumes: anonymous
volumes are carried over by name) and adds, per mapping, the label `oneclickvirt.portmap.<proto>.<host_port>`
whose value holds the owner tag: that is how the node proves the published port is the collection's.
What lived only in the container's writable layer is lost, and its address may change.
"""

from __future__ import annotations

import json
import time

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import BackendError, OperationTimeout
from ansible_collections.oneclickvirt.virt.plugins.module_utils.portmap import Mapping

LABEL_PREFIX = "oneclickvirt.portmap."


def _label(mapping):
    return f"{LABEL_PREFIX}{mapping.protocol}.{mapping.host_port}"


def _call(provider, method, path, query=None, body=None, ok=(200, 201, 204, 304), timeout=None):
    response = provider.router.request(method, path, query=query, body=body, timeout=timeout)
    if response.status not in ok:
        try:
            message = (response.json() or {}).get("message")
        except ValueError:
            message = None
        message = message or response.body.decode("utf-8", "replace")
        raise BackendError(f"docker {method} {path} failed ({response.status}): {message}", status=response.status,
                           backend_message=message)
    return response.json() if response.body else None


def read(provider):
    """(this node's native mappings, every host port a container publishes)."""
    mappings, ports = [], set()
    for summary in _call(provider, "GET", "/containers/json", query={"all": "1"}) or []:
        for port in summary.get("Ports") or []:
            if port.get("PublicPort"):
                ports.add(int(port["PublicPort"]))
        name = (summary.get("Names") or ["/"])[0].lstrip("/")
        for key, value in (summary.get("Labels") or {}).items():
            if not key.startswith(LABEL_PREFIX):
                continue
            try:
                record = json.loads(value)
                protocol, host_port = key[len(LABEL_PREFIX):].split(".")
                mapping = Mapping(node=provider.node.name, instance=name, protocol=protocol, host_port=int(host_port),
                                  guest_port=int(record["guest_port"]), method="native",
                                  listen_address=record.get("listen_address"), description=record.get("description"))
            except (ValueError, KeyError, TypeError):
                continue
            ports.add(mapping.host_port)
            mappings.append(mapping)
    return mappings, ports


def _create_body(data, add, remove):
    """The create request of the same container, with published ports added and removed."""
    config = dict(data["Config"])
    host_config = dict(data["HostConfig"])
    if config.get("Hostname") == data["Id"][:12]:
        config.pop("Hostname")  # Docker's default (the old short id): let the new container get its own
    labels = dict(config.get("Labels") or {})
    exposed = dict(config.get("ExposedPorts") or {})
    bindings = {key: list(value or []) for key, value in (host_config.get("PortBindings") or {}).items()}
    for mapping in remove:
        key = f"{mapping.guest_port}/{mapping.protocol}"
        record = json.loads(labels.pop(_label(mapping), "{}") or "{}")
        bindings[key] = [b for b in bindings.get(key, []) if b.get("HostPort") != str(mapping.host_port)]
        if not bindings[key]:
            bindings.pop(key)
            if record.get("exposed"):
                exposed.pop(key, None)
    for mapping in add:
        key = f"{mapping.guest_port}/{mapping.protocol}"
        record = {"tag": mapping.tag, "guest_port": mapping.guest_port, "listen_address": mapping.listen_address,
                  "description": mapping.description, "exposed": key not in exposed}
        exposed.setdefault(key, {})
        bindings.setdefault(key, []).append({"HostIp": mapping.listen_address or "", "HostPort": str(mapping.host_port)})
        labels[_label(mapping)] = json.dumps(record, sort_keys=True)
    config.update(Labels=labels, ExposedPorts=exposed)
    host_config["PortBindings"] = bindings
    # Anonymous volumes would be created anew: mount the old ones by name so their data stays.
    binds = list(host_config.get("Binds") or [])
    taken = {bind.split(":")[1] for bind in binds if ":" in bind}
    taken |= {mount.get("Target") for mount in host_config.get("Mounts") or []}
    for mount in data.get("Mounts") or []:
        if mount.get("Type") == "volume" and mount.get("Destination") not in taken:
            binds.append(f"{mount['Name']}:{mount['Destination']}" + ("" if mount.get("RW", True) else ":ro"))
    host_config["Binds"] = binds or None
    endpoints = {}
    for network, settings in ((data.get("NetworkSettings") or {}).get("Networks") or {}).items():
        aliases = [alias for alias in settings.get("Aliases") or [] if alias != data["Id"][:12]]
        endpoints[network] = {"IPAMConfig": settings.get("IPAMConfig"), "Links": settings.get("Links"),
                              "Aliases": aliases or None}
    return dict(config, HostConfig=host_config, NetworkingConfig={"EndpointsConfig": endpoints})


def recreate(provider, name, add, remove, timeout=120):
    """Replace the container by the same one with other published ports; on failure put the old one back."""
    data = _call(provider, "GET", f"/containers/{name}/json")
    old_id, running = data["Id"], data["State"]["Running"]
    body = _create_body(data, add, remove)
    parked = f"{name}-ocv-replaced-{old_id[:8]}"
    if running:
        _call(provider, "POST", f"/containers/{old_id}/stop", query={"t": "10"}, timeout=timeout)
    _call(provider, "POST", f"/containers/{old_id}/rename", query={"name": parked})
    new_id = None
    try:
        new_id = _call(provider, "POST", "/containers/create", query={"name": name}, body=body)["Id"]
        if running:
            _call(provider, "POST", f"/containers/{new_id}/start")
            _wait_running(provider, new_id, timeout)
    except BackendError as error:
        if new_id:
            _call(provider, "DELETE", f"/containers/{new_id}", query={"force": "1"}, ok=(204, 404))
        _call(provider, "POST", f"/containers/{old_id}/rename", query={"name": name})
        if running:
            _call(provider, "POST", f"/containers/{old_id}/start", ok=(204, 304))
        raise BackendError(f"recreating {name} with its new published ports failed, the old container was put "
                           f"back: {error}", status=error.status, backend_message=error.backend_message)
    _call(provider, "DELETE", f"/containers/{old_id}", query={"force": "1"}, ok=(204, 404))


def _wait_running(provider, container_id, timeout):
    deadline = time.monotonic() + timeout
    while True:
        state = _call(provider, "GET", f"/containers/{container_id}/json")["State"]
        if state.get("Running"):
            return
        if state.get("Status") in ("exited", "dead"):
            raise BackendError(f"the recreated container exited at once (exit code {state.get('ExitCode')}, "
                               f"{state.get('Error') or 'no error message'})")
        if time.monotonic() > deadline:
            raise OperationTimeout(f"the recreated container was still {state.get('Status')} after {timeout}s")
        time.sleep(0.1)
