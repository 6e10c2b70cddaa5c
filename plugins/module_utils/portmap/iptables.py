# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The iptables method, and the forward acceptance that DNAT needs where the FORWARD policy drops.

Own chains only: `OCV-PREROUTING` (nat) holds one DNAT rule per mapping, `OCV-FORWARD` (filter) one ACCEPT
per DNAT'd mapping where the host's FORWARD would drop it (Docker sets the policy to DROP). The jumps into them
carry the comment `ocv:hook`: PREROUTING -> OCV-PREROUTING, and DOCKER-USER (where Docker made one, else
FORWARD) -> OCV-FORWARD. A jump and its chain exist only while the chain holds a rule.

Every change of a run goes to the node as one `iptables-restore --noflush` batch per family: atomic, and it
touches only the lines it names (no chain of anyone else is declared, so none is flushed).
"""

from __future__ import annotations

import shlex

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import BackendError, Unsupported
from ansible_collections.oneclickvirt.virt.plugins.module_utils.portmap import (
    HOOK_COMMENT, Mapping, endpoint, parse_tag, split_endpoint)

NAT_CHAIN = "OCV-PREROUTING"
FORWARD_CHAIN = "OCV-FORWARD"
OWN_CHAINS = {"nat": NAT_CHAIN, "filter": FORWARD_CHAIN}
TOOLS = {4: ("iptables", "iptables-save", "iptables-restore"),
         6: ("ip6tables", "ip6tables-save", "ip6tables-restore")}


def _option(tokens, name):
    for index, token in enumerate(tokens[:-1]):
        if token == name:
            return tokens[index + 1]
    return None


class Ruleset:
    """One family's tables as `iptables-save` prints them: chains with policies, and rules in order."""

    def __init__(self, family, text, available=True):
        self.family = family
        self.available = available
        self.chains = {}  # table -> {chain: policy}
        self.rules = {}  # table -> [(chain, tokens, line)]
        table = None
        for line in text.splitlines():
            if line.startswith("*"):
                table = line[1:].strip()
                self.chains[table], self.rules[table] = {}, []
            elif table and line.startswith(":"):
                name, policy = line[1:].split()[:2]
                self.chains[table][name] = policy
            elif table and line.startswith("-A "):
                tokens = shlex.split(line)
                self.rules[table].append((tokens[1], tokens, line))

    @classmethod
    def from_result(cls, family, result):
        """From the output of `iptables-save` / `ip6tables-save` run by NodeShell.run_many."""
        if result.rc == 127:
            return cls(family, "", available=False)
        if result.rc != 0:
            raise BackendError(f"{TOOLS[family][1]} failed on the node: {result.stdout.strip()}")
        return cls(family, result.stdout)

    def has_chain(self, table, chain):
        return chain in self.chains.get(table, {})

    def chain_rules(self, table, chain):
        return [(tokens, line) for owner, tokens, line in self.rules.get(table, []) if owner == chain]

    def hooks(self, table=None):
        """(table, parent chain, own chain, line) of every jump into an own chain."""
        found = []
        for name, rules in self.rules.items():
            if table and name != table:
                continue
            for chain, tokens, line in rules:
                target = _option(tokens, "-j")
                if target == OWN_CHAINS.get(name) and _option(tokens, "--comment") == HOOK_COMMENT:
                    found.append((name, chain, target, line))
        return found

    def forward_parent(self):
        """Where DNAT'd traffic needs an ACCEPT: DOCKER-USER when Docker made one, FORWARD when it drops, else nowhere."""
        filter_chains = self.chains.get("filter", {})
        if "DOCKER-USER" in filter_chains:
            return "DOCKER-USER"
        if filter_chains.get("FORWARD") in ("DROP", "REJECT"):
            return "FORWARD"
        return None

    def mappings(self):
        """The mappings of the iptables method: DNAT rules in OCV-PREROUTING with an owner tag."""
        found = []
        for tokens, dummy in self.chain_rules("nat", NAT_CHAIN):
            owner = parse_tag(_option(tokens, "--comment"))
            destination = _option(tokens, "--to-destination")
            if owner is None or destination is None:
                continue
            node, instance, protocol, host_port = owner
            target, guest_port = split_endpoint(destination)
            listen = _option(tokens, "-d")
            found.append(Mapping(node=node, instance=instance, protocol=protocol, host_port=host_port,
                                 guest_port=guest_port, method="iptables", ip_version=self.family,
                                 listen_address=listen.split("/")[0] if listen else None, target_address=target))
        return found

    def forward_tags(self):
        """Owner tags of the ACCEPT rules in OCV-FORWARD."""
        return {_option(tokens, "--comment") for tokens, dummy in self.chain_rules("filter", FORWARD_CHAIN)}

    def complete(self, mapping):
        """Whether the iptables side of a DNAT mapping is whole: hooked, and accepted where FORWARD would drop it."""
        if mapping.method == "iptables" and not self.hooks("nat"):
            return False
        if self.forward_parent() is None:
            return True
        return bool(self.hooks("filter")) and mapping.tag in self.forward_tags()

    def tagged(self, tag):
        """(table, chain, line) of every rule in an own chain that carries this owner tag."""
        return [(table, chain, line) for table, chain in OWN_CHAINS.items()
                for tokens, line in self.chain_rules(table, chain) if _option(tokens, "--comment") == tag]

    def dnat_ports(self):
        """Host ports that any DNAT rule of the nat table catches (Docker's published ports, anyone's)."""
        ports = set()
        for dummy, tokens, dummy in self.rules.get("nat", []):
            if _option(tokens, "-j") == "DNAT" and (_option(tokens, "--dport") or "").isdigit():
                ports.add(int(_option(tokens, "--dport")))
        return ports

    def own_text(self):
        """The own chains and their rules, in iptables-restore form (declaring a chain flushes it there)."""
        lines = []
        for table, chain in OWN_CHAINS.items():
            if not self.has_chain(table, chain):
                continue
            lines += [f"*{table}", f":{chain} - [0:0]"]
            lines += [line for dummy, line in self.chain_rules(table, chain)]
            lines.append("COMMIT")
        return "\n".join(lines) + "\n" if lines else ""


def nat_rule(mapping):
    host = "32" if mapping.ip_version == 4 else "128"
    if mapping.listen_address:
        match = f"-d {mapping.listen_address}/{host}"
    else:
        match = "-m addrtype --dst-type LOCAL"
    return (f"-A {NAT_CHAIN} {match} -p {mapping.protocol} -m {mapping.protocol} --dport {mapping.host_port} "
            f"-m comment --comment \"{mapping.tag}\" -j DNAT "
            f"--to-destination {endpoint(mapping.target_address, mapping.guest_port)}")


def forward_rule(mapping):
    return (f"-A {FORWARD_CHAIN} -p {mapping.protocol} -m conntrack --ctstate DNAT "
            f"--ctreplsrc {mapping.target_address} --ctorigdstport {mapping.host_port} "
            f"--ctreplsrcport {mapping.guest_port} -m comment --comment \"{mapping.tag}\" -j ACCEPT")


class Batch:
    """The changes of one run to one family, as one iptables-restore --noflush input."""

    def __init__(self, ruleset):
        self.ruleset = ruleset
        self.lines = {"nat": [], "filter": []}
        self.counts = {table: len(ruleset.chain_rules(table, chain)) for table, chain in OWN_CHAINS.items()}
        self.exists = {table: ruleset.has_chain(table, chain) for table, chain in OWN_CHAINS.items()}
        self.hooked = {table: bool(ruleset.hooks(table)) for table in OWN_CHAINS}

    def _ensure(self, table, parent):
        chain = OWN_CHAINS[table]
        if not self.exists[table]:
            self.lines[table].append(f"-N {chain}")
            self.exists[table] = True
        if not self.hooked[table]:
            self.lines[table].append(f"-I {parent} 1 -m comment --comment \"{HOOK_COMMENT}\" -j {chain}")
            self.hooked[table] = True

    def _check_tools(self):
        if not self.ruleset.available:
            tool = TOOLS[self.ruleset.family][0]
            raise Unsupported(f"{tool} is not installed on the node; use method nftables (or install iptables)")

    def add_dnat(self, mapping):
        self._check_tools()
        self._ensure("nat", "PREROUTING")
        self.lines["nat"].append(nat_rule(mapping))
        self.counts["nat"] += 1

    def add_forward(self, mapping):
        parent = self.ruleset.forward_parent()
        if parent is None:
            return
        self._ensure("filter", parent)
        self.lines["filter"].append(forward_rule(mapping))
        self.counts["filter"] += 1

    def remove(self, tag):
        """Delete every rule of the own chains that carries this tag (once, however often it is asked)."""
        for table, dummy, line in self.ruleset.tagged(tag):
            delete = "-D" + line[2:]
            if delete not in self.lines[table]:
                self.lines[table].append(delete)
                self.counts[table] -= 1

    def text(self):
        """The restore input; own chains left empty lose their jumps and go away."""
        blocks = []
        for table, chain in OWN_CHAINS.items():
            lines = list(self.lines[table])
            if not lines:
                continue
            if self.counts[table] == 0 and self.exists[table]:
                lines += ["-D" + hook[3][2:] for hook in self.ruleset.hooks(table)]
                lines.append(f"-X {chain}")
            blocks.append("\n".join([f"*{table}"] + lines + ["COMMIT"]))
        return "\n".join(blocks) + "\n" if blocks else ""

    def command(self):
        """(name, argv, stdin) for NodeShell.run_many, or None when there is nothing to change."""
        text = self.text()
        tool = TOOLS[self.ruleset.family][2]
        return (f"write-{tool}", [tool, "-w", "30", "--noflush"], text) if text else None
