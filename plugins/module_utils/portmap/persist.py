# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's own rules files on the node, and the script (and systemd unit) that restores them.

After every change, virt_portmap writes what is live in its own chains and table to PERSIST_DIR:

- `iptables.rules` / `ip6tables.rules`: the own chains in iptables-restore form. Restored with `--noflush`:
  declaring an own chain flushes that chain alone, then its rules are added; no other chain is named.
- `hooks`: the jumps into the own chains (`<tool> <table> <parent chain> <own chain>`), put back only where
  missing (`-C` first), at the top of their parent chain.
- `nftables.rules`: the table `inet oneclickvirt`, declared, deleted and defined again in one `nft -f` (atomic).
- `descriptions.json`: the descriptions of the iptables / nftables mappings.
- `restore`: the script that does the above; `oneclickvirt-portmap.service`: a oneshot unit that runs it at boot.

Proxy devices (LXD/Incus) and native publishing (Docker) persist in the daemons' own configuration.
"""

from __future__ import annotations

import json

from ansible_collections.oneclickvirt.virt.plugins.module_utils.portmap.iptables import TOOLS

PERSIST_DIR = "/etc/oneclickvirt/portmap"
UNIT_NAME = "oneclickvirt-portmap.service"

RESTORE_SCRIPT = """#!/bin/sh
# Restores the port mappings of oneclickvirt.virt. Written by virt_portmap: do not edit, it is rewritten on
# every change. Only the collection's own chains (OCV-PREROUTING, OCV-FORWARD), the jumps into them (comment
# "ocv:hook") and its own nft table (inet oneclickvirt) are touched: no other rule is flushed or rewritten.
dir=__DIR__
status=0
for tool in iptables ip6tables; do
  if [ -s "$dir/$tool.rules" ] && command -v "$tool-restore" >/dev/null 2>&1; then
    "$tool-restore" -w 30 --noflush < "$dir/$tool.rules" || status=1
  fi
done
if [ -s "$dir/hooks" ]; then
  while read -r tool table parent chain; do
    [ -n "$chain" ] || continue
    if ! "$tool" -w 30 -t "$table" -S "$parent" >/dev/null 2>&1; then
      echo "oneclickvirt-portmap: $tool chain $parent ($table) does not exist (yet): jump to $chain not restored" >&2
      status=1
      continue
    fi
    "$tool" -w 30 -t "$table" -C "$parent" -m comment --comment ocv:hook -j "$chain" 2>/dev/null ||
      "$tool" -w 30 -t "$table" -I "$parent" 1 -m comment --comment ocv:hook -j "$chain" || status=1
  done < "$dir/hooks"
fi
if [ -s "$dir/nftables.rules" ] && command -v nft >/dev/null 2>&1; then
  nft -f "$dir/nftables.rules" || status=1
fi
exit $status
"""

UNIT = """[Unit]
Description=Restore the port mappings of oneclickvirt.virt (its own chains and table only)
Documentation=https://github.com/oneclickvirt/oneclickvirt.virt/blob/main/docs/portmap.md
# Docker creates DOCKER-USER when it starts; the jump into OCV-FORWARD goes there.
After=network-pre.target docker.service lxd.service incus.service pve-firewall.service
Before=network-online.target

[Service]
Type=oneshot
ExecStart=__DIR__/restore
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
"""


def parse_descriptions(result):
    """descriptions.json as `cat` printed it (run by NodeShell.run_many); {} when there is none yet."""
    if result is None or result.rc != 0:
        return {}
    try:
        return json.loads(result.stdout) or {}
    except ValueError:
        return {}


def description_key(mapping):
    return f"{mapping.tag}/ipv{mapping.ip_version}"


def files(rulesets, table, descriptions, directory=PERSIST_DIR):
    """Everything PERSIST_DIR holds, from the live state: {file name: (content, mode)}."""
    hooks = []
    for family, ruleset in sorted(rulesets.items()):
        for table_name, parent, chain, dummy in ruleset.hooks():
            hooks.append(f"{TOOLS[family][0]} {table_name} {parent} {chain}")
    return {
        "iptables.rules": (rulesets[4].own_text(), "0600"),
        "ip6tables.rules": (rulesets[6].own_text(), "0600"),
        "hooks": ("".join(f"{line}\n" for line in hooks), "0600"),
        "nftables.rules": (table.persisted_text(), "0600"),
        "descriptions.json": (json.dumps(descriptions, indent=1, sort_keys=True) + "\n", "0600"),
        "restore": (RESTORE_SCRIPT.replace("__DIR__", directory), "0755"),
        UNIT_NAME: (UNIT.replace("__DIR__", directory), "0644"),
    }


# Each file: written next to its place, then moved over it, so a reader never sees half a file.
_WRITE = """umask 077
dir=$1; shift
mkdir -p "$dir" || exit 1
while [ $# -ge 3 ]; do
  printf '%s' "$3" > "$dir/.$1.tmp" && chmod "$2" "$dir/.$1.tmp" && mv -f "$dir/.$1.tmp" "$dir/$1" || exit 1
  shift 3
done
"""


def save(shell, rulesets, table, descriptions, directory=PERSIST_DIR):
    args = []
    for name, (content, mode) in files(rulesets, table, descriptions, directory).items():
        args += [name, mode, content]
    shell.run(["sh", "-c", _WRITE, "sh", directory, *args])
