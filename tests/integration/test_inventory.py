"""The inventory plugin oneclickvirt.virt.instances, through ansible-inventory itself, against the lab's daemons.

Each backend's own CLI (docker ps, lxc list, incus list) is the truth the host lists are compared with. Other
tests create and remove instances in the same daemons at the same time, so a listing is compared with what
the daemon reported just before and just after it: every instance present in both must be listed, and
nothing that was in neither.
"""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from pve_helpers import Api
from conftest import (COLLECTIONS, VENV_BIN, _collections_path, docker_cli, free_port, lab_nodes, node_with, run_playbook,
                      unique)

_collections_path()
sys.path.insert(0, str(COLLECTIONS))

from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends import provider_for, registered  # noqa: E402
from ansible_collections.oneclickvirt.virt.plugins.module_utils.node import validate_node_dict  # noqa: E402

PLUGIN = "oneclickvirt.virt.instances"
CLI = {"lxd": "lxc", "incus": "incus"}
MAKERS = ("docker", "lxd", "incus")  # backends whose instances the tests make with the daemon's own CLI
SOCKETS = {"docker": "/var/run/docker.sock", "lxd": "/var/lib/lxd/unix.socket", "incus": "/var/lib/incus/unix.socket"}


def covered_nodes():
    """The lab's nodes whose backend this collection has (a node appears in the lab before its backend lands)."""
    return {name: node for name, node in lab_nodes().items() if node["type"] in registered()}


COVERED = sorted(covered_nodes())


# -- running ansible-inventory --------------------------------------------------------------------------------
def run_inventory(tmp_path, config, *args, env=None, name="lab.virt.yml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    process_env = {key: value for key, value in os.environ.items() if key != "ONECLICKVIRT_NODES"}
    process_env.update(ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_INVENTORY_ENABLED=PLUGIN,
                       ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_DEPRECATION_WARNINGS="False",
                       **(env or {}))
    started = time.monotonic()
    completed = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(path), *(args or ("--list",))],
                               capture_output=True, text=True, env=process_env, timeout=300, check=False)
    completed.seconds = time.monotonic() - started
    return completed


def plain(value):
    """ansible-inventory --list writes values marked unsafe as {"__ansible_unsafe": value}; the value itself."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


class Listing:
    """`ansible-inventory --list`: host variables (unsafe markers removed) and each group's own hosts."""

    def __init__(self, completed):
        assert completed.returncode == 0, completed.stdout + completed.stderr
        self.raw = json.loads(completed.stdout)
        self.stderr = completed.stderr
        self.hostvars = {host: plain(variables) for host, variables in self.raw["_meta"]["hostvars"].items()}
        self.groups = {group: set(data.get("hosts") or []) for group, data in self.raw.items() if group != "_meta"}
        self.hosts = set(self.hostvars) | set().union(*self.groups.values()) if self.groups else set(self.hostvars)

    def on_node(self, node):
        return {host for host, variables in self.hostvars.items() if variables["virt_node"] == node}


def lab_config(nodes, **options):
    return {"plugin": PLUGIN, "nodes": list(nodes), **options}


def warnings_of(completed):
    return re.sub(r"\s+", " ", completed.stderr)


# -- each backend's own truth ---------------------------------------------------------------------------------
def truth(node):
    """The names of the node's instances as the daemon's own CLI lists them (docker ps, lxc list, incus list).

    The Proxmox simulator has no CLI here: its truth is the raw API's /cluster/resources (templates are images).
    """
    if node["type"] == "docker":
        return set(docker_cli("ps", "-a", "--format", "{{.Names}}").stdout.split())
    if node["type"] in CLI:
        listing = subprocess.run([CLI[node["type"]], "list", "--format", "json"], capture_output=True, text=True,
                                 check=True, timeout=120).stdout
        return {entry["name"] for entry in json.loads(listing)}
    api = Api(node["api"]["url"], node["api"]["token_id"], node["api"]["token_secret"], node["api"]["ca_file"])
    return {item["name"] for item in api.data("GET", "/cluster/resources", type="vm") if not item.get("template")}


def normalised(node):
    """What the provider layer itself reports for the node (what virt_instance_info returns)."""
    provider = provider_for(validate_node_dict(node))
    try:
        return {instance.name: instance.to_dict() for instance in provider.list_instances()}
    finally:
        provider.close()


def addressed(node, name, timeout=60):
    """Wait until a new running instance has its addresses (DHCP and SLAAC take a moment on LXD / Incus), so
    that two listings taken a moment apart agree."""
    deadline = time.monotonic() + timeout
    while True:
        instance = normalised(node).get(name) or {}
        if instance.get("private_ip") and (instance.get("ipv6") or node["type"] == "docker"):
            return instance
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} on {node['name']} has no address after {timeout}s: {instance}")
        time.sleep(0.5)



def unreachable(node):
    """The node with every endpoint on a closed local port: nothing answers over the API nor over SSH."""
    closed = free_port()
    api_url = {"docker": f"tcp://127.0.0.1:{closed}"}.get(node["type"], f"https://127.0.0.1:{closed}")
    return node_with(node, api={"url": api_url}, ssh={"port": closed})


# -- instances made for the tests, removed whatever happens -------------------------------------------------------
class Made:
    def __init__(self):
        self.instances = []  # (backend, name)

    def docker(self, name, running=True, ssh_port=None, memory="64m", cpus="0.5"):
        argv = ["run", "-d"] if running else ["create"]
        argv += ["--name", name, "--memory", memory, "--cpus", cpus]
        if ssh_port:  # a port number, or "auto" for one that Docker chooses
            argv += ["-p", f"127.0.0.1:{'' if ssh_port == 'auto' else ssh_port}:22"]
        self.instances.append(("docker", name))
        docker_cli(*argv, "ocv-busybox")
        return name

    def lxd_like(self, backend, name, running=True):
        self.instances.append((backend, name))
        subprocess.run([CLI[backend], "launch" if running else "init", "ocv-busybox", name,
                        "-c", "limits.memory=64MiB", "-c", "limits.cpu=1"],
                       capture_output=True, text=True, check=True, timeout=300)
        return name

    def make(self, backend, name, running=True):
        if backend == "docker":
            return self.docker(name, running)
        return self.lxd_like(backend, name, running)

    def cleanup(self):
        for backend, name in self.instances:
            if backend == "docker":
                docker_cli("rm", "-f", name, check=False)
            else:
                subprocess.run([CLI[backend], "delete", "--force", name], capture_output=True, timeout=300,
                               check=False)


@pytest.fixture
def made():
    instances = Made()
    yield instances
    instances.cleanup()


@pytest.fixture(scope="module")
def lab_instances():
    """A running and a stopped instance on every covered node, shared by the tests of this file."""
    instances = Made()
    prefix = unique("t-inv")
    try:
        created = {}
        for node_name in COVERED:
            backend = lab_nodes()[node_name]["type"]
            if backend not in MAKERS:
                continue
            created[node_name] = {"running": instances.make(backend, f"{prefix}-{node_name}-up"),
                                  "stopped": instances.make(backend, f"{prefix}-{node_name}-down", running=False)}
        for node_name, names in created.items():
            addressed(lab_nodes()[node_name], names["running"])
        yield prefix, created
    finally:
        instances.cleanup()


# -- the listing itself ------------------------------------------------------------------------------------------
def test_lists_exactly_what_each_backend_reports(tmp_path, lab_instances):
    prefix, created = lab_instances
    nodes = covered_nodes()
    before = {name: truth(node) for name, node in nodes.items()}
    completed = run_inventory(tmp_path, lab_config(nodes.values(), host_name_format="instance.node"))
    after = {name: truth(node) for name, node in nodes.items()}
    listing = Listing(completed)
    assert "WARNING" not in completed.stderr, completed.stderr

    for node_name, node in nodes.items():
        listed = {host.rsplit(".", 1)[0] for host in listing.on_node(node_name)}
        assert listing.on_node(node_name) == {f"{name}.{node_name}" for name in listed}
        steady = before[node_name] & after[node_name]
        assert steady <= listed, f"node {node_name}: the daemon has {steady - listed} but the inventory does not"
        assert listed <= before[node_name] | after[node_name], f"node {node_name}: listed {listed}"
        assert listing.groups.get(f"virt_node_{node_name}", set()) == listing.on_node(node_name)
        if node_name not in created:
            continue
        assert {f"{created[node_name]['running']}.{node_name}", f"{created[node_name]['stopped']}.{node_name}"} \
            <= listing.groups[f"virt_backend_{node['type']}"]

        # The host variables are the normalised instance, as the provider layer reports it.
        reported = normalised(node)
        for state in ("running", "stopped"):
            name = created[node_name][state]
            variables = listing.hostvars[f"{name}.{node_name}"]
            expected = reported[name]
            for key in ("name", "id", "node", "backend", "type", "status", "image", "cpu", "memory", "disk",
                        "private_ip", "ipv6", "ports", "created"):
                assert variables[f"virt_{key}"] == expected[key], (node_name, name, key)
            assert variables["virt_status"] == state
            assert variables["virt_memory"] == 64
            assert f"{name}.{node_name}" in listing.groups[f"virt_status_{state}"]
            assert f"{name}.{node_name}" in listing.groups["virt_type_container"]
            if state == "running":
                assert variables["ansible_host"] == expected["private_ip"] and expected["private_ip"]
            if state == "stopped":
                assert "ansible_host" not in variables

    graph = run_inventory(tmp_path, lab_config(nodes.values(), host_name_format="instance.node"), "--graph")
    assert graph.returncode == 0, graph.stderr
    for node_name in created:
        assert f"@virt_node_{node_name}:" in graph.stdout
        assert f"--{created[node_name]['running']}.{node_name}" in graph.stdout
    assert "@virt_status_stopped:" in graph.stdout and "@virt_type_container:" in graph.stdout


@pytest.mark.parametrize("backend", sorted(set(SOCKETS) & set(registered())))
def test_one_bulk_listing_per_node(tmp_path, backend, lab_instances):
    """Every request the daemon receives, read off its unix socket through a counting proxy."""
    node_name = next(name for name, node in covered_nodes().items() if node["type"] == backend)
    proxy = CountingProxy(str(tmp_path / "daemon.sock"), SOCKETS[backend])
    try:
        node = node_with(lab_nodes()[node_name], execution_rule="api_only", api={"url": f"unix://{proxy.path}"})
        listing = Listing(run_inventory(tmp_path, lab_config([node], name_pattern=f"{lab_instances[0]}-.*")))
    finally:
        proxy.close()
    assert len(listing.hosts) == 2
    requests = proxy.requests
    if backend == "docker":
        listings = [path for path in requests if path.startswith("/containers/json")]
        inspects = [path for path in requests if re.fullmatch(r"/containers/[0-9a-f]{64}/json", path)]
        assert len(listings) == 1, requests
        assert len(inspects) == len(set(inspects)) == len(requests) - 1, requests
        assert proxy.connections == 1, "the listing and every inspect go over one connection"
    else:
        bulk = [path for path in requests if path.startswith("/1.0/instances?") and "recursion=2" in path]
        assert len(bulk) == 1, requests
        assert not [path for path in requests if path.startswith("/1.0/instances/")], requests
        assert len(requests) <= 2, requests  # the bulk listing, and the client's own GET /1.0 when it connects


# -- failures --------------------------------------------------------------------------------------------------
def test_an_unreachable_node_warns_and_the_others_load(tmp_path, lab_instances):
    prefix, created = lab_instances
    nodes = covered_nodes()
    down = dict(unreachable(nodes["docker"]), name="docker-down")
    completed = run_inventory(tmp_path, lab_config([*nodes.values(), down], name_pattern=f"{prefix}-.*"))
    listing = Listing(completed)
    warnings = warnings_of(completed)
    assert "node docker-down" in warnings and "refused" in warnings.lower(), warnings
    assert "its instances are not in the inventory" in warnings
    assert listing.hosts == {name for per_node in created.values() for name in per_node.values()}
    assert "virt_node_docker_down" not in listing.groups

    strict = run_inventory(tmp_path, lab_config([*nodes.values(), down], strict=True),
                           env={"ANSIBLE_INVENTORY_UNPARSED_FAILED": "True"})
    assert strict.returncode != 0
    assert "node docker-down" in warnings_of(strict)
    # Without inventory_unparsed_failed, Ansible reports a failed source as a warning and lists nothing of it.
    lenient = run_inventory(tmp_path, lab_config([*nodes.values(), down], strict=True))
    assert lenient.returncode == 0 and "node docker-down" in warnings_of(lenient)
    assert Listing(lenient).hostvars == {}


def test_a_node_that_never_answers_is_cut_at_node_timeout(tmp_path, lab_instances):
    prefix, created = lab_instances
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections (the kernel does), never answers
    try:
        hanging = node_with(lab_nodes()["docker"], name="docker-hangs", execution_rule="api_only",
                            api={"url": f"tcp://127.0.0.1:{silent.getsockname()[1]}", "timeout": 300})
        completed = run_inventory(tmp_path, lab_config([lab_nodes()["docker"], hanging], node_timeout=3,
                                                       name_pattern=f"{prefix}-.*"))
    finally:
        silent.close()
    listing = Listing(completed)
    assert completed.seconds < 20, f"ansible-inventory took {completed.seconds:.1f}s with node_timeout 3"
    warnings = warnings_of(completed)
    assert "node docker-hangs" in warnings and ("timed out" in warnings or "node_timeout" in warnings), warnings
    assert listing.hosts == set(created["docker"].values())


def test_bad_configuration_fails_naming_the_option(tmp_path):
    node = lab_nodes()["docker"]
    env = {"ANSIBLE_INVENTORY_UNPARSED_FAILED": "True"}
    twice = run_inventory(tmp_path, lab_config([node, node]), env=env)
    assert twice.returncode != 0 and "described twice" in warnings_of(twice)
    bad_pattern = run_inventory(tmp_path, lab_config([node], name_pattern="web-("), env=env)
    assert bad_pattern.returncode != 0 and "name_pattern" in warnings_of(bad_pattern)
    bad_node = run_inventory(tmp_path, lab_config([dict(node, execution_rule="sometimes")]), env=env)
    assert bad_node.returncode != 0 and "execution_rule" in warnings_of(bad_node)
    not_mine = tmp_path / "hosts.yml"
    not_mine.write_text(yaml.safe_dump({"plugin": PLUGIN, "nodes": [node]}))
    ignored = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(not_mine), "--list"],
                             capture_output=True, text=True, timeout=120, check=False,
                             env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
                                      ANSIBLE_INVENTORY_ENABLED=PLUGIN, ANSIBLE_INVENTORY_UNPARSED_FAILED="True"))
    assert ignored.returncode != 0, "only *.virt.yml / *.virt.yaml files are this plugin's"


# -- the cache ---------------------------------------------------------------------------------------------------
def test_a_cache_hit_needs_no_node(tmp_path, lab_instances):
    prefix, created = lab_instances
    nodes = covered_nodes()
    cache = {"cache": True, "cache_plugin": "ansible.builtin.jsonfile", "cache_connection": str(tmp_path / "cache"),
             "cache_timeout": 600, "name_pattern": f"{prefix}-.*",
             "keyed_groups": [{"key": "virt_status", "prefix": "state"}]}
    filled = Listing(run_inventory(tmp_path, lab_config(nodes.values(), **cache)))
    assert filled.hosts == {name for per_node in created.values() for name in per_node.values()}
    assert list((tmp_path / "cache").iterdir()), "the first run fills the cache"

    broken = [unreachable(node) for node in nodes.values()]
    hit = run_inventory(tmp_path, lab_config(broken, **cache))
    assert "WARNING" not in hit.stderr, hit.stderr
    assert Listing(hit).raw == filled.raw

    # Compose, groups and keyed groups are applied again on a hit, from the configuration of this run.
    recomposed = Listing(run_inventory(tmp_path, lab_config(broken, **dict(
        cache, compose={"size": "virt_memory * 2"}, groups={"up": "virt_status == 'running'"},
        statuses=["running"]))))
    assert recomposed.hosts == {per_node["running"] for per_node in created.values()}
    assert all(variables["size"] == 128 for variables in recomposed.hostvars.values())
    assert recomposed.groups["up"] == recomposed.hosts

    # --flush-cache asks the nodes again: now every one of them fails, and that listing is never reused.
    flushed = run_inventory(tmp_path, lab_config(broken, **cache), "--list", "--flush-cache")
    assert Listing(flushed).hostvars == {}
    assert all(f"node {node['name']}" in warnings_of(flushed) for node in broken)
    again = run_inventory(tmp_path, lab_config(broken, **cache))
    assert Listing(again).hostvars == {} and "node docker" in warnings_of(again)
    healed = Listing(run_inventory(tmp_path, lab_config(nodes.values(), **cache)))
    assert healed.raw == filled.raw


def test_verbose_output_times_each_node_and_the_whole_query(tmp_path, lab_instances):
    """-vvv says how long each node took and how long all of them took together (the nodes are asked in
    parallel, so the whole is about the slowest node, not the sum): what a user reads to find a slow node."""
    prefix, created = lab_instances
    nodes = covered_nodes()
    completed = run_inventory(tmp_path, lab_config(nodes.values(), name_pattern=f"{prefix}-.*"), "--list", "-vvv")
    assert completed.returncode == 0, completed.stderr
    output = completed.stdout + completed.stderr
    seconds = {}
    for name in nodes:
        found = re.search(rf"node {re.escape(name)}: (\d+) instances in ([0-9.]+)s", output)
        assert found, f"no timing line for node {name}"
        assert int(found.group(1)) >= len(created.get(name, {}))
        seconds[name] = float(found.group(2))
    whole = re.search(rf"{len(nodes)} nodes queried in ([0-9.]+)s", output)
    assert whole, output[-3000:]
    assert max(seconds.values()) <= float(whole.group(1)) < sum(seconds.values()), (whole.group(0), seconds)


# -- shaping: names, addresses, filters, constructed -----------------------------------------------------------
def test_same_name_on_two_nodes_never_shares_a_host(tmp_path, made):
    name = made.docker(unique("t-inv-twin"))
    docker = lab_nodes()["docker"]
    twin = dict(docker, name="docker-twin")  # the same daemon under a second name: every name is on both
    by_instance = run_inventory(tmp_path, lab_config([docker, twin], name_pattern=name))
    listing = Listing(by_instance)
    assert listing.hosts == {f"{name}.docker", f"{name}.docker-twin"}
    assert listing.hostvars[f"{name}.docker-twin"]["virt_node"] == "docker-twin"
    assert listing.groups["virt_node_docker_twin"] == {f"{name}.docker-twin"}
    assert f"instance name '{name}' is on several nodes" in warnings_of(by_instance)

    by_node = run_inventory(tmp_path, lab_config([docker, twin], name_pattern=name, host_name_format="instance.node"))
    assert Listing(by_node).hosts == listing.hosts and "WARNING" not in by_node.stderr

    alone = Listing(run_inventory(tmp_path, lab_config([docker, twin], name_pattern=name, node_names=["docker"])))
    assert alone.hosts == {name}


def test_ansible_host_from_the_private_or_the_public_address(tmp_path, made):
    ssh_port = free_port()
    published = made.docker(unique("t-inv-pub"), ssh_port=ssh_port)
    bare = made.docker(unique("t-inv-bare"))
    chosen = made.docker(unique("t-inv-auto"), ssh_port="auto")
    docker = lab_nodes()["docker"]
    pattern = f"{published}|{bare}|{chosen}"
    private = Listing(run_inventory(tmp_path, lab_config([docker], name_pattern=pattern)))
    for name in (published, bare, chosen):
        address = json.loads(docker_cli("inspect", name).stdout)[0]["NetworkSettings"]["IPAddress"]
        assert private.hostvars[name]["ansible_host"] == address
        assert "ansible_port" not in private.hostvars[name]

    public_config = lab_config([docker], name_pattern=pattern, ansible_host_source="public_ip")
    public = Listing(run_inventory(tmp_path, public_config))
    assert public.hostvars[published]["ansible_host"] == docker["public_ip"]
    assert public.hostvars[published]["ansible_port"] == ssh_port
    assert {"guest_port": 22, "host_port": ssh_port, "protocol": "tcp", "listen_address": "127.0.0.1"} \
        in public.hostvars[published]["virt_ports"]
    assert "ansible_host" not in public.hostvars[bare], "no published SSH port: never the node's own address"
    # An SSH port that Docker chose is the one it reports while the container runs.
    chosen_port = int(json.loads(docker_cli("inspect", chosen).stdout)[0]["NetworkSettings"]["Ports"]["22/tcp"][0]
                      ["HostPort"])
    assert public.hostvars[chosen]["ansible_host"] == docker["public_ip"]
    assert public.hostvars[chosen]["ansible_port"] == chosen_port

    no_public_ip = {key: value for key, value in docker.items() if key != "public_ip"}
    missing = run_inventory(tmp_path, lab_config([no_public_ip], name_pattern=pattern,
                                                 ansible_host_source="public_ip"))
    assert "has no public_ip" in warnings_of(missing)
    assert all("ansible_host" not in variables for variables in Listing(missing).hostvars.values())

    none = Listing(run_inventory(tmp_path, lab_config([docker], name_pattern=pattern, ansible_host_source="none")))
    assert all("ansible_host" not in variables for variables in none.hostvars.values())


def test_filters_compose_and_groups(tmp_path, made):
    prefix = unique("t-inv-f")
    small = made.docker(f"{prefix}-small", memory="32m")
    big = made.docker(f"{prefix}-big", memory="128m")
    skipped = made.docker(f"{prefix}-skip")
    stopped = made.docker(f"{prefix}-stopped", running=False)
    made.docker(f"x{prefix}-small")  # the pattern must match the whole name, not a part of it
    docker = lab_nodes()["docker"]
    config = lab_config([docker], name_pattern=f"{prefix}-.*",
                        filters=[{"exclude": "virt_name.endswith('-skip')"}, {"include": "virt_memory >= 32"}],
                        compose={"ansible_user": "'root'", "double": "virt_memory * 2"},
                        groups={"small": "virt_memory <= 32"},
                        keyed_groups=[{"key": "virt_status", "prefix": "state"},
                                      {"key": "virt_image", "prefix": "image"}])
    listing = Listing(run_inventory(tmp_path, config))
    assert listing.hosts == {small, big, stopped}
    assert listing.groups["small"] == {small}
    assert listing.groups["state_running"] == {small, big} and listing.groups["state_stopped"] == {stopped}
    assert listing.groups["image_ocv_busybox"] == {small, big, stopped}
    assert listing.hostvars[big]["double"] == 256 and listing.hostvars[small]["ansible_user"] == "root"

    only_running = Listing(run_inventory(tmp_path, dict(config, statuses=["running"], types=["container"])))
    assert only_running.hosts == {small, big}
    no_vms = Listing(run_inventory(tmp_path, dict(config, types=["vm"])))
    assert no_vms.hosts == set()
    excluded = Listing(run_inventory(tmp_path, dict(config, filters=[{"exclude": "virt_status == 'running'"}])))
    assert excluded.hosts == {stopped}, "the first entry that matches decides; no match keeps the host"

    broken = run_inventory(tmp_path, dict(config, filters=[{"include": "virt_memory >"}]),
                           env={"ANSIBLE_INVENTORY_UNPARSED_FAILED": "True"})
    assert broken.returncode != 0 and "filters" in warnings_of(broken)
    strict_compose = run_inventory(tmp_path, dict(config, strict=True, compose={"bad": "no_such_var.attr"}),
                                   env={"ANSIBLE_INVENTORY_UNPARSED_FAILED": "True"})
    assert strict_compose.returncode != 0
    lenient_compose = Listing(run_inventory(tmp_path, dict(config, compose={"bad": "no_such_var.attr"})))
    assert all("bad" not in variables for variables in lenient_compose.hostvars.values())


def test_nodes_from_a_file_and_from_the_environment(tmp_path, made):
    name = made.docker(unique("t-inv-src"))
    docker = lab_nodes()["docker"]
    (tmp_path / "nodes").mkdir()
    (tmp_path / "nodes" / "nodes.yml").write_text(yaml.safe_dump({"docker": docker}))
    from_file = run_inventory(tmp_path, {"plugin": PLUGIN, "nodes_file": "nodes/nodes.yml", "name_pattern": name})
    assert Listing(from_file).hosts == {name}

    twin = json.dumps([dict(docker, name="docker-env")])
    both = run_inventory(tmp_path, {"plugin": PLUGIN, "nodes_file": "nodes/nodes.yml", "name_pattern": name,
                                    "host_name_format": "instance.node"}, env={"ONECLICKVIRT_NODES": twin})
    assert Listing(both).hosts == {f"{name}.docker", f"{name}.docker-env"}
    own_variable = run_inventory(tmp_path, {"plugin": PLUGIN, "nodes_env": "MY_NODES", "name_pattern": name},
                                 env={"MY_NODES": twin})
    assert Listing(own_variable).hosts == {name}

    nothing = run_inventory(tmp_path, {"plugin": PLUGIN}, env={"ANSIBLE_INVENTORY_UNPARSED_FAILED": "True"})
    assert nothing.returncode != 0 and "no nodes" in warnings_of(nothing)


# -- remote values are data, never templates --------------------------------------------------------------------
HOSTILE = "{{ lookup('pipe', 'touch /tmp/ocv-inventory-canary') }}"


def test_values_from_a_node_are_never_templated(tmp_path):
    canary = Path("/tmp/ocv-inventory-canary")
    canary.unlink(missing_ok=True)
    engine = FakeDockerEngine(str(tmp_path / "fake-docker.sock"), image=HOSTILE)
    try:
        node = {"name": "fake", "type": "docker", "execution_rule": "api_only",
                "api": {"url": f"unix://{engine.path}"}, "public_ip": "127.0.0.1"}
        config = lab_config([node], compose={"image_copy": "virt_image"})
        listing = run_inventory(tmp_path, config)
        parsed = json.loads(listing.stdout)
        assert parsed["_meta"]["hostvars"]["evil"]["virt_image"] == {"__ansible_unsafe": HOSTILE}
        assert Listing(listing).hostvars["evil"]["image_copy"] == HOSTILE
        (tmp_path / "lab.virt.yml").write_text(yaml.safe_dump(config))
        play = run_playbook("""
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: "image=[{{ hostvars['evil'].virt_image }}] copy=[{{ hostvars['evil'].image_copy }}]"
""", tmp_path, extra_args=["-i", str(tmp_path / "lab.virt.yml")],
            env={"ANSIBLE_INVENTORY_ENABLED": f"host_list,{PLUGIN}"})
    finally:
        engine.close()
    assert play.returncode == 0, play.stdout + play.stderr
    assert f"image=[{HOSTILE}] copy=[{HOSTILE}]" in play.stdout
    assert not canary.exists(), "a value read from a node was templated"
    assert engine.requests == ["/containers/json?all=1", f"/containers/{FakeDockerEngine.ID}/json"] * 2


# -- small servers --------------------------------------------------------------------------------------------------
class CountingProxy:
    """A unix-socket proxy to a daemon's socket that records the path of every HTTP request passing through."""

    REQUEST_LINE = re.compile(rb"(?:^|\r\n)(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/1\.[01]\r\n")

    def __init__(self, path, upstream):
        self.path, self.upstream = path, upstream
        self.requests, self.connections = [], 0
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                client, _address = self.server.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.upstream)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source, target, requests):
        seen = b""
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if requests:
                    seen += data
                    # Request lines only: the proxied reads carry no bodies to confuse this.
                    *complete, seen = seen.rsplit(b"\r\n\r\n", 1) if b"\r\n\r\n" in seen else [seen]
                    for block in complete:
                        self.requests += [match.group(2).decode() for match in
                                          self.REQUEST_LINE.finditer(b"\r\n" + block + b"\r\n")]
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.server.close()
        Path(self.path).unlink(missing_ok=True)


class FakeDockerEngine:
    """Just enough of the Engine API (keep-alive, pipelining) to list one container whose values are hostile."""

    ID = "e" * 64

    def __init__(self, path, image):
        self.path, self.image, self.requests = path, image, []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                client, _address = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _answer(self, path):
        if path.startswith("/containers/json"):
            return [{"Id": self.ID, "Names": ["/evil"], "Image": self.image, "State": "running"}]
        if path == f"/containers/{self.ID}/json":
            return {"Id": self.ID, "Name": "/evil", "Created": "2026-01-01T00:00:00Z", "State": {"Status": "running"},
                    "Config": {"Image": self.image}, "HostConfig": {"Memory": 64 * 1024 * 1024, "NanoCpus": 10 ** 9},
                    "NetworkSettings": {"IPAddress": "192.0.2.10", "Networks": {}}}
        return {"message": "not here"}

    def _handle(self, client):
        buffer = b""
        with client:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = client.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                path = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
                self.requests.append(path)
                body = json.dumps(self._answer(path)).encode()
                client.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                               + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

    def close(self):
        self.server.close()
        Path(self.path).unlink(missing_ok=True)
