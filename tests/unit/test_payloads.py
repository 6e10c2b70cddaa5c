"""What Ansible packs into each module's payload: the backend of the task's node only (the collection's action
plugin picks it), every backend when the node's type is not one we know, and the image code only where image
methods run (virt_image, virt_image_info). Built with ansible-core's own packer, and through a real `ansible` run."""

import base64
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import COLLECTIONS, ROOT

from ansible_collections.oneclickvirt.virt.plugins.plugin_utils.payload import (
    backends_of, payload_name, payload_source)

PACK = """
import json, os, sys
from ansible.executor import module_common
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar
init_plugin_loader()
wrappers = {}
for path in sys.argv[1:]:
    name = path.rsplit("/", 1)[-1][:-3]
    built = module_common.modify_module(
        module_name=name, module_path=path, module_args=json.loads(os.environ.get("PACK_ARGS", "{}")),
        templar=Templar(loader=DataLoader()), task_vars={"ansible_python_interpreter": sys.executable},
        module_compression="ZIP_DEFLATED")
    wrappers[name] = built.b_module_data.decode("utf-8", "replace")
print(json.dumps(wrappers))
"""

UTILS = "ansible_collections/oneclickvirt/virt/plugins/module_utils/"
BACKEND_FILES = {
    "docker": {"docker.py"},
    "lxd": {"lxd.py", "lxd_common.py"},
    "incus": {"incus.py", "lxd_common.py"},
    "proxmox": {"proxmox.py", "proxmox_images.py"},
}
ALL_BACKEND_FILES = set().union(*BACKEND_FILES.values())
IMAGE_CODE = {UTILS + "images.py", UTILS + "image_transfer.py"}


def zipped_files(wrapper):
    """The collection files in an AnsiballZ wrapper: its zip is the one long base64 literal in it."""
    data = max(re.findall(r"[A-Za-z0-9+/=]{200,}", wrapper), key=len)
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(data))) as archive:
        return {name for name in archive.namelist() if name.startswith("ansible_collections/")}


def backend_files(files):
    prefix = UTILS + "backends/"
    return {name[len(prefix):] for name in files if name.startswith(prefix)} - {"__init__.py", "base.py"}


def pack(paths, args=None):
    """{file stem: AnsiballZ wrapper} for module files, from Ansible's packer, in one process."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), PACK_ARGS=json.dumps(args or {}))
    completed = subprocess.run([sys.executable, "-c", PACK, *map(str, paths)], capture_output=True, text=True,
                               env=env, check=True)
    return json.loads(completed.stdout)


def packed_copies(tmp_path, module, backend_sets):
    """{backends: the collection files Ansible packs for the payload copy of `module` carrying them}."""
    source = (ROOT / "plugins" / "modules" / f"{module}.py").read_text()
    copies = {}
    for backends in backend_sets:
        copy = tmp_path / f"{payload_name(module, backends)}.py"
        copy.write_text(payload_source(source, backends))
        copies[copy.stem] = backends
    return {copies[name]: zipped_files(wrapper) for name, wrapper in pack(tmp_path / f"{name}.py"
                                                                          for name in copies).items()}


def test_a_node_type_picks_its_backend_and_anything_else_picks_all():
    assert backends_of({"type": "lxd", "name": "n"}) == ("lxd",)
    assert backends_of({"type": "proxmox"}) == ("proxmox",)
    everything = ("docker", "lxd", "incus", "proxmox")
    for node in ({"type": "dockr"}, {"type": "Docker"}, {}, None, "type=docker", {"type": ["docker"]}):
        assert backends_of(node) == everything, node


def test_the_copy_is_the_module_and_one_import_per_backend():
    source = "#!/usr/bin/python\n\ndef main():\n    pass\n\n\nif __name__ == '__main__':\n    main()\n"
    copy = payload_source(source, ("incus",))
    assert copy.startswith(source)
    added = copy[len(source):].strip().splitlines()
    assert added[1:] == ["from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends import incus"
                         "  # noqa: E402,F401"]
    assert payload_name("virt_exec", ("incus",)) == "oneclickvirt_payload_virt_exec_incus"
    assert payload_name("virt_exec", ("docker", "lxd")) == "oneclickvirt_payload_virt_exec_docker_lxd"


@pytest.mark.parametrize("module", ["virt_instance", "virt_exec", "virt_image", "virt_image_info",
                                    "virt_node_info", "virt_portmap"])
def test_each_payload_carries_the_node_backend_only(tmp_path, module):
    everything = ("docker", "lxd", "incus", "proxmox")
    packed = packed_copies(tmp_path, module, [(kind,) for kind in BACKEND_FILES] + [everything])
    for kind, expected in BACKEND_FILES.items():
        files = packed[(kind,)]
        assert backend_files(files) == expected, (module, kind)
        # Image code goes only where image methods run.
        assert (IMAGE_CODE <= files) == (module in ("virt_image", "virt_image_info")), (module, kind)
    assert backend_files(packed[everything]) == ALL_BACKEND_FILES


def test_no_module_names_a_backend_itself(tmp_path):
    """Were a module (or what it imports) to import a backend, every payload would carry it again."""
    copies = []
    for path in sorted((ROOT / "plugins" / "modules").glob("*.py")):
        copy = tmp_path / f"bare_{path.stem}.py"
        copy.write_text(path.read_text())
        copies.append(copy)
    wrappers = pack(copies)
    assert len(wrappers) == len(copies) == 9
    for name, wrapper in wrappers.items():
        assert backend_files(zipped_files(wrapper)) == set(), name


def test_every_module_has_the_action_that_packs_its_backend():
    modules = {path.stem for path in (ROOT / "plugins" / "modules").glob("*.py")}
    actions = {path.stem for path in (ROOT / "plugins" / "action").glob("*.py")}
    assert modules == actions
    for name in actions:
        assert "import BackendAction" in (ROOT / "plugins" / "action" / f"{name}.py").read_text(), name


def test_a_payload_without_the_backend_says_so(tmp_path):
    """Packed without the action (the bare module), the module fails with what is missing, not a traceback."""
    module = ROOT / "plugins" / "modules" / "virt_instance_info.py"
    copy = tmp_path / "bare_virt_instance_info.py"
    copy.write_text(module.read_text())
    args = {"node": {"name": "n1", "type": "docker", "api": {"url": "unix:///nowhere.sock"}}}
    packed = pack([copy], args)
    wrapper = tmp_path / "AnsiballZ_bare.py"
    wrapper.write_text(packed[copy.stem])
    # The payload runs outside the checkout, as on a node: nothing of the collection is importable but the zip.
    ran = subprocess.run([sys.executable, str(wrapper)], capture_output=True, text=True,
                         cwd=tmp_path, env={"PATH": os.environ["PATH"]}, timeout=60, check=False)
    result = json.loads(ran.stdout)
    assert result["failed"] is True
    assert "the docker backend is not in this module's payload" in result["msg"], result


def ansible(tmp_path, module, args, *extra):
    """One ad-hoc `ansible` run of a collection module on localhost, keeping the payload it sent."""
    remote_tmp = tmp_path / "remote"
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_KEEP_REMOTE_FILES="1",
               ANSIBLE_REMOTE_TMP=str(remote_tmp), ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_NOCOLOR="1",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="False", ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.oneline")
    completed = subprocess.run([str(Path(sys.executable).parent / "ansible"), "localhost", "-m",
                                f"oneclickvirt.virt.{module}", "-a", json.dumps(args), *extra],
                               capture_output=True, text=True, env=env, timeout=120, check=False)
    # The oneline callback prints the task's result as `localhost | STATUS => {json}`.
    line = [line for line in completed.stdout.splitlines() if line.startswith("localhost | ")][-1]
    head, body = line.split(" => ", 1)
    result = dict(json.loads(body), status=head.split(" | ")[1].rstrip("!"))
    kept = sorted(remote_tmp.glob("*/AnsiballZ_*.py"))
    return result, kept


def test_an_ansible_run_sends_the_node_backend_and_the_module_keeps_its_name(tmp_path):
    node = {"name": "n1", "type": "lxd", "execution_rule": "api_only",
            "api": {"url": f"unix://{tmp_path}/no-daemon.sock"}}
    result, kept = ansible(tmp_path / "lxd", "virt_instance_info", {"node": node})
    # The module ran with its backend loaded by name: it tried the node's socket.
    assert result["status"] == "FAILED" and "no-daemon.sock" in result["msg"], result
    assert [path.name for path in kept] == ["AnsiballZ_oneclickvirt_payload_virt_instance_info_lxd.py"]
    assert backend_files(zipped_files(kept[0].read_text())) == BACKEND_FILES["lxd"]

    # Its messages name the module as the user called it, not the payload copy.
    result, kept = ansible(tmp_path / "option", "virt_instance_info", {"node": node, "bogus": 1})
    assert result["status"] == "FAILED"
    assert "Unsupported parameters for (oneclickvirt.virt.virt_instance_info) module: bogus" in result["msg"]

    # A mistyped type: every backend travels, and the module says what is wrong before it touches anything.
    result, kept = ansible(tmp_path / "typo", "virt_instance_info", {"node": dict(node, type="lxc")})
    assert result["status"] == "FAILED" and "node" in result["msg"] and "lxc" in result["msg"], result
    assert backend_files(zipped_files(kept[0].read_text())) == ALL_BACKEND_FILES


def test_an_async_task_runs_through_the_same_copy(tmp_path):
    node = {"name": "n1", "type": "docker", "execution_rule": "api_only",
            "api": {"url": f"unix://{tmp_path}/no-daemon.sock"}}
    result, kept = ansible(tmp_path, "virt_instance_info", {"node": node}, "-B", "30", "-P", "1")
    assert result["status"] == "FAILED" and "no-daemon.sock" in result["msg"], result
    assert "AnsiballZ_oneclickvirt_payload_virt_instance_info_docker.py" in [path.name for path in kept]
