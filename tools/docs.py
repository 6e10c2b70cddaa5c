"""Build the HTML docs site into build/docs/html with antsibull-docs and Sphinx, and lint the collection's docs.

Steps:
1. ``antsibull-docs lint-collection-docs --plugin-docs .`` in the checkout: plugin and role docs, extra docs
   (docs/docsite/);
then, on a clean copy of the files git knows (as the tarball is built from):
2. ``antsibull-docs sphinx-init --use-current`` writes a Sphinx project into build/docs;
3. ``antsibull-docs collection`` renders RST for the collection, ``sphinx-build`` turns it into HTML, warnings fatal.
Guides belong in docs/docsite/rst/ and are listed in docs/docsite/extra-docs.yml: antsibull-docs picks them up.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collection_tree import FQCN, ROOT, copy_collection, venv_bin  # noqa: E402

DOCS = ROOT / 'build' / 'docs'
DOC_REQUIREMENTS = ROOT / 'requirements' / 'docs.txt'

# Appended to the generated conf.py. The build runs without internet: intersphinx would try to download the
# Python, Jinja and Ansible inventories and fail (a warning, fatal under -W). Without them, references into the
# Ansible docsite (its configuration and action plugin pages, other collections' plugins) cannot resolve: those,
# and only those, are let through; a broken reference inside this collection's own docs still fails the build.
CONF_OVERRIDES = '''
# Added by tools/docs.py: the build works offline, without intersphinx inventories.
intersphinx_mapping = {}
nitpick_ignore_regex = [
    ('std:ref', r'ansible_configuration_settings'),
    ('std:ref', r'common_return_values'),
    ('std:ref', r'action_plugins'),
    ('std:envvar', r'ANSIBLE_.*'),
    ('std:ref', r'ansible_collections\\.(?!oneclickvirt\\.virt\\.).*'),
]
'''


def run(command, **kwargs):
    print(f'docs: {" ".join(map(str, command))}', flush=True)
    result = subprocess.run(list(map(str, command)), check=False, **kwargs)
    if result.returncode != 0:
        sys.exit(result.returncode)


def ensure_doc_requirements(python):
    """Install requirements/docs.txt into the venv when one of its pins is missing."""
    pins = [line.split('#', 1)[0].strip() for line in DOC_REQUIREMENTS.read_text(encoding='utf-8').splitlines()]
    pins = [pin for pin in pins if pin]
    check = ('import importlib.metadata as m, sys\n'
             'def has(pin):\n'
             '    name, version = pin.split("==")\n'
             '    try:\n'
             '        return m.version(name) == version\n'
             '    except m.PackageNotFoundError:\n'
             '        return False\n'
             'sys.exit(0 if all(has(pin) for pin in sys.argv[1:]) else 1)\n')
    if subprocess.run([str(python), '-c', check, *pins], check=False).returncode != 0:
        run([python, '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '-r', DOC_REQUIREMENTS])


def main():
    python = venv_bin('2.19', 'python')
    bindir = python.parent
    ensure_doc_requirements(python)

    tree = copy_collection(ROOT / 'build' / 'docs-collections')[0]
    env = {name: value for name, value in os.environ.items() if not name.startswith('ANSIBLE_COLLECTIONS_')}
    # Only the clean copy is the collection (pytest-ansible may have pointed this at the checkout's mirror).
    env.update(ANSIBLE_COLLECTIONS_PATH=str(tree.parents[2]), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH='false',
               PATH=f'{bindir}{os.pathsep}{os.environ.get("PATH", "")}')

    # On the checkout itself: antsibull-docs copies the files git knows to a temporary tree of its own (in the
    # clean copy, which lies in the git-ignored build/, git would know no files and the lint would see none).
    run([bindir / 'antsibull-docs', 'lint-collection-docs', '--plugin-docs', '.'], cwd=ROOT, env=env)

    shutil.rmtree(DOCS, ignore_errors=True)
    # antsibull-docs refuses a destination that others can write to.
    DOCS.mkdir(parents=True, mode=0o755)
    os.chmod(DOCS, 0o755)
    run([bindir / 'antsibull-docs', 'sphinx-init', '--use-current', '--fail-on-error', '--dest-dir', DOCS,
         '--project', FQCN, '--copyright', 'oneclickvirt contributors',
         '--title', f'{FQCN} documentation', '--html-short-title', FQCN, FQCN], cwd=DOCS, env=env)
    with open(DOCS / 'conf.py', 'a', encoding='utf-8') as conf:
        conf.write(CONF_OVERRIDES)

    # What the generated build.sh does, with the HTML going to build/docs/html instead of build/docs/build/html.
    rst = DOCS / 'rst'
    rst.mkdir(mode=0o755, exist_ok=True)
    os.chmod(rst, 0o755)
    run([bindir / 'antsibull-docs', '--config-file', DOCS / 'antsibull-docs.cfg', 'collection', '--use-current',
         '--fail-on-error', '--cleanup', 'everything', '--dest-dir', rst, FQCN], cwd=DOCS, env=env)
    run([bindir / 'sphinx-build', '-M', 'html', rst, DOCS, '-c', DOCS, '-W', '--keep-going', '-q'], cwd=DOCS, env=env)
    print(f'docs: site at {DOCS / "html" / "index.html"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
