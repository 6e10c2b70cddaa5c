"""Build the collection tarball into build/ from a clean copy of the files git knows.

Prints the tarball's path as its last line (tests read it). Exit code is ansible-galaxy's.
Building from the copy rather than the checkout keeps venvs, lab state and anything else untracked out of
the tarball even where galaxy.yml's build_ignore has no pattern for it.
"""

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collection_tree import ROOT, copy_collection, venv_bin  # noqa: E402


def build():
    """Build and return the tarball path (or exit with ansible-galaxy's code)."""
    ansible_galaxy = venv_bin('2.19', 'ansible-galaxy')
    tree, file_count = copy_collection(ROOT / 'build' / 'collection')
    output = ROOT / 'build'
    result = subprocess.run(
        [str(ansible_galaxy), 'collection', 'build', '--force', '--output-path', str(output), str(tree)],
        check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    sys.stdout.write(result.stdout)
    if result.returncode != 0:
        sys.exit(result.returncode)
    # ansible-galaxy says "Created collection for oneclickvirt.virt at /path/oneclickvirt-virt-0.1.0.tar.gz".
    tarball = result.stdout.strip().splitlines()[-1].rsplit(' at ', 1)[-1]
    print(f'build: {file_count} files copied from the checkout')
    return Path(tarball)


if __name__ == '__main__':
    print(build())
