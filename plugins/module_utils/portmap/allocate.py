# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host ports from the node's port_range: skip what listens on the node and what is already mapped.

A port counts as taken whatever its protocol or address (a TCP listener also keeps the UDP port back): a
mapping then never collides with a service that widens its listener later, and `protocol: both` always finds
the same port free for both.
"""

from __future__ import annotations

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import Conflict


def listening_ports(text):
    """Every port a socket listens on (TCP) or is bound to (UDP) on the node, from the output of `ss -Hlntu`."""
    ports = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        port = fields[4].rsplit(":", 1)[-1]
        if port.isdigit():
            ports.add(int(port))
    return ports


def pick_block(port_range, count, taken, node_name):
    """The lowest `count` consecutive free ports of the range."""
    start, end = port_range
    candidate = start
    while candidate + count - 1 <= end:
        busy = [port for port in range(candidate, candidate + count) if port in taken]
        if not busy:
            return candidate
        candidate = busy[-1] + 1
    what = "port" if count == 1 else f"block of {count} consecutive ports"
    raise Conflict(f"node {node_name}: no free {what} left in port_range {start}-{end} (ports listening on the "
                   "node or already mapped are skipped); widen node.port_range or remove mappings")
