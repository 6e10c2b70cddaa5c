"""The simulator process: HTTPS API (pveproxy's part), a local control socket (the node tools' part),
the request log, and the control endpoints for tests.

  python3 -m pvesim --state-dir DIR [--listen 127.0.0.1:8006] [--socket DIR/control.sock]

Endpoints outside /api2/json, for tests and the node tools (JSON in, JSON out; on HTTPS they need the API
token like everything else, on the control socket file permissions guard them):

  GET    /_sim/info                      pid, node, version, paths
  GET    /_sim/faults                    the current settings (faults.Settings)
  PUT    /_sim/faults   {...}            merge settings: latency, task_delay, task_delays, lock_timeout,
                                         rules [faults.Rule], task_failures [faults.TaskFailure]
  DELETE /_sim/faults                    back to defaults
  POST   /_sim/reset                     wipe guests, volumes and tasks back to the seed; defaults
  POST   /_sim/lock     {vmid, lock}     set (or with lock null, clear) a guest's config lock
  POST   /_sim/flock    {vmid, seconds}  hold a guest's config file lock, so writes wait and time out
  POST   /_sim/exec     {vmid, argv, stdin}   `pct exec`: run inside a container (guestos.py)
  GET    /_sim/services                  state of the pve services
  POST   /_sim/services {name, action}   systemctl start/stop/restart; stopping pveproxy closes HTTPS

Every /api2/json request is appended to the request log (JSON lines: time, via, method, path, params,
status, response, fault) for the conformance test; control requests are not.
"""
import argparse
import copy
import email.parser
import email.policy
import hashlib
import json
import os
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

# The route modules register their routes when imported.
from . import guestos, routes_guests, routes_node  # noqa: F401  pylint: disable=unused-import
from .auth import Auth, AuthError
from .node import ApiError, Simulator
from .router import dispatch, error_body, reason_phrase

SECRET_PARAMS = ("password", "cipassword", "new-password")


def ensure_certificate(directory):
    """A self-signed certificate for 127.0.0.1 (subjectAltName IP and DNS), made once with the openssl CLI."""
    directory = Path(directory)
    cert, key = directory / "pve-ssl.pem", directory / "pve-ssl.key"
    if not cert.exists() or not key.exists():
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                        "-subj", "/CN=pve.pvesim.lab/O=pvesim", "-keyout", str(key), "-out", str(cert),
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:pve",
                        "-addext", "basicConstraints=critical,CA:TRUE"],
                       check=True, capture_output=True)
        key.chmod(0o600)
    return cert, key


def fingerprint(cert):
    der = ssl.PEM_cert_to_DER_cert(Path(cert).read_text())
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


class RequestLog:
    def __init__(self, path):
        self.path = Path(path)
        self.lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, entry):
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        with self.lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)


def wire_value(value):
    """JSON bodies carry numbers and booleans; PVE reads them as the text a form would carry."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list):
        return [wire_value(v) for v in value]
    return str(value)


def parse_params(query, content_type, body):
    """-> (params {name: text | [text, ...]}, uploaded file bytes or None)."""
    params, upload = {}, None

    def add_pairs(pairs):
        for name, values in pairs.items():
            params[name] = values[0] if len(values) == 1 else values

    add_pairs(parse_qs(query, keep_blank_values=True))
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        add_pairs(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))
    elif kind == "application/json" and body.strip():
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("JSON body must be an object")
        params.update({k: wire_value(v) for k, v in data.items() if v is not None})
    elif kind == "multipart/form-data":
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            if part.get_filename() is not None:
                params[name] = part.get_filename()
                upload = payload
            else:
                params[name] = payload.decode("utf-8", "replace")
    return params, upload


def redacted(params):
    return {k: (f"<redacted {len(v)} chars>" if k in SECRET_PARAMS and isinstance(v, str) else v)
            for k, v in params.items()}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pve-api-daemon/3.0"
    sys_version = ""
    timeout = 120   # idle keep-alive connections end, so their threads do too

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        self.handle_request()

    do_POST = do_PUT = do_DELETE = do_GET

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, status, reason, body, extra_headers=()):
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status, reason)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "max-age=0")
        self.send_header("Pragma", "no-cache")
        for name, value in extra_headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def handle_request(self):
        sim, via = self.server.sim, self.server.via
        split = urlsplit(self.path)
        body = self.read_body()
        try:
            if split.path.startswith("/_sim/"):
                return self.control(split.path, body)
            if not split.path.startswith("/api2/json/"):
                return self.send(501, "Not Implemented", error_body(501, f"Method '{self.command} {split.path}' not implemented"))
            self.api(split, body)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True

    # --- /api2/json ------------------------------------------------------------------------------------

    def api(self, split, body):
        sim, via, method = self.server.sim, self.server.via, self.command
        path = split.path[len("/api2/json"):]
        try:
            params, upload = parse_params(split.query, self.headers.get("Content-Type"), body)
        except (ValueError, UnicodeDecodeError) as error:
            status, reason, answer = 400, "parameter parser failed", error_body(400, f"parameter parser failed: {error}")
            return self.finish_api(method, path, {}, status, reason, answer, fault=False)
        user = "root@pam"
        if via == "api" and not (method == "POST" and path.rstrip("/") == "/access/ticket"):
            try:
                user = sim.auth.authenticate(self.headers, method)
            except AuthError as error:
                message = str(error)
                return self.finish_api(method, path, params, 401, reason_phrase(message),
                                       error_body(401, message), fault=False)
        if via == "api" and sim.settings.latency:
            time.sleep(sim.settings.latency)
        rule = sim.settings.take_rule(method, path, via, params)
        if rule and rule.action == "close":
            self.server.log.write(self.log_entry(method, path, params, 0, None, fault=True))
            self.close_connection = True
            return
        if rule and rule.action == "error":
            return self.finish_api(method, path, params, rule.status, reason_phrase(rule.message),
                                   error_body(rule.status, rule.message), fault=True)
        status, reason, answer = dispatch(sim, method, path, params, user, via, upload)[:3]
        if rule and rule.action == "timeout":
            # The request took effect; only the answer is late (a write the server did receive).
            time.sleep(rule.seconds)
        self.finish_api(method, path, params, status, reason, answer, fault=bool(rule))

    def log_entry(self, method, path, params, status, answer, fault):
        return {"time": round(time.time(), 3), "via": self.server.via, "method": method, "path": path,
                "params": redacted(params), "status": status, "response": answer, "fault": fault}

    def finish_api(self, method, path, params, status, reason, answer, fault):
        self.server.log.write(self.log_entry(method, path, params, status, answer, fault))
        self.send(status, reason, answer)

    # --- /_sim -------------------------------------------------------------------------------------------

    def control(self, path, body):
        sim = self.server.sim
        if self.server.via == "api":
            try:
                sim.auth.authenticate(self.headers, "GET")
            except AuthError as error:
                return self.send(401, reason_phrase(str(error)), {"error": str(error)})
        try:
            request = json.loads(body) if body.strip() else {}
            answer = self.server.control_handler(self.command, path, request)
        except (ValueError, TypeError, KeyError) as error:
            return self.send(400, "Bad Request", {"error": str(error)})
        except ApiError as error:
            return self.send(error.status, reason_phrase(error.message), {"error": error.message})
        if answer is None:
            return self.send(404, "Not Found", {"error": f"no control endpoint {self.command} {path}"})
        self.send(200, "OK", answer)


class Control:
    """The /_sim endpoints (see the module docstring)."""

    def __init__(self, sim, server_state):
        self.sim = sim
        self.state = server_state

    def __call__(self, method, path, request):
        sim = self.sim
        if (method, path) == ("GET", "/_sim/info"):
            return {"pid": os.getpid(), "node": sim.node, "state_dir": str(sim.state_dir),
                    "request_log": str(self.state["request_log"]), "started": sim.boot_time}
        if path == "/_sim/faults":
            if method == "PUT":
                sim.settings.update(request)
            elif method == "DELETE":
                sim.settings.reset()
            return sim.settings.to_dict()
        if (method, path) == ("POST", "/_sim/reset"):
            sim.settings.reset()
            sim.store.reset(sim.seed)
            return {"reset": True}
        if (method, path) == ("POST", "/_sim/lock"):
            with sim.store.lock:
                guest = sim.guest(request["vmid"])
                if request.get("lock"):
                    guest.config["lock"] = str(request["lock"])
                else:
                    guest.config.pop("lock", None)
                sim.store.save()
                return {"vmid": guest.vmid, "lock": guest.config.get("lock")}
        if (method, path) == ("POST", "/_sim/flock"):
            guest = sim.guest(request["vmid"])
            try:
                sim.tasks.locks.hold(guest.vmid, guest.kind, float(request.get("seconds", 30)))
            except Exception as error:
                raise ApiError(f"cannot hold the lock: {error}") from None
            return {"vmid": guest.vmid, "held_for": float(request.get("seconds", 30))}
        if (method, path) == ("POST", "/_sim/exec"):
            return self.exec_in_container(request)
        if path == "/_sim/services":
            if method == "POST":
                self.service(request["name"], request["action"])
            return dict(sim.services)
        return None

    def exec_in_container(self, request):
        sim = self.sim
        with sim.store.lock:
            guest = sim.guest(request["vmid"], "lxc")
            if guest.status != "running":
                raise ApiError(f"CT {guest.vmid} not running")
        # One exec at a time per simulator, on a copy of the guest's filesystem that replaces it when the
        # command completes. Without `stdin` a command that reads stdin answers needs_stdin, changing
        # nothing; the caller then sends its whole stdin.
        with sim.exec_lock:
            with sim.store.lock:
                fs = copy.deepcopy(guest.fs)
            try:
                code, out, err = guestos.run(fs, guest.name, [str(a) for a in request["argv"]],
                                             request.get("stdin"))
            except guestos.NeedsStdin:
                return {"needs_stdin": True}
            with sim.store.lock:
                guest.fs = fs
                sim.store.save()
        return {"rc": code, "stdout": out, "stderr": err}

    def service(self, name, action):
        sim = self.sim
        if name not in sim.services:
            raise ApiError(f"Unit {name}.service could not be found.", status=404)
        if action not in ("start", "stop", "restart", "reload"):
            raise ApiError(f"unknown action {action}", status=400)
        state = "inactive" if action == "stop" else "active"
        hook = sim.service_hooks.get(name)
        if hook:
            hook(state)
        sim.services[name] = state


class HttpsServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.connections = set()
        self.connections_lock = threading.Lock()

    def finish_request(self, request, client_address):
        # The TLS handshake happens here, in the connection's own thread, so a slow client never
        # blocks the accept loop.
        request.settimeout(30)
        # Each answer leaves in two writes (head, body): without this, Nagle holds the body until the client's
        # delayed ACK, 40 ms per request, which no real pveproxy costs.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            request.close()
            return
        with self.connections_lock:
            self.connections.add(tls)
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            with self.connections_lock:
                self.connections.discard(tls)
            tls.close()

    def close_connections(self):
        """Like a stopped pveproxy: kept-alive client connections end too, not only the listener."""
        with self.connections_lock:
            for connection in list(self.connections):
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class ControlServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def finish_request(self, request, client_address):
        self.RequestHandlerClass(request, ("control", 0), self)


class HttpsListener:
    """The HTTPS side. `systemctl stop pveproxy` closes it, `start` opens it again."""

    def __init__(self, address, context, attach):
        self.address, self.context, self.attach = address, context, attach
        self.server = None
        self.lock = threading.Lock()

    def set_state(self, state):
        with self.lock:
            if state == "active" and self.server is None:
                server = HttpsServer(self.address, Handler)
                server.context = self.context
                self.attach(server, "api")
                threading.Thread(target=server.serve_forever, daemon=True, name="https").start()
                self.server = server
            elif state == "inactive" and self.server is not None:
                self.server.shutdown()
                self.server.server_close()
                self.server.close_connections()
                self.server = None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="pvesim", description="Proxmox VE node simulator")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--listen", default="127.0.0.1:8006")
    parser.add_argument("--socket", help="control socket (default: STATE_DIR/control.sock)")
    parser.add_argument("--request-log", help="default: STATE_DIR/requests.log")
    args = parser.parse_args(argv)

    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    cert, key = ensure_certificate(state_dir / "tls")
    sim = Simulator(state_dir)
    sim.auth = Auth(state_dir)
    sim.fingerprint = fingerprint(cert)
    request_log = RequestLog(args.request_log or state_dir / "requests.log")
    control = Control(sim, {"request_log": request_log.path})

    def attach(server, via):
        server.sim, server.via, server.log, server.control_handler = sim, via, request_log, control

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    host, port = args.listen.rsplit(":", 1)
    listener = HttpsListener((host, int(port)), context, attach)
    sim.service_hooks["pveproxy"] = listener.set_state
    listener.set_state("active")

    socket_path = Path(args.socket or state_dir / "control.sock")
    socket_path.unlink(missing_ok=True)
    old_umask = os.umask(0o077)
    control_server = ControlServer(str(socket_path), Handler)
    os.umask(old_umask)
    attach(control_server, "cli")

    def stop(signum, frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop)
    print(f"pvesim: node {sim.node} on https://{args.listen}, control socket {socket_path}, pid {os.getpid()}",
          flush=True)
    try:
        control_server.serve_forever()
    finally:
        socket_path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
