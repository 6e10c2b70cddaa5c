"""Shared helpers for the tools: the repository root and a clean copy of the collection.

ansible-test and ansible-galaxy both want the collection inside a real
``ansible_collections/<namespace>/<name>`` folder (ansible-test resolves symlinks and then finds no
``ansible_collections`` parent). A plain copy of the checkout would drag in the venvs, the lab state and
build output, so only the files git knows (tracked, plus untracked but not ignored) are copied.
"""

import fnmatch
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


def build_ignore_patterns():
    """The `build_ignore` list of galaxy.yml: what never ships in the collection tarball."""
    import yaml

    return yaml.safe_load((ROOT / 'galaxy.yml').read_text()).get('build_ignore') or []


def ignored(path, patterns):
    """As ansible-galaxy reads build_ignore: a pattern matches the path or any folder above it."""
    parts = path.split('/')
    candidates = ['/'.join(parts[:depth]) for depth in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatch(candidate, pattern) for candidate in candidates for pattern in patterns)


def known_files():
    """Relative paths of the files that ship: git knows them (tracked, or untracked but not ignored), they exist
    on disk, and galaxy.yml's build_ignore keeps them in. Sanity, docs and the tarball all see this same set."""
    listing = subprocess.run(
        ['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode('utf-8', 'surrogateescape')
    # A tracked file deleted in the work tree is still listed by --cached: skip it, the copy mirrors the disk.
    paths = sorted({path for path in listing.split('\0') if path})
    # .gitignore stays in every copy: ansible-test reads it to leave tests/output (its own venvs) alone.
    patterns = [pattern for pattern in build_ignore_patterns() if pattern != '.gitignore']
    return [path for path in paths if os.path.lexists(ROOT / path) and not ignored(path, patterns)]


def copy_collection(base):
    """Copy the files git knows into ``base/ansible_collections/oneclickvirt/virt``; return (folder, file count).

    The folder is wiped first, so files deleted from the checkout do not linger.
    """
    tree = Path(base) / 'ansible_collections' / NAMESPACE / NAME
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    files = known_files()
    for relative in files:
        target = tree / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        # follow_symlinks=False keeps a symlink a symlink, as git would check it out.
        shutil.copy2(ROOT / relative, target, follow_symlinks=False)
    return tree, len(files)
