# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Incus: the shared LXD/Incus provider, with Incus's names."""

from __future__ import annotations

from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends.lxd_common import LxdLikeProvider


class IncusProvider(LxdLikeProvider):
    backend = "incus"
    cli = "incus"  # `incus query`, `incus exec`, `incus monitor` on the node
    default_socket = "/var/lib/incus/unix.socket"
