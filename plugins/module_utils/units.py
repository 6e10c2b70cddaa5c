# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shared vocabulary's values: sizes, cpu, names. Parsed once, the same way for every backend."""

from __future__ import annotations

import math
import re

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import InvalidSpec

MIB = 1024 * 1024
# Binary units, with Docker's single letters read as binary too; KB/MB/GB/TB are decimal.
_UNIT_BYTES = {
    "": MIB,  # a bare number in a string is MiB, like an integer
    "b": 1,
    "k": 1024, "kib": 1024,
    "m": MIB, "mib": MIB,
    "g": 1024 ** 3, "gib": 1024 ** 3,
    "t": 1024 ** 4, "tib": 1024 ** 4,
    "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3, "tb": 1000 ** 4,
}
MAX_MIB = 1024 ** 3  # 1 PiB: anything larger is a typo, not a machine
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*\Z")
# Instance names: what Docker, LXD, Incus and Proxmox all accept as a hostname-like name.
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")


def size_to_mib(value, option):
    """An integer is MiB; a string is a number with a unit. Returns integer MiB (rounded up)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidSpec(f"{option}: {value!r} is not a size; use an integer (MiB) or a string such as '512MiB' or '2GiB'")
    if isinstance(value, int):
        number, unit = value, ""
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise InvalidSpec(f"{option}: {value!r} is not a size; use an integer (MiB) or a number with a unit "
                              "(KiB, MiB, GiB, TiB, K, M, G, T, KB, MB, GB, TB), e.g. '512MiB'")
        number, unit = float(match.group(1)), match.group(2).lower()
        if unit not in _UNIT_BYTES:
            raise InvalidSpec(f"{option}: unknown unit {match.group(2)!r} in {value!r}; use one of "
                              "KiB, MiB, GiB, TiB (or K, M, G, T), KB, MB, GB, TB")
    size_bytes = number * _UNIT_BYTES[unit]
    if size_bytes > MAX_MIB * MIB:  # also what float overflow (a 400-digit number) becomes: inf
        raise InvalidSpec(f"{option}: {str(value)[:40]!r} is larger than 1 PiB; give a real size such as '2GiB'")
    mib = int(-(-size_bytes // MIB))
    if mib <= 0:
        raise InvalidSpec(f"{option}: {value!r} must be at least 1 MiB")
    return mib


def cpu_value(value, option="cpu"):
    """A positive number of cores. Fractions are kept; a backend that cannot enforce them says so."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidSpec(f"{option}: {value!r} is not a number of cores; use a positive number such as 1 or 0.5")
    try:
        cores = float(value)
    except (TypeError, ValueError):
        raise InvalidSpec(f"{option}: {value!r} is not a number of cores; use a positive number such as 1 or 0.5")
    if math.isnan(cores) or cores <= 0 or cores > 4096:
        raise InvalidSpec(f"{option}: {value!r} must be a positive number of cores (e.g. 1, 2 or 0.5)")
    return int(cores) if cores == int(cores) else cores


def check_name(value, option="name"):
    """Names are matched exactly, and must be safe everywhere: letters, digits and inner hyphens."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidSpec(f"{option}: {value!r} is not a valid instance name; use 1-63 letters, digits and "
                          "hyphens, starting and ending with a letter or digit (e.g. 'web-1')")
    return value


def check_port(value, option):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InvalidSpec(f"{option}: {value!r} is not a port; use an integer from 1 to 65535")
    return value
