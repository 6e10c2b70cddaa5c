"""ansible-lint (production profile, offline) through tools/lint.py: the project passes, a bad playbook fails."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = ROOT / 'tools' / 'lint.py'

# Four findings at once: unnamed play and task, short module name, shell without need or changed_when.
BAD_PLAYBOOK = """\
- hosts: localhost
  tasks:
    - shell: echo hello
"""


def run_lint(*paths):
    return subprocess.run([sys.executable, str(LINT), *map(str, paths)], cwd=ROOT, check=False,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors='replace')


def test_project_passes_ansible_lint():
    result = run_lint()
    if result.returncode != 0:
        pytest.fail(f'ansible-lint exited {result.returncode}\n{result.stdout}', pytrace=False)


def test_ansible_lint_reports_a_bad_playbook(tmp_path):
    # Proves the check can fail: the same configuration must reject a playbook with real findings.
    playbook = tmp_path / 'bad.yml'
    playbook.write_text(BAD_PLAYBOOK, encoding='utf-8')
    result = run_lint(playbook)
    assert result.returncode != 0, f'ansible-lint accepted a bad playbook:\n{result.stdout}'
    for rule in ('name[play]', 'fqcn[action-core]', 'no-changed-when'):
        assert rule in result.stdout, f'{rule} not reported:\n{result.stdout}'
