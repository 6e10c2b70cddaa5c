#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: virt_portmap
short_description: Map host ports of a node to ports of an instance (Docker, LXD, Incus, Proxmox VE)
version_added: 0.1.0
description:
  - Maps a host port of the node (fixed, or allocated from the node's C(port_range)) to a port of an instance,
    for TCP, UDP or both, over IPv4 or IPv6. O(count) maps a block of consecutive host ports in one task.
  - Every rule or device it writes carries the owner tag C(ocv:<node>:<instance>:<proto>:<host_port>), in the
    collection's own iptables chains (C(OCV-PREROUTING), C(OCV-FORWARD)) or nft table (C(inet oneclickvirt)),
    or as LXD/Incus proxy devices named C(ocv-<proto>-<host_port>). Nothing else on the node is rewritten,
    flushed or restored; where Docker's FORWARD policy would drop DNAT'd traffic, one tagged jump in
    C(DOCKER-USER) is the only rule outside the collection's own chains.
  - Automatic host ports skip ports that listen on the node or are already mapped; a lock on the node around
    allocate-and-apply keeps them unique when many tasks run at once.
  - iptables and nftables rules persist in the collection's own rules files under C(/etc/oneclickvirt/portmap),
    with a C(restore) script and a systemd unit that bring back exactly those rules at boot (see the
    R(port mapping guide,ansible_collections.oneclickvirt.virt.docsite.guide_portmap)).
  - Needs SSH to the node (iptables, nftables and C(ss) run there), whatever O(node.execution_rule) says, except
    V(api_only), which fails clearly.
  - Idempotent, full check mode and diff.
extends_documentation_fragment:
  - oneclickvirt.virt.node
attributes:
  check_mode:
    support: full
    description: Reads the node and predicts V(changed) and the mappings (an allocated port is the one free now); writes nothing.
  diff_mode:
    support: full
    description: Before and after of the mappings the task names.
  action_group:
    support: full
    description: In the C(group/oneclickvirt.virt.virt) action group, so C(module_defaults) can set O(node) once.
    membership: [oneclickvirt.virt.virt]
options:
  instance:
    description:
      - Name of the instance, matched exactly. On Proxmox VE its name or VMID.
      - With O(state=present) it must exist. With O(state=absent) it may be gone already; its mappings are
        still found by their owner tag and removed.
    type: str
    required: true
  guest_port:
    description:
      - Port inside the instance (1-65535). Required with O(state=present).
      - With O(count), the port of the first mapping of the block (see O(block_guest_ports)).
      - With O(state=absent), limits the removal to the mappings to this port; omit it to remove every mapping
        of the instance (that O(protocol) and O(ip_version) name).
    type: int
  host_port:
    description:
      - Port on the node, inside the node's C(port_range). Omit it to allocate a free one (or, with O(count), the
        lowest free block of consecutive ports); a mapping that already exists for O(guest_port) is kept.
    type: int
  count:
    description:
      - Number of consecutive host ports to map in one task, e.g. V(10) for the oneclickvirt panel's ten ports per
        instance.
    type: int
    default: 1
  block_guest_ports:
    description:
      - How the guest ports of a block follow each other.
      - V(consecutive) maps host port C(N+i) to O(guest_port)C(+i).
      - V(same_as_host) maps the first host port to O(guest_port) and every other one to the same port number
        inside the instance. This is the panel's layout, the first port to SSH and the rest one to one.
    type: str
    default: consecutive
    choices: [consecutive, same_as_host]
  protocol:
    description:
      - V(tcp), V(udp), or V(both) (two mappings on the same host port). Defaults to V(tcp) with
        O(state=present); with O(state=absent), omitted means both.
    type: str
    choices: [tcp, udp, both]
  method:
    description:
      - How the mapping is made.
      - V(auto) picks the best for the backend and the node. LXD/Incus V(proxy_device); Docker and Proxmox VE
        V(nftables) when the node has C(nft), else V(iptables). An existing mapping made by another method is kept.
      - V(native) (Docker) publishes the port on the container. Docker publishes only at creation, so a live add
        uses DNAT (nftables or iptables) unless O(recreate=true).
      - V(proxy_device) (LXD, Incus) adds a proxy device to the instance.
      - V(iptables) and V(nftables) add DNAT rules on the node (Docker, LXD, Incus, Proxmox VE).
    type: str
    default: auto
    choices: [auto, native, proxy_device, iptables, nftables]
  recreate:
    description:
      - With O(method=native), recreate the Docker container with the port published (or unpublished, with
        O(state=absent)). Its configuration, networks and volumes are kept; what lived only in its writable
        layer is lost, and its address may change.
    type: bool
    default: false
  listen_address:
    description:
      - Address of the node the mapping listens on. Defaults to the node's C(public_ip) when it is of the
        O(ip_version) family, else every address of the node.
    type: str
  ip_version:
    description: V(4) or V(6). Defaults to V(4) with O(state=present); with O(state=absent), omitted means both.
    type: int
    choices: [4, 6]
  description:
    description: A note kept with the mapping on the node (in the proxy device's record, or the rules directory).
    type: str
  state:
    description: V(present) makes sure the mappings exist; V(absent) removes exactly the rules and devices they consist of.
    type: str
    default: present
    choices: [present, absent]
  lock_timeout:
    description: Seconds to wait for the node's port-mapping lock (held by other runs while they allocate and apply).
    type: int
    default: 120
notes:
  - The lab's nodes share one host, which is why the node name is part of the owner tag; a node's mappings are
    the tagged rules whose tag names it.
seealso:
  - module: oneclickvirt.virt.virt_portmap_info
author:
  - oneclickvirt.virt contributors (@oneclickvirt)
"""

EXAMPLES = r"""
- name: SSH of web-1 on a free port of the node's range
  oneclickvirt.virt.virt_portmap:
    node: "{{ lxd_node }}"
    instance: web-1
    guest_port: 22
  register: ssh_port

- name: Show it
  ansible.builtin.debug:
    msg: "ssh -p {{ ssh_port.host_ports[0] }} root@{{ lxd_node.public_ip }}"

- name: The panel's ten ports, the first to SSH, the others one to one
  oneclickvirt.virt.virt_portmap:
    node: "{{ lxd_node }}"
    instance: web-1
    guest_port: 22
    count: 10
    block_guest_ports: same_as_host
    protocol: both

- name: A fixed port with nftables, over IPv6
  oneclickvirt.virt.virt_portmap:
    node: "{{ docker_node }}"
    instance: app-1
    guest_port: 8080
    host_port: 20080
    method: nftables
    ip_version: 6
    listen_address: "2001:db8::10"

- name: Publish natively on Docker, recreating the container
  oneclickvirt.virt.virt_portmap:
    node: "{{ docker_node }}"
    instance: app-1
    guest_port: 80
    method: native
    recreate: true

- name: Remove every mapping of web-1
  oneclickvirt.virt.virt_portmap:
    node: "{{ lxd_node }}"
    instance: web-1
    state: absent
"""

RETURN = r"""
mappings:
  description: The mappings the task names, after the run (predicted in check mode); empty after V(absent).
  returned: always
  type: list
  elements: dict
  contains:
    node: {description: Node label., type: str, returned: always}
    instance: {description: Instance name., type: str, returned: always}
    protocol: {description: tcp or udp., type: str, returned: always}
    host_port: {description: Port on the node., type: int, returned: always}
    guest_port: {description: Port inside the instance., type: int, returned: always}
    method:
      description: The method of the mapping, V(native), V(proxy_device), V(iptables) or V(nftables).
      type: str
      returned: always
    ip_version: {description: 4 or 6., type: int, returned: always}
    listen_address: {description: Node address it listens on; null for every address., type: str, returned: always}
    target_address:
      description: Address the traffic goes to, the instance's own (or its loopback for a container proxy device).
      type: str
      returned: always
    description: {description: The note kept with the mapping., type: str, returned: always}
    tag: {description: The owner tag on the node., type: str, returned: always, sample: "ocv:lxd:web-1:tcp:21000"}
host_ports:
  description: The host ports of RV(mappings), sorted.
  returned: always
  type: list
  elements: int
  sample: [21000]
actions:
  description: The changes done (or, in check mode, that would be done), in order.
  returned: always
  type: list
  elements: str
  sample: ["add tcp 21000 -> web-1:22 (proxy_device)"]
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
from ansible_collections.oneclickvirt.virt.plugins.module_utils.portmap.manager import build_request, ensure_portmap


def main():
    module = AnsibleModule(
        argument_spec={
            "node": NODE_OPTION,
            "instance": {"type": "str", "required": True},
            "guest_port": {"type": "int"},
            "host_port": {"type": "int"},
            "count": {"type": "int", "default": 1},
            "block_guest_ports": {"type": "str", "default": "consecutive", "choices": ["consecutive", "same_as_host"]},
            "protocol": {"type": "str", "choices": ["tcp", "udp", "both"]},
            "method": {"type": "str", "default": "auto",
                       "choices": ["auto", "native", "proxy_device", "iptables", "nftables"]},
            "recreate": {"type": "bool", "default": False},
            "listen_address": {"type": "str"},
            "ip_version": {"type": "int", "choices": [4, 6]},
            "description": {"type": "str"},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "lock_timeout": {"type": "int", "default": 120},
        },
        supports_check_mode=True,
    )

    def work(provider):
        request = build_request(module.params, provider.node)
        return ensure_portmap(provider, request, module.check_mode)

    run_module(module, work)


if __name__ == "__main__":
    main()
