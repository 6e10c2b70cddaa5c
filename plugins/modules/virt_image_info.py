#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: virt_image_info
short_description: The images and templates of a Docker, LXD, Incus or Proxmox VE node
version_added: 0.1.0
description:
  - Lists the images a node can create instances from, normalised the same way on every backend.
  - The value to give M(oneclickvirt.virt.virt_instance) as O(oneclickvirt.virt.virt_instance#module:image) is
    RV(images[].name) or one of RV(images[].aliases).
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
    membership: [oneclickvirt.virt.virt]
options:
  name:
    description: Only the image with exactly this name or alias.
    type: str
author:
  - oneclickvirt.virt contributors
"""

EXAMPLES = r"""
- name: Images of the node
  oneclickvirt.virt.virt_image_info:
    node: "{{ docker_node }}"
  register: node_images
"""

RETURN = r"""
images:
  description: The images, sorted by name.
  returned: always
  type: list
  elements: dict
  contains:
    name: {description: Name (Docker tag, LXD/Incus first alias, Proxmox volume ID)., type: str, returned: always}
    id: {description: Image id, fingerprint or volume ID., type: str, returned: always}
    node: {description: Node label., type: str, returned: always}
    backend: {description: Backend., type: str, returned: always}
    aliases: {description: Every name it is known by., type: list, elements: str, returned: always}
    size: {description: Size in bytes., type: int, returned: always}
    created: {description: Creation time., type: str, returned: always}
    architecture: {description: Architecture, where known., type: str, returned: always}
    type: {description: Instance type it makes (container or vm)., type: str, returned: always}
    checksum: {description: Digest or checksum, where known., type: str, returned: always}
    used_by: {description: Names of the instances created from it., type: list, elements: str, returned: always}
transport:
  description: The transport that served the read, V(api) or V(ssh).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.oneclickvirt.virt.plugins.module_utils.common import run_module
from ansible_collections.oneclickvirt.virt.plugins.module_utils.node import NODE_OPTION


def main():
    module = AnsibleModule(
        argument_spec={"node": NODE_OPTION, "name": {"type": "str"}},
        supports_check_mode=True,
    )
    name = module.params["name"]

    def work(provider):
        images = [image.to_dict() for image in provider.list_images()]
        if name is not None:
            images = [image for image in images if image["name"] == name or name in image["aliases"]]
        return {"changed": False, "images": images}

    run_module(module, work)


if __name__ == "__main__":
    main()
