# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Port mappings: host port -> instance port, owned by the collection and provable on the node.

Every rule or device the collection writes carries the owner tag `ocv:<node>:<instance>:<proto>:<host_port>`.
A mapping is identified on its node by (protocol, host_port, ip_version): one host port of one family maps to
one instance port. The methods (iptables, nftables, proxy_device, native) live in their own files; manager.py
reads the node, plans and applies.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from dataclasses import asdict, dataclass

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import BackendError, InvalidSpec, TransportError

TAG_PREFIX = "ocv:"
HOOK_COMMENT = "ocv:hook"  # the jumps from the host's chains into the collection's own chains
PROTOCOLS = ("tcp", "udp")
METHODS = ("auto", "native", "proxy_device", "iptables", "nftables")
# What each backend can do; the first entry of each is what `auto` picks when the node has nft
# (proxy_device for LXD/Incus, whatever the node has otherwise: see manager.resolve_method).
BACKEND_METHODS = {
    "docker": ("native", "iptables", "nftables"),
    "lxd": ("proxy_device", "iptables", "nftables"),
    "incus": ("proxy_device", "iptables", "nftables"),
    "proxmox": ("iptables", "nftables"),
}
_TAG_PART = re.compile(r"^[A-Za-z0-9._-]+\Z")


@dataclass
class Mapping:
    """One host port of one protocol and family, mapped to one port of one instance."""
    node: str
    instance: str
    protocol: str
    host_port: int
    guest_port: int
    method: str
    ip_version: int = 4
    listen_address: str | None = None  # None: every address of the node
    target_address: str | None = None  # where the traffic goes: the instance address (or loopback inside it)
    description: str | None = None

    @property
    def tag(self):
        return owner_tag(self.node, self.instance, self.protocol, self.host_port)

    def key(self):
        return (self.protocol, self.host_port, self.ip_version)

    def to_dict(self):
        result = asdict(self)
        result["tag"] = self.tag
        return result


def owner_tag(node, instance, protocol, host_port):
    return f"{TAG_PREFIX}{node}:{instance}:{protocol}:{host_port}"


def parse_tag(text):
    """(node, instance, protocol, host_port) of an owner tag, or None when the text is not one."""
    if not text or not text.startswith(TAG_PREFIX):
        return None
    parts = text[len(TAG_PREFIX):].split(":")
    if len(parts) != 4 or parts[2] not in PROTOCOLS or not parts[3].isdigit():
        return None
    return parts[0], parts[1], parts[2], int(parts[3])


def check_tag_part(value, option):
    """Names that go into owner tags (and so into rule comments) must be plain."""
    if not isinstance(value, str) or not _TAG_PART.match(value):
        raise InvalidSpec(f"{option}: {value!r} cannot go into a port-mapping owner tag; use letters, digits, "
                          "'.', '_' and '-' only")
    return value


def check_address(value, ip_version, option):
    """An IP address of the given family, normalised (brackets and zone-free)."""
    try:
        address = ipaddress.ip_address(str(value).strip("[]"))
    except ValueError:
        raise InvalidSpec(f"{option}: {value!r} is not an IP address; give an IPv{ip_version} address of the node")
    if address.version != ip_version:
        raise InvalidSpec(f"{option}: {value} is an IPv{address.version} address but ip_version is {ip_version}; "
                          "give an address of that family, or change ip_version")
    return str(address)


def is_unspecified(address):
    return address is None or ipaddress.ip_address(address).is_unspecified


def endpoint(address, port):
    """address:port, with brackets around an IPv6 address."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def split_endpoint(text):
    """(address, port) of 'a.b.c.d:port' or '[v6]:port'."""
    address, port = text.rsplit(":", 1)
    return address.strip("[]"), int(port)


class NodeShell:
    """Commands on the node through the collection's SSH transport: argv lists, quoted in one place.

    Every SSH session costs a round trip and a process start on the node, so a run groups its commands:
    `run_many` runs several argv lists in one session and hands back each one's output and status.
    """

    def __init__(self, ssh, node_name):
        self.ssh = ssh
        self.node_name = node_name

    def run(self, argv, stdin=None, check=True, timeout=None):
        result = self._exec(argv, stdin, timeout or self.ssh.settings.command_timeout)
        if check and result.rc != 0:
            raise self.failure(argv, result)
        return result

    def _exec(self, argv, stdin, timeout):
        """Run argv over the transport's channel and read until the end of its output.

        OpenSSH may send the exit status before the last of a command's output, so the end is the channel's
        EOF, not the exit status: a big iptables-save must arrive whole.
        """
        from ansible_collections.oneclickvirt.virt.plugins.module_utils.models import ExecResult

        channel = self.ssh.open_channel(argv, timeout)
        deadline = time.monotonic() + timeout
        stdout, stderr = [], []
        try:
            if stdin is not None:
                channel.sendall(stdin.encode("utf-8") if isinstance(stdin, str) else stdin)
            channel.shutdown_write()
            while True:
                if channel.recv_ready():
                    stdout.append(channel.recv(65536))
                elif channel.recv_stderr_ready():
                    stderr.append(channel.recv_stderr(65536))
                elif channel.eof_received and channel.exit_status_ready():
                    break
                elif time.monotonic() > deadline:
                    raise socket.timeout(f"no end of output within {timeout}s")
                elif channel.exit_status_ready():
                    time.sleep(0.002)  # the status is in, the rest of the output is on its way
                else:
                    channel.status_event.wait(0.01)
            rc = channel.recv_exit_status()
        except (OSError, socket.timeout, EOFError) as error:
            self.ssh.close()
            raise TransportError(f"SSH: {argv[0]} on node {self.node_name} did not finish: {error}", sent=True)
        finally:
            channel.close()
        return ExecResult(rc=rc, stdout=b"".join(stdout).decode("utf-8", "replace"),
                          stderr=b"".join(stderr).decode("utf-8", "replace"))

    def failure(self, argv, result):
        detail = (result.stderr or result.stdout).strip() or f"exit status {result.rc}"
        return BackendError(f"node {self.node_name}: {argv[0]} failed: {detail}", status=result.rc,
                            backend_message=detail)

    def run_many(self, commands):
        """[(name, argv, stdin text or None)] in one session: {name: ExecResult} (stderr folded into stdout)."""
        script, args = sections_script(commands)
        result = self.run(["sh", "-c", script, "sh", *args])
        return self.check_sections(commands, parse_sections(result.stdout), result)

    def check_sections(self, commands, sections, result):
        missing = [name for name, dummy, dummy in commands if name not in sections]
        if missing:
            raise BackendError(f"node {self.node_name}: no answer from {', '.join(missing)} (exit status {result.rc}, "
                               f"output ends {result.stdout[-300:]!r}, errors {result.stderr[-300:]!r})")
        return sections


_BEGIN, _END = "@@ocv-begin ", "@@ocv-end "


def sections_script(commands):
    """A script that runs each argv (its stdin text, if any, from a positional parameter) between markers."""
    from ansible_collections.oneclickvirt.virt.plugins.module_utils.transport.ssh import quote_argv

    lines, args = [], []
    for name, argv, stdin in commands:
        command = quote_argv(argv)
        if stdin is not None:
            args.append(stdin)
            command = f"printf '%s' \"${{{len(args)}}}\" | {command}"
        lines.append(f"echo '{_BEGIN}{name}'; {command} 2>&1; rc=$?; echo; echo \"{_END}{name} $rc\"")
    return "\n".join(lines), args


def parse_sections(output):
    from ansible_collections.oneclickvirt.virt.plugins.module_utils.models import ExecResult

    results, name, lines = {}, None, []
    for line in output.split("\n"):
        if line.startswith(_BEGIN):
            name, lines = line[len(_BEGIN):], []
        elif name is not None and line.startswith(_END + name + " "):
            # The script echoes one newline after each output: joining the lines before the marker gives it back.
            results[name] = ExecResult(rc=int(line.rsplit(" ", 1)[1]), stdout="\n".join(lines), stderr="")
            name = None
        elif name is not None:
            lines.append(line)
    return results
