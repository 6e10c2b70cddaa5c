"""virt_portmap and virt_portmap_info against the lab's real firewall, Docker, LXD and Incus (and the Proxmox
simulator, whose node shell runs the host's real iptables and nft).

Traffic is real: a client in the lab's `ocv-client` network namespace connects to the node's public address
(10.165.0.1 / fd42:4c58:165::1) and must get the answer of a server inside the instance, for TCP and UDP and
every method. Around every change, the host's firewall minus the collection's own lines must stay byte for
byte the same, including rules this test adds itself.
"""

import json
import secrets
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import node_with, run_module
from portmap_lab import (
    PERSIST_DIR, PUBLIC_IPV4, PUBLIC_IPV6, DockerTarget, LxdTarget, exchange, foreign, nft_tables, own, purge, run,
    snapshot, tagged_lines)

FOREIGN = "portmap-test-foreign"


def portmap(node, instance, check=False, **args):
    result = run_module("virt_portmap", dict(args, node=node, instance=instance), check=check)
    assert not result.get("failed"), result
    return result


def info(node, instance=None):
    args = {"node": node} if instance is None else {"node": node, "instance": instance}
    result = run_module("virt_portmap_info", args)
    assert not result.get("failed") and result["changed"] is False, result
    return result["mappings"]


def failing(node, instance, **args):
    result = run_module("virt_portmap", dict(args, node=node, instance=instance))
    assert result.get("failed") is True, result
    return result["msg"]


def remove_all(node, instance, recreate=False):
    """Finalizer: the module removes what it made; anything a failed test left is purged by tag."""
    try:
        run_module("virt_portmap", {"node": node, "instance": instance, "state": "absent", "recreate": recreate})
    finally:
        purge(f"ocv:{node['name']}:{instance}:")


def assert_foreign_unchanged(before, label):
    after = snapshot()
    assert foreign(after) == foreign(before), f"{label}: rules outside the collection changed"
    return after


# -- fixtures ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def rules_directory():
    """The module writes its rules directory on the node (this host); it goes again if the tests made it."""
    existed = [path for path in (PERSIST_DIR.parent, PERSIST_DIR) if path.exists()]
    yield
    remaining = own(snapshot())
    if PERSIST_DIR not in existed and not any(remaining.values()):
        shutil.rmtree(PERSIST_DIR, ignore_errors=True)
        if PERSIST_DIR.parent not in existed:
            shutil.rmtree(PERSIST_DIR.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def foreign_rules():
    """Rules outside the collection, added by the test: every add, remove and restore must leave them alone."""
    rules = [
        ("iptables", ["-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "29999"]),
        ("iptables", ["-t", "filter", "-A", "INPUT", "-p", "udp", "--dport", "29999"]),
        ("ip6tables", ["-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "29999"]),
    ]
    comment = ["-m", "comment", "--comment", FOREIGN, "-j", "RETURN"]
    for tool, rule in rules:
        run([tool, *rule, *comment])
    run(["nft", "-f", "-"], input_text=(
        "table inet ocv_test_foreign {\n chain input {\n  type filter hook input priority 10; policy accept;\n"
        f'  tcp dport 29999 accept comment "{FOREIGN}"\n }}\n}}\n'))
    yield
    for tool, rule in rules:
        run([tool, *[("-D" if arg == "-A" else arg) for arg in rule], *comment], check=False)
    run(["nft", "delete", "table", "inet", "ocv_test_foreign"], check=False)


@pytest.fixture(scope="module")
def docker_target(nodes):
    target = DockerTarget(ports=[81, 82, 83, 84, 90])
    yield target
    try:
        remove_all(nodes["docker"], target.name, recreate=True)
    finally:
        target.destroy()


@pytest.fixture(scope="module")
def lxd_like_targets(nodes):
    targets = {}
    try:
        for backend in ("lxd", "incus"):
            targets[backend] = LxdTarget(backend, ports=[80, 81, 82, 83, 84, 85, 90])
        yield targets
    finally:
        for backend, target in targets.items():
            try:
                remove_all(nodes[backend], target.name)
            finally:
                target.destroy()


# -- traffic, every method, every backend ------------------------------------------------------------------------

def assert_traffic(target, address, host_port, guest_port):
    for protocol in ("tcp", "udp"):
        answer = exchange(protocol, address, host_port)
        assert answer == f"{target.name}:{protocol}:{guest_port}", (protocol, address, host_port, answer)


def map_and_check(node, target, method, guest_port, ip_version=4, listen=None, **extra):
    args = {"guest_port": guest_port, "protocol": "both", "method": method, "ip_version": ip_version, **extra}
    if listen:
        args["listen_address"] = listen
    made = portmap(node, target.name, **args)
    assert made["changed"] is True, made
    assert len(made["host_ports"]) == 1 and len(made["mappings"]) == 2, made
    host_port = made["host_ports"][0]
    start, end = node["port_range"]["start"], node["port_range"]["end"]
    assert start <= host_port <= end
    for mapping in made["mappings"]:
        assert mapping["guest_port"] == guest_port and mapping["ip_version"] == ip_version
        assert mapping["tag"] == f"ocv:{node['name']}:{target.name}:{mapping['protocol']}:{host_port}"
    address = PUBLIC_IPV4 if ip_version == 4 else PUBLIC_IPV6
    assert_traffic(target, address, host_port, guest_port)
    again = portmap(node, target.name, **args)
    assert again["changed"] is False and again["actions"] == [], again
    assert again["host_ports"] == [host_port]
    return made


def test_docker_every_method_passes_traffic(nodes, docker_target, foreign_rules):
    node = nodes["docker"]
    before = snapshot()
    made = {}
    for method, guest_port in (("iptables", 81), ("nftables", 82)):
        made[method] = map_and_check(node, docker_target, method, guest_port)
        assert {m["method"] for m in made[method]["mappings"]} == {method}
        assert {m["target_address"] for m in made[method]["mappings"]} == {docker_target.address()}
    after_add = assert_foreign_unchanged(before, "docker DNAT add")
    # Docker's FORWARD policy is DROP: the one jump outside the collection's chains is in DOCKER-USER.
    assert '-A DOCKER-USER -m comment --comment "ocv:hook" -j OCV-FORWARD' in after_add["iptables"].splitlines()

    # native without recreate: Docker publishes only at creation, so a live add is DNAT, with a warning.
    live = portmap(node, docker_target.name, guest_port=84, protocol="both", method="native")
    assert {m["method"] for m in live["mappings"]} == {"nftables"}
    assert "set recreate: true to publish it natively" in json.dumps(live.get("warnings")), live
    assert_traffic(docker_target, PUBLIC_IPV4, live["host_ports"][0], 84)
    assert portmap(node, docker_target.name, guest_port=84, protocol="both", method="native")["changed"] is False

    # native with recreate: the container is recreated with the port published and labelled with its tag.
    native = portmap(node, docker_target.name, guest_port=83, protocol="both", method="native", recreate=True,
                     description="published")
    assert native["changed"] is True and {m["method"] for m in native["mappings"]} == {"native"}
    host_port = native["host_ports"][0]
    data = json.loads(run(["docker", "inspect", docker_target.name]).stdout)[0]
    for protocol in ("tcp", "udp"):
        assert data["HostConfig"]["PortBindings"][f"83/{protocol}"] == [{"HostIp": PUBLIC_IPV4,
                                                                         "HostPort": str(host_port)}]
        record = json.loads(data["Config"]["Labels"][f"oneclickvirt.portmap.{protocol}.{host_port}"])
        assert record["tag"] == f"ocv:docker:{docker_target.name}:{protocol}:{host_port}"
    docker_target.start_server()  # the server lived in the old container's writable layer
    assert_traffic(docker_target, PUBLIC_IPV4, host_port, 83)
    assert portmap(node, docker_target.name, guest_port=83, protocol="both", method="native",
                   recreate=True)["changed"] is False
    # The recreated container may have another address: the DNAT mappings follow it, then carry traffic again.
    for method, guest_port in (("iptables", 81), ("nftables", 82)):
        followed = portmap(node, docker_target.name, guest_port=guest_port, protocol="both", method=method)
        assert {m["target_address"] for m in followed["mappings"]} == {docker_target.address()}
        assert followed["host_ports"] == made[method]["host_ports"]
        assert_traffic(docker_target, PUBLIC_IPV4, followed["host_ports"][0], guest_port)

    listed = info(node, docker_target.name)
    assert sorted((m["method"], m["protocol"], m["guest_port"]) for m in listed) == sorted(
        (method, protocol, guest_port) for method, guest_port in (("iptables", 81), ("nftables", 82),
                                                                  ("nftables", 84), ("native", 83))
        for protocol in ("tcp", "udp"))
    assert [m for m in listed if m["method"] == "native"][0]["description"] == "published"

    refused = run_module("virt_portmap", {"node": node, "instance": docker_target.name, "state": "absent"})
    assert refused.get("failed") and "recreate" in refused["msg"], refused
    gone = portmap(node, docker_target.name, state="absent", recreate=True)
    assert gone["changed"] is True and gone["mappings"] == []
    assert len(gone["diff"]["before"]["mappings"]) == 8
    assert portmap(node, docker_target.name, state="absent", recreate=True)["changed"] is False
    data = json.loads(run(["docker", "inspect", docker_target.name]).stdout)[0]
    assert not data["HostConfig"]["PortBindings"] and not any(
        key.startswith("oneclickvirt.portmap") for key in data["Config"]["Labels"] or {})
    after = assert_foreign_unchanged(before, "docker remove")
    assert tagged_lines(after, f"ocv:docker:{docker_target.name}:") == []
    docker_target.start_server()


@pytest.mark.parametrize("backend", ["lxd", "incus"])
def test_lxd_incus_every_method_passes_traffic(nodes, lxd_like_targets, backend, foreign_rules):
    node, target = nodes[backend], lxd_like_targets[backend]
    before = snapshot()
    cases = [("proxy_device", 80, 4, None), ("iptables", 81, 4, None), ("nftables", 82, 4, None),
             ("proxy_device", 83, 6, PUBLIC_IPV6), ("nftables", 84, 6, PUBLIC_IPV6), ("iptables", 85, 6, PUBLIC_IPV6)]
    host_ports = {}
    for method, guest_port, ip_version, listen in cases:
        made = map_and_check(node, target, method, guest_port, ip_version, listen)
        host_ports[(method, ip_version)] = made["host_ports"][0]
        if method != "proxy_device":
            expected = target.address(ip_version)  # DNAT to the instance's own address (its ULA for IPv6)
            assert {m["target_address"] for m in made["mappings"]} == {expected}
    assert_foreign_unchanged(before, f"{backend} add")

    devices, config = target.devices(), target.config()
    port = host_ports[("proxy_device", 4)]
    assert devices[f"ocv-tcp-{port}"] == {"type": "proxy", "listen": f"tcp:{PUBLIC_IPV4}:{port}",
                                          "connect": "tcp:127.0.0.1:80"}
    assert json.loads(config[f"user.ocv.portmap.ocv-udp-{port}"])["tag"] == f"ocv:{backend}:{target.name}:udp:{port}"
    port6 = host_ports[("proxy_device", 6)]
    assert devices[f"ocv-udp-{port6}-v6"]["listen"] == f"udp:[{PUBLIC_IPV6}]:{port6}"

    listed = info(node, target.name)
    assert len(listed) == 12
    assert [m for m in info(node) if m["instance"] == target.name] == listed

    gone = portmap(node, target.name, state="absent")
    assert gone["changed"] is True and len(gone["actions"]) == 12
    assert not any(name.startswith("ocv-") for name in target.devices())
    assert not any(key.startswith("user.ocv.portmap.") for key in target.config())
    after = assert_foreign_unchanged(before, f"{backend} remove")
    assert tagged_lines(after, f"ocv:{backend}:{target.name}:") == []
    assert portmap(node, target.name, state="absent")["changed"] is False


# -- check mode, diff, blocks, concurrency -----------------------------------------------------------------------

def persisted_files():
    return {path.name: path.read_bytes() for path in PERSIST_DIR.glob("*")} if PERSIST_DIR.exists() else {}


def test_check_mode_predicts_and_writes_nothing(nodes, lxd_like_targets):
    node, target = nodes["lxd"], lxd_like_targets["lxd"]
    args = {"guest_port": 90, "method": "nftables", "description": "checked"}
    state, devices, files = snapshot(), target.devices(), persisted_files()
    predicted = portmap(node, target.name, check=True, **args)
    assert predicted["changed"] is True
    assert predicted["diff"]["before"] == {"mappings": []}
    assert predicted["diff"]["after"]["mappings"] == predicted["mappings"]
    assert predicted["actions"] == [f"add tcp {predicted['host_ports'][0]} -> {target.name}:90 (nftables)"]
    proxy = portmap(node, target.name, check=True, guest_port=90, method="proxy_device")
    assert proxy["changed"] is True
    now = snapshot()
    assert own(now) == own(state) and foreign(now) == foreign(state), "check mode changed the firewall"
    assert target.devices() == devices and persisted_files() == files

    made = portmap(node, target.name, **args)
    assert made["changed"] is True and made["host_ports"] == predicted["host_ports"]
    assert made["mappings"] == predicted["mappings"] and made["diff"] == predicted["diff"]
    assert made["mappings"][0]["description"] == "checked"
    again = portmap(node, target.name, **args)
    assert again["changed"] is False and again["diff"]["before"] == again["diff"]["after"]
    assert info(node, target.name)[0]["description"] == "checked"
    described = portmap(node, target.name, **dict(args, description="renamed"))
    assert described["changed"] is True and described["actions"][0].startswith("update description")
    assert described["diff"]["before"]["mappings"][0]["description"] == "checked"
    assert described["diff"]["after"]["mappings"][0]["description"] == "renamed"

    state = snapshot()
    predicted_removal = portmap(node, target.name, check=True, state="absent")
    assert predicted_removal["changed"] is True and predicted_removal["diff"]["after"] == {"mappings": []}
    assert own(snapshot()) == own(state)
    assert portmap(node, target.name, state="absent")["changed"] is True
    assert tagged_lines(snapshot(), f"ocv:lxd:{target.name}:") == []


def test_consecutive_block_in_one_task(nodes, docker_target):
    """The panel's layout: ten consecutive host ports, the first to one service, the others one to one."""
    node = nodes["docker"]
    args = {"guest_port": 90, "count": 10, "block_guest_ports": "same_as_host", "protocol": "both",
            "method": "nftables", "description": "panel block"}
    made = portmap(node, docker_target.name, **args)
    base = made["host_ports"][0]
    assert made["host_ports"] == list(range(base, base + 10)) and len(made["mappings"]) == 20
    guest = {m["host_port"]: m["guest_port"] for m in made["mappings"]}
    assert guest == {base: 90, **{base + i: base + i for i in range(1, 10)}}
    # A server on the last guest port too, then traffic to both ends of the block.
    run(["docker", "exec", "-d", docker_target.name, "python3", "/root/echo.py", docker_target.name, str(base + 9)])
    assert_traffic(docker_target, PUBLIC_IPV4, base, 90)
    assert_traffic(docker_target, PUBLIC_IPV4, base + 9, base + 9)
    again = portmap(node, docker_target.name, **args)
    assert again["changed"] is False and again["host_ports"] == made["host_ports"]
    gone = portmap(node, docker_target.name, state="absent", guest_port=90, count=10,
                   block_guest_ports="same_as_host")
    assert gone["changed"] is True and len(gone["actions"]) == 20
    assert tagged_lines(snapshot(), f"ocv:docker:{docker_target.name}:") == []


def test_twenty_concurrent_allocations_get_twenty_ports(nodes, lxd_like_targets):
    """Twenty tasks at once (ten proxy devices, ten nftables rules) on one node: twenty different host ports."""
    node, target = nodes["lxd"], lxd_like_targets["lxd"]
    results = [None] * 20

    def allocate(index):
        method = "proxy_device" if index % 2 else "nftables"
        results[index] = run_module("virt_portmap", {"node": node, "instance": target.name,
                                                     "guest_port": 1000 + index, "method": method})

    threads = [threading.Thread(target=allocate, args=(index,)) for index in range(20)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(not r.get("failed") for r in results), [r.get("msg") for r in results if r.get("failed")]
        ports = [r["host_ports"][0] for r in results]
        assert len(set(ports)) == 20, sorted(ports)
        listed = info(node, target.name)
        assert sorted(m["host_port"] for m in listed) == sorted(ports)
    finally:
        portmap(node, target.name, state="absent")


# -- persistence -------------------------------------------------------------------------------------------------

def test_restore_brings_back_exactly_the_own_rules(nodes, docker_target, lxd_like_targets, foreign_rules):
    docker, lxd = nodes["docker"], nodes["lxd"]
    target6 = lxd_like_targets["lxd"]
    mapped = [portmap(docker, docker_target.name, guest_port=81, protocol="both", method="iptables"),
              portmap(docker, docker_target.name, guest_port=82, protocol="both", method="nftables"),
              portmap(lxd, target6.name, guest_port=85, method="iptables", ip_version=6,
                      listen_address=PUBLIC_IPV6)]
    try:
        live = snapshot()
        files = persisted_files()
        assert {"iptables.rules", "ip6tables.rules", "nftables.rules", "hooks", "restore",
                "oneclickvirt-portmap.service"} <= set(files)
        assert b"ExecStart=/etc/oneclickvirt/portmap/restore" in files["oneclickvirt-portmap.service"]
        restore = str(PERSIST_DIR / "restore")

        # 1. The own chains and table flushed (a firewall reload that kept the chains).
        for argv in (["iptables", "-t", "nat", "-F", "OCV-PREROUTING"], ["iptables", "-F", "OCV-FORWARD"],
                     ["ip6tables", "-t", "nat", "-F", "OCV-PREROUTING"], ["nft", "flush", "table", "inet",
                                                                         "oneclickvirt"]):
            run(argv)
        flushed = snapshot()
        assert tagged_lines(flushed, "ocv:docker:") == [] and foreign(flushed) == foreign(live)
        assert exchange("tcp", PUBLIC_IPV4, mapped[0]["host_ports"][0], seconds=2) is None
        run([restore])
        restored = snapshot()
        assert own(restored) == own(live) and foreign(restored) == foreign(live)
        assert_traffic(docker_target, PUBLIC_IPV4, mapped[0]["host_ports"][0], 81)
        assert exchange("tcp", PUBLIC_IPV6, mapped[2]["host_ports"][0]) == f"{target6.name}:tcp:85"

        # 2. Nothing of the collection left at all (a reboot): chains, jumps and table come back the same.
        for tool in ("iptables", "ip6tables"):
            for line in [line for line in restored[tool].splitlines() if '"ocv:hook"' in line]:
                table = "nat" if "OCV-PREROUTING" in line else "filter"
                run([tool, "-t", table, "-D", *line.split()[1:5], "ocv:hook", "-j", line.split()[-1]])
            for table, chain in (("nat", "OCV-PREROUTING"), ("filter", "OCV-FORWARD")):
                run([tool, "-t", table, "-F", chain], check=False)
                run([tool, "-t", table, "-X", chain], check=False)
        run(["nft", "delete", "table", "inet", "oneclickvirt"])
        bare = snapshot()
        assert own(bare) == {"iptables": [], "ip6tables": [], "nft": None}
        assert foreign(bare) == foreign(live)
        run([restore])
        again = snapshot()
        assert own(again) == own(live) and foreign(again) == foreign(live)
        # Restoring twice changes nothing (the jumps are checked before they are inserted).
        run([restore])
        assert own(snapshot()) == own(live)
        assert_traffic(docker_target, PUBLIC_IPV4, mapped[1]["host_ports"][0], 82)
    finally:
        portmap(docker, docker_target.name, state="absent", recreate=True)
        portmap(lxd, target6.name, state="absent")
    after = snapshot()
    assert own(after)["nft"] is None and not own(after)["iptables"] and not own(after)["ip6tables"]


# -- bad input, rules, Proxmox -----------------------------------------------------------------------------------

def test_bad_input_fails_clearly_and_writes_nothing(nodes, docker_target, lxd_like_targets):
    lxd, docker = nodes["lxd"], nodes["docker"]
    target = lxd_like_targets["lxd"]
    state, devices, files = snapshot(), target.devices(), persisted_files()
    cases = [
        (lxd, target.name, {"guest_port": 70000}, "guest_port: 70000 is not a port"),
        (lxd, target.name, {"guest_port": 0}, "guest_port: 0 is not a port"),
        (lxd, target.name, {"guest_port": 80, "host_port": 65536}, "host_port: 65536 is not a port"),
        (lxd, target.name, {"guest_port": 80, "protocol": "tpc"}, "protocol"),
        (lxd, target.name, {"guest_port": 80, "host_port": 30000}, "outside the port_range 21000-21999"),
        (lxd, target.name, {"guest_port": 80, "host_port": 21995, "count": 10}, "outside the port_range"),
        (lxd, f"t-missing-{secrets.token_hex(3)}", {"guest_port": 80}, "does not exist on node lxd"),
        (lxd, target.name, {"guest_port": 80, "ip_version": 6, "listen_address": PUBLIC_IPV4},
         "is an IPv4 address but ip_version is 6"),
        (lxd, target.name, {"guest_port": 80, "method": "native"}, "native is not available on lxd"),
        (docker, docker_target.name, {"guest_port": 80, "method": "proxy_device"}, "not available on docker"),
        (lxd, target.name, {}, "guest_port: required"),
        (lxd, "bad name;rm", {"guest_port": 80}, "not a valid instance name"),
    ]
    for node, instance, args, expected in cases:
        message = failing(node, instance, **args)
        assert expected in message, (args, message)
    now = snapshot()
    assert own(now) == own(state) and foreign(now) == foreign(state)
    assert target.devices() == devices and persisted_files() == files


def test_taken_and_listening_ports_are_refused(nodes, docker_target):
    node = nodes["docker"]
    other = f"t-pm-other-{secrets.token_hex(3)}"
    run(["docker", "run", "-d", "--name", other, "--network", docker_target.network, "ocv-busybox"])
    try:
        made = portmap(node, docker_target.name, guest_port=81, host_port=20500, method="iptables")
        message = failing(node, other, guest_port=81, host_port=20500, method="iptables")
        assert f"20500/tcp (IPv4) on node docker is already mapped to instance {docker_target.name} port 81" in message
        # The same instance asking for another guest port on that host port: the mapping changes, in place.
        moved = portmap(node, docker_target.name, guest_port=82, host_port=20500, method="iptables")
        assert moved["actions"] == [f"remove tcp 20500 -> {docker_target.name}:81 (iptables)",
                                    f"add tcp 20500 -> {docker_target.name}:82 (iptables)"]
        assert_traffic_tcp = exchange("tcp", PUBLIC_IPV4, 20500)
        assert assert_traffic_tcp == f"{docker_target.name}:tcp:82"
        # A port something else listens on is skipped by the allocation and refused when asked for.
        with socket_listening(PUBLIC_IPV4, 20600):
            assert "20600/tcp is in use on node docker" in failing(node, other, guest_port=80, host_port=20600)
            with socket_listening(PUBLIC_IPV4, 20000):
                allocated = portmap(node, other, guest_port=80, method="iptables")
                assert allocated["host_ports"][0] not in (20000, 20500, 20600)
        portmap(node, other, state="absent")
        assert made["host_ports"] == [20500]
    finally:
        portmap(node, docker_target.name, state="absent", host_port=20500)
        remove_all(node, other)
        run(["docker", "rm", "-f", other], check=False)


class socket_listening:
    def __init__(self, address, port):
        import socket
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))

    def __enter__(self):
        self.sock.listen(1)
        time.sleep(0.1)
        return self

    def __exit__(self, *exc):
        self.sock.close()


def test_ssh_only_road_gives_the_same_mappings(nodes, lxd_like_targets):
    """Proxy devices through `lxc query` over SSH: the same mappings as through the API."""
    target = lxd_like_targets["lxd"]
    over_ssh = node_with(nodes["lxd"], execution_rule="ssh_only")
    made = portmap(over_ssh, target.name, guest_port=90, protocol="both", description="over ssh")
    try:
        assert made["transport"] == "ssh" and made["changed"] is True
        assert info(over_ssh, target.name) == info(nodes["lxd"], target.name) == made["mappings"]
        assert portmap(nodes["lxd"], target.name, guest_port=90, protocol="both")["changed"] is False
        assert_traffic(target, PUBLIC_IPV4, made["host_ports"][0], 90)
    finally:
        gone = portmap(over_ssh, target.name, state="absent")
    assert gone["changed"] is True and not any(name.startswith("ocv-") for name in target.devices())


def test_api_only_names_the_rule(nodes):
    node = node_with(nodes["lxd"], execution_rule="api_only")
    message = failing(node, "anything", guest_port=80, host_port=21010)
    assert "needs SSH" in message and "api_only" in message


@pytest.fixture
def pve_guest(nodes):
    node = nodes["proxmox"]
    ssh = ["ssh", "-p", str(node["ssh"]["port"]), "-i", node["ssh"]["private_key_file"], "-o", "BatchMode=yes",
           "-o", f"UserKnownHostsFile={node['ssh']['known_hosts_file']}", f"root@{node['ssh']['host']}"]
    vmid = 7000 + secrets.randbelow(900)
    name = f"t-pm-{secrets.token_hex(3)}"
    octet = 10 + secrets.randbelow(200)
    run(ssh + ["pct", "create", str(vmid), "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst", "--hostname",
               name, "--storage", "local-lvm", "--net0",
               f"name=eth0,bridge=vmbr0,ip=10.170.0.{octet}/24,ip6=fd42:4c58:170::{octet:x}/64"])
    yield {"name": name, "vmid": vmid, "ipv4": f"10.170.0.{octet}", "ipv6": f"fd42:4c58:170::{octet:x}"}
    try:
        remove_all(node, name)
    finally:
        run(ssh + ["pct", "destroy", str(vmid)], check=False)


def test_proxmox_exact_rules_on_the_node(nodes, pve_guest, foreign_rules):
    node, name = nodes["proxmox"], pve_guest["name"]
    before = snapshot()
    fixed = portmap(node, name, guest_port=22, host_port=10022, method="iptables", description="ssh")
    # The guest is looked up over the API (rule auto); the rules themselves are shell work over SSH.
    assert fixed["transport"] == "api" and fixed["changed"] is True
    allocated = portmap(node, name, guest_port=53, protocol="udp", method="nftables")
    udp_port = allocated["host_ports"][0]
    six = portmap(node, name, guest_port=80, ip_version=6)  # auto: nftables, the node has nft
    six_port = six["host_ports"][0]
    assert six["mappings"][0]["method"] == "nftables" and six["mappings"][0]["listen_address"] is None

    state = snapshot()
    tag = f"ocv:proxmox:{name}"
    assert sorted(tagged_lines(state, f"{tag}:")) == sorted([
        f'-A OCV-PREROUTING -d 127.0.0.1/32 -p tcp -m tcp --dport 10022 -m comment --comment "{tag}:tcp:10022" '
        f"-j DNAT --to-destination {pve_guest['ipv4']}:22",
        f"-A OCV-FORWARD -p tcp -m conntrack --ctstate DNAT --ctreplsrc {pve_guest['ipv4']} --ctorigdstport 10022 "
        f'--ctreplsrcport 22 -m comment --comment "{tag}:tcp:10022" -j ACCEPT',
        f"-A OCV-FORWARD -p udp -m conntrack --ctstate DNAT --ctreplsrc {pve_guest['ipv4']} --ctorigdstport "
        f'{udp_port} --ctreplsrcport 53 -m comment --comment "{tag}:udp:{udp_port}" -j ACCEPT',
        f"ip daddr 127.0.0.1 udp dport {udp_port} dnat ip to {pve_guest['ipv4']}:53 "
        f'comment "{tag}:udp:{udp_port}"',
        f"meta nfproto ipv6 fib daddr type local tcp dport {six_port} dnat ip6 to [{pve_guest['ipv6']}]:80 "
        f'comment "{tag}:tcp:{six_port}"',
    ])
    hooks = [line for line in state["iptables"].splitlines() if '"ocv:hook"' in line]
    assert '-A PREROUTING -m comment --comment "ocv:hook" -j OCV-PREROUTING' in hooks
    assert '-A DOCKER-USER -m comment --comment "ocv:hook" -j OCV-FORWARD' in hooks
    assert "type nat hook prerouting priority dstnat - 10; policy accept;" in nft_tables(state["nft"])[
        "inet oneclickvirt"]
    assert foreign(state) == foreign(before)
    descriptions = json.loads((PERSIST_DIR / "descriptions.json").read_text())
    assert descriptions[f"{tag}:tcp:10022/ipv4"] == {"description": "ssh"}

    for args in ({"guest_port": 22, "host_port": 10022, "method": "iptables", "description": "ssh"},
                 {"guest_port": 53, "protocol": "udp", "method": "nftables"}, {"guest_port": 80, "ip_version": 6}):
        assert portmap(node, name, **args)["changed"] is False
    by_vmid = run_module("virt_portmap", {"node": node, "instance": str(pve_guest["vmid"]), "guest_port": 22,
                                          "host_port": 10022, "method": "iptables"})
    assert by_vmid.get("failed") and "already mapped to instance " + name in by_vmid["msg"]

    listed = info(node, name)
    assert [(m["protocol"], m["host_port"], m["ip_version"], m["method"]) for m in listed] == sorted(
        [("tcp", 10022, 4, "iptables"), ("udp", udp_port, 4, "nftables")], key=lambda m: m[1]) + [
        ("tcp", six_port, 6, "nftables")]
    assert portmap(node, name, state="absent")["changed"] is True
    after = snapshot()
    assert tagged_lines(after, f"{tag}:") == [] and foreign(after) == foreign(before)
    assert f"{tag}:" not in (PERSIST_DIR / "descriptions.json").read_text()


def test_both_modules_are_in_the_action_group():
    runtime = yaml.safe_load((Path(__file__).resolve().parents[2] / "meta" / "runtime.yml").read_text())
    assert {"virt_portmap", "virt_portmap_info"} <= set(runtime["action_groups"]["virt"])
