#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: virt_image
short_description: Manage images and templates on a Docker, LXD, Incus or Proxmox VE node
version_added: 0.1.0
description:
  - Brings an image onto a node (pull from a registry, download from a URL on the node, upload from the host
    that runs the module, or import files already on the node), names it (Docker tags, LXD/Incus aliases), and
    removes it.
  - Idempotent by identity, not by name alone. Docker compares the registry's manifest digest with the local
    image's C(RepoDigests) for a pull, and the tar's image ID for a load. LXD and Incus compare fingerprints
    (the sha256 of the image files). Proxmox VE compares the volume's checksum, computed on the node over SSH.
  - Downloads and uploads are verified against O(checksum) before anything is imported. A mismatch fails and
    leaves nothing behind; no partial file, no half-imported image.
  - Deleting an image that instances use fails unless O(force=true).
extends_documentation_fragment:
  - oneclickvirt.virt.node
attributes:
  check_mode:
    support: full
    description:
      - Predicts V(changed) exactly and writes nothing to the backend.
      - Where the identity of a URL source can only be learned from the file itself (LXD/Incus or Docker
        without O(checksum)), check mode downloads the file into a temporary directory on the node to
        fingerprint it, and removes it again. Give O(checksum) to avoid the download.
  diff_mode:
    support: full
    description: Before and after of the normalised image.
  action_group:
    support: full
    description: In the C(group/oneclickvirt.virt.virt) action group, so C(module_defaults) can set O(node) once.
    membership: [oneclickvirt.virt.virt]
options:
  name:
    description:
      - The image's name, matched exactly.
      - Docker an image reference (C(127.0.0.1:5000/app:1.2); without a tag it means C(:latest)); with
        O(source=pull) it is what is pulled. With O(state=absent) or no O(source), also an image ID.
      - LXD/Incus the alias. With O(state=absent) or no O(source), also the full 64-digit fingerprint.
        Deleting by alias deletes the image (and its other aliases), as C(lxc image delete) does.
      - Proxmox the volume, as a file name (C(debian-12-custom_amd64.tar.zst), on O(storage)) or a volume ID
        (C(local:vztmpl/debian-12-custom_amd64.tar.zst)).
    type: str
    required: true
  state:
    description: V(present) brings the image there (from O(source) when it is missing or differs); V(absent) removes it.
    type: str
    default: present
    choices: [present, absent]
  source:
    description:
      - V(pull) Docker only, from the registry in O(name) (C(POST /images/create)).
      - V(url) the node downloads O(url). Proxmox through C(download-url) (PVE verifies O(checksum)); LXD/Incus
        and Docker with C(curl), C(wget) or C(python3) on the node into C(/var/tmp/ocv-image.*), verified there,
        then imported (C(lxc image import) / C(incus image import), C(docker load -i)); these need SSH to the node.
      - V(upload) a file on the host that runs the module, streamed to the node. Docker C(POST /images/load)
        (over SSH too, through the Engine API tunnel); LXD/Incus C(POST /1.0/images) over the API, or over SSH
        streamed into C(/var/tmp/ocv-image.*) and imported; Proxmox C(POST .../upload), or over SSH streamed into
        the storage directory beside the volume, verified, and renamed into place.
      - V(file) a file already on the node (C(docker load -i), C(lxc image import), or copied into the Proxmox
        storage). Needs SSH.
      - Omitted, the image must already be there (useful to add O(aliases)).
    type: str
    choices: [pull, url, upload, file]
  path:
    description:
      - V(upload) the file on the host that runs the module; V(file) an absolute path on the node.
      - Docker a C(docker save) tar (plain or compressed), LXD/Incus a unified image tarball or the rootfs
        (squashfs, tarball or VM disk) of a split image, Proxmox the template, ISO or disk image.
    type: path
  metadata_path:
    description: LXD/Incus split images, the metadata tarball (C(metadata.yaml) and templates) beside O(path).
    type: path
  url:
    description:
      - V(url) the http:// or https:// URL of the file (as O(path) describes it). No credentials in the URL.
      - LXD/Incus and Docker hand it to the node's downloader on standard input, never in a command line; Proxmox
        gets it as the C(url) parameter of C(download-url) (in the API request, or as a C(pvesh) argument over SSH).
    type: str
  metadata_url:
    description: V(url) for LXD/Incus split images, the URL of the metadata tarball.
    type: str
  checksum:
    description:
      - C(sha256:<64 hex digits>) or C(sha512:<128 hex digits>) of the file at O(url) or O(path), checked before
        anything is imported; a mismatch is an error and leaves nothing behind.
      - With O(source=pull) the manifest digest the registry must serve for O(name).
      - Optional. With it, a URL source is known without downloading (LXD/Incus a unified tarball's sha256 is its
        fingerprint; a split image carries the checksums it was imported with as properties), and a Proxmox volume
        is compared by content. Without it, LXD/Incus and Docker download the file on every run to learn its
        identity, and Proxmox keeps an existing volume of that name (with a warning).
    type: str
  metadata_checksum:
    description: The checksum of the metadata tarball (O(metadata_url) or O(metadata_path)), as O(checksum).
    type: str
  aliases:
    description:
      - More names for the image, added when missing (never removed). Docker tags, LXD/Incus aliases (an alias
        that names another image is moved to this one). Not for Proxmox.
    type: list
    elements: str
    default: []
  storage:
    description: Proxmox the storage of the volume, when O(name) is a file name; V(local) when omitted.
    type: str
  content:
    description:
      - Proxmox the content type. Taken from the file name's extension when omitted
        (C(.tar.gz), C(.tar.xz), C(.tar.zst) V(vztmpl); C(.iso), C(.img) V(iso); C(.qcow2), C(.raw), C(.vmdk),
        C(.ova) V(import)).
    type: str
    choices: [vztmpl, iso, import]
  force:
    description:
      - With O(state=present), fetch the source again even when the node has it (a change every run).
      - With O(state=absent), delete the image even when instances use it.
    type: bool
    default: false
  timeout:
    description: Seconds a download, upload, import or task may take.
    type: int
    default: 600
notes:
  - Proxmox VE's API reports no checksum of a volume, so an existing volume's content is compared over SSH
    (C(pvesm path) and C(sha256sum) on the node). Under C(api_only) an existing volume is compared by size for
    an upload and taken by name for a URL, with a warning.
  - A Docker C(docker load) also applies the tags stored in the tar, as the Docker CLI does.
  - Container templates on Proxmox have no users (a container does not keep its template); ISOs and disk
    images are in use by the VMs whose configuration names them.
author:
  - oneclickvirt.virt contributors (@oneclickvirt)
"""

EXAMPLES = r"""
- name: Pull from a registry, idempotent by the registry's manifest digest
  oneclickvirt.virt.virt_image:
    node: "{{ docker_node }}"
    name: registry.example:5000/team/app:1.2
    source: pull
    aliases: [app:1.2]

- name: Load a docker save tar from the controller
  oneclickvirt.virt.virt_image:
    node: "{{ docker_node }}"
    name: app:1.2
    source: upload
    path: files/app-1.2.tar
    checksum: "sha256:{{ app_tar_sha256 }}"

- name: An LXD image from metadata + rootfs downloaded by the node, checked before import
  oneclickvirt.virt.virt_image:
    node: "{{ lxd_node }}"
    name: debian-12-custom
    source: url
    metadata_url: https://images.example/debian-12/meta.tar.xz
    metadata_checksum: "sha256:{{ meta_sha256 }}"
    url: https://images.example/debian-12/rootfs.squashfs
    checksum: "sha256:{{ rootfs_sha256 }}"

- name: A Proxmox container template through download-url
  oneclickvirt.virt.virt_image:
    node: "{{ pve_node }}"
    name: debian-12-custom_12.7-1_amd64.tar.zst
    storage: local
    source: url
    url: https://images.example/debian-12-custom_12.7-1_amd64.tar.zst
    checksum: "sha512:{{ template_sha512 }}"

- name: Remove an image even though instances use it
  oneclickvirt.virt.virt_image:
    node: "{{ incus_node }}"
    name: old-image
    state: absent
    force: true
"""

RETURN = r"""
image:
  description: The image after the run (predicted in check mode); null after V(absent).
  returned: always
  type: dict
  contains:
    name:
      description: The name it was asked by.
      type: str
      returned: always
    id:
      description: Docker image ID, LXD/Incus fingerprint, Proxmox volume ID.
      type: str
      returned: always
    node:
      description: Node label.
      type: str
      returned: always
    backend:
      description: V(docker), V(lxd), V(incus) or V(proxmox).
      type: str
      returned: always
    aliases:
      description: Docker tags, LXD/Incus aliases, the Proxmox file name.
      type: list
      elements: str
      returned: always
    size:
      description: Size in bytes.
      type: int
      returned: always
    created:
      description: Creation time as the backend reports it.
      type: str
      returned: always
    architecture:
      description: Architecture, where known.
      type: str
      returned: always
    type:
      description: Instance type it makes, V(container) or V(vm).
      type: str
      returned: always
    checksum:
      description: Docker registry digest, LXD/Incus fingerprint as C(sha256:...), Proxmox verified checksum, where known.
      type: str
      returned: always
    used_by:
      description: Names of the instances that use it.
      type: list
      elements: str
      returned: always
    digests:
      description: Docker registry digests (C(repo@sha256:...)); empty elsewhere.
      type: list
      elements: str
      returned: always
actions:
  description: The writes done (or, in check mode, that would be done), in order.
  returned: always
  type: list
  elements: str
  sample: ["pull 127.0.0.1:5000/app:1.2", "alias app:1.2"]
events:
  description:
    - The steps done, with their duration in seconds, including progress steps of downloads (pulled layers,
      task log lines, downloaded sizes) and checksum verifications.
  returned: always
  type: list
  elements: dict
  sample: [{"step": "pull 127.0.0.1:5000/app:1.2: Pull complete bc272f37a9e6", "seconds": 0.12},
           {"step": "pull 127.0.0.1:5000/app:1.2", "seconds": 0.31}]
transport:
  description: The transport that served the run, V(api) or V(ssh).
  returned: always
  type: str
fallback_reason:
  description: Why the run fell back from the API to SSH.
  returned: when it fell back
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.oneclickvirt.virt.plugins.module_utils.common import run_module
from ansible_collections.oneclickvirt.virt.plugins.module_utils.images import (
    SOURCES, STATES, build_image_request, ensure_image, image_params)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.node import NODE_OPTION


def main():
    module = AnsibleModule(
        argument_spec={
            "node": NODE_OPTION,
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "default": "present", "choices": list(STATES)},
            "source": {"type": "str", "choices": list(SOURCES)},
            "path": {"type": "path"},
            "metadata_path": {"type": "path"},
            "url": {"type": "str"},
            "metadata_url": {"type": "str"},
            "checksum": {"type": "str"},
            "metadata_checksum": {"type": "str"},
            "aliases": {"type": "list", "elements": "str", "default": []},
            "storage": {"type": "str"},
            "content": {"type": "str", "choices": ["vztmpl", "iso", "import"]},
            "force": {"type": "bool", "default": False},
            "timeout": {"type": "int", "default": 600},
        },
        supports_check_mode=True,
    )

    def work(backend):
        request = build_image_request(image_params(module.params), module.params["node"]["type"])
        return ensure_image(backend, request, module.check_mode)

    run_module(module, work)


if __name__ == "__main__":
    main()
