#!/usr/bin/env python3
"""Benchmarks against the peer collections, side by side (issue 13, and the inventory part of issue 9).

    .venv/bin/python benchmarks/run.py [--scale small|full] [--backends docker,lxd,incus,proxmox] [--rounds N]

Ours (oneclickvirt.virt from this checkout, .venv) and the peers (.venv-peers: the `ansible` 12.3.0 package's
community.docker, community.general, community.proxmox) run on the same lab data in one run, alternating ours /
peer, several rounds; each number is the median wall time of a whole process. See benchmarks/README.md.

Everything the harness creates is named `bench-*` and removed at the end, also on Ctrl-C / SIGTERM.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tools"))

import report  # noqa: E402  (benchmarks/report.py)
from proxy import CountingProxy  # noqa: E402

OURS_BIN = ROOT / ".venv" / "bin"
BENCH_VENV = HERE / ".venv"
RESULTS = HERE / "results"
IMAGE = "ocv-busybox"
SOCKETS = {"docker": "/var/run/docker.sock", "lxd": "/var/lib/lxd/unix.socket", "incus": "/var/lib/incus/unix.socket"}
CLI = {"lxd": "lxc", "incus": "incus"}
PVE_PORT = 18006
PVE_TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
PVE_ISO = "local:iso/debian-12.8.0-amd64-netinst.iso"  # seeded by the simulator
PVE_LATENCY = 0.05  # seconds added to every API answer of our own simulator in the 8-node case

SCALES = {
    # sizes: instances on one node; eight: per-node instances for the 8-node case; create: instances made
    # and deleted; rounds per case kind.
    "small": {"sizes": [10], "eight": 10, "create": 5, "rounds": {"noop": 3, "inventory": 3, "create": 2}},
    "full": {"sizes": [50, 200, 500], "eight": 50, "create": 20,
             "rounds": {"noop": 5, "inventory": 5, "inventory_large": 3, "create": 3}},
}


class BenchError(Exception):
    """A benchmarked command failed: the row says so instead of carrying a number."""


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- processes ---------------------------------------------------------------------------------------------------
def run(argv, env=None, cwd=None, timeout=1800, check=True, input_text=None):
    completed = subprocess.run([str(part) for part in argv], capture_output=True, text=True, env=env, cwd=cwd,
                               timeout=timeout, check=False, input=input_text)
    if check and completed.returncode != 0:
        raise BenchError(f"{' '.join(str(p) for p in argv[:4])} ... exited {completed.returncode}: "
                         f"{(completed.stderr or completed.stdout).strip()[-600:]}")
    return completed


def timed(argv, env, cwd, expect=None):
    """Wall time of one whole process; BenchError when it fails or its output lacks `expect`."""
    started = time.perf_counter()
    completed = run(argv, env=env, cwd=cwd, check=False)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        output = (completed.stdout + completed.stderr).strip()
        # the head names the first failure (e.g. the auto plugin's own reason), the tail how it ended
        shown = output if len(output) <= 1400 else f"{output[:900]} [...] {output[-500:]}"
        raise BenchError(f"{Path(str(argv[0])).name} {argv[1] if len(argv) > 1 else ''} exited "
                         f"{completed.returncode}: {shown}")
    if expect is not None and not expect(completed):
        raise BenchError(f"{Path(str(argv[0])).name}: unexpected output: {completed.stdout.strip()[-800:]}")
    return seconds, completed


def unchanged(completed):
    """An ad-hoc `ansible` run that reported a true no-op."""
    return "SUCCESS" in completed.stdout and '"changed": false' in completed.stdout


def cpu_busy(seconds):
    """The machine's busy share of CPU time over `seconds` (from /proc/stat)."""
    def sample():
        with open("/proc/stat") as handle:
            values = [int(value) for value in handle.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait
    total, idle = sample()
    time.sleep(seconds)
    total_after, idle_after = sample()
    return 1 - (idle_after - idle) / max(1, total_after - total)


def wait_quiet(what, busy_below=0.15, window=2.0, limit=120):
    """Wait until the machine is quiet (busy below `busy_below` over `window` seconds), at most `limit` seconds."""
    started = time.monotonic()
    busy = cpu_busy(window)
    while busy >= busy_below and time.monotonic() - started < limit:
        busy = cpu_busy(window)
    log(f"{what}: quiet after {time.monotonic() - started:.0f}s (CPU {busy:.0%} busy)")


def parallel(function, items, workers=8):
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(function, items):
            pass


def chunks(items, size):
    return [items[index:index + size] for index in range(0, len(items), size)]


# -- the run's own folder and environments -----------------------------------------------------------------------
class Workspace:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="bench-ocv-"))
        link = self.dir / "collections" / "ansible_collections" / "oneclickvirt" / "virt"
        link.parent.mkdir(parents=True)
        link.symlink_to(ROOT)
        self.collections = self.dir / "collections"
        (self.dir / "home").mkdir()
        (self.dir / "pycache").mkdir()

    def env(self, side, extra=None):
        """The environment of one side's process: the user's, less Ansible/Python settings of this session.

        Bytecode is cached (under the run's own PYTHONPYCACHEPREFIX, so the checkout stays clean) for both
        sides, as on a user's machine: the lab exports PYTHONDONTWRITEBYTECODE, which would make only our
        collection (not pip-installed, so not precompiled) compile on every run.
        """
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("ANSIBLE_", "PYTHON", "VIRTUAL_ENV", "ONECLICKVIRT_"))}
        env.update(ANSIBLE_HOME=str(self.dir / "home" / side), ANSIBLE_LOCALHOST_WARNING="False",
                   ANSIBLE_INVENTORY_UNPARSED_WARNING="False", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
                   ANSIBLE_DEPRECATION_WARNINGS="False", ANSIBLE_RETRY_FILES_ENABLED="False",
                   ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="True",
                   PYTHONPYCACHEPREFIX=str(self.dir / "pycache"))
        if side == "ours":
            env["ANSIBLE_COLLECTIONS_PATH"] = str(self.collections)
        env.update(extra or {})
        return env

    def write(self, name, text, mode=0o600):
        path = self.dir / name
        path.write_text(text)
        path.chmod(mode)
        return path

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


# -- results -----------------------------------------------------------------------------------------------------
class Results:
    def __init__(self):
        self.rows, self.details, self.findings = [], [], []

    def add(self, **row):
        self.rows.append(report.make_row(**row))
        shown = self.rows[-1]
        log(f"row: {report.row_label(shown)}: ours {shown['ours_median']} ref {shown['reference_median']} "
            f"ratio {shown['ratio']} {shown['result']} {shown['status'] if shown['status'] != 'measured' else ''}")

    def detail(self, **item):
        self.details.append(item)


def rounds_of(measure, sides, rounds, warmup=True):
    """{side: [seconds, ...]}: every side once per round, the order flipped every other round (ours/peer,
    then peer/ours), after one untimed warm-up run of each side (bytecode, page cache)."""
    names = list(sides)
    if warmup:
        for name in names:
            measure(name)
    samples = {name: [] for name in names}
    for number in range(rounds):
        order = names if number % 2 == 0 else list(reversed(names))
        for name in order:
            samples[name].append(measure(name))
    return samples


# -- backends: data, our node, the peers' options ----------------------------------------------------------------
class Backend:
    """Docker, LXD or Incus on the lab's daemon, reached over its unix socket (directly, or via the counting
    proxy): our node description and the peers' options for one socket path."""

    def __init__(self, kind, workspace):
        self.kind, self.workspace = kind, workspace
        self.socket = SOCKETS[kind]
        self.proxy = CountingProxy(workspace.dir / f"{kind}.sock", self.socket)
        self.made = set()

    # lab data through the daemon's own CLI, in parallel
    def create(self, names, running=True):
        def one(name):
            if self.kind == "docker":
                run(["docker", "run" if running else "create", *(["-d"] if running else []), "--name", name, IMAGE])
            else:
                run([CLI[self.kind], "launch" if running else "init", IMAGE, name, "-q"])
        self.made.update(names)
        parallel(one, names, workers=8)

    def delete(self, names):
        names = list(names)

        def batch(group):
            if self.kind == "docker":
                run(["docker", "rm", "-f", *group], check=False)
            else:
                run([CLI[self.kind], "delete", "-f", *group], check=False)
        parallel(batch, chunks(names, 20), workers=4)
        self.made.difference_update(names)

    def existing_bench(self):
        if self.kind == "docker":
            listing = run(["docker", "ps", "-a", "--format", "{{.Names}}"], check=False).stdout.split()
        else:
            listing = run([CLI[self.kind], "list", "-c", "n", "--format", "csv"], check=False).stdout.split()
        return [name for name in listing if name.startswith("bench-")]

    def socket_path(self, counted):
        return self.proxy.listen_path if counted else self.socket

    def node(self, counted=False, name=None):
        node = {"name": name or f"bench-{self.kind}", "type": self.kind, "execution_rule": "api_only",
                "api": {"url": f"unix://{self.socket_path(counted)}"}}
        if self.kind != "docker":
            node["project"] = "default"
        return node

    def counts(self):
        return None  # the proxy's snapshot is read by the caller

    # ours
    def ours_instance_args(self, name, state, counted=False):
        args = {"name": name, "state": state, "node": self.node(counted)}
        if state != "absent":
            args["image"] = f"{IMAGE}:latest" if self.kind == "docker" else IMAGE
        return args

    def ours_inventory(self, nodes):
        return {"plugin": "oneclickvirt.virt.instances", "nodes": nodes,
                "host_name_format": "instance.node" if len(nodes) > 1 else "instance"}

    # peers
    @property
    def peer_module(self):
        return "community.docker.docker_container" if self.kind == "docker" else "community.general.lxd_container"

    @property
    def peer_inventory_plugin(self):
        return "community.docker.docker_containers" if self.kind == "docker" else "community.general.lxd"

    @property
    def peer_inventory_suffix(self):
        return "docker.yml" if self.kind == "docker" else "lxd.yml"

    def peer_instance_args(self, name, state, counted=False):
        path = self.socket_path(counted)
        if self.kind == "docker":
            args = {"name": name, "state": state, "docker_host": f"unix://{path}"}
            if state != "absent":
                args["image"] = f"{IMAGE}:latest"
            return args
        args = {"name": name, "state": state, "url": f"unix:{path}"}
        if state != "absent":
            args["source"] = {"type": "image", "alias": IMAGE}
        return args

    def peer_instance_args_addressed(self, name, state, counted=False):
        """The peer asked for what ours returns after a start: the instance's IPv4 address (LXD / Incus)."""
        args = self.peer_instance_args(name, state, counted)
        if state != "absent":
            args["wait_for_ipv4_addresses"] = True
        return args

    def peer_inventory(self, counted=False):
        path = self.socket_path(counted)
        if self.kind == "docker":
            return {"plugin": self.peer_inventory_plugin, "docker_host": f"unix://{path}"}
        return {"plugin": self.peer_inventory_plugin, "url": f"unix:{path}", "type_filter": "both",
                "project": "default"}


# -- the harness -------------------------------------------------------------------------------------------------
class Harness:
    def __init__(self, args):
        self.args = args
        self.scale = SCALES[args.scale]
        if args.sizes:
            self.scale = dict(self.scale, sizes=sorted(int(size) for size in args.sizes.split(",")))
        self.workspace = Workspace()
        self.results = Results()
        self.peer_bin = None
        self.backends = {}
        self.pve = None
        self.cases = {name.strip() for name in args.cases.split(",") if name.strip()}

    # environments and commands
    def bin(self, side):
        return OURS_BIN if side == "ours" else self.peer_bin

    def adhoc(self, side, module, args, extra_args=()):
        argv = [self.bin(side) / "ansible", "localhost", "-m", module]
        if args is not None:
            argv += ["-a", json.dumps(args)]
        return argv + list(extra_args)

    def rounds(self, kind):
        if self.args.rounds:
            return self.args.rounds
        return self.scale["rounds"][kind]

    # ping floor, measured alongside every no-op case and on its own
    def ping(self, side):
        return timed(self.adhoc(side, "ansible.builtin.ping", None), self.workspace.env(side), self.workspace.dir,
                     expect=lambda c: '"pong"' in c.stdout)[0]

    def case_ping(self):
        log("case: ansible.builtin.ping floor")
        samples = rounds_of(self.ping, ["ours", "peer"], self.rounds("noop"))
        self.results.add(case="ping floor", backend="localhost", ours=report.summarize(samples["ours"]),
                         reference=report.summarize(samples["peer"]), reference_label="ping (peers' venv)",
                         note="ansible localhost -m ansible.builtin.ping; both venvs run ansible-core 2.19.14")
        self.results.detail(case="ping floor", samples=samples)

    # -- docker / lxd / incus -----------------------------------------------------------------------------
    def backend_cases(self, backend):
        kind = backend.kind
        backend.proxy.start()
        try:
            if "noop" in self.cases:
                self.guarded(lambda: self.case_noop(backend), "no-op task", kind)
            if "create" in self.cases:
                self.guarded(lambda: self.case_create(backend), "create", kind)
            if "inventory" in self.cases:
                self.guarded(lambda: self.case_inventory(backend), "inventory", kind)
        finally:
            leftovers = backend.existing_bench()
            if leftovers:
                log(f"{kind}: removing {len(leftovers)} bench instances")
                backend.delete(leftovers)
            backend.proxy.stop()

    def guarded(self, function, case, backend):
        try:
            function()
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:  # one broken case must not lose the others' numbers
            log(f"{case} {backend} failed: {error}")
            traceback.print_exc(file=sys.stderr)
            self.results.add(case=case, backend=backend, status=f"not measured: failed: {str(error)[:300]}")

    def counted(self, backend, function):
        backend.proxy.reset()
        function()
        return backend.proxy.snapshot()

    def case_noop(self, backend):
        kind = backend.kind
        log(f"case: no-op instance task on {kind}")
        name = "bench-noop"
        backend.create([name])

        def measure(side, counted=False):
            if side in ("ours", "peer"):
                args = (backend.ours_instance_args if side == "ours" else backend.peer_instance_args)(
                    name, "started", counted)
                module = "oneclickvirt.virt.virt_instance" if side == "ours" else backend.peer_module
                return timed(self.adhoc(side, module, args), self.workspace.env(side), self.workspace.dir,
                             expect=unchanged)[0]
            return self.ping(side.split("-")[0])

        # Converge first: an instance made by the daemon's CLI may differ from what a module would make
        # (community.docker recreates a `docker run` container once); the timed runs are true no-ops.
        for side in ("peer", "ours", "peer"):
            args = (backend.ours_instance_args if side == "ours" else backend.peer_instance_args)(name, "started")
            module = "oneclickvirt.virt.virt_instance" if side == "ours" else backend.peer_module
            run(self.adhoc(side, module, args), env=self.workspace.env(side), cwd=self.workspace.dir)
        samples = rounds_of(measure, ["ours", "ours-ping", "peer", "peer-ping"], self.rounds("noop"))
        ours_count = self.counted(backend, lambda: measure("ours", counted=True))
        peer_count = self.counted(backend, lambda: measure("peer", counted=True))
        summary = {side: report.summarize(values) for side, values in samples.items()}
        peer_floor_ratio = report.ratio(summary["peer"]["median"], summary["peer-ping"]["median"])
        self.results.add(case="no-op task", backend=kind, ours=summary["ours"], reference=summary["ours-ping"],
                         reference_label="ping floor", target_max=1.15, ours_requests=ours_count["requests"],
                         note=f"virt_instance state=started on a running instance; the peer's own no-op is "
                              f"{report._ratio_text(peer_floor_ratio)} its floor")
        self.results.add(case="no-op task", backend=kind, ours=summary["ours"], reference=summary["peer"],
                         reference_label=backend.peer_module.split(".", 2)[2],
                         ours_requests=ours_count["requests"], reference_requests=peer_count["requests"])
        self.results.detail(case="no-op task", backend=kind, samples=samples,
                            requests={"ours": ours_count, "peer": peer_count})
        backend.delete([name])

    def playbook(self, side, module, names, state, args_of, counted=False):
        tasks = [{"name": f"{state} {name}", module: args_of(name, state, counted)} for name in names]
        play = [{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]
        return self.workspace.write(f"{side}-{state}-{'counted' if counted else 'timed'}.yml", json.dumps(play))

    def case_create(self, backend):
        kind = backend.kind
        count = self.scale["create"]
        names = [f"bench-c-{index:02d}" for index in range(count)]
        log(f"case: create and delete {count} instances on {kind}")
        modules = {"ours": ("oneclickvirt.virt.virt_instance", backend.ours_instance_args),
                   "peer": (backend.peer_module, backend.peer_instance_args)}
        if kind != "docker":
            # Ours waits after a start for the address the network hands out (its result carries it); the peer
            # does so only when asked. This side asks, for the like-for-like row.
            modules["peer-addressed"] = (backend.peer_module, backend.peer_instance_args_addressed)
        backend.made.update(names)

        def play(side, state, counted=False):
            module, args_of = modules[side]
            venv = "ours" if side == "ours" else "peer"
            path = self.playbook(side, module, names, "started" if state == "create" else "absent", args_of,
                                 counted)
            seconds, completed = timed([self.bin(venv) / "ansible-playbook", "-i", "localhost,", "-c", "local",
                                        "-e", f"ansible_python_interpreter={self.bin(venv) / 'python'}", path],
                                       self.workspace.env(venv), self.workspace.dir,
                                       expect=lambda c: f"changed={count}" in c.stdout)
            return seconds

        samples = {f"{side}-{action}": [] for side in modules for action in ("create", "delete")}
        for number in range(self.rounds("create")):
            for side in (list(modules) if number % 2 == 0 else list(reversed(modules))):
                samples[f"{side}-create"].append(play(side, "create"))
                samples[f"{side}-delete"].append(play(side, "delete"))
        requests = {}
        for side in ("ours", "peer"):
            requests[f"{side}-create"] = self.counted(backend, lambda: play(side, "create", True))
            requests[f"{side}-delete"] = self.counted(backend, lambda: play(side, "delete", True))
        summary = {key: report.summarize(values) for key, values in samples.items()}
        peer = backend.peer_module.split(".", 2)[2]
        for action in ("create", "delete"):
            self.results.add(case=action, backend=kind, size=count, ours=summary[f"ours-{action}"],
                             reference=summary[f"peer-{action}"], reference_label=peer,
                             target_max=1.0 if action == "create" else None,
                             ours_requests=round(requests[f"ours-{action}"]["requests"] / count, 1),
                             reference_requests=round(requests[f"peer-{action}"]["requests"] / count, 1),
                             note=f"one ansible-playbook run of {count} tasks (state "
                                  f"{'started' if action == 'create' else 'absent'}); requests per task")
        if "peer-addressed" in modules:
            self.results.add(case="create, both wait for the address", backend=kind, size=count,
                             ours=summary["ours-create"], reference=summary["peer-addressed-create"],
                             reference_label=f"{peer} wait_for_ipv4_addresses",
                             note="the same playbook with the peer's wait_for_ipv4_addresses: true, so that both "
                                  "return the started instance with its IPv4 address, as ours does by default")
        self.results.detail(case="create/delete", backend=kind, samples=samples, requests=requests)

    def inventory_run(self, side, configs, expect_hosts):
        """ansible-inventory --list over config files; checks that the bench hosts are all listed."""
        # ours: only our plugin enabled; the peers: `auto`, which loads the plugin their file names (their
        # plugins are found by their `plugin:` key), so neither side tries the ini/yaml/script parsers first
        plugin = "oneclickvirt.virt.instances" if side == "ours" else "auto"
        argv = [self.bin(side) / "ansible-inventory"]
        for config in configs:
            argv += ["-i", config]
        argv.append("--list")
        env = self.workspace.env(side)
        if plugin:
            env["ANSIBLE_INVENTORY_ENABLED"] = plugin

        def listed_all(completed):
            hostvars = json.loads(completed.stdout).get("_meta", {}).get("hostvars", {})
            bench = [host for host in hostvars if host.startswith("bench-i-")]
            return len(bench) >= expect_hosts
        return timed(argv, env, self.workspace.dir, expect=listed_all)[0]

    def inventory_files(self, side, backend, nodes_count, counted=False):
        tag = f"{side}-{backend.kind}-{nodes_count}{'-counted' if counted else ''}"
        if side == "ours":
            nodes = [backend.node(counted, name=f"bench-{backend.kind}-{index}" if nodes_count > 1 else None)
                     for index in range(nodes_count)]
            return [self.workspace.write(f"{tag}.virt.yml", json.dumps(backend.ours_inventory(nodes)))]
        return [self.workspace.write(f"{tag}-{index}.{backend.peer_inventory_suffix}",
                                     json.dumps(backend.peer_inventory(counted))) for index in range(nodes_count)]

    def case_inventory(self, backend):
        kind = backend.kind
        present = []
        for size in self.scale["sizes"]:
            wanted = [f"bench-i-{index:04d}" for index in range(size)]
            missing = [name for name in wanted if name not in present]
            log(f"inventory {kind}: creating {len(missing)} instances (to {size})")
            started = time.monotonic()
            backend.create(missing)
            present += missing
            log(f"inventory {kind}: {size} instances ready in {time.monotonic() - started:.1f}s")
            # Both sides list a settled lab: addresses handed out (DHCP), and no boot of the burst of creations
            # still running during the timed rounds.
            wait_quiet(f"inventory {kind}")
            self.guarded(lambda: self.inventory_size(backend, size), "inventory", kind)
            if size == self.scale["eight"]:
                self.guarded(lambda: self.inventory_eight(backend, size), "inventory 8 nodes", kind)
        log(f"inventory {kind}: removing {len(present)} instances")
        backend.delete(present)

    def inventory_size(self, backend, size):
        kind = backend.kind
        rounds = self.rounds("inventory_large" if size >= 500 and "inventory_large" in self.scale["rounds"]
                             else "inventory")
        files = {side: self.inventory_files(side, backend, 1) for side in ("ours", "peer")}
        failures = []

        def measure(side, counted=False):
            configs = self.inventory_files(side, backend, 1, counted=True) if counted else files[side]
            if side == "ours":
                return self.inventory_run(side, configs, size)
            try:  # a peer run that fails is recorded, and our rounds go on
                return self.inventory_run(side, configs, size)
            except BenchError as error:
                failures.append(" ".join(str(error).split()))
                return None
        samples = rounds_of(measure, ["ours", "peer"], rounds, warmup=size == self.scale["sizes"][0])
        counts = {side: self.counted(backend, lambda: measure(side, counted=True)) for side in ("ours", "peer")}
        peer_runs = rounds + 1 + (1 if size == self.scale["sizes"][0] else 0)
        failed = (f"; the peer failed {len(failures)} of {peer_runs} runs, first: {failures[0][:400]}"
                  if failures else "")
        target = None
        if size >= 200:
            target = 0.7 if kind == "docker" else 0.15
        self.results.add(case="inventory", backend=kind, size=size, ours=report.summarize(samples["ours"]),
                         reference=report.summarize(samples["peer"]),
                         reference_label=backend.peer_inventory_plugin.split(".", 2)[2],
                         target_max=target, ours_requests=counts["ours"]["requests"],
                         reference_requests=counts["peer"]["requests"],
                         note="ansible-inventory --list, one node; "
                              f"{'Incus daemon through the peer LXD plugin; ' if kind == 'incus' else ''}"
                              f"requests per run{failed}")
        self.results.detail(case="inventory", backend=kind, size=size, samples=samples, requests=counts)
        self.single_node = getattr(self, "single_node", {})
        self.single_node[(kind, size)] = report.summarize(samples["ours"])

    def inventory_eight(self, backend, size):
        kind = backend.kind
        files = {side: self.inventory_files(side, backend, 8) for side in ("ours", "peer")}
        single = self.inventory_files("ours", backend, 1)
        samples = rounds_of(lambda side: self.inventory_run(
            "ours" if side == "ours-1" else side, single if side == "ours-1" else files[side], size),
            ["ours", "ours-1"], self.rounds("inventory"))
        counts = {"ours": self.counted(backend, lambda: self.inventory_run(
            "ours", self.inventory_files("ours", backend, 8, counted=True), size)), "peer": {"requests": None}}
        peer_error = None
        try:  # the peer's own rounds apart, so that a failing peer run keeps our rows
            samples["peer"] = rounds_of(lambda side: self.inventory_run(side, files[side], size), ["peer"],
                                        self.rounds("inventory"), warmup=False)["peer"]
            counts["peer"] = self.counted(backend, lambda: self.inventory_run(
                "peer", self.inventory_files("peer", backend, 8, counted=True), size))
        except BenchError as error:
            peer_error = " ".join(str(error).split())[:300]
            samples["peer"] = []
        summary = {side: report.summarize(values) for side, values in samples.items()}
        what = (f"8 node entries on the same {kind} daemon (names bench-{kind}-0..7, same socket and project), "
                f"each listing its {size} instances")
        self.results.add(case="inventory 8 nodes", backend=kind, size=size, ours=summary["ours"],
                         reference=summary["ours-1"], reference_label="ours, 1 node",
                         ours_requests=counts["ours"]["requests"],
                         note=what + "; one daemon on 2 CPUs serves all 8, so this measures that daemon's "
                                     "contention more than the plugin's parallelism. No target here: the issue "
                                     "sets the 8-node target on the simulator with added latency (the Proxmox "
                                     "row), where nodes are independent as real ones are")
        self.results.add(case="inventory 8 nodes", backend=kind, size=size, ours=summary["ours"],
                         reference=summary["peer"],
                         reference_label=f"{backend.peer_inventory_plugin.split('.', 2)[2]} x8 sources",
                         ours_requests=counts["ours"]["requests"], reference_requests=counts["peer"]["requests"],
                         status=f"not measured: the peer failed: {peer_error}" if peer_error else None,
                         note="the peer plugin takes one daemon per source: 8 sources (-i x8), read one after "
                              "another by ansible-inventory")
        self.results.detail(case="inventory 8 nodes", backend=kind, size=size, samples=samples, requests=counts)

    # -- proxmox (our own simulator) --------------------------------------------------------------------------
    def proxmox_cases(self):
        self.pve = Pvesim(self.workspace)
        try:
            self.pve.start()
            if "noop" in self.cases:
                self.guarded(self.pve_noop, "no-op task", "proxmox")
            if "create" in self.cases:
                self.guarded(self.pve_create, "create", "proxmox")
            if "inventory" in self.cases:
                self.guarded(self.pve_inventory, "inventory", "proxmox")
        finally:
            self.pve.stop()

    def pve_env(self, side):
        return self.workspace.env(side, {"REQUESTS_CA_BUNDLE": str(self.pve.ca_file)})

    def pve_secret_args(self):
        return ["-e", f"@{self.pve.secret_file}"]

    def pve_ours_args(self, name, state, kind="container"):
        args = {"name": name, "state": state, "type": kind, "node": self.pve.node()}
        if state != "absent":
            args["image"] = PVE_TEMPLATE if kind == "container" else PVE_ISO
            args.update(cpu=1, memory=256 if kind == "container" else 512, disk="2GiB")
        return args

    def pve_peer_args(self, name, state, kind="container"):
        args = dict(self.pve.peer_auth())
        if kind == "container":
            args.update(hostname=name, state=state, timeout=60)
            if state != "absent":
                args.update(node="pve", ostemplate=PVE_TEMPLATE, cores=1, memory=256, swap=0,
                            disk_volume={"storage": "local-lvm", "size": 2},
                            netif={"net0": "name=eth0,bridge=vmbr0,ip=dhcp"}, unprivileged=True)
        else:
            args.update(name=name, state=state, timeout=60)
            if state != "absent":
                args.update(node="pve", cores=1, memory=512, scsi={"scsi0": "local-lvm:2"},
                            net={"net0": "virtio,bridge=vmbr0"})
        return args

    def pve_noop(self):
        log("case: no-op instance task on proxmox")
        self.pve.create_guests(["bench-noop"], start=True)

        def measure(side):
            if side.endswith("-ping"):
                return self.ping(side.split("-")[0])
            if side == "ours":
                argv = self.adhoc("ours", "oneclickvirt.virt.virt_instance",
                                  self.pve_ours_args("bench-noop", "started"), self.pve_secret_args())
            else:
                argv = self.adhoc("peer", "community.proxmox.proxmox",
                                  {**self.pve.peer_auth(), "hostname": "bench-noop", "state": "started"},
                                  self.pve_secret_args())
            return timed(argv, self.pve_env(side), self.workspace.dir, expect=unchanged)[0]

        for side in ("peer", "ours"):  # converge once (see case_noop), then every timed run is a no-op
            try:
                measure(side)
            except BenchError as error:
                log(f"proxmox no-op converge ({side}): {error}")
        samples = rounds_of(measure, ["ours", "ours-ping", "peer", "peer-ping"], self.rounds("noop"))
        counts = {side: self.pve.count(lambda: measure(side)) for side in ("ours", "peer")}
        summary = {side: report.summarize(values) for side, values in samples.items()}
        self.results.add(case="no-op task", backend="proxmox", ours=summary["ours"], reference=summary["ours-ping"],
                         reference_label="ping floor", target_max=1.15, ours_requests=counts["ours"],
                         note="simulator request log")
        self.results.add(case="no-op task", backend="proxmox", ours=summary["ours"], reference=summary["peer"],
                         reference_label="proxmox", ours_requests=counts["ours"], reference_requests=counts["peer"])
        self.results.detail(case="no-op task", backend="proxmox", samples=samples, requests=counts)

    def pve_create(self):
        count = self.scale["create"]
        for kind, peer_module in (("container", "community.proxmox.proxmox"),
                                  ("vm", "community.proxmox.proxmox_kvm")):
            names = [f"bench-c{'t' if kind == 'container' else 'v'}-{index:02d}" for index in range(count)]
            log(f"case: create and delete {count} {kind}s on proxmox")

            def play(side, action, names=names, kind=kind, peer_module=peer_module):
                state = "started" if action == "create" else "absent"
                if side == "ours":
                    tasks = [{"name": name, "oneclickvirt.virt.virt_instance": self.pve_ours_args(name, state, kind)}
                             for name in names]
                else:
                    tasks = []
                    for name in names:
                        if action == "delete":  # the peers delete only a stopped guest
                            stop = dict(self.pve_peer_args(name, "stopped", kind))
                            stop.pop("node", None)
                            tasks.append({"name": f"stop {name}", peer_module: stop})
                        if action == "create":  # the peers create with state present, then start
                            tasks.append({"name": name, peer_module: self.pve_peer_args(name, "present", kind)})
                            key = "hostname" if kind == "container" else "name"
                            tasks.append({"name": f"start {name}", peer_module: {
                                **self.pve.peer_auth(), key: name, "state": "started", "timeout": 60}})
                        else:
                            tasks.append({"name": name, peer_module: self.pve_peer_args(name, state, kind)})
                path = self.workspace.write(f"pve-{side}-{kind}-{action}.yml", json.dumps(
                    [{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
                seconds = []
                requests[f"{side}-{action}"] = self.pve.count(lambda: seconds.append(timed([
                              self.bin(side) / "ansible-playbook", "-i", "localhost,", "-c", "local",
                              "-e", f"ansible_python_interpreter={self.bin(side) / 'python'}",
                              *self.pve_secret_args(), path], self.pve_env(side), self.workspace.dir,
                             expect=lambda c: "failed=0" in c.stdout)[0]))
                return seconds[0]

            samples = {"ours-create": [], "ours-delete": [], "peer-create": [], "peer-delete": []}
            requests = {}
            for number in range(self.rounds("create")):
                for side in (["ours", "peer"] if number % 2 == 0 else ["peer", "ours"]):
                    samples[f"{side}-create"].append(play(side, "create"))
                    samples[f"{side}-delete"].append(play(side, "delete"))
            summary = {key: report.summarize(values) for key, values in samples.items()}
            for action in ("create", "delete"):
                self.results.add(case=f"{action} {kind}", backend="proxmox", size=count,
                                 ours=summary[f"ours-{action}"], reference=summary[f"peer-{action}"],
                                 reference_label=peer_module.split(".", 2)[2],
                                 target_max=1.0 if action == "create" else None,
                                 ours_requests=round(requests[f"ours-{action}"] / count, 1),
                                 reference_requests=round(requests[f"peer-{action}"] / count, 1),
                                 note="requests per guest; the peer's create is a present + a started task per "
                                      "guest, its delete stopped + absent (it creates and deletes only that way); "
                                      "ours one task")
            self.results.detail(case=f"create/delete {kind}", backend="proxmox", samples=samples)

    def pve_inventory(self):
        present = []
        for size in self.scale["sizes"]:
            missing = [f"bench-i-{index:04d}" for index in range(len(present), size)]
            log(f"inventory proxmox: creating {len(missing)} guests (to {size})")
            self.pve.create_guests(missing, start=True)
            present += missing
            self.guarded(lambda: self.pve_inventory_size(size, 1), "inventory", "proxmox")
            if size == self.scale["eight"]:
                self.guarded(lambda: self.pve_inventory_size(size, 8), "inventory 8 nodes", "proxmox")

    def pve_inventory_size(self, size, nodes_count):
        files = {"ours": [self.workspace.write(f"pve-ours-{nodes_count}.virt.yml", json.dumps({
                     "plugin": "oneclickvirt.virt.instances", "host_name_format": "instance.node" if nodes_count > 1
                     else "instance", "nodes": [self.pve.node(f"bench-pve-{index}", False) for index in
                                                range(nodes_count)]}))],
                 "peer": [self.workspace.write(f"pve-peer-{nodes_count}-{index}.proxmox.yml", json.dumps(
                     self.pve.peer_inventory())) for index in range(nodes_count)]}

        single_config = self.workspace.write("pve-ours-single.virt.yml", json.dumps({
            "plugin": "oneclickvirt.virt.instances", "nodes": [self.pve.node(templated_secret=False)]}))
        requests = {}

        def measure(side):
            seconds = []
            requests[side] = self.pve.count(lambda: seconds.append(listed(side)[0]))
            return seconds[0]

        def command(side):
            """argv and environment of one ansible-inventory --list of `side` (ours, ours-1 or peer)."""
            name = "ours" if side.startswith("ours") else "peer"
            configs = files[name] if side != "ours-1" else [single_config]
            env = self.pve_env(name)
            env["ONECLICKVIRT_API_TOKEN_SECRET"] = self.pve.token_secret
            env["ANSIBLE_INVENTORY_ENABLED"] = "oneclickvirt.virt.instances" if name == "ours" else "auto"
            argv = [self.bin(name) / "ansible-inventory"] + [part for config in configs for part in ("-i", config)]
            return argv + ["--list"], env

        def listed(side):
            """(seconds, completed process) of one ansible-inventory --list of `side`."""
            argv, env = command(side)
            return timed(argv, env, self.workspace.dir,
                         expect=lambda c: sum(host.startswith("bench-i-") for host in json.loads(
                             c.stdout)["_meta"]["hostvars"]) >= size)

        def query_phase(side):
            """Our plugin's own time for asking the nodes (its -vvv line): the part that parallelism decides,
            without Ansible's start-up and its per-host work, which grow with the hosts of 8 nodes."""
            argv, env = command({"phase-8": "ours", "phase-1": "ours-1"}[side])
            completed = timed(argv + ["-vvv", "--output", os.devnull], env, self.workspace.dir)[1]
            found = re.search(r"nodes queried in ([0-9.]+)s", completed.stdout + completed.stderr)
            if not found:
                raise BenchError(f"no query time in the -vvv output of {side}: {completed.stdout.strip()[-400:]}")
            return float(found.group(1))

        def timed_floor(side):
            """Ansible alone: a static script inventory printing the same hosts and variables."""
            env = dict(self.workspace.env("ours"), ANSIBLE_INVENTORY_ENABLED="script")
            return timed([self.bin("ours") / "ansible-inventory", "-i", floors[side], "--list"], env,
                         self.workspace.dir)[0]

        if nodes_count == 1:
            sides = ["ours", "peer"]
            rounds = self.rounds("inventory_large" if size >= 500 and "inventory_large" in self.scale["rounds"]
                                 else "inventory")
            samples = rounds_of(measure, sides, rounds, warmup=size == self.scale["sizes"][0])
            counts = requests
            self.results.add(case="inventory", backend="proxmox", size=size, ours=report.summarize(samples["ours"]),
                             reference=report.summarize(samples["peer"]), reference_label="proxmox",
                             target_max=1.0, ours_requests=counts["ours"], reference_requests=counts["peer"],
                             note="our own simulator; requests from its request log")
        else:
            self.pve.set_latency(PVE_LATENCY)
            try:
                floors = {f"floor-{count}": self.static_inventory(listed(side)[1].stdout, f"floor-{count}")
                          for side, count in (("ours", 8), ("ours-1", 1))}
                samples = rounds_of(measure, ["ours", "ours-1"], self.rounds("inventory"))
                samples.update(rounds_of(timed_floor, list(floors), self.rounds("inventory")))
                samples.update(rounds_of(query_phase, ["phase-8", "phase-1"], self.rounds("inventory")))
                # the peer reads 8 sources one after another, each paying the latency per request: one run
                samples["peer"] = [measure("peer")]
                counts = requests
            finally:
                self.pve.set_latency(0)
            summary = {side: report.summarize(values) for side, values in samples.items()}
            note = (f"8 node entries on one simulator with {PVE_LATENCY * 1000:.0f} ms added to every API answer; "
                    "the peer x8 timed once")
            self.results.add(case="inventory 8 nodes", backend="proxmox", size=size, ours=summary["ours"],
                             reference=summary["ours-1"], reference_label="ours, 1 node", target_max=1.2,
                             ours_requests=counts["ours"], note=note)
            self.results.add(case="inventory 8 nodes, query phase", backend="proxmox", size=size,
                             ours=summary["phase-8"], reference=summary["phase-1"],
                             reference_label="ours, 1 node, query phase", target_max=1.2,
                             note="the plugin's own time for asking the nodes (its -vvv line `N nodes queried in`), "
                                  "without Ansible's start-up and per-host work; the same latency on both sides")
            self.results.add(case="inventory 8 nodes, static floor", backend="proxmox", size=size,
                             ours=summary["floor-8"], reference=summary["floor-1"], reference_label="static, 1 node",
                             note=f"Ansible alone, no plugin and no network: a script inventory printing what ours "
                                  f"listed over 8 nodes ({8 * size} hosts), against one printing one node's ({size})")
            self.results.add(case="inventory 8 nodes", backend="proxmox", size=size, ours=summary["ours"],
                             reference=summary["peer"], reference_label="proxmox x8 sources",
                             ours_requests=counts["ours"], reference_requests=counts["peer"], note=note)
        self.results.detail(case=f"inventory {nodes_count} nodes", backend="proxmox", size=size)

    def static_inventory(self, listing, name):
        """A script inventory printing `listing` (an ansible-inventory --list output): Ansible's own floor."""
        data = self.workspace.write(f"{name}.json", listing)
        return self.workspace.write(f"{name}.sh", f"#!/bin/sh\nexec cat {data}\n", mode=0o700)

    # -- the whole run --------------------------------------------------------------------------------------
    def main(self):
        started = datetime.datetime.now(datetime.timezone.utc)
        import peers_venv  # tools/peers_venv.py
        self.peer_bin = peers_venv.ensure()
        wanted = [name.strip() for name in self.args.backends.split(",") if name.strip()]
        self.check_lab(wanted)
        interrupted = False
        try:
            if "ping" in self.cases:
                self.guarded(self.case_ping, "ping floor", "localhost")
            for kind in wanted:
                if kind == "proxmox":
                    self.proxmox_cases()
                else:
                    self.backends[kind] = Backend(kind, self.workspace)
                    self.backend_cases(self.backends[kind])
        except KeyboardInterrupt:
            interrupted = True
        finally:
            self.teardown()
        # An interrupted run still reports what it measured (the rows so far), marked as interrupted.
        self.write(started, interrupted)
        if interrupted:
            raise KeyboardInterrupt

    def check_lab(self, wanted):
        for kind in wanted:
            if kind in SOCKETS:
                probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    probe.connect(SOCKETS[kind])
                except OSError as error:
                    raise SystemExit(f"bench: the lab's {kind} daemon does not answer on {SOCKETS[kind]} "
                                     f"({error}); run `make lab`")
                finally:
                    probe.close()

    def teardown(self):
        for backend in self.backends.values():
            try:
                leftovers = backend.existing_bench()
                if leftovers:
                    log(f"teardown {backend.kind}: removing {len(leftovers)} bench instances")
                    backend.delete(leftovers)
                backend.proxy.stop()
            except Exception as error:
                log(f"teardown {backend.kind}: {error}")
        if self.pve is not None:
            self.pve.stop()

    def write(self, started, interrupted=False):
        finished = datetime.datetime.now(datetime.timezone.utc)
        meta = {"scale": self.args.scale + (" (interrupted: partial results)" if interrupted else ""),
                "started": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
                "finished": finished.strftime("%Y-%m-%d %H:%M:%S UTC"),
                "host": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python "
                        f"{platform.python_version()}",
                "ours": f"oneclickvirt.virt from {ROOT} (.venv, ansible-core {core_version(OURS_BIN)})",
                "peers": f".venv-peers: ansible 12.3.0 (ansible-core {core_version(self.peer_bin)})",
                "rounds": self.args.rounds or self.scale["rounds"],
                "method": "whole-process wall time, median of the rounds after one warm-up run per side, "
                          "ours/peer alternated each round; requests counted in one extra run per side "
                          "through a counting unix-socket relay (Docker, LXD, Incus) or from the "
                          "simulator's request log (Proxmox)"}
        RESULTS.mkdir(parents=True, exist_ok=True)
        doc = report.document(meta, self.results.rows, self.results.details)
        (RESULTS / "results.json").write_text(report.dumps(doc))
        (RESULTS / "report.md").write_text(report.markdown_report(meta, self.results.rows,
                                                                  self.results.findings))
        chart = self.plot()
        print(report.text_table(self.results.rows))
        counts = doc["targets"]
        print(f"\ntargets: {counts['pass']} pass, {counts['fail']} fail, {counts['not measured']} not measured")
        print(f"written: {RESULTS / 'report.md'}, {RESULTS / 'results.json'}, {chart}")

    def plot(self):
        python = BENCH_VENV / "bin" / "python"
        if not python.exists() and not self.args.no_matplotlib:
            log("creating the bench-only venv benchmarks/.venv with matplotlib")
            run([sys.executable, "-m", "venv", BENCH_VENV], check=False)
            run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "matplotlib"],
                check=False, timeout=600)
        if python.exists() and not self.args.no_matplotlib:
            completed = run([python, HERE / "plot.py", RESULTS / "results.json", RESULTS / "report.png"],
                            check=False)
            if completed.returncode == 0:
                return RESULTS / "report.png"
            log(f"matplotlib plot failed, writing SVG: {completed.stderr.strip()[-300:]}")
        (RESULTS / "report.svg").write_text(report.svg_chart(self.results.rows))
        return RESULTS / "report.svg"


def core_version(bin_dir):
    completed = run([bin_dir / "python", "-c", "import ansible.release as r; print(r.__version__)"], check=False)
    return completed.stdout.strip() or "?"


# -- our own Proxmox simulator -----------------------------------------------------------------------------------
class Pvesim:
    """A simulator process of our own (lab/pvesim) on 127.0.0.1:18006 with its own state folder, so the latency
    of the 8-node case and the bench guests never touch the shared simulator on 8006."""

    def __init__(self, workspace):
        self.workspace = workspace
        self.state_dir = workspace.dir / "bench-pvesim"
        self.control = self.state_dir / "control.sock"
        self.process = None

    def start(self):
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT / "lab"), PVESIM_TASK_DELAY="0.3")
        self.process = subprocess.Popen(["/usr/bin/python3", "-m", "pvesim", "--state-dir", str(self.state_dir),
                                         "--listen", f"127.0.0.1:{PVE_PORT}", "--socket", str(self.control)],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + 30
        while not self.control.exists() or not port_open(PVE_PORT):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise BenchError("our own Proxmox simulator did not start")
            time.sleep(0.2)
        secrets = json.loads((self.state_dir / "secrets.json").read_text())
        self.token_id, self.token_secret = next(iter(secrets["tokens"].items()))
        self.ca_file = self.state_dir / "tls" / "pve-ssl.pem"
        self.secret_file = self.workspace.write("pve-secret.json", json.dumps({"pve_secret": self.token_secret}))
        self.request_log = self.state_dir / "requests.log"

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            try:
                self.control_request("DELETE", "/_sim/faults")
            except OSError:
                pass
            self.process.terminate()  # our own process, by its PID
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

    def control_request(self, method, path, body=None):
        import http.client
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(str(self.control))
        connection = http.client.HTTPConnection("localhost")
        connection.sock = sock
        connection.request(method, path, body=json.dumps(body) if body is not None else None,
                           headers={"Content-Type": "application/json"})
        answer = connection.getresponse()
        data = answer.read()
        connection.close()
        return json.loads(data or b"null")

    def set_latency(self, seconds):
        self.control_request("PUT", "/_sim/faults", {"latency": seconds})

    def api(self, method, path, params=None):
        context = ssl.create_default_context(cafile=str(self.ca_file))
        data = json.dumps(params).encode() if params is not None else None
        request = urllib.request.Request(f"https://127.0.0.1:{PVE_PORT}/api2/json{path}", data=data, method=method,
                                         headers={"Authorization": f"PVEAPIToken={self.token_id}={self.token_secret}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=context, timeout=60) as answer:
            return json.loads(answer.read())["data"]

    def create_guests(self, names, start=True):
        """Bulk-create LXC guests through the API (task delays off while doing it)."""
        self.control_request("PUT", "/_sim/faults", {"task_delay": 0.0})
        try:
            first = int(self.api("GET", "/cluster/nextid"))

            def one(item):
                index, name = item
                self.api("POST", "/nodes/pve/lxc", {"vmid": first + index, "hostname": name,
                                                    "ostemplate": PVE_TEMPLATE, "rootfs": "local-lvm:2",
                                                    "memory": 256, "cores": 1, "start": int(start),
                                                    "net0": "name=eth0,bridge=vmbr0,ip=dhcp"})
            parallel(one, list(enumerate(names)), workers=8)
            time.sleep(0.5)
        finally:
            self.control_request("DELETE", "/_sim/faults")

    def count(self, function):
        """API requests the simulator logged while `function` ran."""
        offset = self.request_log.stat().st_size if self.request_log.exists() else 0
        function()
        time.sleep(0.2)
        with open(self.request_log, "rb") as handle:
            handle.seek(offset)
            return sum(1 for line in handle if b'"via":"api"' in line)

    def node(self, name="bench-pve", templated_secret=True):
        """Our node description. Modules get the secret templated from the vars file; the inventory (which
        does not template its configuration) gets it from ONECLICKVIRT_API_TOKEN_SECRET."""
        api = {"url": f"https://127.0.0.1:{PVE_PORT}", "token_id": self.token_id, "ca_file": str(self.ca_file),
               "validate_certs": True}
        if templated_secret:
            api["token_secret"] = "{{ pve_secret }}"
        return {"name": name, "type": "proxmox", "execution_rule": "api_only", "proxmox_node": "pve", "api": api}

    def peer_auth(self):
        user, token_name = self.token_id.split("!")
        return {"api_host": "127.0.0.1", "api_port": PVE_PORT, "api_user": user, "api_token_id": token_name,
                "api_token_secret": "{{ pve_secret }}", "validate_certs": True}

    def peer_inventory(self):
        user, token_name = self.token_id.split("!")
        return {"plugin": "community.proxmox.proxmox", "url": f"https://127.0.0.1:{PVE_PORT}", "user": user,
                "token_id": token_name, "token_secret": self.token_secret, "validate_certs": True,
                "want_facts": True}


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="full",
                        help="small: 10 instances, quick; full (default): 50, 200 and 500 instances")
    parser.add_argument("--backends", default="docker,lxd,incus,proxmox",
                        help="comma-separated subset of docker,lxd,incus,proxmox")
    parser.add_argument("--cases", default="ping,noop,create,inventory",
                        help="comma-separated subset of ping,noop,create,inventory")
    parser.add_argument("--rounds", type=int, help="rounds of every case (default: per scale and case)")
    parser.add_argument("--sizes", help="comma-separated inventory sizes on one node, instead of the scale's "
                                        "(the 8-node case runs when the scale's 8-node size is among them)")
    parser.add_argument("--no-matplotlib", action="store_true", help="write the SVG chart, never a PNG")
    parser.add_argument("--keep-workspace", action="store_true", help="keep the scratch folder (configs, playbooks)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root, like the lab (it drives the lab's daemons through their sockets)")

    def interrupted(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupted)
    harness = Harness(args)
    try:
        harness.main()
    except KeyboardInterrupt:
        log("interrupted: removed the bench instances; the report holds the rows measured before")
        return 130
    finally:
        if args.keep_workspace:
            log(f"workspace kept: {harness.workspace.dir}")
        else:
            harness.workspace.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
