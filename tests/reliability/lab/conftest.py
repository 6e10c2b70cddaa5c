"""Reliability and security scenarios against the lab (issue 12): faults, bad input, secrets, load.

They are marked `reliability` and run only when asked for: `make reliability`, `pytest -m reliability
tests/reliability`, or OCV_RELIABILITY=1. The fast in-process subset lives one folder up
(tests/reliability/test_input_properties.py), where no conftest.py is: `make test` may list that file next to
tests/integration, whose modules import their own `conftest`, and a conftest.py loaded beside it would take
that module name.
"""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rel_lab import OwnSimulator  # noqa: E402

# Users have REQUESTS_CA_BUNDLE set on these machines; so do the tests (the integration conftest sets it too).
os.environ.setdefault("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")


def pytest_configure(config):
    config.addinivalue_line("markers", "reliability: a lab-bound reliability scenario; only in `make reliability`")
    config.addinivalue_line("markers", "load: a load scenario (50 instances, 200 mappings, 500 guests)")


def pytest_collection_modifyitems(config, items):
    """Marked scenarios are left out unless a marker expression or OCV_RELIABILITY=1 asks for them."""
    if config.getoption("-m") or os.environ.get("OCV_RELIABILITY") == "1":
        return
    here = Path(__file__).resolve().parent
    deselected = [item for item in items
                  if item.get_closest_marker("reliability") and Path(str(item.fspath)).resolve().parent == here]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]


@pytest.fixture(scope="module")
def own_sim(tmp_path_factory):
    """A Proxmox simulator of this module's own; killed (by its PID) afterwards."""
    sim = OwnSimulator(tmp_path_factory.mktemp("rel-pvesim"))
    sim.start()
    sim.faults(task_delay=0.05)
    yield sim
    sim.kill()
