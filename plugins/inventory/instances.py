# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: instances
short_description: Every instance on Docker, LXD, Incus and Proxmox VE nodes, queried in parallel
version_added: 0.1.0
description:
  - Lists the instances of every node given in O(nodes), O(nodes_file) or the O(nodes_env) variable, one bulk
    request per node (never one per instance), the nodes in parallel, and makes a host of each instance.
  - "Docker: one C(containers/json) listing, then every C(containers/<id>/json) inspect pipelined over the same
    connection (the listing lacks cpu and memory). LXD / Incus: one C(instances?recursion=2). Proxmox VE (when
    its backend lands): one C(/cluster/resources) per cluster."
  - "Each host has the variables C(virt_name), C(virt_id), C(virt_node), C(virt_backend), C(virt_type),
    C(virt_status), C(virt_image), C(virt_cpu), C(virt_memory) (MiB), C(virt_disk) (MiB), C(virt_private_ip),
    C(virt_ipv6), C(virt_ports) (ports published by the instance itself) and C(virt_created): the normalised
    instance, the same as M(oneclickvirt.virt.virt_instance_info) returns."
  - Values read from a node are data, never templates. Every string among them that a template could act on
    (one with a brace) is marked unsafe, as the C(community.docker) inventories do.
  - Each host is in the groups C(virt_node_<node>), C(virt_backend_<backend>), C(virt_status_<status>) and
    C(virt_type_<type>); in those names every character other than a letter, a digit or C(_) becomes C(_).
  - A node that fails (unreachable, refused, too slow) gives a warning that names the node and the reason, and
    the other nodes' instances are still listed. With O(strict=true) it is an error.
  - The configuration file's name must end in C(.virt.yml) or C(.virt.yaml).
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: Marks the file as this plugin's configuration.
    type: str
    required: true
    choices: [oneclickvirt.virt.instances]
  nodes:
    description:
      - The nodes to list. Each entry is a complete node description, exactly like the
        O(oneclickvirt.virt.virt_instance#module:node) option of the modules (C(name), C(type),
        C(execution_rule), C(ssh), C(api), C(project), C(proxmox_node), C(public_ip), C(port_range)), validated
        the same way; its C(ONECLICKVIRT_*) environment fallbacks apply too.
      - The nodes of O(nodes), O(nodes_file) and O(nodes_env) are all listed; a node name given twice is an error.
    type: list
    elements: dict
    default: []
  nodes_file:
    description:
      - A YAML or JSON file of node descriptions, either a list or a mapping of name to description (the name
        key of an entry may then be left out).
      - A relative path is relative to the directory of this configuration file; C(~) is expanded.
    type: str
  nodes_env:
    description:
      - The environment variable that may hold node descriptions as JSON (a list, or a mapping of name to
        description), so that an AWX credential type or the environment of an inventory source can feed them.
      - An unset or empty variable adds nothing.
    type: str
    default: ONECLICKVIRT_NODES
  max_workers:
    description: At most this many nodes are queried at the same time.
    type: int
    default: 8
  node_timeout:
    description:
      - Seconds a node has to answer, counted from when its query starts. A node that takes longer is reported
        as failed.
      - The node's own transport timeouts (C(api.timeout), C(ssh.connect_timeout), C(ssh.command_timeout)) are
        lowered to this value for the listing.
    type: int
    default: 60
  host_name_format:
    description:
      - V(instance) names each host after its instance. When instances of the same name are on several nodes,
        each of them is named C(<instance>.<node>) instead, with a warning, so that two instances never share a
        host. Which names clash is decided among the instances left by O(statuses), O(types), O(node_names) and
        O(name_pattern).
      - V(instance.node) names every host C(<instance>.<node>), which never depends on the other nodes.
      - Two instances that would still share a host name (the same name twice on one node) are an error.
    type: str
    default: instance
    choices: [instance, instance.node]
  ansible_host_source:
    description:
      - Where C(ansible_host) and C(ansible_port) come from.
      - V(private_ip) sets C(ansible_host) to the instance's private IPv4 address (none when it has none).
      - V(public_ip) sets C(ansible_host) to the node's C(public_ip) and C(ansible_port) to the host port that the
        instance's SSH port (O(ssh_guest_port), tcp) is published on. An instance without such a published
        port, or on a node without C(public_ip), gets neither, so that a connection never reaches the node
        itself by mistake. Only ports published by the instance (Docker) count for now.
      - V(none) sets neither; O(compose) may set them.
    type: str
    default: private_ip
    choices: [private_ip, public_ip, none]
  ssh_guest_port:
    description:
      - The instance's own SSH port, whose published host port becomes C(ansible_port) with
        O(ansible_host_source=public_ip).
    type: int
    default: 22
  statuses:
    description: Only instances whose C(virt_status) is in this list. Empty means every status.
    type: list
    elements: str
    choices: [running, stopped, paused, error, unknown]
    default: []
  types:
    description: Only instances whose C(virt_type) is in this list. Empty means both types.
    type: list
    elements: str
    choices: [container, vm]
    default: []
  node_names:
    description:
      - Only the nodes with these names are queried; the others are not contacted. Empty means every node.
      - A name that is not a configured node gives a warning.
    type: list
    elements: str
    default: []
  name_pattern:
    description:
      - A Python regular expression that the whole instance name must match (C(re.fullmatch), case-sensitive), so
        V(web-.*) keeps C(web-1) but not C(old-web-1); V(web) keeps only C(web).
    type: str
  all_projects:
    description:
      - On LXD and Incus nodes, list the instances of every project instead of the node's C(project).
      - Needs a backend that can list every project in one request; otherwise the node fails with a clear
        error (a warning, or an error with O(strict=true)).
    type: bool
    default: false
  filters:
    description:
      - Jinja2 conditions on each host's variables (the C(virt_*) variables, C(ansible_host), C(ansible_port) and
        C(inventory_hostname)), evaluated before O(compose), in order. The first entry whose condition is true
        decides, V(include) keeps the host and V(exclude) drops it; a host that no entry decides on is kept.
      - This is the format of the C(filters) option of C(community.docker) and C(community.general) inventories.
      - A condition that cannot be evaluated is an error.
    type: list
    elements: dict
    default: []
    suboptions:
      include:
        description: Keep the host when this condition is true.
        type: str
      exclude:
        description: Drop the host when this condition is true.
        type: str
  strict:
    description:
      - If V(true), a node that fails is an error that stops the inventory, and so is a O(compose),
        O(groups) or O(keyed_groups) expression that cannot be evaluated.
      - If V(false), a failed node gives a warning and the other nodes are listed; such an expression is skipped.
      - Ansible reports an inventory source that failed as a warning unless C(inventory_unparsed_failed)
        (C(ANSIBLE_INVENTORY_UNPARSED_FAILED)) is set.
    type: bool
    default: false
notes:
  - "Caching (O(cache=true)) keeps what the nodes answered (the normalised instances); on a cache hit no node is
    contacted, and the filters, host names, variables and groups are built again from the current
    configuration. A listing is reused only for the same node names, types and projects, and only when every
    node answered: a run in which a node failed is not reused, so that node is asked again next time."
  - Node secrets never appear in warnings or errors.
  - "With C(-vvv), each node's listing time and instance count are shown, and the time of the whole query: as
    the nodes are asked in parallel (O(max_workers)), the whole is close to the slowest node, and a node far
    slower than the others is the one to look at."
seealso:
  - module: oneclickvirt.virt.virt_instance_info
author:
  - oneclickvirt.virt contributors (@oneclickvirt)
"""

EXAMPLES = r"""
# lab.virt.yml: every instance of two nodes, the hosts reached on their private address
plugin: oneclickvirt.virt.instances
nodes:
  - name: docker-1
    type: docker
    api:
      url: unix:///var/run/docker.sock
  - name: pve-fra-1
    type: proxmox
    api:
      url: https://pve-fra-1.example.com:8006
      token_id: ansible@pve!inventory
      # the secret from ONECLICKVIRT_API_TOKEN_SECRET
statuses: [running]
keyed_groups:
  - key: virt_image
    prefix: image
groups:
  small: virt_memory is not none and virt_memory <= 512
compose:
  ansible_user: "'root'"

---
# nodes.virt.yml: the node descriptions from a file (or, in AWX, from ONECLICKVIRT_NODES),
# hosts reached through the SSH port each Docker container publishes on the node's public IP
plugin: oneclickvirt.virt.instances
nodes_file: nodes.yml
host_name_format: instance.node
ansible_host_source: public_ip
name_pattern: "web-[0-9]+"
filters:
  - exclude: virt_backend == 'docker' and virt_cpu is none
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: /var/cache/ansible/virt-inventory
cache_timeout: 600
"""

import os
import time

from ansible.errors import AnsibleParserError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.unsafe_proxy import wrap_var

from ansible_collections.oneclickvirt.virt.plugins.plugin_utils.collector import collector_paused
from ansible_collections.oneclickvirt.virt.plugins.plugin_utils.inventory import (
    InventoryConfigError, builtin_groups, cache_document, compile_name_pattern, from_cache_document, host_names,
    instance_vars, load_nodes, query_nodes, raw_node_descriptions, wanted)


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "oneclickvirt.virt.instances"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith((".virt.yml", ".virt.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        # Over 8 nodes of 50 instances, `ansible-inventory --list` took 0.70 s this way, 0.75 s with the collector on.
        with collector_paused():
            self._parse(inventory, loader, path, cache)

    def _parse(self, inventory, loader, path, cache):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        try:
            nodes = self._nodes(path)
            name_regex = compile_name_pattern(self.get_option("name_pattern"))
            filters = self._filters()
        except InventoryConfigError as error:
            raise AnsibleParserError(f"{path}: {error}")
        all_projects = self.get_option("all_projects")

        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        update_cache = self.get_option("cache") and not cache
        results = None
        if use_cache:
            results = from_cache_document(self._cache.get(cache_key), nodes, all_projects)
            update_cache = results is None
            if results is not None:
                self.display.vvv(f"{self.NAME}: {len(nodes)} nodes from the cache")
        if results is None:
            started = time.monotonic()
            try:
                results = query_nodes(nodes, self.get_option("max_workers"), self.get_option("node_timeout"),
                                      all_projects)
            except InventoryConfigError as error:
                raise AnsibleParserError(f"{path}: {error}")
            self.display.vvv(f"{self.NAME}: {len(nodes)} nodes queried in {time.monotonic() - started:.3f}s")
        if update_cache:
            self._cache[cache_key] = cache_document(nodes, all_projects, results)

        self._report(results)
        self._populate({node.name: node for node in nodes}, results, name_regex, filters)

    # -- configuration -----------------------------------------------------------------------------------------
    def _nodes(self, path):
        nodes = load_nodes(raw_node_descriptions(self.get_option("nodes"), self.get_option("nodes_file"),
                                                 self.get_option("nodes_env"), base_dir=os.path.dirname(path)))
        selected = self.get_option("node_names")
        if not selected:
            return nodes
        known = {node.name for node in nodes}
        for name in selected:
            if name not in known:
                self.display.warning(f"{self.NAME}: node_names: {name!r} is not a configured node")
        return [node for node in nodes if node.name in selected]

    def _filters(self):
        filters = []
        for index, entry in enumerate(self.get_option("filters") or [], start=1):
            given = {key: value for key, value in (entry or {}).items() if value is not None}
            if len(given) != 1 or next(iter(given)) not in ("include", "exclude"):
                raise InventoryConfigError(f"filters[{index}]: give exactly one of include or exclude")
            key, condition = next(iter(given.items()))
            if not isinstance(condition, (str, bool)):
                raise InventoryConfigError(f"filters[{index}].{key}: give a Jinja2 condition (a string)")
            filters.append((key, condition))
        return filters

    # -- results -----------------------------------------------------------------------------------------------
    def _report(self, results):
        failures = []
        for name in sorted(results):
            result = results[name]
            for message in result.warnings:
                self.display.warning(message)
            if result.error:
                failures.append(result.error)
            else:
                self.display.vvv(f"{self.NAME}: node {name}: {len(result.instances)} instances in "
                                 f"{result.seconds:.3f}s")
        if failures and self.get_option("strict"):
            raise AnsibleParserError("; ".join(failures))
        for failure in failures:
            self.display.warning(f"{failure}; its instances are not in the inventory")

    def _keep(self, host, variables, filters):
        if not filters:
            return True
        templar = self.templar
        templar.available_variables = dict(variables, inventory_hostname=host)
        for action, condition in filters:
            if isinstance(condition, bool):
                matched = condition
            else:
                try:
                    if hasattr(templar, "evaluate_conditional"):
                        matched = templar.evaluate_conditional(condition)
                    else:  # ansible-core 2.18
                        expression = f"{{% if {condition} %}} True {{% else %}} False {{% endif %}}"
                        matched = boolean(templar.template(expression))
                except Exception as error:
                    raise AnsibleParserError(f"filters: cannot evaluate {condition!r} for host {host}: {error}")
            if matched:
                return action == "include"
        return True

    def _populate(self, nodes, results, name_regex, filters):
        statuses, types = self.get_option("statuses"), self.get_option("types")
        kept = {name: [row for row in result.instances if wanted(row, statuses, types, name_regex)]
                for name, result in results.items() if not result.error}
        try:
            names, warnings = host_names(kept, self.get_option("host_name_format"))
        except InventoryConfigError as error:
            raise AnsibleParserError(str(error))
        for message in warnings:
            self.display.warning(f"{self.NAME}: {message}")
        source, guest_port = self.get_option("ansible_host_source"), self.get_option("ssh_guest_port")
        strict = self.get_option("strict")
        for node_name in sorted(kept):
            node = nodes[node_name]
            if source == "public_ip" and not node.public_ip and kept[node_name]:
                self.display.warning(f"{self.NAME}: node {node_name} has no public_ip: its hosts get no ansible_host "
                                     "(ansible_host_source: public_ip)")
            for row in sorted(kept[node_name], key=lambda row: (row["name"], row["id"])):
                host = names[(node_name, row["id"])]
                variables = _unsafe(instance_vars(row, node, source, guest_port))
                if not self._keep(host, variables, filters):
                    continue
                self.inventory.add_host(host)
                for group in builtin_groups(row):
                    self.inventory.add_group(group)
                    self.inventory.add_child(group, host)
                for key, value in variables.items():
                    self.inventory.set_variable(host, key, value)
                self._set_composite_vars(self.get_option("compose"), variables, host, strict=strict)
                self._add_host_to_composed_groups(self.get_option("groups"), variables, host, strict=strict)
                self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, host, strict=strict)


def _unsafe(value):
    """Mark every string read from a node that a template could act on as unsafe (only such strings can be:
    every Jinja2 delimiter contains a brace), as community.docker's make_unsafe does; the rest costs nothing."""
    if isinstance(value, dict):
        return {key: _unsafe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unsafe(item) for item in value]
    if isinstance(value, str) and ("{" in value or "}" in value):
        return wrap_var(value)
    return value
