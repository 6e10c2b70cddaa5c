# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The work of the `oneclickvirt.virt.instances` inventory plugin, kept apart from Ansible's plugin classes.

Controller-only. Three steps, each usable on its own:
- `load_nodes`: node descriptions from the config, a file and an environment variable, validated once;
- `query_nodes`: every node's instances, one bulk listing per node (`provider.list_instances()`), the nodes in
  parallel with a bounded number at a time and a deadline per node. The result (plain dicts) is what is cached;
- `host_names`, `instance_vars`, `wanted`: turn those rows into hosts, host variables and groups.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import queue
import re
import threading
import time
from collections import deque

import yaml

from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends import provider_for
from ansible_collections.oneclickvirt.virt.plugins.module_utils.common import scrub
from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import TransportError, VirtError
from ansible_collections.oneclickvirt.virt.plugins.module_utils.node import validate_node_dict

HOST_NAME_FORMATS = ("instance", "instance.node")
HOST_SOURCES = ("private_ip", "public_ip", "none")
CACHE_VERSION = 1


class InventoryConfigError(Exception):
    """The inventory's configuration is wrong; the message names the option and the fix."""


@dataclasses.dataclass
class NodeResult:
    """What one node answered: its instances as plain dicts, or why it could not answer."""
    backend: str
    instances: list = dataclasses.field(default_factory=list)
    error: str | None = None
    warnings: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def to_cache(self):
        return {"backend": self.backend, "instances": self.instances, "error": self.error}

    @classmethod
    def from_cache(cls, data):
        return cls(backend=data["backend"], instances=list(data.get("instances") or []), error=data.get("error"))


# -- node descriptions -------------------------------------------------------------------------------------------
def _entries(data, origin):
    """A list of node descriptions, or a mapping of name -> description (the shape of the lab's nodes.yml)."""
    if data is None:
        return []
    if isinstance(data, dict):
        entries = []
        for name, description in data.items():
            if not isinstance(description, dict):
                raise InventoryConfigError(f"{origin}: the entry {name!r} is not a node description (a mapping)")
            entries.append(dict(description, name=description.get("name") or name))
        return entries
    if isinstance(data, list):
        for index, description in enumerate(data):
            if not isinstance(description, dict):
                raise InventoryConfigError(f"{origin}: entry {index + 1} is not a node description (a mapping)")
        return [dict(description) for description in data]
    raise InventoryConfigError(f"{origin}: give a list of node descriptions or a mapping of name to description")


def raw_node_descriptions(nodes, nodes_file=None, nodes_env=None, base_dir=None, environ=None):
    """Every node description, in order: the `nodes` option, then `nodes_file`, then the `nodes_env` variable."""
    environ = os.environ if environ is None else environ
    raw = _entries(nodes, "nodes")
    if nodes_file:
        path = os.path.join(base_dir or "", os.path.expanduser(nodes_file))
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle)
        except (OSError, yaml.YAMLError) as error:
            raise InventoryConfigError(f"nodes_file: cannot read {path}: {error}")
        raw += _entries(data, f"nodes_file {path}")
    if nodes_env and environ.get(nodes_env, "").strip():
        try:
            data = yaml.safe_load(environ[nodes_env])  # JSON, or YAML, which reads JSON too
        except yaml.YAMLError as error:
            raise InventoryConfigError(f"nodes_env: the variable {nodes_env} is not JSON: {error}")
        raw += _entries(data, f"nodes_env {nodes_env}")
    return raw


def load_nodes(raw_descriptions):
    """Validate every description (the same validation as the modules'); names must be unique."""
    nodes, seen = [], set()
    for raw in raw_descriptions:
        try:
            node = validate_node_dict(raw)
        except VirtError as error:
            raise InventoryConfigError(str(error))
        if node.name in seen:
            raise InventoryConfigError(f"node {node.name}: described twice (in nodes, nodes_file or nodes_env); "
                                       "node names must be unique")
        seen.add(node.name)
        nodes.append(node)
    if not nodes:
        raise InventoryConfigError("no nodes: give them in nodes, in nodes_file, or in the nodes_env variable")
    return nodes


def identity(nodes, all_projects=False):
    """What decides which instances a cached listing holds (never the endpoints or credentials)."""
    return [{"name": node.name, "type": node.type, "project": node.project,
             "all_projects": bool(all_projects and node.type in ("lxd", "incus"))} for node in nodes]


# -- querying ----------------------------------------------------------------------------------------------------
def _bounded(node, seconds):
    """The node with every transport timeout at most `seconds`, so that no request outlives the node's deadline."""
    changes = {}
    if node.api is not None:
        changes["api"] = dataclasses.replace(node.api, timeout=min(node.api.timeout, seconds))
    if node.ssh is not None:
        changes["ssh"] = dataclasses.replace(node.ssh, connect_timeout=min(node.ssh.connect_timeout, seconds),
                                             command_timeout=min(node.ssh.command_timeout, seconds))
    return dataclasses.replace(node, **changes)


def _describe(node, error):
    text = str(error) or type(error).__name__
    return text if text.startswith(f"node {node.name}") else f"node {node.name} ({node.type}): {text}"


def query_node(node, node_timeout, all_projects=False):
    """One node's instances through its provider: one bulk listing. Never raises: failures become `error`."""
    warnings = []
    result = NodeResult(backend=node.type, warnings=warnings)
    started = time.monotonic()
    provider = None
    try:
        provider = provider_for(_bounded(node, node_timeout), warn=warnings.append)
        if all_projects and node.type in ("lxd", "incus"):
            if "all_projects" not in inspect.signature(provider.list_instances).parameters:
                raise VirtError(f"all_projects: the {node.type} backend of this collection cannot list every "
                                "project yet; remove all_projects or list one project per node")
            instances = provider.list_instances(all_projects=True)
        else:
            instances = provider.list_instances()
        result.instances = [instance.to_dict() for instance in instances]
    except (VirtError, TransportError) as error:
        result.error = _describe(node, error)
    except Exception as error:  # a bug or an unexpected answer must not take the other nodes down
        result.error = _describe(node, f"{type(error).__name__}: {error}")
    finally:
        if provider is not None:
            try:
                provider.close()
            except Exception:  # closing a broken connection must not hide the answer
                pass
    secrets = node.secrets()
    result.warnings = [scrub(message, secrets) for message in warnings]
    if result.error:
        result.error = scrub(result.error, secrets)
    result.seconds = time.monotonic() - started
    return result


def query_nodes(nodes, max_workers=8, node_timeout=60, all_projects=False, query=query_node):
    """Every node's NodeResult, at most `max_workers` nodes at a time, each given `node_timeout` seconds.

    Each node runs in a daemon thread: a node that misses its deadline is reported as failed and left behind
    (its transports' timeouts are capped at the deadline, so it ends soon after), and it never holds up the
    other nodes nor the end of the program.
    """
    if max_workers < 1:
        raise InventoryConfigError("max_workers: must be at least 1")
    if node_timeout <= 0:
        raise InventoryConfigError("node_timeout: must be a positive number of seconds")
    waiting, running, results = deque(nodes), {}, {}
    answers = queue.Queue()

    def work(node):
        answers.put((node.name, query(node, node_timeout, all_projects)))

    while waiting or running:
        while waiting and len(running) < max_workers:
            node = waiting.popleft()
            running[node.name] = (node, time.monotonic() + node_timeout)
            threading.Thread(target=work, args=(node,), name=f"ocv-inventory-{node.name}", daemon=True).start()
        next_deadline = min(deadline for _node, deadline in running.values())
        try:
            name, result = answers.get(timeout=max(0.0, next_deadline - time.monotonic()))
        except queue.Empty:
            name = result = None
        if name in running:
            del running[name]
            results[name] = result
        now = time.monotonic()
        for late, (node, deadline) in list(running.items()):
            if deadline <= now:
                del running[late]
                results[late] = NodeResult(backend=node.type, seconds=node_timeout,
                                           error=f"node {late} ({node.type}): no answer within node_timeout "
                                                 f"({node_timeout}s)")
    return results


# -- hosts -------------------------------------------------------------------------------------------------------
def host_names(rows_by_node, name_format):
    """{(node, instance id): host name} for {node: [instance rows]}, and warnings. Two instances never share a host.

    With format `instance`, an instance name found on several nodes becomes `<instance>.<node>` on each of
    them (and a warning says so). A clash that remains (the same name twice within one node, or an
    `<instance>.<node>` that equals another host's name) is an error.
    """
    wanted = {}
    for node_name, rows in rows_by_node.items():
        for row in rows:
            base = row["name"] if name_format == "instance" else f"{row['name']}.{node_name}"
            wanted.setdefault(base, []).append((node_name, row))
    names, warnings = {}, []
    for base, owners in wanted.items():
        if len(owners) == 1 or name_format != "instance":
            for node_name, row in owners:
                names[(node_name, row["id"])] = base
            continue
        on_nodes = sorted({node_name for node_name, _row in owners})
        warnings.append(f"instance name {base!r} is on several nodes ({', '.join(on_nodes)}): its hosts are named "
                        f"{', '.join(f'{base}.{node}' for node in on_nodes)}; set host_name_format: instance.node "
                        "for names that never depend on other nodes")
        for node_name, row in owners:
            names[(node_name, row["id"])] = f"{base}.{node_name}"
    seen = {}
    for key, name in sorted(names.items()):
        if name in seen:
            raise InventoryConfigError(
                f"two instances would both be host {name!r}: {seen[name][1]!r} on node {seen[name][0]} and "
                f"{key[1]!r} on node {key[0]}; exclude one of them (name_pattern, filters or node_names)")
        seen[name] = key
    return names, warnings


def wanted(row, statuses=None, types=None, name_regex=None):
    """The plain filters: status and type in their lists (when given), the whole name matching the pattern."""
    if statuses and row.get("status") not in statuses:
        return False
    if types and row.get("type") not in types:
        return False
    if name_regex is not None and not name_regex.fullmatch(row.get("name") or ""):
        return False
    return True


def compile_name_pattern(pattern):
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as error:
        raise InventoryConfigError(f"name_pattern: {pattern!r} is not a regular expression: {error}")


def ssh_host_port(row, guest_port=22):
    """The host port that the instance's SSH port (tcp `guest_port`) is published on, or None."""
    ports = sorted((port for port in row.get("ports") or []
                    if port.get("guest_port") == guest_port and (port.get("protocol") or "tcp") == "tcp"
                    and port.get("host_port")), key=lambda port: port["host_port"])
    return ports[0]["host_port"] if ports else None


def instance_vars(row, node, host_source="private_ip", ssh_guest_port=22):
    """The host variables of one instance: virt_* from the normalised instance, and the connection address."""
    variables = {f"virt_{key}": row.get(key) for key in
                 ("name", "id", "node", "backend", "type", "status", "image", "cpu", "memory", "disk",
                  "private_ip", "ipv6", "ports", "created")}
    variables["virt_ports"] = [dict(port) for port in row.get("ports") or []]
    if host_source == "private_ip" and row.get("private_ip"):
        variables["ansible_host"] = row["private_ip"]
    elif host_source == "public_ip" and node.public_ip:
        host_port = ssh_host_port(row, ssh_guest_port)
        if host_port:
            variables["ansible_host"] = node.public_ip
            variables["ansible_port"] = host_port
    return variables


def group_suffix(value):
    """A value as part of a group name: every character other than a letter, digit or _ becomes _."""
    return re.sub(r"[^A-Za-z0-9_]", "_", str(value))


def builtin_groups(row):
    return [f"virt_node_{group_suffix(row['node'])}", f"virt_backend_{group_suffix(row['backend'])}",
            f"virt_status_{group_suffix(row['status'])}", f"virt_type_{group_suffix(row['type'])}"]


def cache_document(nodes, all_projects, results):
    return {"version": CACHE_VERSION, "nodes": identity(nodes, all_projects),
            "results": {name: result.to_cache() for name, result in results.items()}}


def from_cache_document(document, nodes, all_projects):
    """The cached results, or None (then the nodes are asked again).

    A cached listing counts only when it was made for exactly these nodes and every one of them answered:
    a node that failed is asked again on the next run, rather than missing until the cache expires.
    """
    if not isinstance(document, dict) or document.get("version") != CACHE_VERSION:
        return None
    if json.dumps(document.get("nodes"), sort_keys=True) != json.dumps(identity(nodes, all_projects), sort_keys=True):
        return None
    try:
        results = {name: NodeResult.from_cache(data) for name, data in document["results"].items()}
    except (KeyError, TypeError, AttributeError):
        return None
    if set(results) != {node.name for node in nodes} or any(result.error for result in results.values()):
        return None
    return results
