#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: virt_instance_info
short_description: One instance, or all instances, of a Docker, LXD, Incus or Proxmox VE node
version_added: 0.1.0
description:
  - With O(name), returns RV(exists) and RV(instance) (null when absent; never a failure).
  - Without O(name), returns every instance of the node in RV(instances).
  - Read-only; the same normalised instance on every backend and over either transport.
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
  name:
    description: Name of one instance, matched exactly.
    type: str
author:
  - oneclickvirt.virt contributors (@oneclickvirt)
"""

EXAMPLES = r"""
- name: Is web-1 there?
  oneclickvirt.virt.virt_instance_info:
    node: "{{ docker_node }}"
    name: web-1
  register: web

- name: Everything on the node
  oneclickvirt.virt.virt_instance_info:
    node: "{{ docker_node }}"
  register: all_instances
"""

RETURN = r"""
exists:
  description: Whether the instance named O(name) exists.
  returned: when O(name) is given
  type: bool
instance:
  description: The instance (see M(oneclickvirt.virt.virt_instance) for its fields), or null.
  returned: when O(name) is given
  type: dict
instances:
  description: Every instance of the node, sorted by name.
  returned: when O(name) is not given
  type: list
  elements: dict
transport:
  description: The transport that served the read, V(api) or V(ssh).
  returned: always
  type: str
fallback_reason:
  description: Why the run fell back from the API to SSH.
  returned: when it fell back
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.oneclickvirt.virt.plugins.module_utils.common import run_module
from ansible_collections.oneclickvirt.virt.plugins.module_utils.node import NODE_OPTION
from ansible_collections.oneclickvirt.virt.plugins.module_utils.units import check_name


def main():
    module = AnsibleModule(
        argument_spec={"node": NODE_OPTION, "name": {"type": "str"}},
        supports_check_mode=True,
    )
    name = module.params["name"]

    def work(provider):
        if name is None:
            return {"changed": False, "instances": [instance.to_dict() for instance in provider.list_instances()]}
        check_name(name)
        instance = provider.get_instance(name)
        return {"changed": False, "exists": instance is not None, "instance": instance.to_dict() if instance else None}

    run_module(module, work)


if __name__ == "__main__":
    main()
