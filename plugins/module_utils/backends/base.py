# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Provider interface: what every backend does, written once per backend against its own REST model.

A backend never builds Ansible results and never chooses a transport: it sends requests through
`self.router`, which applies the node's execution rule.
"""

from __future__ import annotations

import secrets
import string

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import InvalidSpec, Unsupported, VirtError
from ansible_collections.oneclickvirt.virt.plugins.module_utils.models import STATUSES
from ansible_collections.oneclickvirt.virt.plugins.module_utils.rules import Router

PASSWORD_ALPHABET = string.ascii_letters + string.digits + "!#%+,-.:=@^_"


def generate_password(length=24):
    if length < 12:
        raise InvalidSpec("length: generated passwords need at least 12 characters")
    while True:
        password = "".join(secrets.choice(PASSWORD_ALPHABET) for dummy in range(length))
        classes = (string.ascii_lowercase, string.ascii_uppercase, string.digits, "!#%+,-.:=@^_")
        if all(any(char in chars for char in password) for chars in classes):
            return password


def count_statuses(statuses):
    """Instances by normalised status ({running: 2, stopped: 1, ..., total: 3}): every status is present."""
    counts = dict.fromkeys(STATUSES, 0)
    for status in statuses:
        counts[status if status in counts else "unknown"] += 1
    counts["total"] = sum(counts.values())
    return counts


class Provider:
    """Base of every backend. Subclasses set `backend` and implement the methods that raise NotImplementedError."""

    backend = "base"
    instance_types = ("container",)
    # Fields of InstanceSpec that this backend can change on an existing instance without recreating it.
    in_place_fields = ("cpu", "memory")
    # Seconds a long operation may take; virt_instance sets the module's `timeout` here for each run.
    timeout = 120

    def __init__(self, node, warn=None):
        self.node = node
        self.warn = warn or (lambda message: None)
        self.router = Router(node, self.make_api_client, self.make_ssh_client, self.warn)

    # -- transports ------------------------------------------------------------------------------------
    def make_api_client(self):
        raise NotImplementedError

    def make_ssh_client(self):
        raise NotImplementedError

    @property
    def transport(self):
        return self.router.transport

    def close(self):
        self.router.close()

    # -- reads -----------------------------------------------------------------------------------------
    def version(self):
        raise NotImplementedError

    def list_instances(self):
        raise NotImplementedError

    def get_instance(self, name):
        """The instance with exactly this name, or None."""
        raise NotImplementedError

    def find_instance(self, reference):
        """The instance a virt_portmap `instance` names: its exact name (a backend may also take its own id)."""
        return self.get_instance(reference)

    def list_images(self):
        raise NotImplementedError

    def node_facts(self):
        """The node itself: NodeFacts (version, hostname, supported types, instance counts, resources the
        backend's API knows, and the storage pool's path for `df`). Used by virt_node_info and the health role;
        a backend without it still gets the ssh / api / service checks."""
        raise NotImplementedError

    # -- writes ----------------------------------------------------------------------------------------
    def check_type(self, spec):
        """A type this backend cannot run fails before anything is sent."""
        if spec.type not in self.instance_types:
            raise Unsupported(f"type: {spec.type!r} instances are not supported on {self.backend} node "
                              f"{self.node.name}; supported: {', '.join(self.instance_types)}")

    def check_spec(self, spec):
        """Refuse what this backend or node cannot do, before anything is written (may read)."""
        self.check_type(spec)

    def check_inside_road(self, spec):
        """A password or keys are set inside the instance after it is created: a backend whose road for that is
        closed under the node's rule says so here, before anything is created (none is by default)."""

    def drift(self, instance, spec):
        """Fields whose current value differs from what was asked: {field: (current, wanted)}."""
        raise NotImplementedError

    def create_instance(self, spec, events):
        raise NotImplementedError

    def update_instance(self, instance, changes):
        """Apply in-place changes ({field: wanted}) to an existing instance."""
        raise NotImplementedError

    def restart_needed(self, instance, changes):
        """Which of these in-place changes a running instance takes only at its next start (none by default)."""
        return []

    def start(self, instance, timeout):
        raise NotImplementedError

    def stop(self, instance, timeout, force=False):
        raise NotImplementedError

    def restart(self, instance, timeout):
        raise NotImplementedError

    def delete(self, instance, timeout):
        raise NotImplementedError

    def exec(self, instance, argv, stdin=None, env=None, cwd=None, user=None, timeout=None):
        """Run argv inside a running instance; returns ExecResult."""
        raise NotImplementedError

    # -- built on exec: the same for every backend that can run a command inside ----------------------
    def set_password(self, instance, user, password, timeout=None):
        """chpasswd inside the instance, the password on stdin: never in any argv."""
        result = self.exec(instance, ["chpasswd"], stdin=f"{user}:{password}\n", timeout=timeout)
        if result.rc != 0:
            detail = (result.stderr or result.stdout).strip().replace(password, "********")
            missing = result.rc in (126, 127) or "not found" in detail
            raise VirtError(f"setting the password of {user!r} in {instance.name} failed (rc {result.rc}): "
                            f"{detail or 'chpasswd failed'}"
                            + ("; the image needs chpasswd (the Debian image has it)" if missing else ""))

    def reset_password(self, instance, user, length=24, timeout=None):
        password = generate_password(length)
        self.set_password(instance, user, password, timeout)
        return password

    def authorized_keys(self, instance, user="root", timeout=None):
        """The keys in the user's authorized_keys inside the instance (a read)."""
        home = "/root" if user == "root" else f"/home/{user}"
        result = self.exec(instance, ["cat", f"{home}/.ssh/authorized_keys"], timeout=timeout)
        return [line.strip() for line in result.stdout.splitlines() if line.strip()] if result.rc == 0 else []

    def add_authorized_keys(self, instance, keys, user="root", timeout=None):
        """Append keys to authorized_keys (keys on stdin; the script is fixed text, never built from input)."""
        home = "/root" if user == "root" else f"/home/{user}"
        script = ('umask 077; mkdir -p "$1/.ssh" && cat >> "$1/.ssh/authorized_keys" '
                  '&& chmod 600 "$1/.ssh/authorized_keys"')
        result = self.exec(instance, ["sh", "-c", script, "sh", home], stdin="".join(f"{key}\n" for key in keys),
                           timeout=timeout)
        if result.rc != 0:
            raise VirtError(f"writing authorized_keys of {user!r} in {instance.name} failed: "
                            f"{(result.stderr or result.stdout).strip()}")


def image_code(module_name, *names):
    """Names from module_utils `images` or `image_transfer`, for a backend's image methods, imported by name.

    Only virt_image and virt_image_info run those methods, and both modules import `images` (and so
    `image_transfer`) themselves. Ansible's module packer follows import statements only, so importing them by
    name here keeps about 40 KB of source out of the payload of every other module (virt_instance, virt_exec,
    ...), which Ansible would otherwise read, parse and ship on every task. One value per name.
    """
    import importlib

    module = importlib.import_module(f"ansible_collections.oneclickvirt.virt.plugins.module_utils.{module_name}")
    values = tuple(getattr(module, name) for name in names)
    return values[0] if len(values) == 1 else values
