"""The collection tarball: builds, installs into an empty collections path, and carries what Galaxy needs."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / '.venv' / 'bin'
# Development and machine state that must never ship (see build_ignore in galaxy.yml).
FORBIDDEN = ('.venv', '.venv-2.18', '.venv-peers', '.lab', '.git', 'build', 'tests/output', 'benchmarks/results')


def clean_env(collections_path):
    """The environment with only ``collections_path`` as collections path.

    pytest-ansible points ANSIBLE_COLLECTIONS_PATH at the checkout; with it, ansible-galaxy would find the
    collection "already installed" and ansible-doc would read the checkout instead of the tarball's content.
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith('ANSIBLE_COLLECTIONS_')}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(collections_path), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH='false')
    return env


@pytest.fixture(scope='module')
def tarball():
    result = subprocess.run([sys.executable, str(ROOT / 'tools' / 'build.py')], cwd=ROOT, check=False,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        pytest.fail(f'tools/build.py exited {result.returncode}\n{result.stdout}', pytrace=False)
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.is_file(), result.stdout
    return path


@pytest.fixture(scope='module')
def installed(tarball, tmp_path_factory):
    collections = tmp_path_factory.mktemp('collections')
    result = subprocess.run([str(BIN / 'ansible-galaxy'), 'collection', 'install', str(tarball), '-p', str(collections)],
                            cwd=collections, env=clean_env(collections), check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert result.returncode == 0, result.stdout
    return collections


def test_tarball_holds_no_development_state(tarball):
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
    leaked = [name for name in names
              if any(name == prefix or name.startswith(prefix + '/') for prefix in FORBIDDEN)]
    assert not leaked, f'{tarball.name} ships development state: {leaked[:20]}'


def test_installed_tree_has_galaxy_metadata(installed):
    galaxy = yaml.safe_load((ROOT / 'galaxy.yml').read_text(encoding='utf-8'))
    tree = installed / 'ansible_collections' / 'oneclickvirt' / 'virt'
    manifest = json.loads((tree / 'MANIFEST.json').read_text(encoding='utf-8'))['collection_info']
    assert (manifest['namespace'], manifest['name'], manifest['version']) == \
        ('oneclickvirt', 'virt', galaxy['version'])
    assert manifest['dependencies'] == {}
    assert (tree / 'FILES.json').is_file()
    runtime = yaml.safe_load((tree / 'meta' / 'runtime.yml').read_text(encoding='utf-8'))
    assert runtime['requires_ansible'] == '>=2.18.0'
    assert 'virt' in runtime['action_groups']


def test_installed_modules_have_docs(installed):
    tree = installed / 'ansible_collections' / 'oneclickvirt' / 'virt'
    modules = sorted(path.stem for path in (tree / 'plugins' / 'modules').glob('*.py') if path.stem != '__init__')
    checkout_modules = sorted(path.stem for path in (ROOT / 'plugins' / 'modules').glob('*.py') if path.stem != '__init__')
    assert modules == checkout_modules, 'the tarball and the checkout have different modules'
    # Only the installed copy may answer (and cwd is the temporary folder: no adjacent collections either).
    env = clean_env(installed)
    failures = []
    for module in modules:
        result = subprocess.run([str(BIN / 'ansible-doc'), f'oneclickvirt.virt.{module}'], cwd=installed, env=env,
                                check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0 or f'oneclickvirt.virt.{module}' not in result.stdout or 'OPTIONS' not in result.stdout:
            failures.append(f'ansible-doc oneclickvirt.virt.{module} (exit {result.returncode}):\n{result.stdout}')
    assert not failures, '\n'.join(failures)


def test_action_group_lists_every_module(installed):
    # DESIGN: `group/oneclickvirt.virt.virt` holds all modules, so module_defaults sets the node once per play.
    tree = installed / 'ansible_collections' / 'oneclickvirt' / 'virt'
    modules = {path.stem for path in (tree / 'plugins' / 'modules').glob('*.py') if path.stem != '__init__'}
    runtime = yaml.safe_load((tree / 'meta' / 'runtime.yml').read_text(encoding='utf-8'))
    grouped = {name.rsplit('.', 1)[-1] for name in runtime['action_groups']['virt'] if isinstance(name, str)}
    assert grouped == modules, f'missing from the action group: {sorted(modules - grouped)}; ' \
                               f'not a module: {sorted(grouped - modules)}'
