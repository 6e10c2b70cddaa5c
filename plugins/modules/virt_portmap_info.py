#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: virt_portmap_info
short_description: The port mappings of a node, or of one instance, read from the node itself
version_added: 0.1.0
description:
  - Lists the mappings made by M(oneclickvirt.virt.virt_portmap), found on the node itself, not in any local
    record. The owner-tagged rules of the collection's own iptables chains and nft table, the C(ocv-*) proxy
    devices of LXD/Incus instances, and the labelled published ports of Docker containers.
  - Ports published by M(oneclickvirt.virt.virt_instance) belong to the instance and are not listed.
  - Read-only. Needs SSH to the node (the firewall is read there).
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
  instance:
    description: Only the mappings of this instance (name matched exactly; on Proxmox VE as given to virt_portmap).
    type: str
seealso:
  - module: oneclickvirt.virt.virt_portmap
author:
  - oneclickvirt.virt contributors (@oneclickvirt)
"""

EXAMPLES = r"""
- name: Every mapping of the node
  oneclickvirt.virt.virt_portmap_info:
    node: "{{ lxd_node }}"
  register: node_mappings

- name: The mappings of web-1
  oneclickvirt.virt.virt_portmap_info:
    node: "{{ lxd_node }}"
    instance: web-1
  register: web_mappings
"""

RETURN = r"""
mappings:
  description: The mappings (see M(oneclickvirt.virt.virt_portmap) for their fields), sorted by instance, IP version and host port.
  returned: always
  type: list
  elements: dict
  sample:
    - node: lxd
      instance: web-1
      protocol: tcp
      host_port: 21000
      guest_port: 22
      method: proxy_device
      ip_version: 4
      listen_address: 203.0.113.7
      target_address: 127.0.0.1
      description: null
      tag: "ocv:lxd:web-1:tcp:21000"
transport:
  description: The transport that served the backend requests, V(api) or V(ssh).
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
from ansible_collections.oneclickvirt.virt.plugins.module_utils.portmap import check_tag_part
from ansible_collections.oneclickvirt.virt.plugins.module_utils.portmap.manager import list_portmaps


def main():
    module = AnsibleModule(
        argument_spec={"node": NODE_OPTION, "instance": {"type": "str"}},
        supports_check_mode=True,
    )
    instance = module.params["instance"]

    def work(provider):
        check_tag_part(provider.node.name, "node.name")
        if instance is not None:
            check_tag_part(instance, "instance")
        return {"changed": False, "mappings": list_portmaps(provider, instance)}

    run_module(module, work)


if __name__ == "__main__":
    main()
