"""A counting loopback relay in front of a daemon's unix socket (Docker, LXD, Incus).

The harness starts one per daemon on a socket of its own under its scratch folder and points a client (ours or
a peer) at it for a counting run; timed runs go to the daemon directly, so the relay never adds to a time.
Bytes are passed through untouched; in the client-to-daemon direction every HTTP/1.x request line is counted
(with keep-alive and pipelining, one connection carries many). The daemons here speak plain HTTP on their
unix sockets, so nothing needs decrypting.
"""
from __future__ import annotations

import collections
import os
import re
import socket
import threading

REQUEST_LINE = re.compile(rb"(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) (\S+) HTTP/1\.[01]\r\n")
KEEP = 200  # bytes of the previous chunk kept, so that a request line split across two reads is still seen


class CountingProxy:
    def __init__(self, listen_path, upstream_path):
        self.listen_path, self.upstream_path = str(listen_path), str(upstream_path)
        self.lock = threading.Lock()
        self.requests = []          # (method, path without query)
        self.connections = 0
        self.server = None
        self.thread = None
        self.closing = False

    # -- counting -----------------------------------------------------------------------------------------
    def reset(self):
        with self.lock:
            self.requests, self.connections = [], 0

    def snapshot(self):
        """{requests, connections, by_path: {"GET /1.0/instances": n, ...}} since the last reset."""
        with self.lock:
            requests = list(self.requests)
            connections = self.connections
        by_path = collections.Counter(f"{method} {shape(path)}" for method, path in requests)
        return {"requests": len(requests), "connections": connections, "by_path": dict(by_path.most_common(12))}

    # -- relaying -----------------------------------------------------------------------------------------
    def start(self):
        if os.path.exists(self.listen_path):
            os.unlink(self.listen_path)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.listen_path)
        os.chmod(self.listen_path, 0o600)
        self.server.listen(128)
        self.thread = threading.Thread(target=self._accept, daemon=True, name=f"proxy {self.listen_path}")
        self.thread.start()
        return self

    def stop(self):
        self.closing = True
        if self.server is not None:
            try:
                self.server.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.server.close()
        if os.path.exists(self.listen_path):
            os.unlink(self.listen_path)

    def _accept(self):
        while not self.closing:
            try:
                client, _address = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                upstream.connect(self.upstream_path)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source, sink, count):
        tail = b""
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if count:
                    window = tail + data
                    found = [(match.group(1).decode(), match.group(2).decode("latin-1"))
                             for match in REQUEST_LINE.finditer(window) if match.end() > len(tail)]
                    if found:
                        with self.lock:
                            self.requests.extend(found)
                    tail = window[-KEEP:]
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (sink, source):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            source.close()


def shape(path):
    """A request path with its query dropped and ids replaced, so that per-instance requests group together."""
    path = path.split("?", 1)[0]
    path = re.sub(r"/v1\.\d+/", "/", path)  # Docker's versioned prefix
    path = re.sub(r"/(containers|instances)/[^/]+", r"/\1/{name}", path)
    path = re.sub(r"/operations/[^/]+", "/operations/{id}", path)
    return path
