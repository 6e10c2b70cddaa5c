"""Plays as users write them: the action group in module_defaults, and the demo playbook."""

import json
import os
import subprocess
import sys

import yaml

from conftest import ROOT, VENV_BIN, _collections_path, free_port, run_playbook, unique


def test_module_defaults_action_group_sets_the_node_once(nodes, tmp_path):
    name = unique("t-group")
    playbook = f"""
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/oneclickvirt.virt.virt:
      node: {json.dumps(nodes["docker"])}
  tasks:
    - oneclickvirt.virt.virt_instance:
        name: {name}
        image: ocv-busybox
    - oneclickvirt.virt.virt_instance_info:
        name: {name}
      register: info
    - oneclickvirt.virt.virt_image_info:
      register: images
    - ansible.builtin.assert:
        that:
          - info.exists
          - info.instance.status == "running"
          - images.images | length > 0
    - oneclickvirt.virt.virt_instance:
        name: {name}
        state: absent
"""
    completed = run_playbook(playbook, tmp_path)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "failed=0" in completed.stdout


def test_demo_playbook_runs_on_the_lab():
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(_collections_path()), ANSIBLE_NOCOLOR="1")
    completed = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                                str(ROOT / "playbooks" / "demo.yml")], capture_output=True, text=True, env=env,
                               timeout=900)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "demo-docker: running" in completed.stdout


def test_demo_runs_on_the_simulator_alone_where_the_full_lab_cannot(tmp_path):
    """`make lab` without root or Debian starts only the Proxmox simulator (forced here with
    OCV_LAB_SIMULATOR_ONLY=1, on a port and in folders of the test's own); the demo then runs on it and says so."""
    port = free_port()
    nodes_file = tmp_path / "nodes.yml"
    env = dict(os.environ, OCV_LAB_SIMULATOR_ONLY="1", OCV_LAB_DIR=str(tmp_path / "lab"),
               OCV_NODES_FILE=str(nodes_file), OCV_PVESIM_PORT=str(port))
    lab = [sys.executable, str(ROOT / "lab" / "lab.py")]
    try:
        up = subprocess.run([*lab, "up"], capture_output=True, text=True, env=env, timeout=120)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "starting the Proxmox VE simulator alone" in up.stdout + up.stderr
        described = yaml.safe_load(nodes_file.read_text())
        assert list(described) == ["proxmox"] and described["proxmox"]["execution_rule"] == "api_only"
        assert "ssh" not in described["proxmox"] and str(port) in described["proxmox"]["api"]["url"]

        env["ANSIBLE_COLLECTIONS_PATH"], env["ANSIBLE_NOCOLOR"] = str(_collections_path()), "1"
        demo = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                               str(ROOT / "playbooks" / "demo.yml"), "-e", f"demo_dir={tmp_path / 'demo'}"],
                              capture_output=True, text=True, env=env, timeout=600)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        for line in ("the demo runs on it alone", "proxmox/demo-pve-ct: running, container",
                     "proxmox/demo-pve-vm: running, vm", "read over api", '"proxmox: healthy"'):
            assert line in demo.stdout, line
        assert "demo-docker" not in demo.stdout
        assert (tmp_path / "demo" / "health" / "health-report.html").exists()
    finally:
        down = subprocess.run([*lab, "down"], capture_output=True, text=True, env=env, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
