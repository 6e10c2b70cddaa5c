# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""LXD: the shared LXD/Incus provider, with LXD's names."""

from __future__ import annotations

from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends.lxd_common import LxdLikeProvider


class LxdProvider(LxdLikeProvider):
    backend = "lxd"
    cli = "lxc"  # `lxc query`, `lxc exec`, `lxc monitor` on the node
    default_socket = "/var/lib/lxd/unix.socket"  # the snap's is /var/snap/lxd/common/lxd/unix.socket: give api.url
