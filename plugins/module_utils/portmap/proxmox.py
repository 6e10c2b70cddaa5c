# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Proxmox guests for port mapping, while the collection has no Proxmox backend registered.

Port mapping on a PVE node is shell work anyway (iptables / nftables over SSH), so the guest is looked up
there too, with `pvesh` and JSON output: by name or VMID in /cluster/resources, then its address from its
network config (a static `ip=` / `ip6=`), or, when that says dhcp, from the running guest (the container's
interfaces, or the VM's guest agent). As soon as a real Proxmox backend is registered, it is used instead.
"""

from __future__ import annotations

import json

from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends import register, registered
from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends.base import Provider
from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import BackendError, Unsupported
from ansible_collections.oneclickvirt.virt.plugins.module_utils.models import Instance
from ansible_collections.oneclickvirt.virt.plugins.module_utils.portmap import NodeShell

STATUS = {"running": "running", "stopped": "stopped", "paused": "paused"}


class _Shell:
    """What Router.ssh() hands out for this provider: the SSH transport itself."""

    def __init__(self, ssh):
        self.ssh = ssh

    def close(self):
        self.ssh.close()


class PveShellProvider(Provider):
    backend = "proxmox"
    instance_types = ("container", "vm")

    def __init__(self, node, warn=None):
        super().__init__(node, warn)
        if node.ssh is not None and node.execution_rule != "api_only":
            self.router.transport = "ssh"  # everything this provider does goes over SSH

    def make_api_client(self):
        raise Unsupported(f"node {self.node.name}: port mapping on Proxmox VE works over SSH; give node.ssh")

    def make_ssh_client(self):
        from ansible_collections.oneclickvirt.virt.plugins.module_utils.transport.ssh import SshTransport

        return _Shell(SshTransport(self.node.ssh, self.warn))

    def _pvesh(self, path, **params):
        argv = ["pvesh", "get", path, "--output-format", "json"]
        for key, value in params.items():
            argv += [f"--{key}", str(value)]
        result = NodeShell(self.router.ssh("looking up a Proxmox guest").ssh, self.node.name).run(argv, check=False)
        if result.rc != 0:
            raise BackendError(f"node {self.node.name}: pvesh get {path} failed: {result.stderr.strip()}",
                               backend_message=result.stderr.strip())
        return json.loads(result.stdout or "null")

    def get_instance(self, name):
        resources = self._pvesh("/cluster/resources", type="vm") or []
        matches = [r for r in resources if r.get("name") == name or str(r.get("vmid")) == str(name)]
        if not matches:
            return None
        resource = matches[0]
        kind, vmid, pve_node = resource["type"], resource["vmid"], resource.get("node") or self.node.proxmox_node
        config = self._pvesh(f"/nodes/{pve_node}/{kind}/{vmid}/config") or {}
        ipv4, ipv6 = _static_addresses(config, kind)
        if (not ipv4 or not ipv6) and resource.get("status") == "running":
            found4, found6 = self._running_addresses(pve_node, kind, vmid, config)
            ipv4, ipv6 = ipv4 or found4, ipv6 or found6
        return Instance(name=resource.get("name") or str(vmid), id=str(vmid), node=self.node.name,
                        backend=self.backend, type="vm" if kind == "qemu" else "container",
                        status=STATUS.get(resource.get("status"), "unknown"), private_ip=ipv4, ipv6=ipv6)

    def _running_addresses(self, pve_node, kind, vmid, config):
        try:
            if kind == "lxc":
                nics = self._pvesh(f"/nodes/{pve_node}/lxc/{vmid}/interfaces") or []
            elif config.get("agent"):
                nics = (self._pvesh(f"/nodes/{pve_node}/qemu/{vmid}/agent/network-get-interfaces") or {}).get("result")
            else:
                return None, None
        except BackendError:
            return None, None
        ipv4 = ipv6 = None
        for nic in nics or []:
            if nic.get("name") == "lo":
                continue
            for address in nic.get("ip-addresses") or []:
                value = address.get("ip-address")
                if address.get("ip-address-type") == "ipv4" and not ipv4:
                    ipv4 = value
                elif address.get("ip-address-type") == "ipv6" and not ipv6 and not value.startswith("fe80"):
                    ipv6 = value
        return ipv4, ipv6


def _static_addresses(config, kind):
    """The first static `ip=` / `ip6=` of net0.. (containers) or ipconfig0.. (cloud-init VMs)."""
    prefix = "net" if kind == "lxc" else "ipconfig"
    ipv4 = ipv6 = None
    for key in sorted((k for k in config if k.startswith(prefix) and k[len(prefix):].isdigit()),
                      key=lambda k: int(k[len(prefix):])):
        options = dict(part.split("=", 1) for part in str(config[key]).split(",") if "=" in part)
        value4, value6 = options.get("ip", ""), options.get("ip6", "")
        if not ipv4 and value4 and value4 not in ("dhcp", "manual"):
            ipv4 = value4.split("/")[0]
        if not ipv6 and value6 and value6 not in ("dhcp", "auto", "manual"):
            ipv6 = value6.split("/")[0]
    return ipv4, ipv6


def ensure_registered():
    """Register this lookup as the `proxmox` backend of this run, unless a real one is registered."""
    if "proxmox" not in registered():
        register("proxmox", lambda: PveShellProvider)
