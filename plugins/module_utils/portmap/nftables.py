# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The nftables method: the collection's own table `inet oneclickvirt`, one DNAT rule per mapping.

The table's prerouting chain hooks in just before the usual dstnat priority, so a mapping is seen before
Docker's own DNAT chains. Every change of a run goes to the node as one `nft -f -` transaction (atomic); the
table exists only while it holds a rule. Where the host's FORWARD policy drops DNAT'd traffic (Docker), an
accept in nftables would not help (a drop in any base chain wins), so the ACCEPT goes into the iptables
OCV-FORWARD chain (see iptables.py), as for the iptables method.
"""

from __future__ import annotations

import re

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import BackendError, Unsupported
from ansible_collections.oneclickvirt.virt.plugins.module_utils.portmap import Mapping, endpoint, parse_tag, split_endpoint

TABLE = "inet oneclickvirt"
CHAIN = "prerouting"
CHAIN_SPEC = "{ type nat hook prerouting priority -110; policy accept; }"
_RULE = re.compile(
    r"^\s*(?:meta nfproto (?P<nfproto>ipv4|ipv6) fib daddr type local|(?P<family>ip6?) daddr (?P<listen>\S+))"
    r" (?P<protocol>tcp|udp) dport (?P<host_port>\d+) dnat (?:ip6?) to (?P<target>\S+)"
    r' comment "(?P<tag>[^"]+)"(?: # handle (?P<handle>\d+))?\s*$')


class Table:
    """The collection's nft table as the node lists it (`nft -a list table`), rules with their handles."""

    def __init__(self, text, available=True):
        self.available = available
        self.text = text
        self.exists = bool(text.strip())
        self.rules = []  # (Mapping, handle, tag)
        # Every rule of the table, ours or not, so that an emptied table is told apart from a foreign rule.
        self.rule_count = sum(1 for line in text.splitlines()
                              if "# handle" in line and not line.strip().startswith(("table ", "chain ")))
        for line in text.splitlines():
            match = _RULE.match(line)
            if not match:
                continue
            owner = parse_tag(match.group("tag"))
            if owner is None:
                continue
            node, instance, protocol, host_port = owner
            target, guest_port = split_endpoint(match.group("target"))
            family = match.group("family") or ("ip" if match.group("nfproto") == "ipv4" else "ip6")
            mapping = Mapping(node=node, instance=instance, protocol=protocol, host_port=host_port,
                              guest_port=guest_port, method="nftables", ip_version=6 if family == "ip6" else 4,
                              listen_address=match.group("listen"), target_address=target)
            self.rules.append((mapping, match.group("handle"), match.group("tag")))

    @classmethod
    def from_result(cls, result):
        """From the output of `nft -a list table inet oneclickvirt` run by NodeShell.run_many."""
        if result.rc == 127:
            return cls("", available=False)
        if result.rc != 0:
            if "No such file or directory" in result.stdout:
                return cls("")  # the table does not exist: no mapping of this method on the node
            raise BackendError(f"nft failed on the node: {result.stdout.strip()}")
        return cls(result.stdout)

    def persisted_text(self):
        """The table as `nft -f` restores it: declared, deleted, then defined again (atomic, in one file)."""
        head = f"table {TABLE}\ndelete table {TABLE}\n"
        if not self.exists:
            return head
        return head + re.sub(r" # handle \d+", "", self.text)

    def mappings(self):
        return [rule[0] for rule in self.rules]

    def handles(self, tag, ip_version):
        return [handle for mapping, handle, rule_tag in self.rules
                if rule_tag == tag and mapping.ip_version == ip_version]


def rule(mapping):
    if mapping.ip_version == 4:
        match = f"ip daddr {mapping.listen_address}" if mapping.listen_address else \
            "meta nfproto ipv4 fib daddr type local"
        family = "ip"
    else:
        match = f"ip6 daddr {mapping.listen_address}" if mapping.listen_address else \
            "meta nfproto ipv6 fib daddr type local"
        family = "ip6"
    return (f"{match} {mapping.protocol} dport {mapping.host_port} dnat {family} to "
            f"{endpoint(mapping.target_address, mapping.guest_port)} comment \"{mapping.tag}\"")


class Batch:
    def __init__(self, table):
        self.table = table
        self.lines = []
        self.count = table.rule_count
        self.exists = table.exists

    def add(self, mapping):
        if not self.table.available:
            raise Unsupported("nft is not installed on the node; use method iptables (or install nftables)")
        if not self.exists:
            self.lines += [f"add table {TABLE}", f"add chain {TABLE} {CHAIN} {CHAIN_SPEC}"]
            self.exists = True
        self.lines.append(f"add rule {TABLE} {CHAIN} {rule(mapping)}")
        self.count += 1

    def remove(self, tag, ip_version):
        for handle in self.table.handles(tag, ip_version):
            line = f"delete rule {TABLE} {CHAIN} handle {handle}"
            if line not in self.lines:
                self.lines.append(line)
                self.count -= 1

    def text(self):
        if not self.lines:
            return ""
        lines = list(self.lines)
        if self.count == 0:
            lines = [f"delete table {TABLE}"]  # nothing of ours is left: the whole table goes, in one step
        return "\n".join(lines) + "\n"

    def command(self):
        """(name, argv, stdin) for NodeShell.run_many, or None when there is nothing to change."""
        text = self.text()
        return ("write-nft", ["nft", "-f", "-"], text) if text else None
