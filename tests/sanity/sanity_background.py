"""A pytest plugin (pytest.ini loads it with `-p`): ansible-test sanity starts in the background as soon as
the run is collected.

Not a conftest.py: test modules of tests/integration import `conftest`, and a second conftest module loaded
after theirs would take that name.

It is minutes of CPU that need nothing of the lab, while the integration tests mostly wait on daemons: run
side by side, a whole `make test` is that much shorter. test_sanity.py then only waits for each result.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SANITY = ROOT / 'tools' / 'sanity.py'
_RUNS = {}


def pytest_collection_finish(session):
    if session.config.option.collectonly:
        return
    for item in session.items:
        callspec = getattr(item, 'callspec', None)
        if item.path.name == 'test_sanity.py' and callspec and 'core' in callspec.params:
            core = callspec.params['core']
            if core not in _RUNS:
                # tools/sanity.py takes a lock, so the cores still run one after the other.
                output = tempfile.TemporaryFile(mode='w+', encoding='utf-8', errors='replace')
                process = subprocess.Popen([sys.executable, str(SANITY), core], cwd=ROOT, stdout=output,
                                           stderr=subprocess.STDOUT)
                _RUNS[core] = (process, output)


@pytest.fixture(scope='session')
def sanity_run():
    """Wait for the background run of one core: (exit code, its whole output)."""
    def wait(core):
        process, output = _RUNS[core]
        returncode = process.wait()
        output.seek(0)
        return returncode, output.read()
    return wait


def pytest_sessionfinish(session):
    # A run cut short (a failure with -x, Ctrl-C) must not leave ansible-test running behind it.
    for process, dummy in _RUNS.values():
        if process.poll() is None:
            process.terminate()
