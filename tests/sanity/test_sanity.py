"""ansible-test sanity on every supported ansible-core line, through tools/sanity.py."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SANITY = ROOT / 'tools' / 'sanity.py'


@pytest.mark.parametrize('core', ['2.19', '2.18'])
def test_ansible_test_sanity(core):
    # Output is captured rather than streamed so that a failure shows exactly this core's run.
    result = subprocess.run([sys.executable, str(SANITY), core], cwd=ROOT, check=False,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors='replace')
    if result.returncode != 0:
        # The ERROR lines first, since pip's install chatter can bury them in the full output below.
        errors = [line for line in result.stdout.splitlines() if line.startswith(('ERROR:', 'FATAL:'))]
        pytest.fail(f'ansible-test sanity on ansible-core {core} exited {result.returncode}\n'
                    + '\n'.join(errors) + '\n\n--- full output ---\n' + result.stdout, pytrace=False)
