# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backends registered by name, imported lazily: a docker task never runs another backend's code.

The imports sit inside small loader functions: Ansible still finds them when it packs a module
(it reads every import of the source), but Python runs only the one the node's type asks for.
"""

from __future__ import annotations

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import InvalidSpec


def _docker():
    from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends.docker import DockerProvider
    return DockerProvider


def _lxd():
    from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends.lxd import LxdProvider
    return LxdProvider


def _incus():
    from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends.incus import IncusProvider
    return IncusProvider


def _proxmox():
    from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends.proxmox import ProxmoxProvider
    return ProxmoxProvider


_LOADERS = {"docker": _docker, "lxd": _lxd, "incus": _incus, "proxmox": _proxmox}


def register(name, loader):
    """Add a backend: `loader()` returns its Provider class. Used by each backend's entry above and by tests."""
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
