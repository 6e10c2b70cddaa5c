"""Load, only in `make reliability`: many instances with forks=10 across the lab's four nodes, many port
mappings, an inventory of hundreds of guests. Nothing lost, nothing duplicated, the second pass changes
nothing, and everything named `rel-` is deleted afterwards.

OCV_REL_SCALE (default 1.0) scales every count: 50 instances, 200 mappings, 500 inventory guests at 1.0.
The figures record the scale used.
"""
import json
import os
import re
import subprocess
import sys
import time

import pytest
import yaml

from rel_lab import (PVE_TEMPLATE, Api, containers_with_prefix, lab, lxd_instances_with_prefix, node_with, nodes,
                     rel_name, remove_containers, remove_lxd_instances, run_module)

pytestmark = [pytest.mark.reliability, pytest.mark.load]
SCALE = float(os.environ.get("OCV_REL_SCALE", "1.0"))
BACKENDS = ("docker", "lxd", "incus", "proxmox")
IMAGES = {"docker": "ocv-busybox", "lxd": "ocv-busybox", "incus": "ocv-busybox", "proxmox": PVE_TEMPLATE}
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def scaled(count, minimum):
    return max(minimum, int(round(count * SCALE)))


def run_inventory_play(tmp_path, inventory, tasks, forks=10):
    """ansible-playbook over an inventory of hosts (one per object, connection local); returns the recap
    {host: (changed, failed)} and the seconds it took."""
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "play.yml").write_text(yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": tasks}]))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(lab._collections_path()), ANSIBLE_NOCOLOR="1",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_HOST_KEY_CHECKING="False")
    started = time.monotonic()
    completed = subprocess.run([str(lab.VENV_BIN / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"),
                                "-f", str(forks), str(tmp_path / "play.yml")],
                               capture_output=True, text=True, env=env, timeout=3600)
    seconds = time.monotonic() - started
    recap = {host: (int(changed), int(failed) + int(unreachable))
             for host, _ok, changed, unreachable, failed in RECAP.findall(completed.stdout)}
    return recap, seconds, completed.stdout


def shared_pve():
    node = nodes()["proxmox"]
    return Api(node["api"]["url"], node["api"]["token_id"], node["api"]["token_secret"], node["api"]["ca_file"])


def pve_guests_with_prefix(api, prefix):
    return [item for item in api.data("GET", "/cluster/resources", type="vm")
            if str(item.get("name", "")).startswith(prefix)]


def remove_pve_guests(api, guests):
    for item in guests:
        path = f"/nodes/pve/{item['type']}/{item['vmid']}"
        api.control("POST", "/_sim/lock", {"vmid": item["vmid"], "lock": None})
        if api.data("GET", f"{path}/status/current")["status"] == "running":
            api.wait(api.data("POST", f"{path}/status/stop"))
        api.wait(api.data("DELETE", path, purge=1))


def existing(prefix, pve):
    return {"docker": sorted(containers_with_prefix(prefix)),
            "lxd": sorted(lxd_instances_with_prefix("lxc", prefix)),
            "incus": sorted(lxd_instances_with_prefix("incus", prefix)),
            "proxmox": sorted(item["name"] for item in pve_guests_with_prefix(pve, prefix))}


def cleanup(prefix, pve):
    remove_containers(containers_with_prefix(prefix))
    remove_lxd_instances("lxc", lxd_instances_with_prefix("lxc", prefix))
    remove_lxd_instances("incus", lxd_instances_with_prefix("incus", prefix))
    remove_pve_guests(pve, pve_guests_with_prefix(pve, prefix))


def test_instances_with_forks_10_across_four_nodes(tmp_path, record_property):
    total = scaled(50, 4)
    prefix = rel_name("load") + "-"
    lab_nodes, pve = nodes(), shared_pve()
    hosts = {}
    for index in range(total):
        backend = BACKENDS[index % 4]
        hosts[f"{prefix}{index:03d}"] = {"virt_node": node_with(lab_nodes[backend], execution_rule="auto"),
                                         "virt_image": IMAGES[backend], "virt_backend": backend,
                                         "ansible_connection": "local"}
    inventory = {"all": {"hosts": hosts}}
    task = {"name": "Instance", "oneclickvirt.virt.virt_instance": {
        "node": "{{ virt_node }}", "name": "{{ inventory_hostname }}", "image": "{{ virt_image }}",
        "memory": 128, "state": "{{ wanted }}"}}
    expected = {backend: sorted(name for name, host in hosts.items() if host["virt_backend"] == backend)
                for backend in BACKENDS}
    timings, changed = {}, {}
    try:
        for step, wanted in (("create", "started"), ("create again", "started"), ("delete", "absent"),
                             ("delete again", "absent")):
            inventory["all"]["vars"] = {"wanted": wanted}
            recap, seconds, output = run_inventory_play(tmp_path, inventory, [task])
            timings[step] = round(seconds, 1)
            assert sorted(recap) == sorted(hosts), output[-3000:]
            failed = {host: counts for host, counts in recap.items() if counts[1]}
            assert failed == {}, output[-5000:]
            changed[step] = sum(counts[0] for counts in recap.values())
            if step == "create":
                assert existing(prefix, pve) == expected, "lost or duplicated instances"
        assert changed == {"create": total, "create again": 0, "delete": total, "delete again": 0}, changed
        assert existing(prefix, pve) == {backend: [] for backend in BACKENDS}
    finally:
        cleanup(prefix, pve)
    record_property("instances", total)
    record_property("scale", SCALE)
    record_property("changed_per_pass", changed)
    record_property("seconds_per_pass", timings)
    record_property("runs", 4)
    record_property("duplicates", 0)


def test_port_mappings_on_docker_and_lxd(tmp_path, record_property):
    per_instance = scaled(50, 2)
    prefix = rel_name("pm") + "-"
    lab_nodes = nodes()
    hosts = {}
    for index, backend in enumerate(("docker", "docker", "lxd", "lxd")):
        hosts[f"{prefix}{index}"] = {"virt_node": node_with(lab_nodes[backend], execution_rule="auto"),
                                     "virt_backend": backend, "ansible_connection": "local"}
    inventory = {"all": {"hosts": hosts, "vars": {"guest_ports": list(range(8000, 8000 + per_instance))}}}
    make = {"name": "Instance", "oneclickvirt.virt.virt_instance": {
        "node": "{{ virt_node }}", "name": "{{ inventory_hostname }}", "image": "ocv-busybox", "memory": 64}}
    mapping = {"name": "Mappings", "loop": "{{ guest_ports }}", "register": "maps", "oneclickvirt.virt.virt_portmap": {
        "node": "{{ virt_node }}", "instance": "{{ inventory_hostname }}", "guest_port": "{{ item }}",
        "state": "{{ wanted }}"}}
    # The recap counts a changed task once per host; each mapping's own `changed` is what the pass is about.
    count = {"name": "Count changed mappings", "ansible.builtin.copy": {
        "content": "{{ maps.results | selectattr('changed') | list | length }}",
        "dest": f"{tmp_path}/changed-{{{{ inventory_hostname }}}}", "mode": "0600"}}
    unmake = {"name": "Instance gone", "oneclickvirt.virt.virt_instance": {
        "node": "{{ virt_node }}", "name": "{{ inventory_hostname }}", "state": "absent"}}
    total = per_instance * len(hosts)
    timings, changed_hosts, duplicates = {}, {}, None
    try:
        recap, seconds, output = run_inventory_play(tmp_path, inventory, [make])
        assert all(not counts[1] for counts in recap.values()) and len(recap) == 4, output[-3000:]
        for step, wanted in (("map", "present"), ("map again", "present")):
            inventory["all"]["vars"]["wanted"] = wanted
            recap, seconds, output = run_inventory_play(tmp_path, inventory, [mapping, count], forks=4)
            timings[step] = round(seconds, 1)
            assert len(recap) == 4 and all(not counts[1] for counts in recap.values()), output[-5000:]
            changed_hosts[step] = sum(int((tmp_path / f"changed-{name}").read_text()) for name in hosts)
        # Read back from the nodes themselves: every mapping once, host ports unique per node.
        found, by_node = 0, {}
        for name, host in hosts.items():
            info = run_module("virt_portmap_info", {"node": host["virt_node"], "instance": name})
            assert info.get("failed") is not True, info
            mine = [item for item in info["mappings"] if item["instance"] == name]
            assert sorted(item["guest_port"] for item in mine) == inventory["all"]["vars"]["guest_ports"], mine
            found += len(mine)
            by_node.setdefault(host["virt_backend"], []).extend(item["host_port"] for item in mine)
        duplicates = sum(len(ports) - len(set(ports)) for ports in by_node.values())
        assert found == total and duplicates == 0
        inventory["all"]["vars"]["wanted"] = "absent"
        recap, seconds, output = run_inventory_play(tmp_path, inventory, [mapping, count], forks=4)
        timings["unmap"] = round(seconds, 1)
        assert all(not counts[1] for counts in recap.values()), output[-5000:]
        changed_hosts["unmap"] = sum(int((tmp_path / f"changed-{name}").read_text()) for name in hosts)
        assert changed_hosts == {"map": total, "map again": 0, "unmap": total}, changed_hosts
        for name, host in hosts.items():
            info = run_module("virt_portmap_info", {"node": host["virt_node"], "instance": name})
            assert [item for item in info["mappings"] if item["instance"] == name] == []
        run_inventory_play(tmp_path, inventory, [unmake])
    finally:
        # Mappings first (by owner tag, even for a gone instance), then the instances.
        for name, host in hosts.items():
            run_module("virt_portmap", {"node": host["virt_node"], "instance": name, "state": "absent"})
        remove_containers(containers_with_prefix(prefix))
        remove_lxd_instances("lxc", lxd_instances_with_prefix("lxc", prefix))
    record_property("mappings", total)
    record_property("scale", SCALE)
    record_property("mappings_changed_per_pass", changed_hosts)
    record_property("seconds_per_pass", timings)
    record_property("duplicates", duplicates)
    record_property("runs", 3)


def test_inventory_of_many_simulator_guests(tmp_path, own_sim, record_property):
    total = scaled(500, 10)
    prefix = rel_name("inv") + "-"
    own_sim.faults(task_delay=0)
    started = time.monotonic()
    first_vmid = 1000
    for index in range(total):
        own_sim.api.data("POST", "/nodes/pve/lxc", vmid=first_vmid + index, hostname=f"{prefix}{index:04d}",
                         ostemplate=PVE_TEMPLATE, rootfs="local-lvm:1", memory=64)
    seeding = time.monotonic() - started
    config = tmp_path / "rel.virt.yml"
    config.write_text(yaml.safe_dump({"plugin": "oneclickvirt.virt.instances", "nodes": [own_sim.node()]}))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(lab._collections_path()),
               ANSIBLE_INVENTORY_ENABLED="oneclickvirt.virt.instances")
    listings, timings = [], []
    for _ in range(2):
        started = time.monotonic()
        completed = subprocess.run([str(lab.VENV_BIN / "ansible-inventory"), "-i", str(config), "--list"],
                                   capture_output=True, text=True, env=env, timeout=600)
        timings.append(round(time.monotonic() - started, 2))
        assert completed.returncode == 0, completed.stderr[-3000:]
        listings.append(json.loads(completed.stdout))
    hostvars = listings[0]["_meta"]["hostvars"]
    mine = sorted(host for host in hostvars if host.startswith(prefix))
    assert mine == [f"{prefix}{index:04d}" for index in range(total)], "lost or extra hosts"
    ids = [json.dumps(hostvars[host], sort_keys=True) for host in mine]
    assert len(set(ids)) == total, "two hosts with the same facts"
    assert listings[0] == listings[1], "a second listing of an unchanged node differs"
    record_property("inventory_hosts", total)
    record_property("scale", SCALE)
    record_property("seed_seconds", round(seeding, 1))
    record_property("listing_seconds", timings)
    record_property("duplicates", 0)
