#!/usr/bin/env python3
"""The lab: real Docker, LXD, Incus and sshd daemons (and the Proxmox simulator) on this machine.

`lab.py up` installs what is missing and starts what is down; `lab.py down` stops exactly what it started.
State and logs live in a machine-wide folder (LAB_DIR), never in the checkout, because the lab belongs to
the machine: a fresh clone must find a lab that another checkout started. Whether a daemon is up is decided
by probing its socket or port; pidfiles are only used by `down`, to end the processes the lab started.

Standard library only: it runs before any venv exists.
"""
import argparse
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

LAB_DIR = Path(os.environ.get("OCV_LAB_DIR") or ("/var/lib/oneclickvirt-lab" if os.geteuid() == 0
                                                  else Path.home() / ".cache" / "oneclickvirt-lab"))
# Where the node descriptions go (`.lab/nodes.yml` of the checkout unless told otherwise).
NODES_FILE = Path(os.environ.get("OCV_NODES_FILE") or Path(__file__).resolve().parent.parent / ".lab" / "nodes.yml")
SIMULATOR_ONLY = LAB_DIR / "simulator-only"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
SSH_PORT = 2222
LXD_HTTPS = ("127.0.0.1", 8443)
INCUS_HTTPS = ("127.0.0.1", 8444)
DOCKER_SOCKET = "/var/run/docker.sock"
LXD_SOCKET = "/var/lib/lxd/unix.socket"
INCUS_SOCKET = "/var/lib/incus/unix.socket"
# Explicit subnets: `init --auto` probes random addresses and fails here. /22 for load tests, ULA for IPv6.
BRIDGES = {
    "lxd": {"name": "lxdbr0", "ipv4": "10.161.0.1/22", "ipv6": "fd42:4c58:161::1/64"},
    "incus": {"name": "incusbr0", "ipv4": "10.162.0.1/22", "ipv6": "fd42:4c58:162::1/64"},
}
APT_PACKAGES = [
    "docker.io", "openssh-server", "lxd", "busybox-static", "debootstrap", "iptables", "nftables",
    "openssl", "iproute2", "procps", "psmisc", "xz-utils", "dnsmasq-base",
]
BACKPORTS_PACKAGES = ["incus-base"]
IMAGES = ("ocv-busybox", "ocv-debian")
DEBIAN_INCLUDE = "systemd-sysv,python3,iproute2,openssh-server,udev,passwd,openssl"


def log(message):
    print(f"lab: {message}", flush=True)


def run(argv, check=True, input_text=None, env=None, capture=True):
    result = subprocess.run(argv, input=input_text, text=True, env=env,
                            stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.PIPE if capture else None)
    if check and result.returncode != 0:
        raise SystemExit(f"lab: {' '.join(argv)} failed ({result.returncode}): {result.stderr or result.stdout}")
    return result


# --- probes -----------------------------------------------------------------------------------------

def unix_http_ok(path, url):
    """True when an HTTP server answers `url` on the unix socket `path` with a 2xx."""
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(3)
        sock.connect(path)
        conn = http.client.HTTPConnection("localhost")
        conn.sock = sock
        conn.request("GET", url)
        ok = 200 <= conn.getresponse().status < 300
        conn.close()
        return ok
    except OSError:
        return False


def tcp_banner(host, port):
    try:
        with socket.create_connection((host, port), timeout=3) as sock:
            return sock.recv(64).decode(errors="replace")
    except OSError:
        return ""


def tcp_open(host, port):
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


def wait_for(probe, what, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(0.2)
    raise SystemExit(f"lab: {what} did not come up within {seconds}s; see {LAB_DIR / 'logs'}")


# --- processes --------------------------------------------------------------------------------------

def start_daemon(name, argv, env=None):
    """Start a daemon in its own session, detached, and record its PID for `down`."""
    (LAB_DIR / "logs").mkdir(parents=True, exist_ok=True)
    (LAB_DIR / "pids").mkdir(parents=True, exist_ok=True)
    logfile = open(LAB_DIR / "logs" / f"{name}.out", "ab")
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT,
                               start_new_session=True, env=env, close_fds=True)
    # The pidfile also keeps argv[0], so `down` never signals a PID that was reused by someone else.
    (LAB_DIR / "pids" / f"{name}.pid").write_text(f"{process.pid}\n{argv[0]}\n")
    log(f"started {name} (pid {process.pid})")
    return process.pid


def stop_daemon(name):
    pidfile = LAB_DIR / "pids" / f"{name}.pid"
    if not pidfile.exists():
        return
    pid_text, _, program = pidfile.read_text().partition("\n")
    pidfile.unlink()
    pid = int(pid_text or 0)
    if pid <= 1 or not Path(f"/proc/{pid}").exists():
        return
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    if cmdline != program.strip():
        log(f"pid {pid} is no longer {name}; left alone")
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    log(f"stopped {name} (pid {pid})")


# --- packages ---------------------------------------------------------------------------------------

def missing_packages(names):
    missing = []
    for name in names:
        result = run(["dpkg-query", "-W", "-f=${Status}", name], check=False)
        if "install ok installed" not in result.stdout:
            missing.append(name)
    return missing


def apt_install(names, extra=()):
    missing = missing_packages(names)
    if not missing:
        return
    log(f"installing {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Keep package scripts from starting system daemons (sshd on :22, a stock dockerd): the lab starts its own.
    policy = Path("/usr/sbin/policy-rc.d")
    created_policy = not policy.exists()
    if created_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        result = run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *extra, *missing],
                     check=False, env=env)
        if result.returncode != 0:
            run(["apt-get", "update", "-q"], env=env)
            run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *extra, *missing], env=env)
    finally:
        if created_policy:
            policy.unlink()


def ensure_packages():
    backports = Path("/etc/apt/sources.list.d/oneclickvirt-lab-backports.sources")
    if not backports.exists():
        backports.write_text(
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
        run(["apt-get", "update", "-q"])
    apt_install(APT_PACKAGES)
    apt_install(BACKPORTS_PACKAGES, extra=("-t", "bookworm-backports"))


# --- docker -----------------------------------------------------------------------------------------

def docker_up():
    return unix_http_ok(DOCKER_SOCKET, "/_ping")


def ensure_docker():
    if docker_up():
        return
    start_daemon("dockerd", ["dockerd", f"--host=unix://{DOCKER_SOCKET}",
                             f"--exec-root={LAB_DIR / 'docker-exec'}"])
    wait_for(docker_up, "dockerd")


# --- sshd -------------------------------------------------------------------------------------------

def ssh_dir():
    return LAB_DIR / "ssh"


def ensure_ssh_keys():
    directory = ssh_dir()
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    for key in ("host_ed25519", "id_ed25519"):
        if not (directory / key).exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"oneclickvirt-lab-{key}",
                 "-f", str(directory / key)])
    (directory / "authorized_keys").write_text((directory / "id_ed25519.pub").read_text())
    host_pub = (directory / "host_ed25519.pub").read_text().split()
    (directory / "known_hosts").write_text(f"[127.0.0.1]:{SSH_PORT} {host_pub[0]} {host_pub[1]}\n")


def write_sshd_config(directory, port, wrapper, path_dirs):
    """An sshd of the lab's own: loopback, own port and host key, key login only.

    Every session goes through `wrapper`, which records the command line that reached the node (tests
    prove no secret ever appears in it) and puts the shim directories first on PATH.
    """
    config = directory / "sshd_config"
    config.write_text(f"""# written by lab/lab.py
ListenAddress 127.0.0.1
Port {port}
HostKey {directory / 'host_ed25519'}
PidFile {directory / 'sshd.pid'}
AuthorizedKeysFile {directory / 'authorized_keys'}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PrintMotd no
MaxSessions 100
MaxStartups 100:30:200
AcceptEnv LANG LC_*
ForceCommand {wrapper}
Subsystem sftp internal-sftp
SetEnv OCV_SHIM_PATH={':'.join(str(d) for d in path_dirs)}
""")
    return config


def write_wrapper(directory):
    """The ForceCommand wrapper: log the original command (JSON lines), then run it with the shims first."""
    wrapper = directory / "session"
    wrapper.write_text(f"""#!/bin/sh
# Records every command line that reaches the lab node, so tests can prove secrets never travel in argv.
log={directory / 'commands.log'}
/usr/bin/python3 -c 'import json,os,sys,time; open(sys.argv[1],"a").write(json.dumps({{"time": time.time(), "command": os.environ.get("SSH_ORIGINAL_COMMAND","")}})+"\\n")' "$log" 2>/dev/null
PATH="$OCV_SHIM_PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
export PATH
if [ -z "$SSH_ORIGINAL_COMMAND" ]; then exec /bin/sh -l; fi
exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"
""")
    wrapper.chmod(0o755)
    return wrapper


def write_argv_shims(directory):
    """Shims for the node's CLIs: record each argv (JSON lines), then exec the real program."""
    shims = directory / "shims"
    shims.mkdir(exist_ok=True)
    for program in ("docker", "lxc", "incus", "chpasswd", "iptables", "nft", "sh", "bash"):
        shim = shims / program
        shim.write_text(f"""#!/usr/bin/python3
import json, os, sys, time
with open({str(directory / 'argv.log')!r}, "a") as log:
    log.write(json.dumps({{"time": time.time(), "argv": sys.argv}}) + "\\n")
real = [p for p in ("/usr/sbin/{program}", "/usr/bin/{program}", "/sbin/{program}", "/bin/{program}")
        if os.path.exists(p)]
os.execv(real[0], [real[0]] + sys.argv[1:])
""")
        shim.chmod(0o755)
    return shims


def ensure_sshd():
    directory = ssh_dir()
    ensure_ssh_keys()
    Path("/run/sshd").mkdir(exist_ok=True)
    wrapper = write_wrapper(directory)
    shims = write_argv_shims(directory)
    config = write_sshd_config(directory, SSH_PORT, wrapper, [shims])
    if tcp_banner("127.0.0.1", SSH_PORT).startswith("SSH-"):
        return
    run(["/usr/sbin/sshd", "-t", "-f", str(config)])
    start_daemon("sshd", ["/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(LAB_DIR / "logs" / "sshd.log")])
    wait_for(lambda: tcp_banner("127.0.0.1", SSH_PORT).startswith("SSH-"), "sshd")


# --- LXD and Incus ------------------------------------------------------------------------------------

def ensure_client_cert():
    certs = LAB_DIR / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    if not (certs / "client.crt").exists():
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp384r1",
             "-sha384", "-nodes", "-days", "3650", "-subj", "/CN=oneclickvirt-lab-client",
             "-keyout", str(certs / "client.key"), "-out", str(certs / "client.crt")])
        (certs / "client.key").chmod(0o600)
    return certs / "client.crt", certs / "client.key"


def cert_fingerprint(path):
    der = subprocess.run(["openssl", "x509", "-in", str(path), "-outform", "DER"],
                         stdout=subprocess.PIPE, check=True).stdout
    return hashlib.sha256(der).hexdigest()


def preseed(kind, https):
    bridge = BRIDGES[kind]
    return json.dumps({
        "config": {"core.https_address": f"{https[0]}:{https[1]}"},
        "networks": [{"name": bridge["name"], "type": "bridge", "config": {
            "ipv4.address": bridge["ipv4"], "ipv4.nat": "true",
            "ipv6.address": bridge["ipv6"], "ipv6.nat": "true"}}],
        "storage_pools": [{"name": "default", "driver": "dir"}],
        "profiles": [{"name": "default", "devices": {
            "root": {"path": "/", "pool": "default", "type": "disk"},
            "eth0": {"name": "eth0", "network": bridge["name"], "type": "nic"}}}],
    })


class LxdLike:
    """What differs between LXD and Incus for the lab: names, paths and the CLI words."""

    def __init__(self, kind):
        self.kind = kind
        if kind == "lxd":
            self.socket, self.https, self.cli = LXD_SOCKET, LXD_HTTPS, "lxc"
            self.server_cert = Path("/var/lib/lxd/server.crt")
            self.daemon_argv = ["lxd", "--group", "lxd", f"--logfile={LAB_DIR / 'logs' / 'lxd.log'}"]
            self.waitready = ["lxd", "waitready", "--timeout=60"]
            self.init = ["lxd", "init", "--preseed"]
            self.env = None
        else:
            self.socket, self.https, self.cli = INCUS_SOCKET, INCUS_HTTPS, "incus"
            self.server_cert = Path("/var/lib/incus/server.crt")
            self.daemon_argv = ["/usr/libexec/incus/incusd", "--group", "incus-admin",
                                f"--logfile={LAB_DIR / 'logs' / 'incus.log'}"]
            self.waitready = ["/usr/libexec/incus/incusd", "waitready", "--timeout=60"]
            self.init = ["incus", "admin", "init", "--preseed"]
            self.env = dict(os.environ, PATH=f"/usr/libexec/incus:{os.environ.get('PATH', '/usr/bin:/bin')}")

    def up(self):
        return unix_http_ok(self.socket, "/1.0")

    def cli_run(self, *args, check=True, input_text=None):
        return run([self.cli, *args], check=check, input_text=input_text, env=self.env)

    def ensure(self):
        if not self.up():
            start_daemon(self.kind, self.daemon_argv, env=self.env)
            wait_for(self.up, self.kind)
            run(self.waitready, env=self.env)
        bridge = BRIDGES[self.kind]["name"]
        if self.cli_run("network", "show", bridge, check=False).returncode != 0:
            log(f"initialising {self.kind} by preseed")
            run([*self.init], input_text=preseed(self.kind, self.https), env=self.env)
        client_crt, _ = ensure_client_cert()
        trusted = self.cli_run("query", "/1.0/certificates?recursion=1").stdout
        if cert_fingerprint(client_crt) not in trusted:
            if self.kind == "lxd":
                self.cli_run("config", "trust", "add", str(client_crt))
            else:
                self.cli_run("config", "trust", "add-certificate", str(client_crt))
        wait_for(lambda: tcp_open(*self.https), f"{self.kind} https")


# --- firewall -----------------------------------------------------------------------------------------

def ensure_docker_user_rules():
    """Docker sets FORWARD to DROP, which cuts LXD/Incus bridge traffic: accept the lab bridges."""
    if run(["iptables", "-n", "-L", "DOCKER-USER"], check=False).returncode != 0:
        return
    for bridge in (b["name"] for b in BRIDGES.values()):
        for direction in ("-i", "-o"):
            rule = ["DOCKER-USER", direction, bridge, "-j", "ACCEPT"]
            if run(["iptables", "-C", *rule], check=False).returncode != 0:
                run(["iptables", "-I", *rule])


# --- a client network namespace ---------------------------------------------------------------------------

CLIENT_NETNS = {"name": "ocv-client", "host_if": "ocv-veth-host", "client_if": "ocv-veth-cl",
                "host_ipv4": "10.165.0.1", "client_ipv4": "10.165.0.2",
                "host_ipv6": "fd42:4c58:165::1", "client_ipv6": "fd42:4c58:165::2"}


def ensure_client_netns():
    """A "client on the internet" for port-mapping tests: a network namespace behind a veth pair.

    The host side of the veth is the lab nodes' public_ip, so a connection from the namespace to
    public_ip:host_port crosses PREROUTING exactly like traffic from outside.
    """
    ns = CLIENT_NETNS
    if ns["name"] not in run(["ip", "netns", "list"]).stdout.split():
        run(["ip", "netns", "add", ns["name"]])
    if run(["ip", "link", "show", ns["host_if"]], check=False).returncode != 0:
        run(["ip", "link", "add", ns["host_if"], "type", "veth", "peer", "name", ns["client_if"]])
        run(["ip", "link", "set", ns["client_if"], "netns", ns["name"]])
    host_addresses = run(["ip", "addr", "show", ns["host_if"]]).stdout
    if f"{ns['host_ipv4']}/24" not in host_addresses:
        run(["ip", "addr", "add", f"{ns['host_ipv4']}/24", "dev", ns["host_if"]])
    if f"{ns['host_ipv6']}/64" not in host_addresses:
        run(["ip", "-6", "addr", "add", f"{ns['host_ipv6']}/64", "dev", ns["host_if"], "nodad"])
    run(["ip", "link", "set", ns["host_if"], "up"])
    inside = ["ip", "netns", "exec", ns["name"]]
    client_addresses = run([*inside, "ip", "addr", "show", ns["client_if"]]).stdout
    if f"{ns['client_ipv4']}/24" not in client_addresses:
        run([*inside, "ip", "addr", "add", f"{ns['client_ipv4']}/24", "dev", ns["client_if"]])
    if f"{ns['client_ipv6']}/64" not in client_addresses:
        run([*inside, "ip", "-6", "addr", "add", f"{ns['client_ipv6']}/64", "dev", ns["client_if"], "nodad"])
    run([*inside, "ip", "link", "set", "lo", "up"])
    run([*inside, "ip", "link", "set", ns["client_if"], "up"])
    run([*inside, "ip", "route", "replace", "default", "via", ns["host_ipv4"]])
    run([*inside, "ip", "-6", "route", "replace", "default", "via", ns["host_ipv6"]])
    for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
        run(["sysctl", "-q", "-w", f"{key}=1"])


# --- images -------------------------------------------------------------------------------------------

BUSYBOX_RCS = """#!/bin/sh
# Bring up networking where nobody else did (LXD/Incus); Docker configures eth0 itself.
mount -t proc proc /proc 2>/dev/null
ip link set lo up
if ip link show eth0 >/dev/null 2>&1; then
  ip link set eth0 up
  if ! ip -4 addr show dev eth0 | grep -q inet; then
    udhcpc -b -q -i eth0 -s /etc/udhcpc.script >/dev/null 2>&1 &
  fi
fi
"""
UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip -4 addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip -4 route replace default via "${router%% *}" dev "$interface"
    ;;
esac
"""


def build_busybox_rootfs(target):
    busybox = Path("/bin/busybox")
    for sub in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "var/run", "usr/bin", "usr/sbin"):
        (target / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, target / "bin" / "busybox")
    applets = run([str(busybox), "--list-full"]).stdout.split()
    for applet in applets:
        link = target / applet
        if not link.exists() and applet != "bin/busybox":
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")
    (target / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (target / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (target / "etc" / "hostname").write_text("busybox\n")
    (target / "etc" / "inittab").write_text("::sysinit:/etc/rcS\n")
    for name, text in (("rcS", BUSYBOX_RCS), ("udhcpc.script", UDHCPC_SCRIPT)):
        (target / "etc" / name).write_text(text)
        (target / "etc" / name).chmod(0o755)
    (target / "tmp").chmod(0o1777)


def rootfs_tarball(name, builder):
    """A cached rootfs tarball in LAB_DIR/images (built once per machine: debootstrap takes a minute)."""
    images = LAB_DIR / "images"
    images.mkdir(parents=True, exist_ok=True)
    tarball = images / f"{name}-rootfs.tar.gz"
    if tarball.exists():
        return tarball
    log(f"building the {name} rootfs")
    with tempfile.TemporaryDirectory(dir=images) as tmp:
        root = Path(tmp) / "rootfs"
        root.mkdir()
        builder(root)
        partial = images / f".{name}-rootfs.tar.gz"
        run(["tar", "--numeric-owner", "-C", str(root), "-czf", str(partial), "."])
        partial.rename(tarball)
    return tarball


def build_debian_rootfs(target):
    run(["debootstrap", "--variant=minbase", f"--include={DEBIAN_INCLUDE}", "bookworm", str(target),
         "http://deb.debian.org/debian"])
    (target / "etc" / "hostname").write_text("debian\n")
    # The rootfs must not carry the apt cache of the build.
    shutil.rmtree(target / "var" / "cache" / "apt" / "archives", ignore_errors=True)


def docker_image_present(reference):
    return unix_http_ok(DOCKER_SOCKET, f"/images/{reference}/json")


def ensure_docker_images(tarballs):
    # busybox: init as PID 1, which stops at once on SIGTERM. Debian: a shell that exits on TERM
    # (systemd as PID 1 needs more from Docker than this lab gives it).
    commands = {"ocv-busybox": '["/sbin/init"]',
                "ocv-debian": '["/bin/sh", "-c", "trap \\"exit 0\\" TERM; sleep infinity & wait"]'}
    for name in IMAGES:
        if docker_image_present(f"{name}:latest"):
            continue
        log(f"importing {name} into docker")
        with open(tarballs[name], "rb") as stream:
            subprocess.run(["docker", "import", "-c", f"CMD {commands[name]}", "-", f"{name}:latest"],
                           stdin=stream, check=True, stdout=subprocess.DEVNULL)


def lxd_metadata_tarball(name, directory):
    metadata = directory / f"{name}-meta.tar.gz"
    if metadata.exists():
        return metadata
    arch = os.uname().machine
    text = (f"architecture: {arch}\ncreation_date: {int(time.time())}\nproperties:\n"
            f"  description: oneclickvirt lab {name}\n  os: {name.split('-')[1]}\n  release: lab\n")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "metadata.yaml").write_text(text)
        with tarfile.open(metadata, "w:gz") as tar:
            tar.add(Path(tmp) / "metadata.yaml", arcname="metadata.yaml")
    return metadata


def ensure_lxd_images(daemon, tarballs):
    for name in IMAGES:
        aliases = daemon.cli_run("query", "/1.0/images/aliases").stdout
        if f"/1.0/images/aliases/{name}\"" in aliases:
            continue
        log(f"importing {name} into {daemon.kind}")
        metadata = lxd_metadata_tarball(name, LAB_DIR / "images")
        daemon.cli_run("image", "import", str(metadata), str(tarballs[name]), "--alias", name)


# --- nodes.yml ---------------------------------------------------------------------------------------

def node_descriptions():
    ssh = {"host": "127.0.0.1", "port": SSH_PORT, "user": "root",
           "private_key_file": str(ssh_dir() / "id_ed25519"), "host_key_checking": "strict",
           "known_hosts_file": str(ssh_dir() / "known_hosts")}
    certs = LAB_DIR / "certs"
    nodes = {
        "docker": {"name": "docker", "type": "docker", "execution_rule": "auto", "ssh": dict(ssh),
                   "api": {"url": f"unix://{DOCKER_SOCKET}"}, "public_ip": CLIENT_NETNS["host_ipv4"],
                   "port_range": {"start": 20000, "end": 20999}},
    }
    for kind in ("lxd", "incus"):
        daemon = LxdLike(kind)
        nodes[kind] = {
            "name": kind, "type": kind, "execution_rule": "auto", "ssh": dict(ssh), "project": "default",
            "api": {"url": f"https://{daemon.https[0]}:{daemon.https[1]}",
                    "client_cert": str(certs / "client.crt"), "client_key": str(certs / "client.key"),
                    "server_cert": str(daemon.server_cert)},
            "public_ip": CLIENT_NETNS["host_ipv4"],
            "port_range": {"start": 21000 if kind == "lxd" else 22000, "end": 21999 if kind == "lxd" else 22999},
        }
    pvesim_node = LAB_DIR / "pvesim" / "node.json"
    if pvesim_node.exists():
        nodes["proxmox"] = json.loads(pvesim_node.read_text())
    if SIMULATOR_ONLY.exists():
        return {"proxmox": nodes["proxmox"]}
    return nodes


def to_yaml(value, indent=0):
    """Enough YAML for nodes.yml (nested mappings of scalars); JSON scalars are valid YAML."""
    lines = []
    for key, item in value.items():
        if isinstance(item, dict):
            lines.append(" " * indent + f"{key}:")
            lines.append(to_yaml(item, indent + 2))
        else:
            lines.append(" " * indent + f"{key}: {json.dumps(item)}")
    return "\n".join(lines)


def write_nodes():
    target = NODES_FILE
    target.parent.mkdir(exist_ok=True)
    target.write_text("# The lab's nodes, written by `make lab`. Each entry is a complete node description.\n"
                      + to_yaml(node_descriptions()) + "\n")
    (LAB_DIR / "nodes.yml").write_text(target.read_text())
    log(f"wrote {target}")


# --- the Proxmox simulator ----------------------------------------------------------------------------

def ensure_pvesim(with_ssh=True):
    starter = PROJECT_ROOT / "lab" / "pvesim_lab.py"
    if not starter.exists():
        return
    sys.path.insert(0, str(starter.parent))
    import pvesim_lab  # noqa: E402  (part of the lab, next to this file)
    pvesim_lab.ensure(sys.modules[__name__], with_ssh=with_ssh)


def full_lab_refused():
    """Why the full lab cannot be installed here (None when it can): it needs root and Debian's apt. Also
    OCV_LAB_SIMULATOR_ONLY=1, for a machine that should not get system daemons (and for the lab's own test)."""
    if os.environ.get("OCV_LAB_SIMULATOR_ONLY") == "1":
        return "OCV_LAB_SIMULATOR_ONLY=1"
    if os.geteuid() != 0:
        return "not root"
    if not Path("/etc/debian_version").exists() or shutil.which("apt-get") is None:
        return "not a Debian system"
    return None


def up_simulator_only(reason):
    """The Proxmox VE simulator alone, as the current user, API only: what runs where the full lab cannot."""
    started = time.monotonic()
    log(f"the full lab cannot be installed here ({reason}): starting the Proxmox VE simulator alone "
        "(no Docker, LXD, Incus or SSH nodes)")
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    SIMULATOR_ONLY.write_text(f"{reason}\n")
    if shutil.which("openssl") is None:
        raise SystemExit("lab: the simulator needs the openssl command for its certificate; install openssl")
    ensure_pvesim(with_ssh=False)
    write_nodes()
    log(f"simulator-only lab up in {time.monotonic() - started:.1f}s")


# --- entry points -----------------------------------------------------------------------------------------

def up():
    reason = full_lab_refused()
    if reason:
        up_simulator_only(reason)
        return
    started = time.monotonic()
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    LAB_DIR.chmod(0o755)
    SIMULATOR_ONLY.unlink(missing_ok=True)
    ensure_packages()
    ensure_docker()
    ensure_sshd()
    daemons = [LxdLike("lxd"), LxdLike("incus")]
    for daemon in daemons:
        daemon.ensure()
    ensure_docker_user_rules()
    ensure_client_netns()
    tarballs = {"ocv-busybox": rootfs_tarball("ocv-busybox", build_busybox_rootfs),
                "ocv-debian": rootfs_tarball("ocv-debian", build_debian_rootfs)}
    ensure_docker_images(tarballs)
    for daemon in daemons:
        ensure_lxd_images(daemon, tarballs)
    ensure_pvesim()
    write_nodes()
    log(f"up in {time.monotonic() - started:.1f}s")


def down():
    for name in ("pvesim", "pvesim-sshd", "sshd", "incus", "lxd", "dockerd"):
        stop_daemon(name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("up", "down", "nodes"))
    action = parser.parse_args().action
    if os.geteuid() != 0 and not SIMULATOR_ONLY.exists() and action != "up":
        raise SystemExit("lab: the lab installs packages and starts daemons: run it as root on a disposable machine")
    {"up": up, "down": down, "nodes": write_nodes}[action]()


if __name__ == "__main__":
    main()
