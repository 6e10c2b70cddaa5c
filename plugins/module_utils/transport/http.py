# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small HTTP/1.1 client over any byte stream: a unix socket, TCP, TLS, or an SSH channel.

Why not requests: it imports in about 0.1 s (a no-op task pays that every run), it cannot speak over a unix
socket or an SSH channel without adapters, and with REQUESTS_CA_BUNDLE set it silently replaces a session's
own TLS choice. Here the TLS context is built from the node description alone, so the collection's choice
always wins, and the same client serves the Docker Engine API locally and tunnelled over SSH.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import TransportError

READ_CHUNK = 65536
SEND_CHUNK = 1 << 20  # streamed request bodies (image files) are read and sent in pieces of this size


@dataclass
class HttpResponse:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body.decode("utf-8")) if self.body else None


class SocketStream:
    """A connected socket (unix, TCP or TLS) behind the stream interface the HTTP client uses."""

    def __init__(self, sock, tls=False):
        self.sock = sock
        self.tls = tls

    def settimeout(self, seconds):
        self.sock.settimeout(seconds)

    def send_all(self, data):
        self.sock.sendall(data)

    def recv(self, size):
        return self.sock.recv(size)

    def close_write(self):
        # A TLS socket cannot half-close; closing stdin of a hijacked exec needs a plain socket.
        if not self.tls:
            self.sock.shutdown(socket.SHUT_WR)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def file_chunks(path, size=SEND_CHUNK):
    """A controller file, piece by piece, for streaming it without holding it in memory."""
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(size)
            if not chunk:
                return
            yield chunk


@functools.lru_cache(maxsize=None)
def tls_context(validate_certs=True, ca_file=None, server_cert=None, client_cert=None, client_key=None):
    """The TLS context of a node's API, from its description only (never from REQUESTS_CA_BUNDLE).

    One per distinct settings in a process, shared (a context is never changed after this): an inventory over
    many nodes with the same CA bundle reads and checks that bundle once, the larger part of a context's cost.
    """
    import ssl  # here, not at the top: a task over a unix socket never pays for importing it

    if server_cert or not validate_certs:
        # A pinned certificate is checked byte for byte after the handshake (see pin_matches); the
        # self-signed certificates of LXD/Incus carry no name to check against.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif ca_file:
        context = ssl.create_default_context(cafile=ca_file)
    else:
        context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if client_cert:
        context.load_cert_chain(client_cert, client_key)
    return context


def pem_fingerprint(path):
    import ssl

    with open(path, "rb") as handle:
        der = ssl.PEM_cert_to_DER_cert(handle.read().decode("ascii"))
    return hashlib.sha256(der).hexdigest()


def open_socket(url, timeout, context=None, pinned_fingerprint=None):
    """Connect to unix://path, tcp://host:port, http(s)://host:port. Failures are TransportError(sent=False)."""
    parts = urlsplit(url)
    try:
        if parts.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(parts.path)
            return SocketStream(sock)
        default_port = 443 if parts.scheme == "https" else 2375
        sock = socket.create_connection((parts.hostname, parts.port or default_port), timeout=timeout)
        # Requests are written whole; without this, Nagle holds a request's last segment until the server's
        # delayed ACK (40 ms) for every request whose head and body leave in two writes.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is None:
            return SocketStream(sock)
        return SocketStream(_handshake(sock, context, url, parts.hostname, pinned_fingerprint), tls=True)
    except TransportError:
        raise
    except (OSError, socket.timeout) as error:
        raise TransportError(f"cannot connect to {url}: {error}")


def _handshake(sock, context, url, hostname, pinned_fingerprint):
    """TLS over a connected socket; a pinned certificate is compared byte for byte before anything is sent."""
    import ssl

    try:
        tls = context.wrap_socket(sock, server_hostname=hostname)
    except ssl.SSLError as error:
        sock.close()
        raise TransportError(f"TLS handshake with {url} failed: {error}")
    if pinned_fingerprint:
        seen = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
        if seen != pinned_fingerprint:
            tls.close()
            raise TransportError(f"TLS: the server certificate of {url} (sha256 {seen}) is not the pinned "
                                 f"api.server_cert (sha256 {pinned_fingerprint}); refusing to talk to it")
    return tls


def _bodiless(method, status):
    """Whether an answer has no body whatever its headers say (RFC 9112, 6.3)."""
    return method == "HEAD" or status in (204, 304) or 100 <= status < 200


class HttpClient:
    """HTTP/1.1 with keep-alive over streams from `open_stream()`; one connection at a time."""

    def __init__(self, open_stream, host_header="localhost", timeout=30, headers=None, base_path=""):
        self.open_stream = open_stream
        self.host_header = host_header
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.base_path = base_path
        self.stream = None
        self.buffer = b""
        self.requests_sent = 0

    def close(self):
        if self.stream is not None:
            self.stream.close()
        self.stream, self.buffer = None, b""

    def _connect(self):
        if self.stream is None:
            self.stream = self.open_stream()
            self.buffer = b""
        return self.stream

    def _plain(self, path, query=None, body=None, headers=None):
        """(target, headers, parts) of a request to a plain path (percent-encoded here) with a JSON or bytes body."""
        target = self.target(quote(path, safe="/:@!$&'()*+,;=-._~"), query)
        headers = dict(headers or {})
        if body is None:
            return target, headers, ()
        if "Content-Type" not in self.headers:
            headers.setdefault("Content-Type", "application/json")
        return target, headers, (body if isinstance(body, bytes) else json.dumps(body).encode("utf-8"),)

    def request(self, method, path, query=None, body=None, headers=None, timeout=None):
        """Send one request and read the whole answer (see `exchange`). A lost answer is TransportError(sent=True)."""
        target, headers, parts = self._plain(path, query, body, headers)
        return self.exchange(method, target, headers, parts, timeout)

    def get_many(self, paths, timeout=None, batch=64):
        """GET every path over one connection, `batch` requests sent back to back before their answers are read
        (HTTP/1.1 pipelining, for servers that answer in order). Small batches always fit the socket buffers, so
        sending never waits on the server. Returns the responses in the order of `paths`."""
        responses = []
        for start in range(0, len(paths), batch):
            targets = [self._plain(path)[0] for path in paths[start:start + batch]]
            for target in targets:
                self.send("GET", target, timeout=timeout)
            responses += [self.receive("GET", target) for target in targets]
        return responses

    # -- requests to targets already encoded, with streamed bodies and answers -------------------------------
    def target(self, encoded_path, query=None):
        """The request target for a path the caller has already percent-encoded (names quoted with safe='')."""
        target = self.base_path + encoded_path
        if query:
            target += "?" + urlencode(query, doseq=True)
        return target

    def exchange(self, method, target, headers=None, parts=(), timeout=None):
        """`request` for an encoded `target` (see `send`): send one request, read its whole answer, and send a read
        once more when the reused connection had been closed while idle."""
        reused = self.stream is not None
        try:
            self.send(method, target, headers, parts, timeout)
            return self.receive(method, target)
        except TransportError as error:
            if not (reused and method == "GET" and isinstance(error.__cause__, (EOFError, ConnectionError))):
                raise
        self.send(method, target, headers, parts, timeout)
        return self.receive(method, target)

    def send(self, method, target, headers=None, parts=(), timeout=None):
        """Send one request whose body is `parts`: bytes, or paths of controller files streamed in chunks.

        Content-Length is the sum of the parts. A failure while sending is TransportError(sent=True): the server
        may have seen part of it. A failure to connect is TransportError(sent=False), from `open_socket`.
        Returns the stream (an upgraded connection continues on it).
        """
        length = sum(len(part) if isinstance(part, bytes) else os.path.getsize(part) for part in parts)
        all_headers = {"Host": self.host_header, "User-Agent": "oneclickvirt.virt", **self.headers,
                       **(headers or {})}
        if parts or method in ("POST", "PUT", "PATCH"):
            all_headers["Content-Length"] = str(length)
        head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in all_headers.items())
        stream = self._connect()
        stream.settimeout(timeout or self.timeout)
        first = head.encode("latin-1") + b"\r\n"
        if parts and isinstance(parts[0], bytes):
            first, parts = first + parts[0], parts[1:]  # a small body leaves with its head, in one write
        try:
            stream.send_all(first)
            for part in parts:
                for chunk in [part] if isinstance(part, bytes) else file_chunks(part):
                    stream.send_all(chunk)
        except (OSError, socket.timeout, EOFError) as error:
            self.close()
            raise TransportError(f"{method} {target.split('?', 1)[0]}: sending failed: {error}", sent=True) from error
        self.requests_sent += 1
        return stream

    def receive_head(self, method, target):
        """(status, headers) of the answer to the request just sent."""
        try:
            return self._read_head()
        except (OSError, socket.timeout, EOFError, ValueError) as error:
            self.close()
            raise TransportError(f"{method} {target.split('?', 1)[0]}: no answer: {error or type(error).__name__}",
                                 sent=True) from error

    def iter_body(self, headers, method, target):
        """The answer's body, chunk by chunk as it arrives (chunked, sized, or until the server closes)."""
        try:
            if headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size = int(self._read_until(b"\r\n").split(b";")[0], 16)
                    if size == 0:
                        self._read_until(b"\r\n")
                        break
                    yield self._read_exact(size)
                    self._read_exact(2)
            elif "content-length" in headers:
                remaining = int(headers["content-length"])
                while remaining:
                    if not self.buffer:
                        self._fill()
                    chunk, self.buffer = self.buffer[:remaining], self.buffer[remaining:]
                    remaining -= len(chunk)
                    yield chunk
            else:
                while True:
                    if self.buffer:
                        chunk, self.buffer = self.buffer, b""
                        yield chunk
                    try:
                        self._fill()
                    except EOFError:
                        if self.buffer:
                            chunk, self.buffer = self.buffer, b""
                            yield chunk
                        self.close()
                        return
        except (OSError, socket.timeout, EOFError, ValueError) as error:
            self.close()
            raise TransportError(f"{method} {target.split('?', 1)[0]}: the answer broke off: "
                                 f"{error or type(error).__name__}", sent=True) from error
        if headers.get("connection", "").lower() == "close":
            self.close()

    def receive(self, method, target):
        """The whole answer to the request just sent."""
        status, headers = self.receive_head(method, target)
        if not _bodiless(method, status):
            return HttpResponse(status, headers, b"".join(self.iter_body(headers, method, target)))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return HttpResponse(status, headers, b"")

    def upgrade(self, method, path, body=None, timeout=None):
        """Send a request that switches the connection to a raw stream (Docker's attach/exec start).

        Returns (status, stream, already_read_bytes). The stream belongs to the caller afterwards.
        """
        target, headers, parts = self._plain(path, body=body, headers={"Connection": "Upgrade", "Upgrade": "tcp"})
        stream = self.send(method, target, headers, parts, timeout)
        status, response_headers = self.receive_head(method, target)
        if status != 101:
            data = b"" if _bodiless(method, status) else b"".join(self.iter_body(response_headers, method, target))
            self.close()
            return status, HttpResponse(status, response_headers, data), b""
        leftover = self.buffer
        self.stream, self.buffer = None, b""
        return status, stream, leftover

    def _fill(self):
        chunk = self.stream.recv(READ_CHUNK)
        if not chunk:
            raise EOFError("connection closed by the server")
        self.buffer += chunk

    def _read_until(self, marker):
        while marker not in self.buffer:
            self._fill()
        data, separator, self.buffer = self.buffer.partition(marker)
        return data

    def _read_exact(self, size):
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def _read_head(self):
        lines = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            key, separator, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        return status, headers
