"""Packaging beyond the tarball: the changelog lints, the execution environment definition gives a build context
whose introspection finds the collection's Python and system requirements, and the examples ship."""

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / '.venv' / 'bin'


def run(command, cwd, env=None):
    return subprocess.run([str(part) for part in command], cwd=cwd, env=env, check=False, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def requirement_names(lines):
    names = set()
    for line in lines:
        line = line.split('#', 1)[0].strip()
        if line:
            names.add(line.split()[0].split('>')[0].split('=')[0].split('<')[0].lower())
    return names


@pytest.fixture(scope='module')
def tarball():
    result = run([sys.executable, ROOT / 'tools' / 'build.py'], ROOT)
    if result.returncode != 0:
        pytest.fail(f'tools/build.py exited {result.returncode}\n{result.stdout}', pytrace=False)
    return Path(result.stdout.strip().splitlines()[-1])


def test_changelog_lints():
    result = run([BIN / 'antsibull-changelog', 'lint'], ROOT)
    assert result.returncode == 0 and result.stdout.strip() == '', result.stdout
    fragment = yaml.safe_load((ROOT / 'changelogs' / 'fragments' / 'adoption.yml').read_text(encoding='utf-8'))
    assert fragment['minor_changes'], 'the adoption fragment lists the user-visible changes'


def test_changelog_lint_rejects_a_bad_fragment(tmp_path):
    # Proves the check can fail: the same configuration with one fragment in an unknown section.
    shutil.copytree(ROOT / 'changelogs', tmp_path / 'changelogs')
    shutil.copy(ROOT / 'galaxy.yml', tmp_path / 'galaxy.yml')
    (tmp_path / 'changelogs' / 'fragments' / 'bad.yml').write_text('new_stuff:\n  - something\n', encoding='utf-8')
    result = run([BIN / 'antsibull-changelog', 'lint'], tmp_path)
    assert result.returncode != 0 and 'bad.yml' in result.stdout, result.stdout


def test_execution_environment_build_context(tarball, tmp_path):
    """`ansible-builder create` with extensions/ee/execution-environment.yml, then the context's own introspection
    (what the image build runs) over the installed tarball: it must find requirements.txt and bindep.txt."""
    workdir = tmp_path / 'ee'
    workdir.mkdir()
    shutil.copy(ROOT / 'extensions' / 'ee' / 'execution-environment.yml', workdir)
    shutil.copy(tarball, workdir / 'oneclickvirt-virt.tar.gz')
    result = run([BIN / 'ansible-builder', 'create', '-f', 'execution-environment.yml', '-c', 'context',
                  '--output-filename', 'Containerfile'], workdir)
    assert result.returncode == 0, result.stdout
    context = workdir / 'context'
    containerfile = (context / 'Containerfile').read_text(encoding='utf-8')
    assert 'ansible-galaxy collection install' in containerfile and 'introspect' in containerfile
    assert 'ansible-core>=2.18,<2.20' in containerfile
    galaxy = yaml.safe_load((context / '_build' / 'requirements.yml').read_text(encoding='utf-8'))
    assert galaxy['collections'] == [{'name': 'collections/oneclickvirt-virt.tar.gz', 'type': 'file'}]
    assert (context / '_build' / 'collections' / 'oneclickvirt-virt.tar.gz').read_bytes() == tarball.read_bytes()

    # Install the tarball as the galaxy stage does, and introspect it as the builder stage does.
    collections = tmp_path / 'collections'
    env = {name: value for name, value in os.environ.items() if not name.startswith('ANSIBLE_COLLECTIONS_')}
    result = run([BIN / 'ansible-galaxy', 'collection', 'install', tarball, '-p', collections], tmp_path, env=env)
    assert result.returncode == 0, result.stdout
    pip_file, bindep_file = tmp_path / 'requirements.txt', tmp_path / 'bindep.txt'
    result = run([sys.executable, context / '_build' / 'scripts' / 'introspect.py', 'introspect', collections,
                  f'--write-pip={pip_file}', f'--write-bindep={bindep_file}'], tmp_path)
    assert result.returncode == 0, result.stdout
    wanted_python = requirement_names((ROOT / 'requirements.txt').read_text(encoding='utf-8').splitlines())
    assert wanted_python == {'paramiko'}
    assert requirement_names(pip_file.read_text(encoding='utf-8').splitlines()) >= wanted_python
    system = bindep_file.read_text(encoding='utf-8')
    assert 'openssh-client [platform:dpkg]' in system and 'openssh-clients [platform:rpm]' in system


def test_examples_and_guides_ship(tarball):
    with tarfile.open(tarball) as archive:
        names = set(archive.getnames())
    for path in ('playbooks/provision.yml', 'playbooks/rotate_passwords.yml', 'playbooks/expose.yml',
                 'playbooks/health.yml', 'playbooks/teardown.yml', 'playbooks/vars/fleet.yml',
                 'extensions/awx/credential_types/node_ssh.yml', 'extensions/awx/credential_types/lxd_client_cert.yml',
                 'extensions/awx/credential_types/proxmox_token.yml', 'extensions/ee/execution-environment.yml',
                 'extensions/molecule/instance/molecule.yml', 'docs/docsite/extra-docs.yml',
                 'docs/docsite/rst/guide_backend.rst', 'meta/execution-environment.yml', 'requirements.txt',
                 'bindep.txt'):
        assert path in names, f'{path} does not ship'
    assert not [name for name in names if name.startswith('tests/integration/')]
