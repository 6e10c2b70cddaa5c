"""Shared helpers for the tools: the repository root and a clean copy of the collection.

ansible-test and ansible-galaxy both want the collection inside a real
``ansible_collections/<namespace>/<name>`` folder (ansible-test resolves symlinks and then finds no
``ansible_collections`` parent). A plain copy of the checkout would drag in the venvs, the lab state and
build output, so only the files git knows (tracked, plus untracked but not ignored) are copied.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = 'oneclickvirt'
NAME = 'virt'
FQCN = f'{NAMESPACE}.{NAME}'

# Which venv (created by `make venv`) holds which ansible-core line.
CORE_VENVS = {
    '2.19': ROOT / '.venv',
    '2.18': ROOT / '.venv-2.18',
}


def venv_bin(core, tool):
    """Path of a console script in the venv of one ansible-core line."""
    if core not in CORE_VENVS:
        sys.exit(f'unknown ansible-core line {core!r}; known: {", ".join(sorted(CORE_VENVS))}')
    path = CORE_VENVS[core] / 'bin' / tool
    if not path.exists():
        sys.exit(f'{path} is missing: run `make venv` first')
    return path


def known_files():
    """Relative paths of the files git knows: tracked and untracked-but-not-ignored, that exist on disk."""
    listing = subprocess.run(
        ['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode('utf-8', 'surrogateescape')
    # A tracked file deleted in the work tree is still listed by --cached: skip it, the copy mirrors the disk.
    paths = sorted({path for path in listing.split('\0') if path})
    return [path for path in paths if os.path.lexists(ROOT / path)]


def copy_collection(base, keep=()):
    """Copy the files git knows into ``base/ansible_collections/oneclickvirt/virt`` and return that folder.

    The folder is wiped first, so files deleted from the checkout do not linger. Paths in ``keep``
    (relative to the collection folder) survive the wipe: they hold caches that belong to the copy,
    not to the checkout.
    """
    tree = Path(base) / 'ansible_collections' / NAMESPACE / NAME
    saved = Path(base) / '.keep'
    shutil.rmtree(saved, ignore_errors=True)
    for relative in keep:
        if (tree / relative).exists():
            (saved / relative).parent.mkdir(parents=True, exist_ok=True)
            os.rename(tree / relative, saved / relative)
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    files = known_files()
    for relative in files:
        source = ROOT / relative
        target = tree / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        # symlinks=True keeps a symlink a symlink, so the copy is what git would check out.
        shutil.copy2(source, target, follow_symlinks=False)
    for relative in keep:
        if (saved / relative).exists():
            (tree / relative).parent.mkdir(parents=True, exist_ok=True)
            os.rename(saved / relative, tree / relative)
    shutil.rmtree(saved, ignore_errors=True)
    return tree, len(files)
