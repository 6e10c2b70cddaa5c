"""Helpers for the port-mapping tests: instances with a server inside, a client in the lab's network
namespace, and snapshots of the host's firewall that tell the collection's lines from everyone else's."""

import json
import re
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLIENT_NETNS = "ocv-client"
PUBLIC_IPV4 = "10.165.0.1"
PUBLIC_IPV6 = "fd42:4c58:165::1"
OWN_CHAINS = ("OCV-PREROUTING", "OCV-FORWARD")
OWN_TABLE = "inet oneclickvirt"
PERSIST_DIR = Path("/etc/oneclickvirt/portmap")

# Runs inside the instance: answers `<tag>:<proto>:<port>` on TCP and UDP for every port it is given, so a
# reply proves which instance and which guest port the traffic reached.
ECHO_SERVER = r'''
import socket, sys, threading
tag = sys.argv[1]

def sockets(kind):
    try:
        sock = socket.socket(socket.AF_INET6, kind)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        return sock, "::"
    except OSError:
        return socket.socket(socket.AF_INET, kind), "0.0.0.0"

def bound(kind, port):
    sock, address = sockets(kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError:
        sock = socket.socket(socket.AF_INET, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
    return sock

def tcp(port):
    sock = bound(socket.SOCK_STREAM, port)
    sock.listen(64)
    while True:
        conn, _ = sock.accept()
        conn.sendall(f"{tag}:tcp:{port}\n".encode())
        conn.close()

def udp(port):
    sock = bound(socket.SOCK_DGRAM, port)
    while True:
        _, peer = sock.recvfrom(2048)
        sock.sendto(f"{tag}:udp:{port}\n".encode(), peer)

for port in sys.argv[2:]:
    threading.Thread(target=tcp, args=(int(port),), daemon=True).start()
    threading.Thread(target=udp, args=(int(port),), daemon=True).start()
threading.Event().wait()
'''

CLIENT = r'''
import socket, sys
protocol, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
if protocol == "tcp":
    sock = socket.create_connection((host, port), timeout=2)
    print(sock.recv(200).decode().strip())
else:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(1)
    sock.sendto(b"ping", (host, port))
    print(sock.recvfrom(200)[0].decode().strip())
'''


def run(argv, check=True, timeout=120, input_text=None):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input_text)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr or result.stdout}")
    return result


def exchange(protocol, host, port, seconds=15):
    """What the server behind host:port answers a client in the lab's client namespace (None if nothing)."""
    deadline = time.monotonic() + seconds
    last = ""
    while time.monotonic() < deadline:
        result = run(["ip", "netns", "exec", CLIENT_NETNS, sys.executable, "-c", CLIENT, protocol, host, str(port)],
                     check=False, timeout=30)
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip()
        last = result.stderr.strip().splitlines()[-1:] or [""]
        time.sleep(0.3)
    print(f"no answer from {protocol} {host}:{port}: {last}")
    return None


# -- instances -------------------------------------------------------------------------------------------------

class DockerTarget:
    """An ocv-debian container on a bridge network of the test's own (the lab's docker0 may be missing)."""
    backend = "docker"

    def __init__(self, ports):
        self.name = f"t-pm-{secrets.token_hex(3)}"
        self.ports = ports
        self.network = None
        for _ in range(10):
            subnet = f"10.166.{secrets.randbelow(250) + 1}.0/24"
            name = f"ocv-pm-{secrets.token_hex(3)}"
            if run(["docker", "network", "create", "--subnet", subnet, name], check=False).returncode == 0:
                self.network = name
                break
        assert self.network, "could not create a Docker network for the port-mapping tests"
        try:
            run(["docker", "run", "-d", "--name", self.name, "--network", self.network, "ocv-debian"])
            self.start_server()
        except BaseException:
            self.destroy()
            raise

    def start_server(self):
        with tempfile.NamedTemporaryFile("w", suffix=".py") as handle:
            handle.write(ECHO_SERVER)
            handle.flush()
            run(["docker", "cp", handle.name, f"{self.name}:/root/echo.py"])
        run(["docker", "exec", "-d", self.name, "python3", "/root/echo.py", self.name, *map(str, self.ports)])

    def address(self, ip_version=4):
        data = json.loads(run(["docker", "inspect", self.name]).stdout)[0]
        return data["NetworkSettings"]["Networks"][self.network]["IPAddress"]

    def destroy(self):
        run(["docker", "rm", "-f", self.name], check=False)
        if self.network:
            run(["docker", "network", "rm", self.network], check=False)


class LxdTarget:
    """An ocv-debian container of LXD or Incus, with DHCP on for IPv4 (the image has only SLAAC)."""

    def __init__(self, backend, ports):
        self.backend = backend
        self.cli = "lxc" if backend == "lxd" else "incus"
        self.name = f"t-pm-{secrets.token_hex(3)}"
        self.ports = ports
        run([self.cli, "launch", "ocv-debian", self.name, "-q"])
        try:
            self._prepare(ports)
        except BaseException:
            self.destroy()
            raise

    def _prepare(self, ports):
        network = "[Match]\nName=eth0\n[Network]\nDHCP=ipv4\nIPv6AcceptRA=yes\n"
        self.exec("sh", "-c", f"printf '{network}' > /etc/systemd/network/eth0.network")
        deadline = time.monotonic() + 60
        # systemd inside needs a moment after the start before it takes requests
        while run([self.cli, "exec", self.name, "--", "systemctl", "restart", "systemd-networkd"],
                  check=False).returncode != 0:
            assert time.monotonic() < deadline, f"systemd in {self.name} did not come up"
            time.sleep(0.5)
        while not (self.address(4) and self.address(6)):
            assert time.monotonic() < deadline, f"{self.name} got no IPv4 and IPv6 address"
            time.sleep(0.5)
        with tempfile.NamedTemporaryFile("w", suffix=".py") as handle:
            handle.write(ECHO_SERVER)
            handle.flush()
            run([self.cli, "file", "push", handle.name, f"{self.name}/root/echo.py"])
        self.exec("sh", "-c", f"nohup python3 /root/echo.py {self.name} {' '.join(map(str, ports))} "
                              ">/dev/null 2>&1 </dev/null &")

    def exec(self, *argv):
        return run([self.cli, "exec", self.name, "--", *argv])

    def address(self, ip_version=4):
        state = json.loads(run([self.cli, "query", f"/1.0/instances/{self.name}/state"]).stdout)
        family = "inet" if ip_version == 4 else "inet6"
        for address in (state.get("network") or {}).get("eth0", {}).get("addresses", []):
            if address["family"] == family and address["scope"] == "global":
                return address["address"]
        return None

    def devices(self):
        return json.loads(run([self.cli, "query", f"/1.0/instances/{self.name}"]).stdout)["devices"]

    def config(self):
        return json.loads(run([self.cli, "query", f"/1.0/instances/{self.name}"]).stdout)["config"]

    def destroy(self):
        run([self.cli, "delete", "-f", self.name], check=False)


# -- the host's firewall ---------------------------------------------------------------------------------------

def snapshot():
    """The host's firewall as the tools print it: both iptables families and the whole nft ruleset."""
    return {"iptables": run(["iptables-save"]).stdout, "ip6tables": run(["ip6tables-save"]).stdout,
            "nft": run(["nft", "list", "ruleset"]).stdout}


def _is_own(line):
    return "ocv:" in line or any(chain in line for chain in OWN_CHAINS)


def _iptables_view(text):
    """Every line but the collection's (own chains, owner-tagged lines) and the tool's comments and counters.

    A table that holds nothing once those are gone (ip6tables-nft leaves an empty `ip6 nat` behind the first
    time anyone uses it) counts as no table at all.
    """
    tables, current = {}, None
    for line in text.splitlines():
        if line.startswith("#") or _is_own(line):
            continue
        line = re.sub(r" \[\d+:\d+\]$", "", line)
        if line.startswith("*"):
            current = line
            tables[current] = []
        elif current:
            tables[current].append(line)
    return {name: lines for name, lines in tables.items()
            if any(line.startswith("-A") or (line.startswith(":") and not line.endswith(("ACCEPT", "COMMIT")))
                   for line in lines)}


def nft_tables(text):
    """{'family name': text} of `nft list ruleset`."""
    tables, current = {}, None
    for line in text.splitlines():
        match = re.match(r"^table (\S+ \S+) \{", line)
        if match:
            current = match.group(1)
            tables[current] = []
        elif current:
            tables[current].append(line)
            if line == "}":
                current = None
    return {name: "\n".join(lines) for name, lines in tables.items()}


def _nft_view(text):
    """nft tables other than the collection's and iptables-nft's (those are in the iptables views)."""
    skip = {OWN_TABLE, "ip nat", "ip filter", "ip6 nat", "ip6 filter", "ip mangle", "ip6 mangle", "ip raw", "ip6 raw"}
    return {name: re.sub(r"counter packets \d+ bytes \d+", "counter", body)
            for name, body in nft_tables(text).items() if name not in skip}


def foreign(state):
    """Everything of the firewall that is not the collection's, for a byte-for-byte comparison."""
    return {"iptables": _iptables_view(state["iptables"]), "ip6tables": _iptables_view(state["ip6tables"]),
            "nft": _nft_view(state["nft"])}


def own(state):
    """Only the collection's: tagged lines and own chains of both families, and its nft table."""
    result = {}
    for family in ("iptables", "ip6tables"):
        result[family] = [line for line in state[family].splitlines()
                          if not line.startswith("#") and _is_own(line)]
    result["nft"] = nft_tables(state["nft"]).get(OWN_TABLE)
    return result


def tagged_lines(state, prefix):
    """iptables-save lines and nft rule lines whose owner tag starts with `prefix` (e.g. 'ocv:proxmox:pm-ct:')."""
    lines = [line for family in ("iptables", "ip6tables") for line in state[family].splitlines()
             if f'"{prefix}' in line]
    lines += [line.strip() for line in (nft_tables(state["nft"]).get(OWN_TABLE) or "").splitlines()
              if f'"{prefix}' in line]
    return lines


def purge(prefix):
    """Last-resort cleanup after a failed test: delete own rules whose tag starts with `prefix`."""
    for tool in ("iptables", "ip6tables"):
        table = None
        for line in run([f"{tool}-save"]).stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith("-A ") and f'"{prefix}' in line:
                run([tool, "-t", table, "-D", *shlex.split(line)[1:]], check=False)
    listing = run(["nft", "-a", "list", "table", *OWN_TABLE.split()], check=False).stdout
    for line in listing.splitlines():
        match = re.search(r"# handle (\d+)$", line)
        if match and f'"{prefix}' in line:
            run(["nft", "delete", "rule", *OWN_TABLE.split(), "prerouting", "handle", match.group(1)], check=False)
