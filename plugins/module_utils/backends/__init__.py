# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backends registered by name and imported by name, at run time: a docker task never runs another backend's code.

No import statement names a backend here. Ansible packs into a module's payload every file its source imports,
and parses all of them on the controller for every task; so the collection's action plugin
(plugins/plugin_utils/payload.py) packs only the backend of the task's node, from `PROVIDERS` below.
"""

from __future__ import annotations

import importlib

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import InvalidSpec, VirtError

# node type -> (module under backends/, its Provider class)
PROVIDERS = {
    "docker": ("docker", "DockerProvider"),
    "lxd": ("lxd", "LxdProvider"),
    "incus": ("incus", "IncusProvider"),
    "proxmox": ("proxmox", "ProxmoxProvider"),
}


def _loader(module_name, class_name):
    def load():
        path = f"{__name__}.{module_name}"
        try:
            module = importlib.import_module(path)
        except ModuleNotFoundError as error:
            if error.name != path:
                raise
            raise VirtError(f"the {module_name} backend is not in this module's payload: the collection's action "
                            f"plugin of the same name packs it, so run the module as oneclickvirt.virt.<module>")
        return getattr(module, class_name)
    return load


_LOADERS = {name: _loader(*where) for name, where in PROVIDERS.items()}


def register(name, loader):
    """Add a backend: `loader()` returns its Provider class. Tests use it for a backend of their own."""
    _LOADERS[name] = loader


def registered():
    return sorted(_LOADERS)


def provider_for(node, warn=None):
    """The Provider of the node's backend, connected lazily (nothing is opened until the first request)."""
    loader = _LOADERS.get(node.type)
    if loader is None:
        raise InvalidSpec(f"node.type: no backend {node.type!r} in this collection; available: "
                          f"{', '.join(registered())}")
    return loader()(node, warn=warn)
