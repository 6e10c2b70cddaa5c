#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: virt_instance
short_description: Manage an instance (container or VM) on a Docker, LXD, Incus or Proxmox VE node
version_added: 0.1.0
description:
  - Creates, updates, starts, stops, restarts and deletes one instance, the same way on every backend.
  - Idempotent; the second identical run sends no write. Full check mode and diff.
  - Fields that can change in place (cpu, memory, and on Docker the restart policy) are updated; a change that
    needs a new instance (image, env, hostname, ports, command) fails unless O(force=true).
extends_documentation_fragment:
  - oneclickvirt.virt.node
attributes:
  check_mode:
    support: full
    description: Predicts V(changed) exactly and writes nothing.
  diff_mode:
    support: full
    description: Before and after of the normalised instance.
  action_group:
    support: full
    description: In the C(group/oneclickvirt.virt.virt) action group, so C(module_defaults) can set O(node) once.
    membership: [oneclickvirt.virt.virt]
options:
  name:
    description:
      - Name of the instance, matched exactly. Letters, digits and inner hyphens, at most 63 characters.
      - Proxmox VE keeps no name unique. Two guests with the name are an error that names their VMIDs; two runs
        that create the name at the same time each keep the guest with the lower VMID and delete their own newer
        one (with a warning), so one guest is left.
    type: str
    required: true
  state:
    description:
      - V(present) makes sure the instance exists with the given settings, and leaves it running or not.
        A new instance is left stopped.
      - V(started) and V(stopped) also set the running state.
      - V(restarted) restarts (or starts) it, and reports a change every run.
      - V(absent) deletes it.
    type: str
    default: started
    choices: [present, started, stopped, restarted, absent]
  type:
    description:
      - V(container) or V(vm). A type the backend or node cannot run fails before anything is sent.
      - When omitted, an existing instance keeps its type and a new one is a V(container).
    type: str
    choices: [container, vm]
  image:
    description:
      - What M(oneclickvirt.virt.virt_image_info) lists for the node. Docker an image reference, LXD/Incus an
        alias or fingerprint, Proxmox a volume ID or C(clone:<template>). Needed to create the instance.
      - "Proxmox: a container takes a template volume (C(local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst));
        a VM takes an ISO (C(local:iso/x.iso), an empty disk of O(disk) plus the installer), a disk image to
        import (C(local:import/x.qcow2), with a cloud-init drive), or C(clone:<template name>) (a full clone of
        that template). PVE keeps no record of the image, so the collection writes it into the guest's
        description (C(ocv-image: ...))."
    type: str
  cpu:
    description: Number of cores, a positive number. Fractions where the backend can enforce them.
    type: float
  memory:
    description: Memory limit. An integer is MiB; a string has a unit (C(512MiB), C(2GiB), C(1G), C(2GB)).
    type: str
  disk:
    description:
      - Root disk size, same units as O(memory). Where the storage cannot enforce it, a clear error.
      - Proxmox grows a disk in place and never shrinks one (a smaller size is an error).
    type: str
  env:
    description: Environment variables. Values are delivered literally, never through a shell.
    type: dict
  hostname:
    description: Host name inside the instance.
    type: str
  command:
    description: Command (argv list) of the container, Docker only.
    type: list
    elements: str
  ports:
    description:
      - Ports published by the instance itself, at creation (Docker). They belong to the instance; mappings
        made by M(oneclickvirt.virt.virt_portmap) are separate and never reported as drift here.
    type: list
    elements: dict
    suboptions:
      guest_port:
        description: Port inside the instance.
        type: int
        required: true
      host_port:
        description:
          - Port on the node; omit to let the backend choose. Results then report the port it chose while the
            instance runs (C(null) while it is stopped), and the chosen port is never a drift.
        type: int
      protocol:
        description: Protocol.
        type: str
        default: tcp
        choices: [tcp, udp]
      listen_address:
        description: Node address to listen on; all when omitted.
        type: str
  network:
    description: Network settings. Keys a backend cannot honour fail clearly.
    type: dict
    suboptions:
      bridge:
        description: Bridge (or Docker network) to attach to.
        type: str
      ipv4:
        description: V(auto), V(none) or a CIDR.
        type: str
      ipv6:
        description:
          - V(auto), V(none) or a CIDR.
          - On LXD and Incus a start waits for the IPv4 address the network hands out; it waits for the IPv6
            address too only when this option is set on a new instance (SLAAC takes about a second longer).
            Without it, RV(instance.ipv6) may still be null right after a create.
        type: str
      bandwidth_in:
        description: Ingress limit in Mbit/s.
        type: int
      bandwidth_out:
        description: Egress limit in Mbit/s.
        type: int
  password:
    description:
      - Password of C(root) inside the instance, set with C(chpasswd) through the backend's exec, the password
        on standard input (never on a command line). Needs the instance running.
      - Proxmox VMs get it through the QEMU guest agent (or, with no agent running, cloud-init's C(cipassword),
        applied at the next boot), always in an API body; under C(ssh_only) that body goes to the node's own API
        port through the SSH connection, with O(node.api.token_id) / O(node.api.token_secret).
    type: str
  update_password:
    description: V(on_create) sets O(password) only when the instance is created; V(always) every run (then a change is reported every run).
    type: str
    default: on_create
    choices: [on_create, always]
  ssh_authorized_keys:
    description: Public keys to add to C(/root/.ssh/authorized_keys) inside the instance. Needs it running.
    type: list
    elements: str
  update_ssh_keys:
    description:
      - V(on_create) writes O(ssh_authorized_keys) only when the instance is created.
      - V(always) reads the file on every run (a command inside the instance) and appends the keys it lacks.
    type: str
    default: on_create
    choices: [on_create, always]
  config:
    description:
      - Backend-specific extras. Docker C(restart_policy) (V(no), V(always), V(unless-stopped), V(on-failure))
        and C(init) (bool, run an init as PID 1).
      - LXD/Incus C(profiles) (list of profile names, in order; default the daemon's C(default) profile). Every
        dotted key (C(security.nesting), C(boot.autostart), C(user.note)) goes to the instance config as given;
        booleans and numbers are written as the daemon reads them. Only the keys given are compared and
        written; C(volatile.*) belongs to the daemon. A key that a running instance takes only at its next start
        (C(security.privileged), C(raw.lxc), ...) is written, and the result says that a restart is needed.
      - "Proxmox: C(vmid) (the VMID of a new guest; default the next free one, taken again when a parallel
        create wins the race), C(storage) (for the new disks; default the node's first storage for container
        roots or VM images), C(onboot) (bool), C(nameserver), C(searchdomain), containers C(unprivileged)
        (default true, set at creation), VMs cloud-init C(ciuser) and C(sshkeys) (a list of public keys,
        compared decoded, so PVE's percent-encoding is never a change). A running VM takes cpu, memory,
        network and cloud-init changes at its next boot; the result says so."
    type: dict
  force:
    description: Recreate the instance when a setting that cannot change in place differs. Its data is lost.
    type: bool
    default: false
  timeout:
    description: Seconds to wait for each long operation (create, start, stop, delete).
    type: int
    default: 120
author:
  - oneclickvirt.virt contributors (@oneclickvirt)
"""

EXAMPLES = r"""
- name: A running container with 1 core and 512 MiB
  oneclickvirt.virt.virt_instance:
    node: "{{ docker_node }}"
    name: web-1
    image: ocv-busybox:latest
    cpu: 1
    memory: 512MiB
    env:
      APP_MODE: production
    ports:
      - guest_port: 80
        host_port: 8080

- name: Set root's password at creation (Debian image with chpasswd)
  oneclickvirt.virt.virt_instance:
    node: "{{ docker_node }}"
    name: app-1
    image: ocv-debian:latest
    password: "{{ vault_root_password }}"

- name: Stop it
  oneclickvirt.virt.virt_instance:
    node: "{{ docker_node }}"
    name: web-1
    state: stopped

- name: Delete it
  oneclickvirt.virt.virt_instance:
    node: "{{ docker_node }}"
    name: web-1
    state: absent

- name: A Proxmox VM cloned from a cloud-init template, with a user and a key
  oneclickvirt.virt.virt_instance:
    node: "{{ pve_node }}"
    name: db-1
    type: vm
    image: clone:debian12-cloud
    cpu: 2
    memory: 2GiB
    disk: 20G
    network:
      bridge: vmbr0
      ipv4: 10.0.10.21/24
    config:
      ciuser: ops
      sshkeys:
        - "{{ lookup('ansible.builtin.file', 'files/ops.pub') }}"
      onboot: true

- name: A Proxmox container from a template volume, with a fixed VMID
  oneclickvirt.virt.virt_instance:
    node: "{{ pve_node }}"
    name: cache-1
    image: local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst
    memory: 512
    config:
      vmid: 2001
"""

RETURN = r"""
instance:
  description: The instance after the run (predicted in check mode); null after V(absent).
  returned: always
  type: dict
  contains:
    name:
      description: "Name."
      type: str
      returned: always
    id:
      description: "Backend id (Docker container id, LXD name, Proxmox VMID)."
      type: str
      returned: always
    node:
      description: "Node label."
      type: str
      returned: always
    backend:
      description: "docker, lxd, incus or proxmox."
      type: str
      returned: always
    type:
      description: "container or vm."
      type: str
      returned: always
    status:
      description: "running, stopped, paused, error or unknown."
      type: str
      returned: always
    image:
      description: "Image it was created from."
      type: str
      returned: always
    cpu:
      description: "Cores, null when unlimited."
      type: float
      returned: always
    memory:
      description: "Memory limit in MiB, null when unlimited."
      type: int
      returned: always
    disk:
      description: "Root disk size in MiB, null when not set."
      type: int
      returned: always
    private_ip:
      description: "IPv4 address on the node's network."
      type: str
      returned: always
    ipv6:
      description: "Global IPv6 address (on LXD/Incus right after a start, only when O(network.ipv6) was set)."
      type: str
      returned: always
    ports:
      description: "Ports published by the instance itself; a C(host_port) left to the backend is the one it chose
        while the instance runs, C(null) while it is stopped."
      type: list
      elements: dict
      returned: always
    created:
      description: "Creation time as the backend reports it."
      type: str
      returned: always
transport:
  description: The transport that served the run, V(api) or V(ssh).
  returned: always
  type: str
fallback_reason:
  description: Why the run fell back from the API to SSH.
  returned: when it fell back
  type: str
actions:
  description: The writes done (or, in check mode, that would be done), in order.
  returned: always
  type: list
  elements: str
events:
  description: The steps done, with their duration in seconds.
  returned: always
  type: list
  elements: dict
  sample: [{"step": "create", "seconds": 0.081}, {"step": "start", "seconds": 0.35}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.oneclickvirt.virt.plugins.module_utils.common import run_module
from ansible_collections.oneclickvirt.virt.plugins.module_utils.instance import STATES, build_request, ensure_instance
from ansible_collections.oneclickvirt.virt.plugins.module_utils.node import NODE_OPTION


def main():
    module = AnsibleModule(
        argument_spec={
            "node": NODE_OPTION,
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "default": "started", "choices": list(STATES)},
            "type": {"type": "str", "choices": ["container", "vm"]},
            "image": {"type": "str"},
            "cpu": {"type": "float"},
            "memory": {"type": "str"},
            "disk": {"type": "str"},
            "env": {"type": "dict"},
            "hostname": {"type": "str"},
            "command": {"type": "list", "elements": "str"},
            "ports": {"type": "list", "elements": "dict", "options": {
                "guest_port": {"type": "int", "required": True},
                "host_port": {"type": "int"},
                "protocol": {"type": "str", "default": "tcp", "choices": ["tcp", "udp"]},
                "listen_address": {"type": "str"},
            }},
            "network": {"type": "dict", "options": {
                "bridge": {"type": "str"},
                "ipv4": {"type": "str"},
                "ipv6": {"type": "str"},
                "bandwidth_in": {"type": "int"},
                "bandwidth_out": {"type": "int"},
            }},
            "password": {"type": "str", "no_log": True},
            "update_password": {"type": "str", "default": "on_create", "choices": ["on_create", "always"], "no_log": False},
            "ssh_authorized_keys": {"type": "list", "elements": "str", "no_log": False},
            "update_ssh_keys": {"type": "str", "default": "on_create", "choices": ["on_create", "always"],
                                "no_log": False},
            "config": {"type": "dict"},
            "force": {"type": "bool", "default": False},
            "timeout": {"type": "int", "default": 120},
        },
        supports_check_mode=True,
    )
    params = dict(module.params)
    # Sizes arrive as strings; a plain number means MiB.
    for option in ("memory", "disk"):
        if params[option] is not None and params[option].isdigit():
            params[option] = int(params[option])

    def work(provider):
        request = build_request(params)
        return ensure_instance(provider, request, module.check_mode)

    run_module(module, work, extra_secrets=[params.get("password")])


if __name__ == "__main__":
    main()
