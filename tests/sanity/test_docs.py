"""The documentation: antsibull-docs lints it, the site builds with every guide, and the guides match the code."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / '.venv' / 'bin'
GUIDES = ROOT / 'docs' / 'docsite' / 'rst'
LABEL_PREFIX = '.. _ansible_collections.oneclickvirt.virt.docsite.'


def lint_env():
    # Only the collection under test: pytest-ansible may point the collections path at a mirror of the checkout.
    env = {name: value for name, value in os.environ.items() if not name.startswith('ANSIBLE_COLLECTIONS_')}
    env['PATH'] = f'{BIN}{os.pathsep}{env.get("PATH", "")}'
    return env


def lint(path, *options):
    return subprocess.run([str(BIN / 'antsibull-docs'), 'lint-collection-docs', *options, str(path)], cwd=path,
                          env=lint_env(), check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_antsibull_docs_lint_catches_a_broken_guide(tmp_path):
    # Proves the check can fail: a guide without the collection's label prefix and a toctree entry to nowhere.
    (tmp_path / 'galaxy.yml').write_text('namespace: oneclickvirt\nname: virt\nversion: 0.1.0\n')
    (tmp_path / 'docs' / 'docsite' / 'rst').mkdir(parents=True)
    (tmp_path / 'docs' / 'docsite' / 'rst' / 'guide.rst').write_text('.. _wrong_label:\n\nGuide\n=====\n')
    (tmp_path / 'docs' / 'docsite' / 'extra-docs.yml').write_text(
        'sections:\n  - title: Guides\n    toctree:\n      - guide\n      - missing\n')
    result = lint(tmp_path)
    assert result.returncode != 0, result.stdout
    assert 'wrong_label' in result.stdout and "'missing'" in result.stdout, result.stdout


def test_lint_passes_and_every_guide_is_in_the_built_site():
    """`make docs`: tools/docs.py first runs `antsibull-docs lint-collection-docs --plugin-docs .` on the checkout
    (and stops on a finding), then builds the site with Sphinx, warnings fatal, offline."""
    index = yaml.safe_load((ROOT / 'docs' / 'docsite' / 'extra-docs.yml').read_text(encoding='utf-8'))
    listed = [entry for section in index['sections'] for entry in section['toctree']]
    files = sorted(path.stem for path in GUIDES.glob('*.rst'))
    assert sorted(listed) == files, 'every guide in extra-docs.yml, and nothing else'
    for name in files:
        assert (GUIDES / f'{name}.rst').read_text(encoding='utf-8').startswith(f'{LABEL_PREFIX}{name}:\n'), name
    result = subprocess.run([sys.executable, str(ROOT / 'tools' / 'docs.py')], cwd=ROOT, env=lint_env(), check=False,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        pytest.fail(f'tools/docs.py (antsibull-docs lint, then the site) exited {result.returncode}\n'
                    f'{result.stdout[-6000:]}', pytrace=False)
    lint_step = re.search(r'^docs: \S*antsibull-docs lint-collection-docs --plugin-docs \.$', result.stdout, re.MULTILINE)
    assert lint_step and result.stdout.index('sphinx-build') > lint_step.end(), 'the lint ran, and passed, first'
    site = ROOT / 'build' / 'docs' / 'html' / 'collections' / 'oneclickvirt' / 'virt'
    for name in files:
        assert (site / 'docsite' / f'{name}.html').is_file(), name
    assert all(f'docsite/{name}.html' in (site / 'index.html').read_text(encoding='utf-8') for name in files)


def test_guides_match_the_code():
    """Environment variables, files and playbook paths named in the guides exist; every variable is documented."""
    node_source = (ROOT / 'plugins' / 'module_utils' / 'node.py').read_text(encoding='utf-8')
    fallbacks = {f'ONECLICKVIRT_{name}' for name in re.findall(r'_env\("([A-Z_]+)"\)', node_source)}
    assert len(fallbacks) >= 19
    texts = {path: path.read_text(encoding='utf-8') for path in list(GUIDES.glob('*.rst'))
             + list((ROOT / 'extensions' / 'awx').rglob('*.yml'))}
    for path, text in texts.items():
        for variable in set(re.findall(r'ONECLICKVIRT_[A-Z_]*[A-Z]\b', text)) - {'ONECLICKVIRT_NODES'}:
            assert variable in fallbacks, f'{path.name} names {variable}, which node.py does not read'
    node_guide = texts[GUIDES / 'guide_node.rst']
    assert not [variable for variable in fallbacks if variable not in node_guide], 'undocumented variables'
    for path, text in texts.items():
        for mentioned in re.findall(r'``((?:playbooks|extensions|plugins|tests|roles|docs|meta)/[\w./-]+?)``', text):
            if '<' not in mentioned:
                assert (ROOT / mentioned).exists(), f'{path.name} names {mentioned}, which does not exist'
