# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""LXD and Incus: one provider for the REST API the two daemons share, and the two roads to it.

- The API road (`LxdApiClient`): the daemon's REST API over its unix socket, or over HTTPS with a client
  certificate and a pinned server certificate, through the collection's own HTTP client (no pylxd or
  requests to import: a no-op task stays close to the cost of `ping`).
- The SSH road (`LxdSshClient`): `lxc query` / `incus query` on the node, which talks to the daemon's local
  socket. The CLI reads request bodies only from its argv (`-d -` is taken literally), so bodies travel
  there; secrets never do: a password goes only through exec, on stdin.

Both roads answer `request()` with the same parsed response, and wait on asynchronous operations the same
way (the operation's own `/wait` endpoint, in slices, bounded by the module's `timeout`), so every operation
of the provider is written once. `lxd.py` and `incus.py` only name what differs: the CLI, the default socket.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import struct
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends.base import Provider, count_statuses, image_code
from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import (
    BackendError, Conflict, InvalidSpec, NotFound, OperationTimeout, TransportError, UncertainWrite, Unsupported,
    VirtError)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.models import (
    ExecResult, Image, Instance, NodeFacts, NodeResources)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.units import MIB

STATUS = {"Running": "running", "Stopped": "stopped", "Frozen": "paused", "Error": "error"}
TYPES = {"container": "container", "virtual-machine": "vm"}
IMAGE_KEY = "user.ocv.image"  # the image string as the user gave it at creation, so that reads are exact
# Keys the daemon owns: never compared, never written.
DAEMON_PREFIXES = ("volatile.",)
# Config keys that a running instance takes only at its next start (LXD/Incus apply limits.* live).
RESTART_KEYS = ("security.privileged", "security.idmap.", "security.syscalls.", "security.protection.shift",
                "raw.lxc", "raw.idmap", "raw.seccomp", "linux.kernel_modules", "nvidia.", "environment.")
# Non-dotted `config` entries are the collection's own extras; dotted ones pass through to the daemon.
EXTRAS = ("profiles",)
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")
_LXD_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3, "tb": 1000 ** 4, "pb": 1000 ** 5,
              "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4, "pib": 1024 ** 5}
_ALLOWANCE = re.compile(r"^\s*([0-9]+)ms\s*/\s*([0-9]+)ms\s*$")
WAIT_SLICE = 20  # seconds per /wait request, well inside any HTTP or SSH command timeout


# -- values --------------------------------------------------------------------------------------------------
def lxd_size_to_mib(text):
    """A size as LXD/Incus write it ('512MiB', '1GB', '2147483648') in MiB, rounded up; None if not a size."""
    match = _SIZE.match(str(text or ""))
    if not match or match.group(2).lower() not in _LXD_UNITS:
        return None  # e.g. a percentage of the host's memory: no fixed size to report
    size = float(match.group(1)) * _LXD_UNITS[match.group(2).lower()]
    return int(-(-size // MIB)) if size else None


def cpu_count(text):
    """limits.cpu: a count ('2') or a CPU set ('0-1', '0,2'); the number of cores either way."""
    text = str(text or "").strip()
    if not text:
        return None
    if text.isdigit():
        return int(text)
    cores = 0
    for part in text.split(","):
        low, dash, high = part.partition("-")
        if not low.strip().isdigit() or (high and not high.strip().isdigit()):
            return None
        cores += (int(high) - int(low) + 1) if high else 1
    return cores or None


def cpu_of(config):
    """Cores: a hard allowance ('50ms/100ms') gives fractions, else the count of limits.cpu."""
    allowance = _ALLOWANCE.match(config.get("limits.cpu.allowance") or "")
    if allowance and int(allowance.group(2)):
        cores = int(allowance.group(1)) / int(allowance.group(2))
        return int(cores) if cores == int(cores) else round(cores, 3)
    return cpu_count(config.get("limits.cpu"))


def cpu_config(cores):
    """The limits.* keys for a number of cores; a fraction becomes a hard allowance on enough CPUs."""
    if cores == int(cores):
        return {"limits.cpu": str(int(cores)), "limits.cpu.allowance": ""}
    return {"limits.cpu": str(math.ceil(cores)), "limits.cpu.allowance": f"{int(round(cores * 100))}ms/100ms"}


def config_value(key, value):
    """Config values are strings on the daemon; booleans and numbers are written the way LXD reads them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value
    raise InvalidSpec(f"config.{key}: give a string, number or boolean (LXD/Incus config values are strings)")


def _status_for(message):
    """The LXD CLI prints only 'Error: <text>' for a failed query: the HTTP status is read from the words."""
    lowered = message.lower()
    if "not found" in lowered:
        return 404
    if "already exists" in lowered:
        return 409
    if "precondition" in lowered or "etag" in lowered:
        return 412
    return 400


def _query(**params):
    return "?" + urlencode({key: value for key, value in params.items() if value is not None})


@dataclass
class Reply:
    """A parsed daemon response: sync metadata (or the finished operation's), its ETag, the operation path."""
    metadata: object = None
    etag: str | None = None
    operation: str | None = None


class PreconditionFailed(BackendError):
    """The object changed since it was read (If-Match refused): read it again and reapply."""


# -- the part both roads share -------------------------------------------------------------------------------
class LxdClient:
    """`request()` for both roads: error mapping and operation waits, written once. Subclasses `_send`."""

    label = "api"
    wait_slice = WAIT_SLICE

    def _send(self, method, path, body, etag):
        """One raw request: returns (HTTP-like status, ETag or None, the response document)."""
        raise NotImplementedError

    def request(self, method, path, body=None, etag=None, timeout=None, what=None, wait=True):
        """Send one request. An async answer is waited on (bounded by `timeout`) unless `wait` is False.

        Failures raise NotFound / Conflict / PreconditionFailed / BackendError with the daemon's own text;
        a road that broke raises TransportError (sent=True once the request may have reached the daemon).
        """
        what = what or f"{method} {path.split('?', 1)[0]}"
        try:
            status, response_etag, document = self._send(method, path, body, etag)
        except TransportError as error:
            raise TransportError(f"{what}: {error}", sent=error.sent)
        document = document if isinstance(document, dict) else {}
        if document.get("type") == "error" or status >= 400:
            raise _error(document.get("error_code") or status, document.get("error") or f"HTTP {status}", what)
        if document.get("type") == "async":
            operation = document.get("operation") or f"/1.0/operations/{(document.get('metadata') or {}).get('id')}"
            if not wait:
                return Reply(document.get("metadata"), response_etag, operation)
            try:
                finished = self.wait_operation(operation, timeout or 120, what)
            except TransportError as error:
                # The daemon took the request: whatever broke now, it must never be sent again blindly.
                raise TransportError(f"{what}: waiting on {operation}: {error}", sent=True)
            return Reply((finished or {}).get("metadata"), None, operation)
        return Reply(document.get("metadata"), response_etag, None)

    def wait_operation(self, operation, timeout, what):
        """Wait on the operation's own signal, in slices; a timeout names the operation and what was last seen."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(1, int(math.ceil(deadline - time.monotonic())))
            wait_path = f"{operation}/wait?timeout={min(remaining, self.wait_slice)}"
            status, etag, document = self._send("GET", wait_path, None, None)
            if status == 404 or (document or {}).get("error_code") == 404:
                return None  # already finished and forgotten: the caller reads the object itself
            if (document or {}).get("type") == "error" and "deadline exceeded" in (document.get("error") or ""):
                # A wait that runs out: LXD answers with the operation, still Running; Incus with an error.
                # Read the operation itself, to know what was last seen.
                status, etag, document = self._send("GET", operation, None, None)
            if (document or {}).get("type") == "error":
                raise _error(document.get("error_code") or status, document.get("error"), what)
            op = (document or {}).get("metadata") or {}
            if op.get("status") == "Success":
                return op
            if op.get("status") in ("Failure", "Cancelled"):
                raise BackendError(f"{what} failed: {op.get('err') or op.get('status')}",
                                   status=op.get("status_code"), backend_message=op.get("err"))
            if time.monotonic() >= deadline:
                raise OperationTimeout(f"{what}: operation {op.get('description') or ''!r} ({operation}) was still "
                                       f"{op.get('status') or 'unknown'} after {timeout}s; raise `timeout` or look "
                                       "at the operation on the node")
            time.sleep(0.05)  # a daemon that answers a wait early must not make this loop spin

    def close(self):
        pass


def _error(status, message, what):
    text = f"{what} failed: {message}"
    if status == 404:
        return NotFound(text)
    if status == 409:
        return Conflict(text)
    if status == 412:
        return PreconditionFailed(text, status=412, backend_message=message)
    return BackendError(text, status=status, backend_message=message)


# -- the API road ----------------------------------------------------------------------------------------------
class LxdApiClient(LxdClient):
    """The daemon's REST API through the collection's own HTTP client (transport/http.py): over the unix socket,
    or over HTTPS with the client certificate, the server checked by its pinned certificate (or a CA)."""

    label = "api"

    def __init__(self, api, default_socket, warn):
        from ansible_collections.oneclickvirt.virt.plugins.module_utils.transport.http import (
            HttpClient, open_socket, pem_fingerprint, tls_context)

        self.timeout = api.timeout
        self.wait_slice = max(1, min(WAIT_SLICE, api.timeout - 5))
        parts = urlsplit(api.url)
        context, self.fingerprint = None, None
        if parts.scheme == "unix":
            socket_path = parts.path if parts.path not in ("", "/") else default_socket
            if not os.path.exists(socket_path):
                raise TransportError(f"the daemon's socket {socket_path} does not exist (is the daemon running?)")
            url, host_header, base_path = "unix://" + socket_path, "lxd", ""
        else:
            url, host_header, base_path = f"https://{parts.netloc}", parts.netloc, parts.path.rstrip("/")
            if not api.validate_certs and not api.server_cert:
                warn(f"TLS certificate checking is off for {api.url} (api.validate_certs: false); pin "
                     "api.server_cert instead")
            try:
                self.fingerprint = pem_fingerprint(api.server_cert) if api.server_cert else None
                context = tls_context(api.validate_certs, api.ca_file, api.server_cert, api.client_cert,
                                      api.client_key)
            except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
                raise TransportError(f"cannot load the TLS files of {api.url} (api.server_cert, api.client_cert, "
                                     f"api.client_key, api.ca_file): {error}")
        self.open_stream = lambda: open_socket(url, self.timeout, context, self.fingerprint)
        self.http = HttpClient(self.open_stream, host_header=host_header, timeout=self.timeout, base_path=base_path)
        if parts.scheme == "unix":
            return  # the daemon trusts every client of its socket (the socket's group is the access control)
        status, _etag, document = self._send("GET", "/1.0", None, None)
        if status >= 400 or ((document or {}).get("metadata") or {}).get("auth") != "trusted":
            raise TransportError(f"{api.url} does not trust the client certificate {api.client_cert}; add it on the "
                                 "node (`lxc config trust add` / `incus config trust add-certificate`)")

    def _send(self, method, path, body, etag):
        """`path` comes encoded (names quoted with safe=''), query included."""
        headers = {"If-Match": etag} if etag else {}
        parts = ()
        if body is not None:
            headers["Content-Type"] = "application/json"
            parts = (json.dumps(body).encode("utf-8"),)
        return self._answer(self.http.exchange(method, self.http.target(path), headers, parts))

    @staticmethod
    def _answer(response):
        try:
            document = response.json()
        except ValueError:
            document = {"type": "error", "error_code": response.status,
                        "error": response.body.decode("utf-8", "replace").strip()[:300] or f"HTTP {response.status}"}
        return response.status, response.headers.get("etag"), document

    # -- exec through the exec API's websockets -------------------------------------------------------------
    def exec(self, path, body, stdin, timeout, what):
        reply = self.request("POST", path, body=dict(body, **{"wait-for-websocket": True}), what=what, wait=False)
        fds = (reply.metadata or {}).get("metadata", {}).get("fds") or {}
        operation_id = reply.operation.rsplit("/", 1)[-1]
        sockets = {}
        try:
            for fd in ("0", "1", "2"):
                target = f"/1.0/operations/{operation_id}/websocket?" + urlencode({"secret": fds[fd]})
                sockets[fd] = WebSocket.open(self.open_stream, self.http.target(target), self.timeout)
            readers = {fd: _Reader(sockets[fd]) for fd in ("1", "2")}
            _send_input(sockets["0"], stdin)
            finished = self.wait_operation(reply.operation, timeout, what)
            for reader in readers.values():
                reader.join(5)
        except (OSError, EOFError, KeyError) as error:
            raise TransportError(f"{what}: the exec stream broke: {error}", sent=True)
        except TransportError as error:
            raise TransportError(f"{what}: {error}", sent=True)  # the command may have run: never again blindly
        finally:
            for websocket in sockets.values():
                websocket.close()
        rc = ((finished or {}).get("metadata") or {}).get("return")
        return ExecResult(rc=rc if rc is not None else -1, stdout=readers["1"].text(), stderr=readers["2"].text())

    def close(self):
        self.http.close()

    # -- image uploads (virt_image) ------------------------------------------------------------------------------
    def post_image(self, path, files, headers, timeout, what):
        """POST /1.0/images with the image streamed from controller files: one file raw (a unified tarball),
        two as the daemon's multipart form (metadata first, then `rootfs`, or `rootfs.img` for a VM disk).
        Waits on the operation; returns its metadata ({fingerprint, size})."""
        multipart = image_code("image_transfer", "multipart")

        headers = dict(headers)
        if len(files) == 2:
            with open(files[1], "rb") as probe:
                rootfs = "rootfs.img" if probe.read(4) == b"QFI\xfb" else "rootfs"
            headers["Content-Type"], parts = multipart([], [("metadata", "metadata", files[0]),
                                                            (rootfs, rootfs, files[1])])
        else:
            headers["Content-Type"], parts = "application/octet-stream", list(files)
        status, _etag, document = self._answer(self.http.exchange("POST", self.http.target(path), headers, parts))
        if document.get("type") == "error" or status >= 400:
            raise _error(document.get("error_code") or status, document.get("error"), what)
        operation = document.get("operation")
        if not operation:
            return document.get("metadata") or {}
        finished = self.wait_operation(operation, timeout, what)
        return (finished or {}).get("metadata") or {}


def _send_input(websocket, stdin):
    """The command's standard input, then end of input (a text message, as the daemon reads it).

    A command may end before it has read all of its input (`head -c 4`): the daemon then closes the stream and a
    write fails. As with a pipe, that only means nobody reads any more; the command's own exit status and output
    are what the caller gets."""
    data = stdin.encode("utf-8") if isinstance(stdin, str) else (stdin or b"")
    try:
        for start in range(0, len(data), 65536):
            websocket.send(data[start:start + 65536])
        websocket.send(b"", opcode=WebSocket.TEXT)
    except OSError:  # BrokenPipeError, ConnectionResetError, ssl.SSLEOFError
        pass


class WebSocket:
    """The little of RFC 6455 a non-interactive exec needs, over a stream already checked (socket or pinned TLS)."""

    TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
    GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, stream, buffer=b""):
        self.stream = stream
        self.buffer = buffer
        self.lock = threading.Lock()

    @classmethod
    def open(cls, open_stream, target, timeout):
        stream = open_stream()
        stream.settimeout(timeout)
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        stream.send_all((f"GET {target} HTTP/1.1\r\nHost: lxd\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode("ascii"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = stream.recv(4096)
            if not chunk:
                stream.close()
                raise EOFError("the daemon closed the websocket handshake")
            data += chunk
        head, separator, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        accept = base64.b64encode(hashlib.sha1((key + cls.GUID).encode("ascii")).digest()).decode("ascii")
        headers = {line.partition(":")[0].strip().lower(): line.partition(":")[2].strip() for line in lines[1:]}
        if " 101 " not in lines[0] + " " or headers.get("sec-websocket-accept") != accept:
            stream.close()
            raise OSError(f"websocket handshake refused: {lines[0]}")
        stream.settimeout(None)
        return cls(stream, rest)

    def send(self, payload, opcode=BINARY):
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        mask = os.urandom(4)
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (length // 4 + 1))[:length], "big")
                  ).to_bytes(length, "big") if length else b""
        with self.lock:
            self.stream.send_all(header + mask + masked)

    def _read(self, size):
        while len(self.buffer) < size:
            chunk = self.stream.recv(65536)
            if not chunk:
                raise EOFError("websocket closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def receive(self):
        """The next data message as (opcode, payload); (CLOSE, b'') at the end."""
        message, message_opcode = b"", None
        while True:
            first, second = self._read(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                length = struct.unpack("!H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self._read(8))[0]
            mask = self._read(4) if second & 0x80 else None
            payload = self._read(length)
            if mask:
                payload = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
            if opcode == self.CLOSE:
                try:
                    self.send(b"", opcode=self.CLOSE)
                except OSError:
                    pass
                return self.CLOSE, b""
            if opcode == self.PING:
                self.send(payload, opcode=self.PONG)
                continue
            if opcode == self.PONG:
                continue
            message += payload
            message_opcode = message_opcode or opcode
            if first & 0x80:
                return message_opcode, message

    def close(self):
        self.stream.close()


class _Reader(threading.Thread):
    """Collects one output stream of an exec until the daemon closes it."""

    def __init__(self, websocket):
        super().__init__(daemon=True)
        self.websocket = websocket
        self.chunks = []
        self.start()

    def run(self):
        try:
            while True:
                opcode, payload = self.websocket.receive()
                if opcode == WebSocket.CLOSE:
                    return
                if opcode == WebSocket.BINARY:
                    self.chunks.append(payload)
        except (OSError, EOFError, ValueError):
            return

    def text(self):
        return b"".join(self.chunks).decode("utf-8", "replace")


# -- the SSH road ----------------------------------------------------------------------------------------------
class LxdSshClient(LxdClient):
    """`lxc query` / `incus query` on the node over the collection's SSH transport."""

    label = "ssh"

    def __init__(self, ssh, cli):
        self.ssh = ssh
        self.cli = cli
        self.wait_slice = max(1, min(WAIT_SLICE, ssh.settings.command_timeout - 5))

    def _send(self, method, path, body, etag):
        # --force-local: the node's own daemon, whatever the CLI's default remote is. --raw: the whole response.
        # The CLI cannot send If-Match; writes over SSH are PATCHes of the keys the collection owns.
        argv = [self.cli, "query", "--force-local", "--raw", "-X", method]
        if body is not None:
            argv += ["-d", json.dumps(body, separators=(",", ":"), sort_keys=True)]
        result = self.ssh.run(argv + [path])
        if result.rc == 127 or "command not found" in result.stderr:
            raise BackendError(f"{self.cli} is not installed on the node (or not on its PATH): {result.stderr.strip()}")
        if result.rc != 0:
            message = result.stderr.strip()
            message = message[len("Error: "):] if message.startswith("Error: ") else message
            return _status_for(message), None, {"type": "error", "error_code": _status_for(message),
                                                "error": message or f"{self.cli} query exited {result.rc}"}
        try:
            document = json.loads(result.stdout)
        except ValueError:
            raise BackendError(f"{self.cli} query {path}: not JSON: {result.stdout[:200]!r}")
        return int(document.get("status_code") or document.get("error_code") or 200), None, document

    def exec(self, name, project, argv, stdin, env, cwd, user, timeout):
        command = [self.cli, "exec", "--force-local", name, "--project", project, "--force-noninteractive"]
        for key, value in sorted((env or {}).items()):
            command += ["--env", f"{key}={value}"]
        if cwd:
            command += ["--cwd", cwd]
        if user is not None:
            command += ["--user", str(user)]
        try:
            return self.ssh.run(command + ["--"] + list(argv), stdin=stdin, timeout=timeout)
        except TransportError as error:
            if "no exit within" not in str(error):
                raise
            raise OperationTimeout(f"exec in {name}: {argv[0]} did not finish within {timeout}s; raise `timeout`")

    def close(self):
        self.ssh.close()


# -- the provider ----------------------------------------------------------------------------------------------
class LxdLikeProvider(Provider):
    """Everything LXD and Incus share. A subclass names its CLI, its default socket and its monitor command."""

    backend = "lxd-like"
    cli = None
    default_socket = None
    instance_types = ("container", "vm")
    in_place_fields = ("cpu", "memory", "disk", "env", "config", "profiles", "network")

    def __init__(self, node, warn=None):
        super().__init__(node, warn)
        self._read = {}  # name -> (raw instance, ETag or None): what drift and updates work from
        self._created_here = set()
        self._wants_ipv6 = set()  # created by this run with network.ipv6 set: its start waits for IPv6 too
        self._fresh = set()  # names whose cached read is the state right after this run's start
        self._pools = {}

    # -- transports ----------------------------------------------------------------------------------------
    def make_api_client(self):
        return LxdApiClient(self.node.api, self.default_socket, lambda message: self.warn(f"node {self.node.name}: "
                                                                                          f"{message}"))

    def make_ssh_client(self):
        from ansible_collections.oneclickvirt.virt.plugins.module_utils.transport.ssh import SshTransport

        return LxdSshClient(SshTransport(self.node.ssh, self.warn), self.cli)

    def monitor_command(self, types=("lifecycle",)):
        """The node-side command that prints the daemon's events as JSON lines (what tests count writes with)."""
        return [self.cli, "monitor", "--format=json", "--all-projects"] + [f"--type={kind}" for kind in types]

    # -- requests ------------------------------------------------------------------------------------------
    def _instances_path(self, name=None, suffix="", **params):
        path = "/1.0/instances" + (f"/{name}" if name else "") + suffix
        return path + _query(project=self.node.project, **params)

    def _call(self, method, path, body=None, etag=None, what=None, timeout=None, wait=True):
        return self.router.request(method, path, body=body, etag=etag, timeout=timeout or self.timeout, what=what,
                                   wait=wait)

    def _get(self, path, what=None):
        return self._call("GET", path, what=what).metadata

    # -- reads ---------------------------------------------------------------------------------------------
    def version(self):
        return self._get("/1.0")["environment"].get("server_version")

    def info(self):
        return self._get("/1.0")

    def _fetch(self, name):
        try:
            reply = self._call("GET", self._instances_path(name, recursion=1), what=f"reading {name}")
        except NotFound:
            self._read.pop(name, None)
            return None
        self._read[name] = (reply.metadata, reply.etag)
        return reply.metadata

    def get_instance(self, name):
        if name in self._fresh:  # read by the address wait right after a start: nothing has changed since
            self._fresh.discard(name)
            data = self._read.get(name, (None, None))[0]
        else:
            data = self._fetch(name)
        if data is None or data.get("name") != name:
            return None
        return self._instance(data)

    def list_instances(self):
        listing = self._get(self._instances_path(recursion=2), what="listing instances") or []
        return sorted((self._instance(data) for data in listing), key=lambda instance: instance.name)

    def _instance(self, data):
        config = data.get("expanded_config") or data.get("config") or {}
        devices = data.get("expanded_devices") or data.get("devices") or {}
        root = _root_device(devices)
        ipv4, ipv6 = _addresses(data.get("state") or {})
        return Instance(
            name=data["name"], id=data["name"], node=self.node.name, backend=self.backend,
            type=TYPES.get(data.get("type"), data.get("type") or "container"),
            status=STATUS.get(data.get("status"), "unknown"),
            image=config.get(IMAGE_KEY) or config.get("volatile.base_image") or config.get("image.description"),
            cpu=cpu_of(config), memory=lxd_size_to_mib(config.get("limits.memory")),
            disk=lxd_size_to_mib(root.get("size")) if root else None,
            private_ip=ipv4, ipv6=ipv6, ports=[], created=data.get("created_at"))

    def list_images(self):
        images = self._get("/1.0/images" + _query(recursion=1, project=self.node.project), what="listing images") or []
        instances = self._get(self._instances_path(recursion=1), what="listing instances") or []
        users = {}
        for data in instances:
            fingerprint = (data.get("config") or {}).get("volatile.base_image")
            users.setdefault(fingerprint, []).append(data["name"])
        result = []
        for image in images:
            aliases = sorted(alias["name"] for alias in image.get("aliases") or [])
            fingerprint = image["fingerprint"]
            result.append(Image(
                name=aliases[0] if aliases else fingerprint, id=fingerprint, node=self.node.name,
                backend=self.backend, aliases=aliases, size=image.get("size"), created=image.get("created_at"),
                architecture=image.get("architecture"), type=TYPES.get(image.get("type"), image.get("type")),
                checksum=f"sha256:{fingerprint}", used_by=sorted(users.get(fingerprint, []))))
        return sorted(result, key=lambda image: image.name)

    # -- plan ----------------------------------------------------------------------------------------------
    def check_spec(self, spec):
        super().check_spec(spec)
        if spec.hostname is not None and spec.hostname != spec.name:
            raise Unsupported("hostname: LXD/Incus instances take their name as host name; remove `hostname` "
                              "(or make it equal to `name`)")
        if spec.ports:
            raise Unsupported("ports: publishing ports at creation is Docker's; on LXD/Incus map ports with "
                              "oneclickvirt.virt.virt_portmap (proxy devices)")
        if spec.command:
            raise Unsupported("command: LXD/Incus instances run their image's init; remove `command`")
        if spec.restart_policy is not None:
            raise Unsupported("config.restart_policy is Docker's; on LXD/Incus use config `boot.autostart: true`")
        self._wanted_config(spec)
        if self._profiles(spec) is not None:
            self._profile_devices(self._profiles(spec))  # a missing profile fails here, before any write
        network = spec.network or {}
        for key in ("ipv4", "ipv6"):
            if network.get(key) == "none":
                raise Unsupported(f"network.{key}: none is not supported on LXD/Incus (the bridge's DHCP/SLAAC "
                                  "serves every NIC); use auto or an address")
        if spec.disk is not None:
            self._check_disk_quota(spec)

    def _wanted_config(self, spec):
        """The daemon config keys the user asked for (cpu, memory, env, passthrough), as the daemon stores them."""
        wanted = {}
        for key, value in (spec.config or {}).items():
            if "." not in key:
                if key not in EXTRAS:
                    raise InvalidSpec(f"config.{key}: not an LXD/Incus config key; use dotted daemon keys such as "
                                      f"security.nesting or user.note, or one of: {', '.join(EXTRAS)}")
                continue
            if key.startswith(DAEMON_PREFIXES) or key == IMAGE_KEY:
                raise InvalidSpec(f"config.{key}: belongs to the daemon (or to this collection); remove it")
            wanted[key] = config_value(key, value)
        for option, keys in (("cpu", ("limits.cpu", "limits.cpu.allowance")), ("memory", ("limits.memory",))):
            if getattr(spec, option) is not None and any(key in wanted for key in keys):
                raise InvalidSpec(f"config.{keys[0]} and {option} both set the same limit; keep one")
        if spec.cpu is not None:
            wanted.update(cpu_config(spec.cpu))
        if spec.memory is not None:
            wanted["limits.memory"] = f"{spec.memory}MiB"
        for key, value in (spec.env or {}).items():
            wanted[f"environment.{key}"] = value
        return wanted

    def _profiles(self, spec):
        profiles = (spec.config or {}).get("profiles")
        if profiles is None:
            return None
        if not isinstance(profiles, list) or not all(isinstance(item, str) and item for item in profiles):
            raise InvalidSpec("config.profiles: give a list of profile names, e.g. [default, web]")
        return profiles

    def _profile_devices(self, profiles):
        devices = {}
        for profile in profiles if profiles is not None else ["default"]:
            try:
                data = self._get(f"/1.0/profiles/{quote(profile, safe='')}" + _query(project=self.node.project),
                                 what=f"reading profile {profile}")
            except NotFound:
                raise InvalidSpec(f"config.profiles: profile {profile!r} does not exist on node {self.node.name}")
            devices.update(data.get("devices") or {})
        return devices

    def _check_disk_quota(self, spec):
        """A root disk size the pool cannot enforce is refused here, before anything is written.

        LXD and Incus accept `size` on a `dir` pool without project quotas and ignore it silently; the only
        sign is that the daemon cannot report the usage of a volume on that pool. Ask it, and say why.
        """
        current = self._read.get(spec.name, (None, None))[0]
        devices = (current or {}).get("expanded_devices") or self._profile_devices(self._profiles(spec))
        root = _root_device(devices)
        if not root or not root.get("pool"):
            raise InvalidSpec("disk: the instance's profiles give it no root disk on a storage pool; add one "
                              "(a profile with a disk device at /)")
        pool = root["pool"]
        if pool not in self._pools:
            self._pools[pool] = self._get(f"/1.0/storage-pools/{quote(pool, safe='')}", what=f"reading pool {pool}")
        driver = self._pools[pool].get("driver")
        if driver != "dir":
            return
        volumes = self._get(f"/1.0/storage-pools/{quote(pool, safe='')}/volumes"
                            + _query(project=self.node.project), what=f"listing volumes of {pool}") or []
        probe = next((url for url in volumes if "/volumes/container/" in url or "/volumes/virtual-machine/" in url),
                     None)
        answer = "there is no instance volume on it to ask about"
        if probe is not None:
            try:
                usage = self._get(urlsplit(probe).path + "/state" + _query(project=self.node.project),
                                  what="reading volume usage")
                if (usage or {}).get("usage") is not None:
                    return  # the pool tracks (and enforces) volume quotas here
                answer = "it reports no usage for its volumes (usage: null)"
            except BackendError as error:
                answer = f"asked for a volume's usage it answers {error.backend_message or error!s}"
        raise Unsupported(f"disk: the root disk is on storage pool {pool!r} (driver dir), which enforces a size only "
                          f"with project quotas on its filesystem, and this node's daemon cannot: {answer}. "
                          "The size would be ignored silently. Use a zfs, btrfs or lvm pool, or remove `disk`")

    def drift(self, instance, spec):
        data = self._read.get(instance.name, (None, None))[0] or self._fetch(instance.name)
        config = data.get("expanded_config") or {}
        changes = {}
        if spec.image is not None and not self._same_image(config, spec.image):
            changes["image"] = (instance.image, spec.image)
        if spec.type != instance.type:
            changes["type"] = (instance.type, spec.type)
        if spec.cpu is not None and instance.cpu != spec.cpu:
            changes["cpu"] = (instance.cpu, spec.cpu)
        if spec.memory is not None and instance.memory != spec.memory:
            changes["memory"] = (instance.memory, spec.memory)
        if spec.disk is not None and instance.disk != spec.disk:
            changes["disk"] = (instance.disk, spec.disk)
        if spec.env is not None:
            current = {key: config.get(f"environment.{key}") for key in spec.env}
            if current != spec.env:
                changes["env"] = (current, dict(spec.env))
        self._wanted_config(spec)  # validates
        passthrough = {key: config_value(key, value) for key, value in (spec.config or {}).items() if "." in key}
        differing = {key: value for key, value in passthrough.items() if config.get(key, "") != value}
        if differing:
            changes["config"] = ({key: config.get(key) for key in differing}, differing)
        profiles = self._profiles(spec)
        if profiles is not None and profiles != (data.get("profiles") or []):
            changes["profiles"] = (data.get("profiles") or [], profiles)
        network = self._network_drift(data, spec.network or {})
        if network:
            changes["network"] = network
        return changes

    def _same_image(self, config, image):
        if config.get(IMAGE_KEY) == image:
            return True
        base = config.get("volatile.base_image") or ""
        try:
            return bool(base) and self._image_fingerprint(image) == base
        except NotFound:
            return False

    def _image_fingerprint(self, image):
        return self._image_source(image)[1]

    def _image_source(self, image):
        """({'type': 'image', 'alias'|'fingerprint': ...}, fingerprint) for an alias or a fingerprint (prefix)."""
        project = _query(project=self.node.project)
        try:
            alias = self._get(f"/1.0/images/aliases/{quote(image, safe='')}" + project, what=f"reading image {image}")
            return {"type": "image", "alias": image}, alias["target"]
        except NotFound:
            pass
        if re.match(r"^[0-9a-fA-F]{8,64}$", image):
            try:
                found = self._get(f"/1.0/images/{image.lower()}" + project, what=f"reading image {image}")
                return {"type": "image", "fingerprint": found["fingerprint"]}, found["fingerprint"]
            except NotFound:
                pass
        raise NotFound(f"image: {image!r} is neither an alias nor a fingerprint of an image on {self.backend} node "
                       f"{self.node.name}; import it first (oneclickvirt.virt.virt_image), then run again")

    def _nic_wanted(self, network):
        wanted = {}
        bridge = network.get("bridge")
        if bridge:
            try:
                managed = self._get(f"/1.0/networks/{quote(bridge, safe='')}" + _query(project=self.node.project),
                                    what=f"reading network {bridge}").get("managed")
            except NotFound:
                raise InvalidSpec(f"network.bridge: there is no network or bridge {bridge!r} on node {self.node.name}")
            wanted.update({"network": bridge} if managed else {"nictype": "bridged", "parent": bridge})
        for key in ("ipv4", "ipv6"):
            value = network.get(key)
            if value and value != "auto":
                wanted[f"{key}.address"] = value.split("/", 1)[0]
        if network.get("bandwidth_in") is not None:
            wanted["limits.ingress"] = f"{int(network['bandwidth_in'])}Mbit"
        if network.get("bandwidth_out") is not None:
            wanted["limits.egress"] = f"{int(network['bandwidth_out'])}Mbit"
        return wanted

    def _network_drift(self, data, network):
        if not any(value is not None for value in network.values()):
            return None
        wanted = self._nic_wanted(network)
        current = (data.get("expanded_devices") or {}).get("eth0") or {}
        differing = {}
        for key, value in wanted.items():
            if key in ("nictype", "parent", "network"):
                key, value = "bridge", network["bridge"]
                if (current.get("network") or current.get("parent")) == value:
                    continue
                differing[key] = current.get("network") or current.get("parent")
            elif current.get(key) != value:
                differing[key] = current.get(key)
        if not differing:
            return None
        return (differing, {key: value for key, value in network.items() if value is not None})

    def restart_needed(self, instance, changes):
        """In-place changes a running instance takes only at its next start."""
        if instance.status != "running":
            return []
        pending = []
        for key in sorted((changes.get("config") or {})):
            if key.startswith(RESTART_KEYS):
                pending.append(key)
        if changes.get("env"):
            pending.append("env")
        if changes.get("profiles") is not None:
            pending.append("profiles")
        return pending

    # -- writes --------------------------------------------------------------------------------------------
    def create_instance(self, spec, events):
        source = self._image_source(spec.image)[0]
        config = {key: value for key, value in self._wanted_config(spec).items() if value != ""}
        config[IMAGE_KEY] = spec.image
        profiles = self._profiles(spec)
        devices = {}
        if spec.disk is not None or spec.network:
            inherited = self._profile_devices(profiles)
            if spec.disk is not None:
                name, device = _root_entry(inherited)
                devices[name or "root"] = dict(device or {"type": "disk", "path": "/"}, size=f"{spec.disk}MiB")
            nic = self._nic_wanted(spec.network or {})
            if nic:
                devices["eth0"] = _nic_device(inherited.get("eth0"), nic)
        body = {"name": spec.name, "type": "virtual-machine" if spec.type == "vm" else "container", "source": source,
                "config": config, "devices": devices}
        if profiles is not None:
            body["profiles"] = profiles
        what = f"create of {spec.name}"
        try:
            self._call("POST", "/1.0/instances" + _query(project=self.node.project), body=body, what=what)
        except UncertainWrite:
            self._settle(spec.name)
            raise
        except BackendError as error:
            raise BackendError(_explain(str(error)), status=error.status, backend_message=error.backend_message)
        self._created_here.add(spec.name)
        if (spec.network or {}).get("ipv6") not in (None, "none"):
            self._wants_ipv6.add(spec.name)

    def update_instance(self, instance, changes):
        for attempt in range(3):
            data, etag = self._read.get(instance.name, (None, None))
            if data is None:
                data = self._fetch(instance.name)
                if data is None:
                    raise NotFound(f"{instance.name} vanished from node {self.node.name} during the update")
                etag = self._read[instance.name][1]
            body = self._update_body(data, changes)
            try:
                self._instance_write(instance.name, "PATCH", self._instances_path(instance.name), body=body,
                                     etag=etag, what=f"update of {instance.name}")
                break
            except PreconditionFailed:
                # Changed since it was read (the daemon's own volatile keys too): read again, reapply ours.
                self._fetch(instance.name)
                if attempt == 2:
                    raise
            except UncertainWrite:
                self._settle(instance.name)
                raise
            except BackendError as error:
                raise BackendError(_explain(str(error)), status=error.status,
                                   backend_message=error.backend_message)
        self._read.pop(instance.name, None)

    def _update_body(self, data, changes):
        """A PATCH of only the keys this run changes: every other field stays as the daemon has it."""
        config = {}
        if "cpu" in changes:
            config.update(cpu_config(changes["cpu"]))
            if changes["cpu"] == int(changes["cpu"]) and not (data.get("config") or {}).get("limits.cpu.allowance"):
                config.pop("limits.cpu.allowance")
        if "memory" in changes:
            config["limits.memory"] = f"{changes['memory']}MiB"
        for key, value in (changes.get("env") or {}).items():
            config[f"environment.{key}"] = value
        config.update(changes.get("config") or {})
        body = {}
        if config:
            body["config"] = config
        if "profiles" in changes:
            body["profiles"] = changes["profiles"]
        devices = {}
        if "disk" in changes:
            name, device = _root_entry(data.get("devices") or {})
            if device is None:
                name, device = _root_entry(data.get("expanded_devices") or {})
            devices[name or "root"] = dict(device or {"type": "disk", "path": "/"}, size=f"{changes['disk']}MiB")
        if "network" in changes:
            local = (data.get("devices") or {}).get("eth0") or (data.get("expanded_devices") or {}).get("eth0")
            devices["eth0"] = _nic_device(local, self._nic_wanted(changes["network"]))
        if devices:
            body["devices"] = devices
        return body

    def _state(self, instance, action, timeout, force=False, grace=None):
        body = {"action": action, "force": force}
        if grace is not None:
            body["timeout"] = grace
        try:
            self._instance_write(instance.name, "PUT", self._instances_path(instance.name, "/state"), body=body,
                                 timeout=timeout, what=f"{action} of {instance.name}")
        except UncertainWrite:
            self._settle(instance.name)
            raise
        finally:
            self._read.pop(instance.name, None)

    def start(self, instance, timeout):
        try:
            self._state(instance, "start", timeout)
        except BackendError as error:
            raise self._failed_start(instance, error, timeout)
        self._wait_addresses(instance.name, timeout)

    def _failed_start(self, instance, error, timeout):
        message = _explain(str(error))
        if instance.name in self._created_here:
            # Created by this very run and it cannot start: leave nothing behind that blocks the name.
            try:
                self._delete_now(instance.name, timeout)
                message += f"; {instance.name} was created by this run and could not start, so it was deleted again"
            except VirtError as cleanup:
                message += f"; deleting it again failed too: {cleanup}"
        return BackendError(message, status=error.status, backend_message=error.backend_message)

    def stop(self, instance, timeout, force=False):
        if force or instance.status == "paused":
            self._state(instance, "stop", timeout, force=True)
            return
        try:
            self._state(instance, "stop", timeout, grace=_grace(timeout))
        except BackendError as error:
            if not _shutdown_refused(error):
                raise
            # The init ignored the shutdown request for the grace period: stop it the hard way, as docker stop does.
            self._state(instance, "stop", timeout, force=True)

    def restart(self, instance, timeout):
        try:
            self._state(instance, "restart", timeout, grace=_grace(timeout))
        except BackendError as error:
            if not _shutdown_refused(error):
                raise
            self._state(instance, "restart", timeout, force=True)
        self._wait_addresses(instance.name, timeout)

    def delete(self, instance, timeout):
        self._delete_now(instance.name, timeout, stopped=instance.status == "stopped")

    def _delete_now(self, name, timeout, stopped=None):
        """Stop (hard) unless stopped, then delete. `stopped`: what the caller read a moment ago; None reads it."""
        try:
            if stopped is None:
                data = self._fetch(name)
                if data is None:
                    return
                stopped = data.get("status") == "Stopped"
            if not stopped:
                try:
                    self._instance_write(name, "PUT", self._instances_path(name, "/state"), timeout=timeout,
                                         body={"action": "stop", "force": True}, what=f"stop of {name}")
                except BackendError as error:
                    if "already stopped" not in str(error):  # it stopped by itself since the caller's read
                        raise
            self._instance_write(name, "DELETE", self._instances_path(name), timeout=timeout, what=f"delete of {name}")
        except NotFound:
            pass
        except UncertainWrite:
            self._settle(name)
            raise
        finally:
            self._read.pop(name, None)
            self._created_here.discard(name)

    def _instance_write(self, name, method, path, **kwargs):
        """A write on one instance. When another operation holds the instance (a create still unpacking after a
        lost answer, a concurrent run), the daemon refuses without doing anything: wait for it, then send again."""
        try:
            return self._call(method, path, **kwargs)
        except BackendError as error:
            if "is busy running" not in str(error):
                raise
            self._settle(name)
            return self._call(method, path, **kwargs)

    def _settle(self, name):
        """After a lost answer: wait for the daemon's operations on this instance to finish, so a re-read is true."""
        try:
            running = self._get("/1.0/operations" + _query(recursion=1, project=self.node.project)) or {}
            for operation in running.get("running") or []:
                if f"/1.0/instances/{name}" in json.dumps(operation.get("resources") or {}):
                    try:
                        self.router.client().wait_operation(f"/1.0/operations/{operation['id']}", self.timeout,
                                                            f"waiting for {name}")
                    except VirtError:
                        pass
        except (VirtError, TransportError):
            pass

    def _wait_addresses(self, name, timeout):
        """After a start: wait briefly for the address the NIC's network hands out, so results show it.

        IPv4 when the network offers it (DHCP answers within a fraction of a second); IPv6 only when the network
        offers nothing else, or when this run created the instance with `network.ipv6` set: router
        advertisements and duplicate address detection take about a second more, which every create would pay.
        At most 10 s in all, and 2 s more once the first family is there (an image may speak only one). The
        last read is the instance's state after the start: the next `get_instance` uses it instead of reading
        again.
        """
        started = time.monotonic()
        deadline = started + min(timeout, 10)
        families = None  # what the network offers: read only when IPv4 is slow to come, or IPv6 is wanted
        data = self._fetch(name)
        while data and data.get("status") == "Running":
            ipv4, ipv6 = _addresses(data.get("state") or {})
            if ipv4 and name not in self._wants_ipv6:
                break  # the usual case, without reading the network
            if families is None and (name in self._wants_ipv6 or time.monotonic() - started >= 0.5):
                families = self._families_wanted(name, data)
            if families is not None:
                found = (ipv4 is not None) + (ipv6 is not None)
                if found >= families:
                    break
                if found:
                    deadline = min(deadline, time.monotonic() + 2)
            if time.monotonic() >= deadline:
                break
            # Often at first: a lease from the daemon's own bridge comes 0.08 to 0.11 s after the start (lab).
            time.sleep(0.025 if time.monotonic() - started < 0.5 else 0.1)
            data = self._fetch(name)
        self._fresh.add(name)

    def _families_wanted(self, name, data):
        """How many address families the start waits for (see _wait_addresses): 0 when the NIC has no network
        of the daemon's (nothing to wait for), else 1 or 2."""
        nic = (data.get("expanded_devices") or {}).get("eth0") or {}
        if not nic.get("network"):
            return 0 if not nic else 1
        try:
            network = self._get(f"/1.0/networks/{quote(nic['network'], safe='')}"
                                + _query(project=self.node.project)) or {}
        except VirtError:
            return 0
        config = network.get("config") or {}
        offered = [config.get(key) not in (None, "", "none") for key in ("ipv4.address", "ipv6.address")]
        return sum(offered) if name in self._wants_ipv6 or not offered[0] else 1

    def exec(self, instance, argv, stdin=None, env=None, cwd=None, user=None, timeout=None):
        if instance.status != "running":
            raise Unsupported(f"{instance.name} is {instance.status}; commands run only in a running instance")
        if user is not None and not str(user).isdigit():
            raise InvalidSpec(f"user: LXD/Incus exec takes a numeric uid, not {user!r}")
        timeout = timeout or self.timeout
        what = f"exec in {instance.name}"
        body = {"command": list(argv), "environment": dict(env or {}), "interactive": False, "record-output": False}
        if cwd:
            body["cwd"] = cwd
        if user is not None:
            body["user"] = int(user)
        path = self._instances_path(instance.name, "/exec")

        def run(client):
            if client.label == "ssh":
                return client.exec(instance.name, self.node.project, argv, stdin, env, cwd, user, timeout)
            return client.exec(path, body, stdin, timeout, what)

        return self.router.run(True, run)

    # -- the node ------------------------------------------------------------------------------------------
    def node_facts(self):
        """Version, server name, driver-based types, instance counts, /1.0/resources, and the default profile's
        root pool: its path (for `df` over SSH) and its own space figures."""
        info = self.info() or {}
        environment = info.get("environment") or {}
        drivers = str(environment.get("driver") or "")
        resources = NodeResources()
        host = self._get("/1.0/resources", what="reading the node's resources") or {}
        if (host.get("cpu") or {}).get("total"):
            resources.cpu_cores, resources.sources["cpu_cores"] = int(host["cpu"]["total"]), "api"
        memory = host.get("memory") or {}
        if memory.get("total"):
            resources.memory_total, resources.sources["memory_total"] = int(memory["total"]) // MIB, "api"
            resources.memory_available = (int(memory["total"]) - int(memory.get("used") or 0)) // MIB
            resources.sources["memory_available"] = "api"
        profile = self._get("/1.0/profiles/default" + _query(project=self.node.project),
                            what="reading the default profile") or {}
        root = _root_device(profile.get("devices")) or {}
        if root.get("pool"):
            self._pool_facts(root["pool"], resources)
        listing = self._get(self._instances_path(recursion=1), what="listing instances") or []
        return NodeFacts(
            version=environment.get("server_version"), hostname=environment.get("server_name"),
            # A VM needs the qemu driver; `environment.driver` lists the drivers this node can run ("lxc | qemu").
            instance_types=["container", "vm"] if "qemu" in drivers else ["container"],
            instances=count_statuses(STATUS.get(item.get("status"), "unknown") for item in listing),
            resources=resources)

    def _pool_facts(self, pool_name, resources):
        path = f"/1.0/storage-pools/{quote(pool_name, safe='')}"
        pool = self._get(path, what=f"reading storage pool {pool_name}") or {}
        source = (pool.get("config") or {}).get("source") or ""
        resources.storage_pool = pool_name
        # A dir pool lives at its source; other drivers mount the pool under the daemon's storage-pools folder.
        if pool.get("driver") == "dir" and source.startswith("/"):
            resources.disk_path = source
        else:
            resources.disk_path = f"{os.path.dirname(self.default_socket)}/storage-pools/{pool_name}"
        space = (self._get(f"{path}/resources", what=f"reading the space of pool {pool_name}") or {}).get("space") or {}
        if space.get("total"):
            resources.disk_total = int(space["total"]) // MIB
            resources.disk_free = (int(space["total"]) - int(space.get("used") or 0)) // MIB
            resources.sources.update(disk_total="api", disk_free="api")

    # -- images (virt_image; the flow is in module_utils/images.py) ----------------------------------------
    image_sources = ("url", "upload", "file")

    def _images_path(self, suffix="", **params):
        return "/1.0/images" + suffix + _query(project=self.node.project, **params)

    def find_image(self, name):
        """The image with exactly this alias, or exactly this (full) fingerprint."""
        fingerprint = name if re.match(r"^[0-9a-f]{64}$", name) else None
        if fingerprint is None:
            try:
                fingerprint = self._get(self._images_path(f"/aliases/{quote(name, safe='')}"),
                                        what=f"reading image alias {name}")["target"]
            except NotFound:
                return None
        try:
            data = self._get(self._images_path(f"/{fingerprint}"), what=f"reading image {fingerprint[:12]}")
        except NotFound:
            return None
        return self._image_of(data, name)

    def _image_of(self, data, name):
        users = {}
        for instance in self._get(self._instances_path(recursion=1), what="listing instances") or []:
            users.setdefault((instance.get("config") or {}).get("volatile.base_image"), []).append(instance["name"])
        fingerprint = data["fingerprint"]
        return Image(name=name, id=fingerprint, node=self.node.name, backend=self.backend,
                     aliases=sorted(alias["name"] for alias in data.get("aliases") or []), size=data.get("size"),
                     created=data.get("created_at"), architecture=data.get("architecture"),
                     type=TYPES.get(data.get("type"), data.get("type")), checksum=f"sha256:{fingerprint}",
                     used_by=sorted(users.get(fingerprint, [])))

    def image_source(self, request, run):
        """Identity is the fingerprint: sha256 of the unified tarball, or of metadata + rootfs concatenated."""
        file_digest, mismatch = image_code("image_transfer", "file_digest", "mismatch")
        ImageSource = image_code("images", "ImageSource")

        # An import names nothing: the aliases come after it.
        predicted = Image(name=request.name, id="", node=self.node.name, backend=self.backend)
        given = (("ocv.checksum", request.checksum), ("ocv.metadata_checksum", request.metadata_checksum))
        properties = {key: str(value) for key, value in given if value is not None}

        if request.source == "upload":
            files = [request.metadata_path, request.path] if request.metadata_path else [request.path]
            for checksum, path in ((request.checksum, request.path), (request.metadata_checksum, request.metadata_path)):
                if checksum is not None:
                    actual = run.step(f"verify {checksum.algorithm} of {path}",
                                      lambda: file_digest(path, checksum.algorithm))
                    if actual != checksum:
                        raise mismatch(path, checksum, actual)
            fingerprint = run.step("fingerprint", lambda: file_digest(files[0], "sha256", files[1:])).hex
            predicted.id, predicted.checksum = fingerprint, f"sha256:{fingerprint}"
            return ImageSource(action=f"import {' + '.join(files)}", identity=fingerprint,
                               existing=self._image_by_fingerprint(fingerprint), predicted=predicted,
                               fetch=lambda run: self._import_upload(files, fingerprint, properties, run))

        client = self.router.ssh(f"source {request.source} (image files on the node, imported with "
                                 f"`{self.cli} image import`)")
        staging = run.staging(client.ssh, request.timeout)
        if request.source == "file":
            files = [request.metadata_path, request.path] if request.metadata_path else [request.path]
            self._verify_on_node(staging, request, request.path, request.metadata_path, run)
            fingerprint = run.step("fingerprint", lambda: staging.digest(files, "sha256")).hex
            predicted.id, predicted.checksum = fingerprint, f"sha256:{fingerprint}"
            return ImageSource(action=f"import {' + '.join(files)}", identity=fingerprint, predicted=predicted,
                               existing=self._image_by_fingerprint(fingerprint),
                               fetch=lambda run: self._import_on_node(client, files, fingerprint, properties, run))

        # source url: the node downloads. With the checksums the image is known without a download: a unified
        # tarball's sha256 is its fingerprint; a split image carries the checksums it was imported with.
        action = f"download and import {request.metadata_url + ' + ' if request.metadata_url else ''}{request.url}"
        known = None
        if request.metadata_url is None and request.checksum and request.checksum.algorithm == "sha256":
            known = request.checksum.hex
            existing = self._image_by_fingerprint(known)
        elif request.metadata_url and request.checksum and request.metadata_checksum:
            existing = self._image_by_properties(properties)
        else:
            existing = None  # not knowable without the files: download them first (check mode too)
        if known or existing is not None:
            predicted.id = known or existing.id
            predicted.checksum = f"sha256:{predicted.id}"

            def fetch(run):
                files, fingerprint = self._download_on_node(staging, request, run)
                return self._import_on_node(client, files, fingerprint, properties, run)

            return ImageSource(action=action, identity=known or existing.id, existing=existing, predicted=predicted,
                               fetch=fetch)
        files, fingerprint = self._download_on_node(staging, request, run)
        predicted.id, predicted.checksum = fingerprint, f"sha256:{fingerprint}"
        return ImageSource(action=action, identity=fingerprint, predicted=predicted,
                           existing=self._image_by_fingerprint(fingerprint),
                           fetch=lambda run: self._import_on_node(client, files, fingerprint, properties, run))

    def _image_by_fingerprint(self, fingerprint):
        return self.find_image(fingerprint)

    def _image_by_properties(self, properties):
        for data in self._get(self._images_path(recursion=1), what="listing images") or []:
            if all((data.get("properties") or {}).get(key) == value for key, value in properties.items()):
                aliases = sorted(alias["name"] for alias in data.get("aliases") or [])
                return self._image_of(data, aliases[0] if aliases else data["fingerprint"])
        return None

    def _verify_on_node(self, staging, request, path, metadata_path, run):
        mismatch = image_code("image_transfer", "mismatch")

        for checksum, each, label in ((request.checksum, path, request.url or path),
                                      (request.metadata_checksum, metadata_path, request.metadata_url or metadata_path)):
            if checksum is not None:
                actual = run.step(f"verify {checksum.algorithm} of {label}",
                                  lambda: staging.digest([each], checksum.algorithm))
                if actual != checksum:
                    staging.remove()  # nothing half-downloaded stays on the node
                    raise mismatch(label, checksum, actual)

    def _download_on_node(self, staging, request, run):
        """Download the image file(s) into the run's staging directory, each verified as it lands; fingerprint."""
        human_size, mismatch = image_code("image_transfer", "human_size", "mismatch")

        files, digests = [], []
        for url, name, checksum in ((request.metadata_url, "metadata", request.metadata_checksum),
                                    (request.url, "rootfs", request.checksum)):
            if not url:
                continue
            # A unified tarball's sha256 is its fingerprint: have the node compute it with the download.
            algorithm = checksum.algorithm if checksum else (None if request.metadata_url else "sha256")
            path, _size, digest = run.step(
                f"download {url}", lambda url=url, name=name, algorithm=algorithm: staging.download(url, name, algorithm),
                describe=lambda got, url=url: f"download {url} ({human_size(got[1])})")
            if checksum is not None and digest != checksum:
                staging.remove()  # nothing half-downloaded stays on the node
                raise mismatch(url, checksum, digest)
            files.append(path)
            digests.append(digest)
        if len(files) == 1 and digests[0] is not None and digests[0].algorithm == "sha256":
            return files, digests[0].hex
        return files, run.step("fingerprint", lambda: staging.digest(files, "sha256")).hex

    def _import_upload(self, files, fingerprint, properties, run):
        """Controller files: the API's own upload; over SSH, streamed to the node and imported there."""
        from urllib.parse import urlencode as encode

        human_size = image_code("image_transfer", "human_size")

        prefix = "X-Incus-" if self.backend == "incus" else "X-LXD-"

        def upload(client):
            if client.label == "api":
                headers = {f"{prefix}fingerprint": fingerprint}
                if properties:
                    headers[f"{prefix}properties"] = encode(properties)
                size = sum(os.path.getsize(name) for name in files)
                metadata = run.step(f"upload ({human_size(size)})", lambda: client.post_image(
                    self._images_path(), files, headers, self.timeout, "image upload"))
                return metadata.get("fingerprint") or fingerprint
            staging = run.staging(client.ssh, self.timeout)
            staged = [run.step(f"copy {name} to the node", lambda name=name, index=index: staging.put(
                name, ("metadata", "rootfs")[index] if len(files) == 2 else "rootfs"))
                for index, name in enumerate(files)]
            return self._import_on_node(client, staged, fingerprint, properties, run)

        try:
            return self.router.run(True, upload)
        except BackendError as error:
            return self._same_fingerprint(error, fingerprint, run)

    def _import_on_node(self, client, files, fingerprint, properties, run):
        argv = [self.cli, "image", "import", "--force-local", *files, "--project", self.node.project]
        argv += [f"{key}={value}" for key, value in sorted(properties.items())]
        result = run.step(f"{self.cli} image import", lambda: client.ssh.run(argv, timeout=self.timeout))
        if result.rc != 0:
            message = (result.stderr or result.stdout).strip()
            return self._same_fingerprint(BackendError(f"{self.cli} image import failed (rc {result.rc}): "
                                                       f"{message[:500]}", backend_message=message), fingerprint, run)
        found = re.search(r"fingerprint: ([0-9a-f]{64})", result.stdout)
        return found.group(1) if found else fingerprint

    def _same_fingerprint(self, error, fingerprint, run):
        """A forced re-fetch of an image the daemon already has is done: the daemon keeps one copy per fingerprint."""
        if "same fingerprint already exists" in str(error).lower():
            run.progress("the daemon already has this fingerprint; kept as is")
            return fingerprint
        raise error

    def add_image_alias(self, image, alias):
        """Create the alias, or move it to this image (its old image keeps its other aliases)."""
        path = self._images_path(f"/aliases/{quote(alias, safe='')}")
        try:
            self._get(path, what=f"reading image alias {alias}")
        except NotFound:
            self._call("POST", self._images_path("/aliases"), body={"name": alias, "target": image.id,
                                                                    "description": ""},
                       what=f"creating image alias {alias}")
            return
        self._call("PUT", path, body={"target": image.id, "description": ""}, what=f"moving image alias {alias}")

    def delete_image(self, image, force=False):
        try:
            self._call("DELETE", self._images_path(f"/{image.id}"), what=f"deleting image {image.name}")
        except NotFound:
            pass


def _grace(timeout):
    """Seconds the instance's init gets to shut down cleanly before it is stopped by force."""
    return max(1, min(int(timeout) // 2, 30))


def _shutdown_refused(error):
    # LXD: 'Failed shutting down instance, status is "Running": shutting down the container failed';
    # Incus: '... status is "Running": context deadline exceeded'.
    return "failed shutting down" in str(error).lower()


def _root_entry(devices):
    for name, device in (devices or {}).items():
        if device.get("type") == "disk" and device.get("path") == "/":
            return name, dict(device)
    return None, None


def _nic_device(base, wanted):
    """eth0 as the instance's own device: what it inherits, with the asked keys (a new bridge replaces the old)."""
    device = dict(base or {"type": "nic", "name": "eth0"})
    if "network" in wanted or "parent" in wanted:
        for key in ("network", "nictype", "parent"):
            device.pop(key, None)
    device.update(wanted)
    return device


def _root_device(devices):
    return _root_entry(devices)[1]


def _addresses(state):
    """Global IPv4 and IPv6 of eth0 (else of the first other interface), from the instance state."""
    networks = state.get("network") or {}
    names = ["eth0"] + sorted(name for name in networks if name not in ("eth0", "lo"))
    ipv4 = ipv6 = None
    for name in names:
        for address in (networks.get(name) or {}).get("addresses") or []:
            if address.get("scope") != "global":
                continue
            if address.get("family") == "inet" and ipv4 is None:
                ipv4 = address.get("address")
            elif address.get("family") == "inet6" and ipv6 is None:
                ipv6 = address.get("address")
        if ipv4 or ipv6:
            break
    return ipv4, ipv6


def _explain(message):
    """The daemon's own refusal, with what it means for the options that caused it."""
    lowered = message.lower()
    if " tc " in lowered or "tc filter" in lowered or "tc qdisc" in lowered or "limits.ingress" in lowered \
            or "limits.egress" in lowered:
        return (f"{message}. network.bandwidth_in / bandwidth_out (limits.ingress / limits.egress on eth0) need "
                "traffic control (tc) support that this node's kernel lacks (the daemon could not apply the limit); "
                "remove them")
    if "virtual-machine" in lowered or "vhost_vsock" in lowered or "kvm" in lowered:
        return (f"{message}. type: vm needs a VM image and a node that can run VMs (KVM, vhost_vsock); "
                "use type container")
    return message
