# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The action behind every module of the collection: the module travels with its node's backend only.

Ansible packs into a module's payload every file the module's source imports, and parses each of them on the
controller, once per module in each ansible process. Packing virt_instance with all four backends took 0.25 s
on the lab, with Docker's alone 0.16 s (ansible.builtin.ping: 0.12 s). The module's own code loads its backend
by name at run time (module_utils/backends), so no import statement in it names one; here, where the task's
arguments are known, the module runs from a copy of its source that ends with one import statement: the
backend of `node.type`.
When that type is not one of the collection's (a mistyped or missing `node.type`), the copy imports every
backend and the module itself reports what is wrong.
"""

from __future__ import annotations

import os
import tempfile

from ansible import constants as C
from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash

from ansible_collections.oneclickvirt.virt.plugins.module_utils import backends as backends_package
from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends import PROVIDERS
from ansible_collections.oneclickvirt.virt.plugins.plugin_utils.collector import collector_paused


def backends_of(node):
    """The backends a task on this node needs: its type's, or all of them when the type is not one we know."""
    kind = node.get("type") if isinstance(node, dict) else None
    return (kind,) if isinstance(kind, str) and kind in PROVIDERS else tuple(PROVIDERS)


def payload_source(module_source, backends):
    """The module's source with one import statement per backend at its end, for Ansible's packer to follow.

    They come after `main()`, which always exits, so Python never runs them: the module imports its backend
    itself, by name, when it builds the node's provider.
    """
    package = backends_package.__name__
    lines = [f"from {package} import {PROVIDERS[kind][0]}  # noqa: E402,F401" for kind in backends]
    return (module_source.rstrip("\n") + "\n\n\n# Packed for this task by oneclickvirt.virt's action plugin.\n"
            + "\n".join(lines) + "\n")


def payload_name(module_name, backends):
    """A module name no user module takes: the module's own name, then the backends it carries."""
    return "_".join(("oneclickvirt_payload", module_name, *backends))


class _Found:
    """What ActionBase._configure_module reads of a module lookup (ansible-core 2.18 and 2.19)."""

    resolved = True
    redirect_list = ()

    def __init__(self, path):
        self.plugin_resolved_path = path


class _PayloadLookup:
    """The plugin loaders, except that the payload copy's name finds the copy.

    The copy is no plugin the loaders know: as a name outside any collection, Ansible would look it up in the
    legacy module folders, and that lookup loads ansible.builtin's routing table (about 80 ms in a process
    that had not loaded it yet).
    """

    def __init__(self, loaders, name, path):
        self._loaders, self._name, self._path = loaders, name, path

    def __getattr__(self, attribute):
        return getattr(self._loaders, attribute)

    @property
    def module_loader(self):
        return self

    def find_plugin_with_context(self, name, *args, **kwargs):
        if name == self._name:
            return _Found(self._path)
        return self._loaders.module_loader.find_plugin_with_context(name, *args, **kwargs)


class BackendAction(ActionBase):
    """Runs the task's module as ansible.builtin.normal does, from the copy that carries the node's backend."""

    _supports_check_mode = True
    _supports_async = True
    _payload = (None, None)  # the copy's module name and path, once run() has written it

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp  # unused, as in every action since ansible-core 2.10
        wrap_async = self._task.async_val and not self._connection.has_native_async
        self._payload = self._write_payload()
        result = merge_hash(result, self._execute_module(module_name=self._payload[0], task_vars=task_vars,
                                                         wrap_async=wrap_async))
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    def _update_module_args(self, module_name, module_args, task_vars, **kwargs):
        # The module names itself in its messages ("Unsupported parameters for (...) module") with this value:
        # the user's name for it, not the payload copy's.
        if module_name == self._payload[0]:
            module_name = self._task.resolved_action
        super()._update_module_args(module_name, module_args, task_vars, **kwargs)

    def _configure_module(self, module_name, module_args, task_vars):
        loaders = self._shared_loader_obj
        self._shared_loader_obj = _PayloadLookup(loaders, *self._payload)
        try:
            # Packing virt_instance for docker took 0.12 s this way, 0.19 s with the collector on.
            with collector_paused():
                return super()._configure_module(module_name, module_args, task_vars)
        finally:
            self._shared_loader_obj = loaders

    def _write_payload(self):
        """Write the payload copy of the task's module (once per ansible run): its module name and path."""
        found = self._shared_loader_obj.module_loader.find_plugin_with_context(
            self._task.resolved_action, collection_list=self._task.collections)
        backends = backends_of(self._task.args.get("node"))
        name = payload_name(os.path.splitext(os.path.basename(found.plugin_resolved_path))[0], backends)
        # Ansible's own temporary folder of this run, removed when the run ends.
        folder = os.path.join(C.DEFAULT_LOCAL_TMP, "oneclickvirt_payloads")
        path = os.path.join(folder, name + ".py")
        if not os.path.exists(path):
            os.makedirs(folder, exist_ok=True)
            with open(found.plugin_resolved_path, encoding="utf-8") as module_file:
                source = payload_source(module_file.read(), backends)
            # Forks running the same task at once each write a whole file; the last rename wins, all are equal.
            handle, partial = tempfile.mkstemp(dir=folder, suffix=".partial")
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(source)
            os.replace(partial, path)
        return name, path
