"""What the LXD and Incus integration tests share: the daemons' own CLIs, their event monitors, a losing proxy."""

import json
import select
import socket
import subprocess
import threading
import time

CLI = {"lxd": "lxc", "incus": "incus"}
BACKENDS = ("lxd", "incus")
RULES = ("api_only", "ssh_only", "auto")


def cli(backend, *args, check=True, project=None):
    """The daemon's own CLI on this machine: the ground truth the tests compare against."""
    argv = [CLI[backend], *args] + (["--project", project] if project else [])
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if check and completed.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {completed.returncode}: {completed.stderr}")
    return completed


def truth(backend, name, project=None):
    """The instance as the daemon reports it (`query`, recursion=1: config, devices, state), or None."""
    path = f"/1.0/instances/{name}?recursion=1&project={project or 'default'}"
    completed = cli(backend, "query", path, check=False)
    return json.loads(completed.stdout) if completed.returncode == 0 else None


def instances_named(backend, name, project=None):
    listing = json.loads(cli(backend, "list", "--format", "json", project=project).stdout)
    return [entry["name"] for entry in listing if entry["name"] == name]


def delete(backend, name, project=None):
    cli(backend, "delete", "--force", name, check=False, project=project)


class Monitor:
    """Every event the daemon itself emits while a block runs (`lxc monitor` / `incus monitor`, all types).

    Writes are what the daemon did, not what the collection thinks it sent: lifecycle and operation events,
    and the API requests it logs (debug level) with a method other than GET.
    """

    def __init__(self, backend):
        self.backend = backend
        self.process = None
        self.lines = []
        self.ready = threading.Event()

    def start(self):
        self.lines = []
        self.ready.clear()
        self.process = subprocess.Popen([CLI[self.backend], "monitor", "--format=json", "--all-projects"],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        # The daemon's first event on the stream is the start of our own listener: from then on we see all.
        if not self.ready.wait(10):
            self.stop()
            raise AssertionError(f"{CLI[self.backend]} monitor printed nothing within 10 s: is the daemon up?")
        return self

    def _read(self):
        buffer = []
        for line in self.process.stdout:
            if line.strip():
                buffer.append(line)
                try:
                    self.lines.append(json.loads("".join(buffer)))
                    buffer = []
                except ValueError:
                    continue
                self.ready.set()

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def events(self, name):
        """The events about instance `name` (its name appears in them), after letting the daemon catch up."""
        time.sleep(0.5)
        self.stop()
        return [event for event in self.lines if name in json.dumps(event)]

    def not_reads(self, name):
        """Every event about `name` except the daemon logging our GET requests."""
        return [event for event in self.events(name)
                if not (event["type"] == "logging" and event["metadata"].get("message") == "Handling API request"
                        and (event["metadata"].get("context") or {}).get("method") == "GET")]

    def writes(self, name):
        """Lifecycle and operation events about `name`, and non-GET API requests naming it."""
        found = []
        for event in self.events(name):
            if event["type"] in ("lifecycle", "operation"):
                found.append(event)
            elif event["type"] == "logging":
                context = event["metadata"].get("context") or {}
                if event["metadata"].get("message") == "Handling API request" and context.get("method") != "GET":
                    found.append(event)
        return found

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class LosingTlsProxy:
    """127.0.0.1:<port> to the daemon's HTTPS port, passing bytes through untouched.

    TLS stays end to end, so the pinned server certificate still verifies. The first burst of client bytes
    larger than `threshold` (the test pads the create request well past it; every read is far smaller) is
    forwarded; when the daemon's answer arrives, both connections are dropped and the answer never reaches
    the client: the write happened, its answer is lost.
    """

    def __init__(self, upstream_port, threshold=6000):
        self.upstream_port = upstream_port
        self.threshold = threshold
        self.dropped = 0
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client):
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        pending, armed = 0, False
        try:
            while True:
                readable, _, _ = select.select([client, upstream], [], [], 60)
                if not readable:
                    return
                if client in readable:
                    data = client.recv(65536)
                    if not data:
                        return
                    upstream.sendall(data)
                    pending += len(data)
                    armed = armed or (pending > self.threshold and self.dropped == 0)
                if upstream in readable:
                    data = upstream.recv(65536)
                    if not data:
                        return
                    if armed:
                        self.dropped += 1
                        return  # the daemon answered the big request; the client never hears it
                    pending = 0
                    client.sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def close(self):
        self.server.close()


def closed_port():
    """A local port where nothing listens (bound, then released)."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port
