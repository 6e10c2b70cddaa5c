#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: virt_exec
short_description: Run a command inside an instance on a Docker, LXD, Incus or Proxmox VE node
version_added: 0.1.0
description:
  - Runs one command inside a running instance, like C(docker exec), C(incus exec) or C(pct exec), and returns
    its exit code and output, the way M(ansible.builtin.command) does on a host.
  - The command is an argument list (O(argv)); no shell parses it unless O(shell=true) is asked for explicitly.
  - Docker runs it through the Engine API (over the node's socket, or the same API tunnelled through SSH).
    LXD and Incus through their exec API, or C(lxc exec) / C(incus exec) over SSH. Proxmox VE containers through
    C(pct exec) over SSH, Proxmox VE VMs through the QEMU guest agent (C(agent/exec) and C(exec-status)).
  - Reports a change every run, unless O(creates) or O(removes) say the command has nothing to do; then the
    command is not run and the result is C(changed=false). Those paths are tested inside the instance.
  - A command that exits non-zero fails the task, with RV(rc), RV(stdout) and RV(stderr) in the result (use
    C(failed_when) to accept other exit codes).
extends_documentation_fragment:
  - oneclickvirt.virt.node
attributes:
  check_mode:
    support: full
    description:
      - The command is never run in check mode; RV(msg) says so. O(creates) and O(removes) are still tested
        (a read inside the instance), so C(changed) predicts what a real run reports.
      - An instance that is absent or not running in check mode gives a warning and C(changed=true), since an
        earlier task of the play (not run in check mode either) may create or start it.
  diff_mode:
    support: none
    description: A command has no before and after to show.
  action_group:
    support: full
    description: In the C(group/oneclickvirt.virt.virt) action group, so C(module_defaults) can set O(node) once.
    membership: [oneclickvirt.virt.virt]
options:
  name:
    description: Name of the instance, matched exactly. It must be running; a stopped instance is an error.
    type: str
    required: true
  argv:
    description:
      - The command as a list of strings, one element per argument, passed to the program as they are (no shell,
        no splitting, no variable expansion inside the instance).
      - A single string is refused; use O(command) with O(shell=true) for a shell command line.
      - Exactly one of O(argv) and O(command) is required.
    type: raw
  command:
    description:
      - A shell command line, run as C(/bin/sh -c COMMAND) inside the instance. Only with O(shell=true).
    type: str
  shell:
    description:
      - Run O(command) through C(/bin/sh -c). Off by default, so nothing a value contains is ever read by a shell.
    type: bool
    default: false
  stdin:
    description:
      - Text given to the command on its standard input. It travels in the exec stream (API stream, websocket or
        the SSH channel), never on a command line on the node, so it is the place for secrets a command needs.
        Ansible still shows module arguments in verbose output, so set C(no_log) on the task when it holds one.
    type: str
  stdin_add_newline:
    description: Add a newline to O(stdin) when it does not end with one.
    type: bool
    default: true
  env:
    description:
      - Environment variables for the command, added to the instance's own. Values are delivered literally.
      - With the SSH transport on LXD and Incus they are C(--env) arguments of C(lxc exec) / C(incus exec), so
        they are visible on the node's command line; pass secrets on O(stdin) instead.
    type: dict
  cwd:
    description: Absolute path of the working directory inside the instance.
    type: str
    aliases: [chdir]
  user:
    description:
      - User to run the command as, a login name or a numeric uid. The instance's default user (usually
        C(root)) when omitted.
      - On LXD and Incus, whose exec API takes a numeric uid, a name is first looked up inside the instance
        (C(id -u NAME)); the command then runs with that uid and the daemon's default group (gid 0).
      - Proxmox VE (C(pct exec), the guest agent) runs commands as root; another user goes through
        C(runuser -u USER --) inside the guest (util-linux), and O(cwd) through C(env -C) (GNU coreutils).
    type: str
  creates:
    description:
      - A path inside the instance. When it exists, the command is not run (C(changed=false)).
      - Tested with C(test -e PATH) inside the instance, as O(user) and in O(cwd); a relative path is relative to
        O(cwd). Not a glob.
    type: str
  removes:
    description:
      - A path inside the instance. When it does not exist, the command is not run (C(changed=false)).
      - Tested like O(creates).
    type: str
  strip_empty_ends:
    description: Strip trailing newlines from RV(stdout) and RV(stderr), as M(ansible.builtin.command) does.
    type: bool
    default: true
  timeout:
    description:
      - Seconds the command may take. When they pass the task fails; the command may still be running inside
        the instance (it is not killed).
    type: int
    default: 120
notes:
  - Like M(ansible.builtin.command), this module reports a change every run unless O(creates) or O(removes) is
    given; that is one of the collection's documented exceptions to idempotence.
seealso:
  - module: ansible.builtin.command
  - module: oneclickvirt.virt.virt_instance_password
author:
  - oneclickvirt.virt contributors (@oneclickvirt)
"""

EXAMPLES = r"""
- name: Run a command with input and environment
  oneclickvirt.virt.virt_exec:
    node: "{{ docker_node }}"
    name: app-1
    argv: [sh, -c, 'cat > /etc/app.conf']
    stdin: "{{ lookup('ansible.builtin.template', 'app.conf.j2') }}"
    env:
      LANG: C.UTF-8

- name: Initialise once; the second run reports no change
  oneclickvirt.virt.virt_exec:
    node: "{{ lxd_node }}"
    name: db-1
    argv: [/usr/local/bin/init-db, --data, /var/lib/db]
    creates: /var/lib/db/.initialised
    user: postgres
    cwd: /var/lib/db

- name: A shell pipeline, asked for explicitly
  oneclickvirt.virt.virt_exec:
    node: "{{ incus_node }}"
    name: web-1
    shell: true
    command: "ps -eo comm | sort | uniq -c"
  register: processes

- name: Accept exit code 1 (grep found nothing)
  oneclickvirt.virt.virt_exec:
    node: "{{ docker_node }}"
    name: app-1
    argv: [grep, -q, ERROR, /var/log/app.log]
  register: grep_errors
  failed_when: grep_errors.rc not in [0, 1]
  changed_when: false
"""

RETURN = r"""
rc:
  description: Exit code of the command; V(0) when it was not run (check mode, O(creates) / O(removes)).
  returned: always
  type: int
  sample: 0
stdout:
  description: Standard output of the command.
  returned: always
  type: str
  sample: "hello"
stderr:
  description: Standard error of the command.
  returned: always
  type: str
stdout_lines:
  description: RV(stdout) split into lines.
  returned: always
  type: list
  elements: str
stderr_lines:
  description: RV(stderr) split into lines.
  returned: always
  type: list
  elements: str
cmd:
  description: The argument list that ran (or would run); with O(shell=true), C(["/bin/sh", "-c", COMMAND]).
  returned: always
  type: list
  elements: str
  sample: ["cat", "/etc/hostname"]
msg:
  description: Why the command did not run (check mode, O(creates), O(removes)), or C(non-zero return code).
  returned: always
  type: str
start:
  description: When the command started; null when it did not run.
  returned: always
  type: str
end:
  description: When the command ended; null when it did not run.
  returned: always
  type: str
delta:
  description: How long the command took; null when it did not run.
  returned: always
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
from ansible_collections.oneclickvirt.virt.plugins.module_utils.execution import build_exec_request, run_exec
from ansible_collections.oneclickvirt.virt.plugins.module_utils.node import NODE_OPTION


def main():
    module = AnsibleModule(
        argument_spec={
            "node": NODE_OPTION,
            "name": {"type": "str", "required": True},
            "argv": {"type": "raw"},
            "command": {"type": "str"},
            "shell": {"type": "bool", "default": False},
            "stdin": {"type": "str"},
            "stdin_add_newline": {"type": "bool", "default": True},
            "env": {"type": "dict"},
            "cwd": {"type": "str", "aliases": ["chdir"]},
            "user": {"type": "str"},
            "creates": {"type": "str"},
            "removes": {"type": "str"},
            "strip_empty_ends": {"type": "bool", "default": True},
            "timeout": {"type": "int", "default": 120},
        },
        required_one_of=[["argv", "command"]],
        mutually_exclusive=[["argv", "command"]],
        supports_check_mode=True,
    )

    def work(provider):
        return run_exec(provider, build_exec_request(module.params), module.check_mode)

    run_module(module, work)


if __name__ == "__main__":
    main()
