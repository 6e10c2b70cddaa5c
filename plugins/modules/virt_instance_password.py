#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: virt_instance_password
short_description: Set or generate a user's password inside an instance on a Docker, LXD, Incus or Proxmox VE node
version_added: 0.1.0
description:
  - Sets the password of a user (C(root) by default) inside a running instance, to a given O(password) or to a
    strong random one (O(generate=true)) that is returned once, in RV(generated_password).
  - The password travels on standard input or in an API body, never on a command line, so it appears in no
    process list or command log on the node. A given password is never returned.
  - Docker, LXD and Incus, and Proxmox VE containers, run C(chpasswd) inside the instance (through the backend's
    exec; on Proxmox VE C(pct exec)). The image needs C(chpasswd); one without it (a bare busybox) is a clear
    error.
  - On Proxmox VE VMs the password is set through the QEMU guest agent when the VM runs with its agent (at
    once), else through cloud-init (C(cipassword), for the VM's C(ciuser)), which applies at the next boot; the
    result then carries a RV(note) saying so. Both go in an API body; under C(ssh_only) to the node's own API
    port through the SSH connection, with O(node.api.token_id) and O(node.api.token_secret).
extends_documentation_fragment:
  - oneclickvirt.virt.node
attributes:
  check_mode:
    support: full
    description:
      - Nothing is generated or set in check mode; C(changed=true) is predicted, as a real run reports.
  diff_mode:
    support: none
    description: Passwords are never shown, so there is nothing to diff.
  action_group:
    support: full
    description: In the C(group/oneclickvirt.virt.virt) action group, so C(module_defaults) can set O(node) once.
    membership: [oneclickvirt.virt.virt]
options:
  name:
    description: Name of the instance, matched exactly. It must be running; a stopped instance is an error.
    type: str
    required: true
  user:
    description: The user whose password is set. A login name that exists inside the instance.
    type: str
    default: root
  password:
    description:
      - The new password. Never logged, never returned. Must not contain a newline.
      - Exactly one of O(password) and O(generate=true) is required.
    type: str
  generate:
    description:
      - Generate a random password of O(length) characters (letters, digits and C(!#%+,-.:=@^_), at least one of
        each kind) and return it in RV(generated_password).
    type: bool
    default: false
  length:
    description: Length of the generated password, 12 to 256. Only with O(generate=true). V(24) when omitted.
    type: int
  timeout:
    description: Seconds setting the password may take.
    type: int
    default: 120
notes:
  - The module reports a change every run, since a password can only be replaced, not compared; this is one of the
    collection's documented exceptions to idempotence (like O(ansible.builtin.user#module:update_password=always)).
  - With O(generate=true) the new password is in the task result. Use C(no_log) on the task to keep it out of
    the output and logs, and store it (for example in a vault) before the play ends; it is not shown again.
seealso:
  - module: oneclickvirt.virt.virt_instance
  - module: oneclickvirt.virt.virt_exec
author:
  - oneclickvirt.virt contributors (@oneclickvirt)
"""

EXAMPLES = r"""
- name: Set root's password from the vault
  oneclickvirt.virt.virt_instance_password:
    node: "{{ docker_node }}"
    name: app-1
    password: "{{ vault_app_root_password }}"

- name: Generate a new password for the user debian
  oneclickvirt.virt.virt_instance_password:
    node: "{{ lxd_node }}"
    name: web-1
    user: debian
    generate: true
    length: 32
  register: new_password
  no_log: true

- name: Keep it somewhere safe
  ansible.builtin.copy:
    content: "{{ new_password.generated_password }}"
    dest: /root/secrets/web-1-debian.txt
    mode: "0600"
  no_log: true
"""

RETURN = r"""
generated_password:
  description:
    - The generated password, returned this once. Use C(no_log) on the task to keep it out of the output.
  returned: when O(generate=true), and not in check mode
  type: str
generated:
  description: Whether the password was generated (V(true)) or given (V(false)).
  returned: always
  type: bool
name:
  description: The instance.
  returned: always
  type: str
user:
  description: The user whose password was set.
  returned: always
  type: str
  sample: root
msg:
  description: What was done, or would be done in check mode.
  returned: always
  type: str
note:
  description: A backend's note on when the password takes effect (a Proxmox VE VM's next boot).
  returned: when the backend has one
  type: str
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
from ansible_collections.oneclickvirt.virt.plugins.module_utils.execution import build_password_request, set_password
from ansible_collections.oneclickvirt.virt.plugins.module_utils.node import NODE_OPTION


def main():
    module = AnsibleModule(
        argument_spec={
            "node": NODE_OPTION,
            "name": {"type": "str", "required": True},
            "user": {"type": "str", "default": "root"},
            "password": {"type": "str", "no_log": True},
            "generate": {"type": "bool", "default": False},
            "length": {"type": "int"},
            "timeout": {"type": "int", "default": 120},
        },
        # password / generate / length are checked together in build_password_request (generate: false given
        # explicitly next to a password is fine, which mutually_exclusive would refuse).
        supports_check_mode=True,
    )

    def work(provider):
        request = build_password_request(module.params)
        # The values AnsibleModule masks in every result string: a generated password must contain none of them.
        return set_password(provider, request, module.check_mode, masked_values=module.no_log_values)

    run_module(module, work, extra_secrets=[module.params["password"]])


if __name__ == "__main__":
    main()
