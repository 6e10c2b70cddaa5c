"""The node's command-line tools: pvesh, qm, pct, pvesm, pveversion and a systemctl for the pve services.

The lab installs one small script per tool in `$LAB_DIR/pvesim/bin/` (first on PATH in the simulator's SSH
sessions); each calls main(tool, argv) here. They talk to the running simulator over its control socket
(local, root-only, no token), so they share its state and keep working while pveproxy is "stopped", as on
PVE, where these tools call the API handlers directly and not through pveproxy.

Argument forms, as on PVE (what is supported):
  pvesh get|create|set|delete PATH [--param value]... [--output-format text|json|json-pretty|yaml]
  pvesh ls PATH
  qm list | status VMID [--verbose] | config VMID | start|stop|shutdown|reboot VMID [--opts]
     create VMID --opts | set VMID --opts | destroy VMID [--purge] | clone VMID NEWID [--name N] [--full]
     resize VMID DISK SIZE | template VMID | unlock VMID | pending VMID
     guest exec VMID [--pass-stdin 1] [--timeout S] [--] ARGV... | guest cmd VMID COMMAND
     guest passwd VMID USER [--crypted]   (the password is read from stdin)
  pct list | status | config | start | stop | shutdown | reboot | destroy | set | resize | template | unlock
      create VMID OSTEMPLATE --opts | clone VMID NEWID [--hostname H] | exec VMID [--] ARGV...
  pvesm status [--storage S] [--content C] | list STORAGE [--content C] [--vmid N] | path VOLID | free VOLID
  pveversion [-v|--verbose]
  systemctl [--quiet] is-active|is-enabled|status|start|stop|restart|reload UNIT...

Tasks run in the foreground, as PVE's CLI runs them: their log goes to stdout, a failure's exit status to
stderr, and the command exits 255. API errors go to stderr with exit status 255 as well.
"""
import http.client
import json
import os
import socket
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlencode

from . import KERNEL, NODE, PVE_RELEASE, PVE_REPOID, PVE_VERSION

SOCKET = os.environ.get("PVESIM_SOCKET") or str(
    Path(os.environ.get("OCV_LAB_DIR", "/var/lib/oneclickvirt-lab")) / "pvesim" / "control.sock")
SERVICE_DESCRIPTIONS = {
    "pveproxy": "PVE API Proxy Server", "pvedaemon": "PVE API Daemon", "pvestatd": "PVE Status Daemon",
    "pve-cluster": "The Proxmox VE cluster filesystem", "pve-firewall": "Proxmox VE firewall",
    "pvescheduler": "Proxmox VE scheduler", "spiceproxy": "PVE SPICE Proxy Server",
    "pve-ha-lrm": "PVE Local HA Resource Manager Daemon", "pve-ha-crm": "PVE Cluster HA Resource Manager Daemon",
}


class CliError(Exception):
    def __init__(self, message, code=255):
        super().__init__(message)
        self.code = code


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=600):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError as error:
            raise CliError(f"ipcc_send_rec[1] failed: Connection refused (pvesim control socket {self.socket_path}: "
                           f"{error.strerror})") from None
        self.sock = sock


def request(method, path, body=None, headers=None):
    connection = UnixConnection(SOCKET)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        answer = connection.getresponse()
        data = answer.read()
        return answer.status, json.loads(data) if data else None
    finally:
        connection.close()


def api(method, path, params=None):
    """One API call; -> data, or CliError with PVE's message."""
    params = {k: v for k, v in (params or {}).items() if v is not None}
    encoded = urlencode(params, doseq=True)
    url = "/api2/json" + path
    if method in ("GET", "DELETE"):
        status, body = request(method, url + (f"?{encoded}" if encoded else ""))
    else:
        status, body = request(method, url, encoded.encode(),
                               {"Content-Type": "application/x-www-form-urlencoded"})
    if status >= 400:
        message = (body or {}).get("message", f"HTTP {status}").rstrip("\n")
        errors = (body or {}).get("errors") or {}
        if errors:
            message = f"{status} {message}\n" + "".join(f"{k}: {v}\n" for k, v in sorted(errors.items()))
        raise CliError(message.rstrip("\n"))
    return body.get("data")


def control(method, path, payload=None):
    status, body = request(method, path, json.dumps(payload or {}).encode(), {"Content-Type": "application/json"})
    if status >= 400:
        raise CliError(body.get("error", f"HTTP {status}"), code=4 if status == 404 else 255)
    return body


def wait_task(upid, out=sys.stdout):
    """Wait for a task like PVE's CLI does: then its log on stdout; a failure raises CliError with the exit
    status. (PVE streams the log while the task runs; the simulator prints it when the task ends.)"""
    quoted = quote(upid, safe="")
    while True:
        status = api("GET", f"/nodes/{NODE}/tasks/{quoted}/status")
        if status["status"] == "stopped":
            break
        time.sleep(0.1)
    lines = api("GET", f"/nodes/{NODE}/tasks/{quoted}/log", {"start": 0, "limit": 100000})
    for line in lines:
        if not line["t"].startswith("TASK ") and line["t"] != "no content":
            out.write(line["t"] + "\n")
    out.flush()
    if status.get("exitstatus") != "OK":
        raise CliError(status.get("exitstatus", "unknown task failure"))


def parse_options(args):
    """`--key value`, `--key=value`, a bare `--flag` (= 1); repeats become lists. -> (options, positionals)."""
    options, positionals = {}, []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            positionals.extend(args[index + 1:])
            break
        if arg.startswith("--") and len(arg) > 2:
            key, sep, value = arg[2:].partition("=")
            if not sep:
                if index + 1 < len(args) and not args[index + 1].startswith("--"):
                    value = args[index + 1]
                    index += 1
                else:
                    value = "1"
            if key in options:
                options[key] = (options[key] if isinstance(options[key], list) else [options[key]]) + [value]
            else:
                options[key] = value
        else:
            positionals.append(arg)
        index += 1
    return options, positionals


# --- output ---------------------------------------------------------------------------------------------------

def render(data, output_format):
    if output_format == "json":
        return json.dumps(data, separators=(",", ":"))
    if output_format == "json-pretty":
        return json.dumps(data, indent=4, sort_keys=True)
    if output_format == "yaml":
        return to_yaml(data).rstrip("\n")
    return to_text(data)


def to_yaml(data, indent=0):
    pad = " " * indent
    if isinstance(data, dict):
        return "".join(f"{pad}{k}:\n{to_yaml(v, indent + 2)}" if isinstance(v, (dict, list)) and v else
                       f"{pad}{k}: {json.dumps(v)}\n" for k, v in sorted(data.items()))
    if isinstance(data, list):
        return "".join(f"{pad}-\n{to_yaml(v, indent + 2)}" if isinstance(v, (dict, list)) else
                       f"{pad}- {json.dumps(v)}\n" for v in data)
    return f"{pad}{json.dumps(data)}\n"


def to_text(data):
    """A plain table (PVE draws borders; scripts should use --output-format json)."""
    if data is None:
        return ""
    if isinstance(data, dict):
        width = max((len(k) for k in data), default=0)
        return "\n".join(f"{k.ljust(width)} {v if not isinstance(v, (dict, list)) else json.dumps(v)}"
                         for k, v in sorted(data.items()))
    if isinstance(data, list) and data and all(isinstance(item, dict) for item in data):
        columns = sorted({k for item in data for k in item})
        rows = [[str(item.get(c, "")) for c in columns] for item in data]
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
        return "\n".join(" ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                         for row in [columns] + rows)
    if isinstance(data, list):
        return "\n".join(str(item) for item in data)
    return str(data)


def print_data(data, output_format):
    text = render(data, output_format)
    if text:
        print(text)


# --- pvesh --------------------------------------------------------------------------------------------------------

def pvesh(args):
    if len(args) < 2 or args[0] not in ("get", "create", "set", "delete", "ls"):
        raise CliError("USAGE: pvesh <get|create|set|delete|ls> <api_path> [OPTIONS] [FORMAT_OPTIONS]")
    verb, path = args[0], "/" + args[1].strip("/")
    options, extra = parse_options(args[2:])
    if extra:
        raise CliError(f"400 too many arguments: {' '.join(extra)}")
    output_format = options.pop("output-format", "text")
    quiet = options.pop("quiet", "0") in ("1", "true")
    for ignored in ("noborder", "noheader", "human-readable"):
        options.pop(ignored, None)
    if verb == "ls":
        data = api("GET", path)
        for item in data or []:
            name = next((str(v) for k, v in item.items() if k in ("name", "subdir", "node", "vmid", "storage")), "")
            print(f"Dr--d        {name}")
        return 0
    method = {"get": "GET", "create": "POST", "set": "PUT", "delete": "DELETE"}[verb]
    data = api(method, path, options)
    if isinstance(data, str) and data.startswith("UPID:"):
        wait_task(data)
    if not quiet:
        print_data(data, output_format)
    return 0


# --- qm and pct -------------------------------------------------------------------------------------------------

def guest_tool(kind, args):
    word = "VM" if kind == "qemu" else "CT"
    base = f"/nodes/{NODE}/{kind}"
    if not args:
        raise CliError(f"USAGE: {'qm' if kind == 'qemu' else 'pct'} <command> [ARGS] [OPTIONS]")
    command, rest = args[0], args[1:]
    if kind == "qemu" and command == "guest":
        return qm_guest(rest)
    if kind == "lxc" and command == "exec":
        return pct_exec(rest)
    options, positionals = parse_options(rest)

    def need(count, usage):
        if len(positionals) != count:
            raise CliError(f"400 wrong number of arguments\nUSAGE: {usage}")
        return positionals

    if command == "list":
        guests = api("GET", base)
        if kind == "qemu":
            print(f"{'VMID':>10} {'NAME':<20} {'STATUS':<10} {'MEM(MB)':<10} {'BOOTDISK(GB)':<12} {'PID':<10}")
            for g in sorted(guests, key=lambda g: g["vmid"]):
                print(f"{g['vmid']:>10} {g.get('name', ''):<20} {g['status']:<10} {g.get('maxmem', 0) // 1048576:<10} "
                      f"{g.get('maxdisk', 0) / 1073741824:<12.2f} {g.get('pid', 0):<10}")
        else:
            print(f"{'VMID':<10} {'Status':<10} {'Lock':<10} {'Name'}")
            for g in sorted(guests, key=lambda g: g["vmid"]):
                print(f"{g['vmid']:<10} {g['status']:<10} {g.get('lock', ''):<10} {g.get('name', '')}")
        return 0
    if command == "status":
        (vmid,) = need(1, "status <vmid> [--verbose]")
        status = api("GET", f"{base}/{vmid}/status/current")
        if options.get("verbose") in ("1", "true"):
            print(to_text(status))
        else:
            print(f"status: {status['status']}")
        return 0
    if command == "config":
        (vmid,) = need(1, "config <vmid> [--current] [--snapshot]")
        config = api("GET", f"{base}/{vmid}/config", options)
        config.pop("digest", None)
        for key in sorted(config):
            print(f"{key}: {config[key]}")
        return 0
    if command == "pending" and kind == "qemu":
        (vmid,) = need(1, "pending <vmid>")
        for item in api("GET", f"{base}/{vmid}/pending"):
            print(f"cur {item['key']}: {item.get('value', '')}")
        return 0
    if command in ("start", "stop", "shutdown", "reboot"):
        (vmid,) = need(1, f"{command} <vmid> [OPTIONS]")
        wait_task(api("POST", f"{base}/{vmid}/status/{command}", options))
        return 0
    if command == "destroy":
        (vmid,) = need(1, "destroy <vmid> [OPTIONS]")
        wait_task(api("DELETE", f"{base}/{vmid}", options))
        return 0
    if command == "create":
        if kind == "qemu":
            (vmid,) = need(1, "create <vmid> [OPTIONS]")
            upid = api("POST", base, {"vmid": vmid, **options})
        else:
            vmid, ostemplate = need(2, "create <vmid> <ostemplate> [OPTIONS]")
            upid = api("POST", base, {"vmid": vmid, "ostemplate": ostemplate, **options})
        wait_task(upid)
        return 0
    if command == "set":
        (vmid,) = need(1, "set <vmid> [OPTIONS]")
        api("PUT", f"{base}/{vmid}/config", options)
        return 0
    if command == "unlock":
        (vmid,) = need(1, "unlock <vmid>")
        api("PUT", f"{base}/{vmid}/config", {"delete": "lock", **({"skiplock": 1} if kind == "qemu" else {})})
        return 0
    if command == "clone":
        vmid, newid = need(2, "clone <vmid> <newid> [OPTIONS]")
        wait_task(api("POST", f"{base}/{vmid}/clone", {"newid": newid, **options}))
        return 0
    if command == "resize":
        vmid, disk, size = need(3, "resize <vmid> <disk> <size>")
        wait_task(api("PUT", f"{base}/{vmid}/resize", {"disk": disk, "size": size, **options}))
        return 0
    if command == "template":
        (vmid,) = need(1, "template <vmid>")
        result = api("POST", f"{base}/{vmid}/template", options)
        if isinstance(result, str) and result.startswith("UPID:"):
            wait_task(result)
        return 0
    raise CliError(f"unknown command '{'qm' if kind == 'qemu' else 'pct'} {command}' (pvesim supports: list, status, "
                   f"config, start, stop, shutdown, reboot, destroy, create, set, unlock, clone, resize, template, "
                   f"{'guest, pending' if kind == 'qemu' else 'exec'})")


def read_stdin():
    return sys.stdin.buffer.read().decode("utf-8", "replace")


def qm_guest(args):
    if not args or args[0] not in ("exec", "cmd", "passwd"):
        raise CliError("USAGE: qm guest <exec|cmd|passwd> <vmid> ...")
    sub, rest = args[0], args[1:]
    base = f"/nodes/{NODE}/qemu"
    if sub == "exec":
        options, positionals = parse_options(rest)
        if not positionals:
            raise CliError("USAGE: qm guest exec <vmid> [<extra-args>] [OPTIONS]")
        vmid, argv = positionals[0], positionals[1:]
        params = {"command": argv}
        if options.get("pass-stdin") in ("1", "true"):
            params["input-data"] = read_stdin()
        started = api("POST", f"{base}/{vmid}/agent/exec", params)
        timeout = float(options.get("timeout", 30))
        deadline = time.monotonic() + timeout
        while True:
            status = api("GET", f"{base}/{vmid}/agent/exec-status", {"pid": started["pid"]})
            if status.get("exited") or time.monotonic() > deadline or options.get("synchronous") == "0":
                break
            time.sleep(0.1)
        if not status.get("exited"):
            status = {"pid": started["pid"]}
        print(json.dumps(status, indent=3, sort_keys=True))
        return 0
    if sub == "cmd":
        vmid, command = rest[0], rest[1]
        print(json.dumps(api("POST", f"{base}/{vmid}/agent", {"command": command}).get("result"), indent=3,
                         sort_keys=True))
        return 0
    options, positionals = parse_options(rest)
    if len(positionals) != 2:
        raise CliError("USAGE: qm guest passwd <vmid> <username> [OPTIONS]")
    password = read_stdin().splitlines()[0] if not sys.stdin.isatty() else ""
    if not password:
        raise CliError("no password given on stdin")
    api("POST", f"{base}/{positionals[0]}/agent/set-user-password",
        {"username": positionals[1], "password": password, "crypted": options.get("crypted")})
    return 0


def pct_exec(args):
    options, positionals = parse_options(args)
    if not positionals:
        raise CliError("USAGE: pct exec <vmid> [<extra-args>] [OPTIONS]")
    vmid, argv = positionals[0], positionals[1:]
    if not argv:
        raise CliError("missing command")
    answer = control("POST", "/_sim/exec", {"vmid": int(vmid), "argv": argv})
    if answer.get("needs_stdin"):
        answer = control("POST", "/_sim/exec", {"vmid": int(vmid), "argv": argv, "stdin": read_stdin()})
    sys.stdout.write(answer["stdout"])
    sys.stderr.write(answer["stderr"])
    return answer["rc"]


# --- pvesm, pveversion, systemctl --------------------------------------------------------------------------------

def pvesm(args):
    if not args:
        raise CliError("USAGE: pvesm <status|list|path|free> ...")
    command = args[0]
    options, positionals = parse_options(args[1:])
    if command == "status":
        storages = api("GET", f"/nodes/{NODE}/storage", options)
        print(f"{'Name':<16} {'Type':<8} {'Status':<9} {'Total':>14} {'Used':>14} {'Available':>14} {'%':>7}")
        for s in storages:
            print(f"{s['storage']:<16} {s['type']:<8} {'active':<9} {s['total'] // 1024:>14} {s['used'] // 1024:>14} "
                  f"{s['avail'] // 1024:>14} {100 * s['used'] / s['total']:>6.2f}%")
        return 0
    if command == "list":
        if len(positionals) != 1:
            raise CliError("USAGE: pvesm list <storage> [OPTIONS]")
        volumes = api("GET", f"/nodes/{NODE}/storage/{positionals[0]}/content", options)
        print(f"{'Volid':<60} {'Format':<7} {'Type':<9} {'Size':>12} {'VMID':>6}")
        for v in volumes:
            print(f"{v['volid']:<60} {v['format']:<7} {v.get('content', ''):<9} {v['size']:>12} {v.get('vmid', ''):>6}")
        return 0
    if command in ("path", "free"):
        if len(positionals) != 1:
            raise CliError(f"USAGE: pvesm {command} <volume>")
        volid = positionals[0]
        storage = volid.partition(":")[0]
        url = f"/nodes/{NODE}/storage/{storage}/content/{quote(volid, safe='')}"
        if command == "path":
            print(api("GET", url)["path"])
        else:
            wait_task(api("DELETE", url))
        return 0
    raise CliError(f"unknown command 'pvesm {command}' (pvesim supports: status, list, path, free)")


def pveversion(args):
    line = f"pve-manager/{PVE_VERSION}/{PVE_REPOID} (running kernel: {KERNEL})"
    if args and args[0] in ("-v", "--verbose"):
        print(f"proxmox-ve: {PVE_RELEASE}.0 (running kernel: {KERNEL})")
        print(f"pve-manager: {PVE_VERSION} (running version: {PVE_VERSION}/{PVE_REPOID})")
        for package, version in (("proxmox-kernel-helper", "8.1.1"), ("pve-kernel-6.8", KERNEL),
                                 ("qemu-server", "8.3.12"), ("pve-container", "5.2.6"), ("libpve-storage-perl", "8.3.6"),
                                 ("pve-qemu-kvm", "9.2.0-5"), ("lxc-pve", "6.0.0-1"), ("pvesim", "lab simulator")):
            print(f"{package}: {version}")
    else:
        print(line)
    return 0


def systemctl(args):
    quiet = "--quiet" in args or "-q" in args
    args = [a for a in args if a not in ("--quiet", "-q", "--no-pager", "--no-block")]
    if len(args) < 2:
        raise CliError("systemctl (pvesim): USAGE: systemctl <is-active|is-enabled|status|start|stop|restart|reload> UNIT...",
                       code=1)
    verb, units = args[0], [u[:-len(".service")] if u.endswith(".service") else u for u in args[1:]]
    services = control("GET", "/_sim/services")
    code = 0
    for unit in units:
        if unit not in services:
            if verb in ("is-active", "is-enabled"):
                if not quiet:
                    print("inactive" if verb == "is-active" else "not-found")
                code = max(code, 3 if verb == "is-active" else 4)
            else:
                sys.stderr.write(f"Unit {unit}.service could not be found.\n")
                code = max(code, 4 if verb == "status" else 5)
            continue
        state = services[unit]
        if verb == "is-active":
            if not quiet:
                print(state)
            code = max(code, 0 if state == "active" else 3)
        elif verb == "is-enabled":
            if not quiet:
                print("enabled")
        elif verb == "status":
            running = "active (running)" if state == "active" else "inactive (dead)"
            print(f"{'●' if state == 'active' else '○'} {unit}.service - {SERVICE_DESCRIPTIONS.get(unit, unit)}\n"
                  f"     Loaded: loaded (/lib/systemd/system/{unit}.service; enabled; preset: enabled)\n"
                  f"     Active: {running}")
            code = max(code, 0 if state == "active" else 3)
        elif verb in ("start", "stop", "restart", "reload"):
            control("POST", "/_sim/services", {"name": unit, "action": verb})
        else:
            raise CliError(f"Unknown command verb {verb}.", code=1)
    return code


TOOLS = {"pvesh": pvesh, "qm": lambda a: guest_tool("qemu", a), "pct": lambda a: guest_tool("lxc", a),
         "pvesm": pvesm, "pveversion": pveversion, "systemctl": systemctl}


def main(tool, argv):
    try:
        return TOOLS[tool](argv)
    except CliError as error:
        sys.stdout.flush()
        sys.stderr.write(str(error).rstrip("\n") + "\n")
        return error.code
    except BrokenPipeError:
        return 141
