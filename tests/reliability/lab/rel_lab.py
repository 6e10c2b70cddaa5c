"""What the reliability tests share: the integration tests' helpers, fault proxies of our own, and a Proxmox
simulator of our own (so the lab's shared simulator is never faulted, restarted or flooded).

The integration tests' conftest.py is loaded under another module name: this folder has a conftest.py of its
own, and two modules called `conftest` cannot both be imported by that name.
"""
import importlib.util
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
INTEGRATION = ROOT / "tests" / "integration"
for folder in (INTEGRATION, ROOT / "lab"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lab = _load("integration_conftest", INTEGRATION / "conftest.py")
from pve_helpers import Api  # noqa: E402  (the integration tests' raw PVE client)

LAB_DIR = lab.LAB_DIR
run_module, run_playbook, node_with, docker_cli = lab.run_module, lab.run_playbook, lab.node_with, lab.docker_cli
free_port, wait_port = lab.free_port, lab.wait_port
DockerEvents = lab.DockerEvents
ARGV_LOG = LAB_DIR / "ssh" / "argv.log"
COMMANDS_LOG = LAB_DIR / "ssh" / "commands.log"
PVE_COMMANDS_LOG = LAB_DIR / "pvesim" / "ssh" / "commands.log"
PVE_TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"


def rel_name(prefix="rel"):
    """Every lab object of these tests starts with `rel-`, so a leftover is easy to find and remove."""
    return f"rel-{prefix}-{secrets.token_hex(3)}"


def nodes():
    return lab.lab_nodes()




class LogTail:
    """The bytes a log file gained since `start()`: what the node recorded during one scenario."""

    def __init__(self, path):
        self.path = Path(path)
        self.offset = 0

    def start(self):
        self.offset = self.path.stat().st_size if self.path.exists() else 0
        return self

    def text(self):
        if not self.path.exists():
            return ""
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            return handle.read().decode("utf-8", "replace")

    def entries(self):
        return [json.loads(line) for line in self.text().splitlines() if line.strip()]


# -- Docker --------------------------------------------------------------------------------------------------
def containers_named(name):
    """Containers whose name is exactly `name` (docker's filter is a regex search, so anchor it)."""
    listing = docker_cli("ps", "-a", "--filter", f"name=^/{re.escape(name)}$", "--format", "{{.Names}}").stdout.split()
    return [entry for entry in listing if entry == name]


def containers_with_prefix(prefix):
    listing = docker_cli("ps", "-a", "--filter", f"name=^/{re.escape(prefix)}", "--format", "{{.Names}}").stdout.split()
    return [entry for entry in listing if entry.startswith(prefix)]


def remove_containers(names):
    if names:
        docker_cli("rm", "-f", *names, check=False)


# -- LXD / Incus ---------------------------------------------------------------------------------------------
def lxd_instances_with_prefix(tool, prefix):
    completed = subprocess.run([tool, "list", "--format", "json"], capture_output=True, text=True, timeout=120,
                               check=True)
    return [item["name"] for item in json.loads(completed.stdout) if item["name"].startswith(prefix)]


def remove_lxd_instances(tool, names):
    for name in names:
        subprocess.run([tool, "delete", "--force", name], capture_output=True, timeout=120, check=False)


# -- fault proxies -------------------------------------------------------------------------------------------
_REQUEST_LINE = re.compile(rb"(?:^|\r\n)(GET|POST|PUT|DELETE|HEAD) (\S+) HTTP/1\.[01]\r\n")


class FaultProxy:
    """A byte proxy (unix or TCP listener) in front of a real daemon, that fails the way networks do.

    cut_on_request:  (method, path regex, n): the n-th matching HTTP request is forwarded to the daemon, then
                     the client's connection is closed before any answer, and the listener stops: the API
                     went away in the middle of the play, after the daemon got the write.
    cut_after_bytes: the first connection is closed once this many bytes crossed it (both ways); later
                     connections pass. An SSH session dropped in the middle of a task.
    """

    def __init__(self, upstream, listen_path=None, cut_on_request=None, cut_after_bytes=None):
        self.upstream = upstream                  # ("unix", path) or ("tcp", host, port)
        self.cut_on_request = cut_on_request
        self.cut_after_bytes = cut_after_bytes
        self.requests = []                        # "METHOD path" of every HTTP request seen, in order
        self.cut = False
        self.bytes_seen = 0
        self.connections = 0
        self._matches = 0
        self._lock = threading.Lock()
        self._sockets = []
        if listen_path:
            self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.server.bind(listen_path)
            self.path, self.port = listen_path, None
        else:
            self.server = socket.socket()
            self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.server.bind(("127.0.0.1", 0))
            self.path, self.port = None, self.server.getsockname()[1]
        self.server.listen(64)
        threading.Thread(target=self._serve, daemon=True).start()

    def _connect_upstream(self):
        if self.upstream[0] == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.upstream[1])
        else:
            sock = socket.create_connection(self.upstream[1:], timeout=30)
            sock.settimeout(None)
        return sock

    def _serve(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                first = self.connections == 1
            upstream = self._connect_upstream()
            self._sockets += [client, upstream]
            limit = self.cut_after_bytes if first else None
            threading.Thread(target=self._pump, args=(client, upstream, True, limit), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False, limit), daemon=True).start()

    def _pump(self, source, target, from_client, limit):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if limit is not None:
                    with self._lock:
                        room = limit - self.bytes_seen
                        self.bytes_seen += len(data)
                    if room <= len(data):
                        target.sendall(data[:max(room, 0)])
                        self.cut = True
                        break
                else:
                    with self._lock:
                        self.bytes_seen += len(data)
                if from_client and self._is_cut_request(data):
                    target.sendall(data)
                    self.cut = True
                    time.sleep(0.3)   # let the daemon read it: the write happens, only its answer is lost
                    self.stop()
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def _is_cut_request(self, data):
        found = [(m.group(1).decode(), m.group(2).decode()) for m in _REQUEST_LINE.finditer(data)]
        self.requests += [f"{method} {path}" for method, path in found]
        if not self.cut_on_request or self.cut:
            return False
        method, pattern, nth = self.cut_on_request
        for seen_method, path in found:
            if seen_method == method and re.search(pattern, path):
                self._matches += 1
                if self._matches == nth:
                    return True
        return False

    def stop(self):
        """The daemon 'goes away': no new connections, open ones closed."""
        # shutdown() first: a bare close() does not wake the thread blocked in accept(), which would go on
        # accepting connections on the closed descriptor.
        for action in (lambda: self.server.shutdown(socket.SHUT_RDWR), self.server.close):
            try:
                action()
            except OSError:
                pass
        for sock in list(self._sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.stop()
        if self.path:
            Path(self.path).unlink(missing_ok=True)


# -- a Proxmox simulator of our own --------------------------------------------------------------------------
class OwnSimulator:
    """A simulator with its own state folder, port and request log (the shared lab simulator and its log are
    left alone). It has no sshd: nodes pointing at it use execution_rule api_only."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.state_dir = self.folder / "state"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.request_log = self.folder / "requests.log"
        self.port = free_port()
        self.process = None
        self.api = None

    def start(self):
        env = dict(os.environ, PYTHONPATH=str(ROOT / "lab"), PYTHONDONTWRITEBYTECODE="1")
        out = open(self.folder / "pvesim.out", "ab")
        self.process = subprocess.Popen(
            ["/usr/bin/python3", "-m", "pvesim", "--state-dir", str(self.state_dir), "--listen",
             f"127.0.0.1:{self.port}", "--socket", str(self.state_dir / "control.sock"),
             "--request-log", str(self.request_log)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        wait_port(self.port)
        tokens = json.loads((self.state_dir / "secrets.json").read_text())["tokens"]
        self.token_id, self.token_secret = next(iter(tokens.items()))
        self.ca_file = str(self.state_dir / "tls" / "pve-ssl.pem")
        self.api = Api(f"https://127.0.0.1:{self.port}", self.token_id, self.token_secret, self.ca_file)
        return self.api

    def kill(self, sig=signal.SIGKILL):
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=20)

    def node(self, rule="api_only", timeout=None):
        api = {"url": f"https://127.0.0.1:{self.port}", "token_id": self.token_id,
               "token_secret": self.token_secret, "ca_file": self.ca_file, "validate_certs": True}
        if timeout:
            api["timeout"] = timeout
        return {"name": "rel-pve", "type": "proxmox", "execution_rule": rule, "proxmox_node": "pve",
                "public_ip": "127.0.0.1", "api": api}

    def faults(self, **settings):
        return self.api.control("PUT", "/_sim/faults", settings)

    def clear_faults(self):
        return self.api.control("DELETE", "/_sim/faults")

    def log(self):
        return LogTail(self.request_log).start()

    def guests_named(self, name):
        return [item for item in self.api.data("GET", "/cluster/resources", type="vm") if item.get("name") == name]


def writes(entries):
    """The mutating requests of a simulator request log excerpt."""
    return [f"{entry['method']} {entry['path']}" for entry in entries if entry.get("method") != "GET"]


def nodes_file(path, entries):
    Path(path).write_text(yaml.safe_dump(entries))
    return path
