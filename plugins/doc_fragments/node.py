# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  node:
    description:
      - The node to work on, described the same way for every module, the inventory plugin and the health role.
      - Every connection and auth option also reads an C(ONECLICKVIRT_*) environment variable, so AWX
        credential types and C(module_defaults) can supply it.
    type: dict
    required: true
    suboptions:
      name:
        description: Label of the node in results, groups and reports.
        type: str
        required: true
      type:
        description: The backend of the node.
        type: str
        required: true
        choices: [docker, incus, lxd, proxmox]
      execution_rule:
        description:
          - V(api_only) uses the API alone, V(ssh_only) SSH alone.
          - V(auto) uses the API when configured; a transport failure on a read, or before a write was sent,
            switches the rest of the run to SSH with a warning. A write whose answer was lost is never
            replayed; the module re-reads the state over SSH and converges.
        type: str
        default: auto
        choices: [api_only, ssh_only, auto]
      ssh:
        description: SSH access to the node. Needed for O(node.execution_rule=ssh_only), fallback and node-side work.
        type: dict
        suboptions:
          host:
            description: Host name or address. Env C(ONECLICKVIRT_SSH_HOST).
            type: str
          port:
            description: Port. Env C(ONECLICKVIRT_SSH_PORT).
            type: int
            default: 22
          user:
            description: Login user. Env C(ONECLICKVIRT_SSH_USER).
            type: str
            default: root
          private_key_file:
            description: Path of the private key. Env C(ONECLICKVIRT_SSH_PRIVATE_KEY_FILE).
            type: path
          private_key:
            description: The private key itself (unencrypted). Env C(ONECLICKVIRT_SSH_PRIVATE_KEY).
            type: str
          password:
            description: Login password. Env C(ONECLICKVIRT_SSH_PASSWORD).
            type: str
          host_key_checking:
            description:
              - V(strict) accepts only host keys already in O(node.ssh.known_hosts_file) (or the user's known_hosts).
              - V(accept_new) records an unknown host's key and refuses a changed one.
              - V(ignore) accepts any key and warns.
              - Env C(ONECLICKVIRT_SSH_HOST_KEY_CHECKING).
            type: str
            default: strict
            choices: [strict, accept_new, ignore]
          known_hosts_file:
            description: known_hosts file to check against. Env C(ONECLICKVIRT_SSH_KNOWN_HOSTS_FILE).
            type: path
          connect_timeout:
            description: Seconds to wait for the connection. Env C(ONECLICKVIRT_SSH_CONNECT_TIMEOUT).
            type: int
            default: 10
          command_timeout:
            description: Seconds a command on the node may take. Env C(ONECLICKVIRT_SSH_COMMAND_TIMEOUT).
            type: int
            default: 120
      api:
        description: The backend's API. Needed for O(node.execution_rule=api_only).
        type: dict
        suboptions:
          url:
            description:
              - Docker C(unix:///var/run/docker.sock), C(tcp://host:2376) or C(https://host:2376);
                LXD/Incus C(unix:///var/lib/lxd/unix.socket) or C(https://host:8443); Proxmox C(https://host:8006).
              - Env C(ONECLICKVIRT_API_URL).
            type: str
          validate_certs:
            description: Check the server's TLS certificate. Env C(ONECLICKVIRT_API_VALIDATE_CERTS).
            type: bool
            default: true
          ca_file:
            description: CA bundle to check the server certificate against. Env C(ONECLICKVIRT_API_CA_FILE).
            type: path
          server_cert:
            description: The server certificate itself, pinned (LXD/Incus); compared byte for byte. Env C(ONECLICKVIRT_API_SERVER_CERT).
            type: path
          client_cert:
            description: Client certificate (LXD/Incus, Docker TLS). Env C(ONECLICKVIRT_API_CLIENT_CERT).
            type: path
          client_key:
            description: Key of the client certificate. Env C(ONECLICKVIRT_API_CLIENT_KEY).
            type: path
          token_id:
            description: Proxmox API token id, C(user@realm!name). Env C(ONECLICKVIRT_API_TOKEN_ID).
            type: str
          token_secret:
            description: Proxmox API token secret. Env C(ONECLICKVIRT_API_TOKEN_SECRET).
            type: str
          timeout:
            description: Seconds per API request. Env C(ONECLICKVIRT_API_TIMEOUT).
            type: int
            default: 30
      project:
        description: LXD / Incus project.
        type: str
        default: default
      proxmox_node:
        description: Proxmox node name, when it differs from the host.
        type: str
      public_ip:
        description: Address that port mappings are published on.
        type: str
      port_range:
        description: Host ports that automatic port mappings come from.
        type: dict
        suboptions:
          start:
            description: First port.
            type: int
            default: 10000
          end:
            description: Last port.
            type: int
            default: 65535
notes:
  - Secrets (SSH password and key, API token secret) never appear in results, logs or a process argv on the node.
"""
