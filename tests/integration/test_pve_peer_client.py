"""A client we did not write drives the Proxmox simulator: community.proxmox from the `ansible` 12.3.0
package, in a venv of its own (.venv-peers, made by tools/peers_venv.py).

proxmox_kvm and proxmox (LXC) create, start, stop and delete a VM and a container; in between, the peer
`community.proxmox.proxmox` inventory plugin must list both. If the simulator and our own code agreed on
a mistake, this is where a third party would disagree. Every request they make is also checked against
the official schema by test_pve_conformance.py.

The peers get the simulator's certificate the way users give it to them: validate_certs true, with
REQUESTS_CA_BUNDLE pointing at the CA file (proxmoxer and the inventory plugin verify through requests).
"""
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import peers_venv  # noqa: E402  (tools/peers_venv.py)

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars:
    auth: &auth
      api_host: 127.0.0.1
      api_port: 8006
      api_user: "{{ pve_user }}"
      api_token_id: "{{ pve_token_name }}"
      api_token_secret: "{{ pve_token_secret }}"
      validate_certs: true
  tasks:
    - name: VM present
      community.proxmox.proxmox_kvm:
        <<: *auth
        node: pve
        name: "{{ vm_name }}"
        cores: 1
        memory: 512
        scsi:
          scsi0: "local-lvm:2"
        net:
          net0: "virtio,bridge=vmbr0"
        agent: "1"
        state: present
        timeout: 60
      register: vm
    - name: container present
      community.proxmox.proxmox:
        <<: *auth
        node: pve
        hostname: "{{ ct_name }}"
        ostemplate: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
        disk_volume:
          storage: local-lvm
          size: 2
        cores: 1
        memory: 256
        swap: 256
        netif:
          net0: "name=eth0,bridge=vmbr0,ip=dhcp,ip6=auto"
        password: "{{ ct_password }}"
        unprivileged: true
        state: present
        timeout: 60
      register: ct
    - name: VM started
      community.proxmox.proxmox_kvm:
        <<: *auth
        name: "{{ vm_name }}"
        state: started
        timeout: 60
    - name: container started
      community.proxmox.proxmox:
        <<: *auth
        hostname: "{{ ct_name }}"
        state: started
        timeout: 60
    - name: second run changes nothing
      community.proxmox.proxmox_kvm:
        <<: *auth
        name: "{{ vm_name }}"
        state: started
      register: again
    - name: record what the peers created
      ansible.builtin.copy:
        content: "{{ {'vmid': vm.vmid, 'ctid': ct.vmid, 'again_changed': again.changed} | to_json }}"
        dest: "{{ result_file }}"
"""

TEARDOWN = """
- hosts: localhost
  gather_facts: false
  vars:
    auth: &auth
      api_host: 127.0.0.1
      api_port: 8006
      api_user: "{{ pve_user }}"
      api_token_id: "{{ pve_token_name }}"
      api_token_secret: "{{ pve_token_secret }}"
      validate_certs: true
  tasks:
    - name: VM stopped
      community.proxmox.proxmox_kvm:
        <<: *auth
        name: "{{ vm_name }}"
        state: stopped
        timeout: 60
    - name: container stopped
      community.proxmox.proxmox:
        <<: *auth
        hostname: "{{ ct_name }}"
        state: stopped
        timeout: 60
    - name: VM absent
      community.proxmox.proxmox_kvm:
        <<: *auth
        name: "{{ vm_name }}"
        state: absent
        timeout: 60
    - name: container absent
      community.proxmox.proxmox:
        <<: *auth
        vmid: "{{ ctid }}"
        state: absent
        timeout: 60
"""


def proxmox_node():
    nodes_file = ROOT / ".lab" / "nodes.yml"
    nodes = yaml.safe_load(nodes_file.read_text()) if nodes_file.exists() else {}
    node = (nodes or {}).get("proxmox")
    if node is None:
        pytest.fail("no node `proxmox` in .lab/nodes.yml: the Proxmox simulator is not up (run `make lab`)",
                    pytrace=False)
    return node


@pytest.fixture(scope="module")
def peer_bin():
    return peers_venv.ensure()


@pytest.fixture(scope="module")
def node():
    node = proxmox_node()
    try:
        requests.get(f"{node['api']['url']}/api2/json/version", verify=node["api"]["ca_file"], timeout=10)
    except requests.ConnectionError as error:
        pytest.fail(f"the Proxmox simulator does not answer: {error}", pytrace=False)
    return node


def peer_env(node, tmp_path, peer_bin):
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("ANSIBLE_", "PYTHON", "VIRTUAL_ENV"))}
    # The modules run on localhost with the peer venv's Python, where proxmoxer is installed.
    env.update({"REQUESTS_CA_BUNDLE": node["api"]["ca_file"], "ANSIBLE_PYTHON_INTERPRETER": str(peer_bin / "python"),
                "ANSIBLE_LOCALHOST_WARNING": "False", "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
                "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False", "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_HOME": str(tmp_path / "ansible-home"), "ANSIBLE_RETRY_FILES_ENABLED": "False"})
    return env


def run_peer(peer_bin, tool, args, env, tmp_path):
    completed = subprocess.run([str(peer_bin / tool), *args], capture_output=True, text=True, env=env, check=False,
                               cwd=tmp_path, timeout=900)
    assert completed.returncode == 0, f"{tool} failed:\n{completed.stdout}\n{completed.stderr}"
    return completed


def plain(value):
    """ansible-inventory marks untrusted strings as {"__ansible_unsafe": text}; the text is what we compare."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def api_get(node, path):
    answer = requests.get(f"{node['api']['url']}/api2/json{path}", verify=node["api"]["ca_file"], timeout=30,
                          headers={"Authorization": f"PVEAPIToken={node['api']['token_id']}={node['api']['token_secret']}"})
    return answer.status_code, answer.json().get("data")


def test_peer_modules_and_inventory_drive_the_simulator(peer_bin, node, tmp_path):
    user, token_name = node["api"]["token_id"].split("!")
    suffix = secrets.token_hex(3)
    variables = {"pve_user": user, "pve_token_name": token_name, "pve_token_secret": node["api"]["token_secret"],
                 "vm_name": f"peer-vm-{suffix}", "ct_name": f"peer-ct-{suffix}", "ct_password": secrets.token_urlsafe(12),
                 "result_file": str(tmp_path / "result.json")}
    # Secrets go in a file, never on a command line.
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(variables))
    vars_file.chmod(0o600)
    env = peer_env(node, tmp_path, peer_bin)
    (tmp_path / "up.yml").write_text(PLAYBOOK)
    (tmp_path / "down.yml").write_text(TEARDOWN)
    up = subprocess.run([str(peer_bin / "ansible-playbook"), "-i", "localhost,", "-c", "local", "-e", f"@{vars_file}",
                         "up.yml"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900, check=False)
    result = json.loads((tmp_path / "result.json").read_text()) if (tmp_path / "result.json").exists() else {}
    try:
        assert up.returncode == 0, f"peer playbook failed:\n{up.stdout}\n{up.stderr}"
        vmid, ctid = int(result["vmid"]), int(result["ctid"])
        assert result["again_changed"] is False, "the peer's second run must find the VM running"
        assert api_get(node, f"/nodes/pve/qemu/{vmid}/status/current")[1]["status"] == "running"
        assert api_get(node, f"/nodes/pve/lxc/{ctid}/status/current")[1]["status"] == "running"
        vm_config = api_get(node, f"/nodes/pve/qemu/{vmid}/config")[1]
        assert vm_config["name"] == variables["vm_name"] and vm_config["scsi0"].startswith("local-lvm:vm-")
        ct_config = api_get(node, f"/nodes/pve/lxc/{ctid}/config")[1]
        assert ct_config["hostname"] == variables["ct_name"] and ct_config["rootfs"].startswith("local-lvm:vm-")

        inventory = tmp_path / "sim.proxmox.yml"
        inventory.write_text(yaml.safe_dump({
            "plugin": "community.proxmox.proxmox", "url": node["api"]["url"], "user": user,
            "token_id": token_name, "token_secret": node["api"]["token_secret"], "validate_certs": True,
            "want_facts": True}))
        inventory.chmod(0o600)
        listed = run_peer(peer_bin, "ansible-inventory", ["-i", str(inventory), "--list"], env, tmp_path)
        hosts = plain(json.loads(listed.stdout)["_meta"]["hostvars"])
        assert variables["vm_name"] in hosts and variables["ct_name"] in hosts, sorted(hosts)
        assert hosts[variables["vm_name"]]["proxmox_vmid"] == vmid
        assert hosts[variables["ct_name"]]["proxmox_vmtype"] == "lxc"
        assert hosts[variables["ct_name"]]["proxmox_status"] == "running"
        eth0 = next(i for i in hosts[variables["ct_name"]]["proxmox_lxc_interfaces"] if i["name"] == "eth0")
        assert eth0["inet"].startswith("10.163.") and eth0["inet6"].startswith("fd42:4c58:163::")
    finally:
        down_vars = tmp_path / "down.json"
        down_vars.write_text(json.dumps({**variables, "ctid": result.get("ctid", 0)}))
        down_vars.chmod(0o600)
        down = subprocess.run([str(peer_bin / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                               "-e", f"@{down_vars}", "down.yml"], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=900, check=False)
    assert down.returncode == 0, f"peer teardown failed:\n{down.stdout}\n{down.stderr}"
    assert api_get(node, f"/nodes/pve/qemu/{vmid}/config")[0] == 500, "the peer's delete must remove the VM"
    assert api_get(node, f"/nodes/pve/lxc/{ctid}/config")[0] == 500, "the peer's delete must remove the container"
