"""Plays as users write them: the action group in module_defaults, and the demo playbook."""

import json
import os
import subprocess

from conftest import ROOT, VENV_BIN, _collections_path, run_playbook, unique


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
