"""The Proxmox VE simulator's part of the lab: its HTTPS API on 127.0.0.1:8006, its own sshd on
127.0.0.1:2223 whose sessions find pvesh/qm/pct/pvesm/pveversion/systemctl first on PATH, and the node
description `$LAB_DIR/pvesim/node.json` that lab.py puts into `.lab/nodes.yml` as node `proxmox`.

`ensure(kit)` is called by lab/lab.py (`kit` is that module). It is idempotent and probe-based: what
answers is left alone, what does not is started. For development without the rest of the lab:
`python3 lab/pvesim_lab.py` (root; uses lab.py's helpers, starts only the simulator's two daemons).

Standard library only: it runs before any venv exists.
"""
import hashlib
import json
import os
import sys
from pathlib import Path

LAB_CODE = Path(__file__).resolve().parent
if str(LAB_CODE) not in sys.path:
    sys.path.insert(0, str(LAB_CODE))

from pvesim import auth, server  # noqa: E402  (needs the path above)

HOST = "127.0.0.1"
# The simulator-only lab (no root) may move the port, so that it can run beside a full lab.
HTTPS_PORT = int(os.environ.get("OCV_PVESIM_PORT", "8006"))
SSH_PORT = 2223
TOOLS = ("pvesh", "qm", "pct", "pvesm", "pveversion", "systemctl")
REQUEST_LOG_LIMIT = 64 * 1024 * 1024


def write_tools(bin_dir, socket_path):
    """One small entry script per node tool, bound to this checkout's code and the simulator's socket."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in TOOLS:
        script = bin_dir / tool
        script.write_text(f"""#!/usr/bin/env python3
# The simulated Proxmox node's `{tool}` (written by lab/pvesim_lab.py; see lab/pvesim/cli.py).
import os
import sys
sys.path.insert(0, {str(LAB_CODE)!r})
os.environ.setdefault("PVESIM_SOCKET", {str(socket_path)!r})
from pvesim.cli import main
sys.exit(main({tool!r}, sys.argv[1:]))
""")
        script.chmod(0o755)


def control_alive(socket_path):
    """True when a simulator answers on its control socket (it may have pveproxy "stopped")."""
    import http.client
    import socket
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(3)
        sock.connect(str(socket_path))
        connection = http.client.HTTPConnection("localhost")
        connection.sock = sock
        connection.request("GET", "/_sim/info")
        return connection.getresponse().status == 200
    except OSError:
        return False


def start_pveproxy(socket_path):
    import http.client
    import socket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(socket_path))
    connection = http.client.HTTPConnection("localhost")
    connection.sock = sock
    connection.request("POST", "/_sim/services", body=json.dumps({"name": "pveproxy", "action": "start"}),
                       headers={"Content-Type": "application/json"})
    connection.getresponse().read()


def code_digest():
    """The simulator's own code: a running simulator older than its code is restarted (its state is kept)."""
    digest = hashlib.sha256()
    for path in sorted((LAB_CODE / "pvesim").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def ensure_api(kit, state_dir):
    socket_path = state_dir / "control.sock"
    stamp = state_dir / "code.sha256"
    current = code_digest()
    if kit.tcp_open(HOST, HTTPS_PORT):
        if stamp.exists() and stamp.read_text().strip() == current:
            return
        kit.log("pvesim: its code changed since it started; restarting it")
        kit.stop_daemon("pvesim")
        kit.wait_for(lambda: not kit.tcp_open(HOST, HTTPS_PORT), "pvesim to stop", 30)
    if control_alive(socket_path):
        kit.log("pvesim: pveproxy was stopped; starting it")
        start_pveproxy(socket_path)
    else:
        # The request log grows with every test run; it is only read from the offset a run starts at, so
        # it may be rotated here, before a simulator (and so before any test run) starts.
        request_log = state_dir / "requests.log"
        if request_log.exists() and request_log.stat().st_size > REQUEST_LOG_LIMIT:
            request_log.replace(state_dir / "requests.log.1")
        stamp.write_text(current + "\n")
        env = dict(os.environ, PYTHONPATH=str(LAB_CODE), PYTHONDONTWRITEBYTECODE="1")
        kit.start_daemon("pvesim", ["/usr/bin/python3", "-m", "pvesim", "--state-dir", str(state_dir),
                                    "--listen", f"{HOST}:{HTTPS_PORT}", "--socket", str(socket_path)], env=env)
    kit.wait_for(lambda: kit.tcp_open(HOST, HTTPS_PORT), "pvesim https", 30)


def ensure_sshd(kit, state_dir, bin_dir):
    directory = state_dir / "ssh"
    directory.mkdir(parents=True, exist_ok=True)
    lab_ssh = kit.LAB_DIR / "ssh"
    if not (lab_ssh / "id_ed25519.pub").exists():
        kit.ensure_ssh_keys()
    if not (directory / "host_ed25519").exists():
        kit.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pvesim-host", "-f",
                 str(directory / "host_ed25519")])
    (directory / "authorized_keys").write_text((lab_ssh / "id_ed25519.pub").read_text())
    host_key = (directory / "host_ed25519.pub").read_text().split()
    (directory / "known_hosts").write_text(f"[{HOST}]:{SSH_PORT} {host_key[0]} {host_key[1]}\n")
    Path("/run/sshd").mkdir(exist_ok=True)
    wrapper = kit.write_wrapper(directory)
    config = kit.write_sshd_config(directory, SSH_PORT, wrapper, [bin_dir])
    if kit.tcp_banner(HOST, SSH_PORT).startswith("SSH-"):
        return directory
    kit.run(["/usr/sbin/sshd", "-t", "-f", str(config)])
    kit.start_daemon("pvesim-sshd", ["/usr/sbin/sshd", "-D", "-f", str(config),
                                     "-E", str(kit.LAB_DIR / "logs" / "pvesim-sshd.log")])
    kit.wait_for(lambda: kit.tcp_banner(HOST, SSH_PORT).startswith("SSH-"), "pvesim sshd", 30)
    return directory


def node_description(kit, state_dir, ssh_dir, secrets):
    """The node; without its sshd (the simulator-only lab) it is API only."""
    token_id, token_secret = next(iter(secrets["tokens"].items()))
    node = {
        "name": "proxmox", "type": "proxmox", "execution_rule": "auto" if ssh_dir else "api_only",
        "proxmox_node": "pve", "public_ip": HOST,
        "api": {"url": f"https://{HOST}:{HTTPS_PORT}", "token_id": token_id, "token_secret": token_secret,
                "ca_file": str(state_dir / "tls" / "pve-ssl.pem"), "validate_certs": True},
    }
    if ssh_dir:
        node["ssh"] = {"host": HOST, "port": SSH_PORT, "user": "root",
                       "private_key_file": str(kit.LAB_DIR / "ssh" / "id_ed25519"), "host_key_checking": "strict",
                       "known_hosts_file": str(ssh_dir / "known_hosts")}
    return node


def ensure(kit, with_ssh=True):
    state_dir = kit.LAB_DIR / "pvesim"
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o755)
    (kit.LAB_DIR / "logs").mkdir(parents=True, exist_ok=True)
    server.ensure_certificate(state_dir / "tls")
    secrets = auth.load_or_create(state_dir)
    bin_dir = state_dir / "bin"
    write_tools(bin_dir, state_dir / "control.sock")
    ensure_api(kit, state_dir)
    ssh_dir = ensure_sshd(kit, state_dir, bin_dir) if with_ssh else None
    target = state_dir / "node.json"
    temporary = target.with_name(".node.json.tmp")
    # The file carries the token secret: root only.
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as stream:
        json.dump(node_description(kit, state_dir, ssh_dir, secrets), stream, indent=2)
    os.replace(temporary, target)
    kit.log(f"pvesim up: https://{HOST}:{HTTPS_PORT}, " + (f"ssh {HOST}:{SSH_PORT}, " if with_ssh else "no ssh, ")
            + f"node description {target}")


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("pvesim_lab: run as root (it starts daemons of the lab)")
    import lab as kit  # lab/lab.py, next to this file
    ensure(kit)
    kit.write_nodes()
