"""`molecule test -s instance` from extensions/: a role tested over SSH on a throwaway container that
oneclickvirt.virt.virt_instance creates (create.yml) and deletes (destroy.yml) on the lab's Docker node."""

import os
import re
import secrets
import subprocess

import pytest

from conftest import ROOT, VENV_BIN, _collections_path, docker_cli, lab_nodes


@pytest.fixture
def molecule_id():
    suffix = secrets.token_hex(3)
    yield suffix
    docker_cli("rm", "-f", f"mol-{suffix}", check=False)


def test_molecule_scenario_on_a_throwaway_instance(molecule_id, docker_events):
    lab_nodes()  # fails loudly when the lab is not up
    name = f"mol-{molecule_id}"
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(_collections_path()), OCV_MOLECULE_ID=molecule_id,
               PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", MOLECULE_REPORT="0", NO_COLOR="1",
               ANSIBLE_NOCOLOR="1")
    docker_events.start()
    completed = subprocess.run([str(VENV_BIN / "molecule"), "test", "-s", "instance"], cwd=ROOT / "extensions",
                               capture_output=True, text=True, env=env, timeout=600, check=False)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-6000:]
    for step in ("create", "converge", "idempotence", "verify", "destroy"):
        assert re.search(rf"instance\W+{step}\W+Executed: Successful", output), (step, output[-3000:])
    # The role ran over SSH on the instance itself, and changed nothing the second time.
    recaps = re.findall(rf"^{name}\s+: ok=\d+\s+changed=(\d+)", output, re.MULTILINE)
    assert recaps[:2] == ["1", "0"], output[-3000:]
    # The daemon saw the container made, started and removed; nothing is left.
    actions = [event["Action"] for event in docker_events.collect(name) if event.get("Type") == "container"]
    assert "create" in actions and "start" in actions and actions[-1] == "destroy", actions
    assert docker_cli("inspect", name, check=False).returncode != 0
