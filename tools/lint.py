"""Run ansible-lint (production profile, offline) over the collection's playbooks, roles and examples.

``tools/lint.py`` lints roles/, playbooks/, examples/ and the example content under extensions/ (those that
exist); ``tools/lint.py PATH...`` lints the given paths with the same configuration. Exit code is ansible-lint's:
non-zero on any finding.
"""

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collection_tree import NAME, NAMESPACE, ROOT, venv_bin  # noqa: E402

DEFAULT_TARGETS = ('roles', 'playbooks', 'examples',
                   # Example content users copy (AWX, execution environment, molecule): it must pass the same profile.
                   'extensions/awx', 'extensions/ee', 'extensions/molecule/instance')


def collections_path():
    """A collections path in which ``oneclickvirt.virt`` is this checkout.

    Offline, ansible-lint does not install the collection it runs in, so without this every
    ``oneclickvirt.virt.*`` module in a playbook would fail syntax-check as unknown. A symlink is enough
    here (ansible's loader follows it; only ansible-test insists on a real folder).
    """
    base = ROOT / 'build' / 'lint' / 'collections'
    link = base / 'ansible_collections' / NAMESPACE / NAME
    link.parent.mkdir(parents=True, exist_ok=True)
    if not (link.is_symlink() and link.resolve() == ROOT):
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(ROOT, target_is_directory=True)
    return base


def main():
    ansible_lint = venv_bin('2.19', 'ansible-lint')
    targets = sys.argv[1:] or [name for name in DEFAULT_TARGETS if (ROOT / name).is_dir()]
    env = dict(os.environ)
    # ansible-lint wants its own venv's bin first on PATH (it warns and rewrites PATH otherwise), so that the
    # ansible-playbook it runs for syntax-check is the one that belongs to it.
    env['PATH'] = f'{ansible_lint.parent}{os.pathsep}{env.get("PATH", "")}'
    env['ANSIBLE_COLLECTIONS_PATH'] = os.pathsep.join(
        [str(collections_path())] + [path for path in [env.get('ANSIBLE_COLLECTIONS_PATH')] if path])
    command = [str(ansible_lint), '--config-file', str(ROOT / '.ansible-lint'), '--project-dir', str(ROOT),
               '--offline', '--profile', 'production']
    if not sys.stdout.isatty():
        command.append('--nocolor')
    command += targets
    print(f'lint: {" ".join(command)}', flush=True)
    if not targets:
        print('lint: nothing to lint yet (no roles/, playbooks/ or examples/)')
        return 0
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


if __name__ == '__main__':
    sys.exit(main())
