# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""virt_instance_password runs with its node's backend only in its payload (see plugins/plugin_utils/payload.py)."""

from __future__ import annotations

from ansible_collections.oneclickvirt.virt.plugins.plugin_utils.payload import BackendAction


class ActionModule(BackendAction):
    pass
