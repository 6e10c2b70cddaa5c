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
  - Shows what M(oneclickvirt.virt.virt_image) manages. Docker images, LXD/Incus images, and on Proxmox VE the
    container templates, ISOs and disk images (to import) of every storage that holds them.
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
    description:
      - Only the image with exactly this name, as M(oneclickvirt.virt.virt_image) takes it. Docker a reference
        (without a tag it means C(:latest)) or image ID; LXD/Incus an alias or full fingerprint; Proxmox a volume ID.
    type: str
author:
  - oneclickvirt.virt contributors (@oneclickvirt)
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
    name:
      description: "Name (Docker tag, LXD/Incus first alias, Proxmox volume ID)."
      type: str
      returned: always
    id:
      description: "Docker image ID, LXD/Incus fingerprint or Proxmox volume ID."
      type: str
      returned: always
    node:
      description: "Node label."
      type: str
      returned: always
    backend:
      description: "Backend."
      type: str
      returned: always
    aliases:
      description: "Every name it is known by (Docker tags, LXD/Incus aliases, Proxmox file name)."
      type: list
      elements: str
      returned: always
    size:
      description: "Size in bytes."
      type: int
      returned: always
    created:
      description: "Creation time."
      type: str
      returned: always
    architecture:
      description: "Architecture, where known."
      type: str
      returned: always
    type:
      description: "Instance type it makes (container or vm)."
      type: str
      returned: always
    checksum:
      description: "Docker registry digest, LXD/Incus C(sha256:<fingerprint>), Proxmox checksum where known (null in listings: PVE reports none)."
      type: str
      returned: always
    used_by:
      description: "Names of the instances that use it (Proxmox VMs naming an ISO or disk image)."
      type: list
      elements: str
      returned: always
    digests:
      description: "Docker registry digests (C(repo@sha256:...)); empty elsewhere."
      type: list
      elements: str
      returned: always
transport:
  description: The transport that served the read, V(api) or V(ssh).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.oneclickvirt.virt.plugins.module_utils.common import run_module
from ansible_collections.oneclickvirt.virt.plugins.module_utils.images import lookup_name
from ansible_collections.oneclickvirt.virt.plugins.module_utils.node import NODE_OPTION


def main():
    module = AnsibleModule(
        argument_spec={"node": NODE_OPTION, "name": {"type": "str"}},
        supports_check_mode=True,
    )
    name = module.params["name"]

    def work(provider):
        if name is None:
            return {"changed": False, "images": [image.to_dict() for image in provider.list_images()]}
        image = provider.find_image(lookup_name(name, module.params["node"]))
        return {"changed": False, "images": [image.to_dict()] if image else []}

    run_module(module, work)


if __name__ == "__main__":
    main()
