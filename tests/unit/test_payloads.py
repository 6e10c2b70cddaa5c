"""What Ansible packs into each module's payload: every backend (the node's type is known only at run time), but the
image code only where image methods run (virt_image, virt_image_info). Built with ansible-core's own packer."""

import json
import os
import subprocess
import sys

from conftest import COLLECTIONS

PACK = """
import json, sys
from ansible.executor import module_common
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader, module_loader
from ansible.template import Templar
init_plugin_loader()
names = {}
for module in sys.argv[1:]:
    found = module_loader.find_plugin_with_context(module)
    built = module_common.modify_module(
        module_name=found.resolved_fqcn, module_path=found.plugin_resolved_path, module_args={},
        templar=Templar(loader=DataLoader()), task_vars={"ansible_python_interpreter": sys.executable},
        module_compression="ZIP_DEFLATED")
    names[module] = built.b_module_data.decode("utf-8", "replace")
print(json.dumps(names))
"""

UTILS = "ansible_collections/oneclickvirt/virt/plugins/module_utils/"


def packed_files(*modules):
    """{module: the collection files in its AnsiballZ zip}: the zip is base64 in the wrapper, read it back."""
    import base64
    import io
    import re
    import zipfile

    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS))
    completed = subprocess.run([sys.executable, "-c", PACK, *modules], capture_output=True, text=True, env=env,
                               check=True)
    files = {}
    for module, wrapper in json.loads(completed.stdout).items():
        data = re.search(r"zip_data='([A-Za-z0-9+/=]+)'", wrapper).group(1)
        with zipfile.ZipFile(io.BytesIO(base64.b64decode(data))) as archive:
            files[module] = {name for name in archive.namelist() if name.startswith("ansible_collections/")}
    return files


def test_image_code_is_packed_only_for_the_image_modules():
    names = ["oneclickvirt.virt.virt_instance", "oneclickvirt.virt.virt_exec", "oneclickvirt.virt.virt_image",
             "oneclickvirt.virt.virt_image_info"]
    files = packed_files(*names)
    image_code = {UTILS + "images.py", UTILS + "image_transfer.py"}
    for module in names:
        # Every backend travels with every module: the node's type is known only when the task runs.
        assert {UTILS + f"backends/{name}.py" for name in ("docker", "lxd", "incus", "proxmox")} <= files[module]
    assert not image_code & files["oneclickvirt.virt.virt_instance"]
    assert not image_code & files["oneclickvirt.virt.virt_exec"]
    assert image_code <= files["oneclickvirt.virt.virt_image"]
    assert image_code <= files["oneclickvirt.virt.virt_image_info"]
