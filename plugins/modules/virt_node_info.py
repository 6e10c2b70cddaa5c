#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: virt_node_info
short_description: Health and facts of one Docker, LXD, Incus or Proxmox VE node
version_added: 0.1.0
description:
  - Checks one node and returns its health verdict in RV(health), with each check's success, duration and reason.
  - The C(ssh) check logs in over SSH and runs C(uname -n).
  - The C(api) check sends one authenticated request over the backend's API alone (Docker C(/version),
    LXD / Incus C(/1.0), Proxmox C(/version)).
  - The C(service) check asks the daemon for its version through the node's own O(node.execution_rule)
    (falling back to SSH under V(auto)) and, when the node's shell is reachable, runs the daemon's CLI there
    (C(docker version), C(lxc query /1.0), C(incus query /1.0); Proxmox C(pveversion) and
    C(systemctl is-active pvedaemon pveproxy pvestatd)).
  - A check whose road is not configured (no O(node.ssh), no O(node.api), or a road that
    O(node.execution_rule) excludes) is not enabled and not counted.
  - The C(memory) and C(disk) checks compare free memory and free disk with the thresholds, when given.
  - RV(health.status) is V(healthy) when every enabled check passes, V(partial) when some do, V(unhealthy)
    when none do, V(unknown) when none is enabled.
  - A node that is down, refuses the credentials or cannot be reached is a result, never a failure of the task.
    Only a node description that does not validate fails the task.
  - Also returns the backend's version, the host name, the instance types the node can run, instance counts
    by status and the node's resources. Resources come from the node's shell over SSH (C(nproc),
    C(/proc/meminfo), C(df) of the storage pool's path) where it has them, and from the backend's API
    otherwise (Docker C(/info), LXD / Incus C(/1.0/resources) and the pool's resources, Proxmox
    C(/nodes/{node}/status) and the guest storage's status); Proxmox reports them from its API only.
extends_documentation_fragment:
  - oneclickvirt.virt.node
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to diff.
  action_group:
    support: full
    description: In the C(group/oneclickvirt.virt.virt) action group, so C(module_defaults) can set O(node) once.
    membership: [oneclickvirt.virt.virt]
options:
  min_free_memory:
    description:
      - Adds the C(memory) check, which fails when the node's available memory is below this size.
      - An integer is MiB; a string is a number with a unit (C(512MiB), C(2GiB)).
    type: raw
  min_free_memory_percent:
    description: Adds the C(memory) check, which fails when available memory is below this percentage of the total.
    type: float
  min_free_disk:
    description:
      - Adds the C(disk) check, which fails when the free space of the storage pool is below this size.
      - An integer is MiB; a string is a number with a unit (C(10GiB)).
    type: raw
  min_free_disk_percent:
    description: Adds the C(disk) check, which fails when the pool's free space is below this percentage of its size.
    type: float
notes:
  - The collection's own role C(oneclickvirt.virt.health) runs this module for many nodes in parallel and writes
    a report.
seealso:
  - module: oneclickvirt.virt.virt_instance_info
author:
  - oneclickvirt.virt contributors (@oneclickvirt)
"""

EXAMPLES = r"""
- name: Health and facts of one node
  oneclickvirt.virt.virt_node_info:
    node: "{{ docker_node }}"
  register: node_info

- name: Fail when the node is not fully healthy
  ansible.builtin.assert:
    that: node_info.health.status == 'healthy'
    fail_msg: "{{ node_info.health.failed_checks | map('extract', node_info.health.checks) | map(attribute='error') }}"

- name: With thresholds for free memory and disk
  oneclickvirt.virt.virt_node_info:
    node: "{{ pve_node }}"
    min_free_memory: 2GiB
    min_free_disk_percent: 10
  register: pve_info
"""

RETURN = r"""
node:
  description: The node's label (O(node.name)).
  returned: always
  type: str
  sample: docker-fra-1
backend:
  description: The node's backend.
  returned: always
  type: str
  sample: docker
health:
  description: The verdict and every check.
  returned: always
  type: dict
  contains:
    status:
      description: V(healthy), V(partial), V(unhealthy) or V(unknown).
      type: str
      sample: healthy
    failed_checks:
      description: Names of the enabled checks that failed.
      type: list
      elements: str
      sample: [api]
    checks:
      description:
        - One entry per check (C(ssh), C(api), C(service), and C(memory) / C(disk) when thresholds are given),
          each with C(enabled), C(success) (null when not enabled), C(duration) (seconds), C(error) (the reason,
          or null), C(error_kind) and C(details).
        - C(error_kind) is one of V(authentication), V(connection), V(timeout), V(tls), V(host_key), V(service),
          V(command), V(backend), V(threshold), V(unknown), V(internal).
      type: dict
      sample:
        api:
          enabled: true
          success: false
          duration: 0.012
          error: "node pve-1 (api): authentication failed: the Proxmox API refused token root@pam!ocv (HTTP 401: invalid token value!)"
          error_kind: authentication
          details: {}
version:
  description: The backend's version, as the daemon reports it. Null when the daemon did not answer.
  returned: always
  type: str
  sample: 20.10.24+dfsg1
hostname:
  description: The node's host name (the daemon's, else the shell's C(uname -n)).
  returned: always
  type: str
  sample: node1
instance_types:
  description: The instance types this node can run (LXD / Incus list C(vm) only where the qemu driver is there).
  returned: always
  type: list
  elements: str
  sample: [container]
instances:
  description: Instances by status (C(running), C(stopped), C(paused), C(error), C(unknown)) and their C(total).
    Proxmox templates are not counted. Empty when the daemon did not answer.
  returned: always
  type: dict
  sample: {running: 2, stopped: 1, paused: 0, error: 0, unknown: 0, total: 3}
resources:
  description:
    - CPU cores, and memory, swap and disk in MiB (null where unknown) - C(cpu_cores), C(memory_total),
      C(memory_available), C(swap_total), C(swap_free), C(storage_pool), C(disk_path), C(disk_total),
      C(disk_free).
    - C(storage_pool) is the pool that the default profile's root disk uses (LXD / Incus), the storage driver
      (Docker), or the storage that holds guest disks (Proxmox); C(disk_path) is where it lives.
    - C(sources) says where each value came from, V(api) or V(ssh).
  returned: always
  type: dict
  sample:
    cpu_cores: 2
    memory_total: 24105
    memory_available: 23176
    swap_total: 0
    swap_free: 0
    storage_pool: default
    disk_path: /var/lib/lxd/storage-pools/default
    disk_total: 258019
    disk_free: 78900
    sources: {cpu_cores: ssh, memory_total: ssh, disk_free: ssh}
facts_errors:
  description: Facts that could not be gathered, and why. They never change the verdict.
  returned: always
  type: list
  elements: str
transport:
  description: The transport that served the backend reads, V(api) or V(ssh) (null when none could be set up).
  returned: always
  type: str
fallback_reason:
  description: Why the backend reads fell back from the API to SSH.
  returned: always
  type: str
duration:
  description: Seconds the whole check of the node took.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.oneclickvirt.virt.plugins.module_utils.common import scrub
from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import VirtError
from ansible_collections.oneclickvirt.virt.plugins.module_utils.health import node_health
from ansible_collections.oneclickvirt.virt.plugins.module_utils.node import NODE_OPTION, build_node
from ansible_collections.oneclickvirt.virt.plugins.module_utils.units import size_to_mib


def scrubbed(value, secrets):
    if isinstance(value, dict):
        return {key: scrubbed(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [scrubbed(item, secrets) for item in value]
    return scrub(value, secrets) if isinstance(value, str) else value


def thresholds_from(params):
    thresholds = {}
    for name in ("memory", "disk"):
        size = size_to_mib(params[f"min_free_{name}"], f"min_free_{name}")
        percent = params[f"min_free_{name}_percent"]
        if percent is not None and not 0 <= percent <= 100:
            raise VirtError(f"min_free_{name}_percent: {percent} is not a percentage; use a number from 0 to 100")
        if size is not None:
            thresholds[f"min_free_{name}"] = size
        if percent is not None:
            thresholds[f"min_free_{name}_percent"] = percent
    return thresholds


def main():
    module = AnsibleModule(
        argument_spec={
            "node": NODE_OPTION,
            "min_free_memory": {"type": "raw"},
            "min_free_memory_percent": {"type": "float"},
            "min_free_disk": {"type": "raw"},
            "min_free_disk_percent": {"type": "float"},
        },
        supports_check_mode=True,
    )
    try:
        node = build_node(module.params["node"])
        thresholds = thresholds_from(module.params)
    except VirtError as error:
        module.fail_json(msg=str(error))
    secrets = node.secrets()
    result = node_health(node, warn=lambda message: module.warn(scrub(message, secrets)), thresholds=thresholds)
    # Errors quote what the node said; a secret must never ride along.
    module.exit_json(changed=False, **scrubbed(result.to_dict(), secrets))


if __name__ == "__main__":
    main()
