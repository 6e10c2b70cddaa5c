"""Shared fixtures for the integration tests: the lab's nodes, and running the collection's modules for real.

Modules run in a subprocess exactly as Ansible runs them on a host (ANSIBLE_MODULE_ARGS in a file), from a
collections path that points at this checkout. Playbook runs go through ansible-playbook itself.
"""

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LAB_DIR = Path(os.environ.get("OCV_LAB_DIR", "/var/lib/oneclickvirt-lab"))
COLLECTIONS = ROOT / "tests" / "output" / "collections"
VENV_BIN = Path(sys.executable).parent

# Users have REQUESTS_CA_BUNDLE set on these machines; so do the tests.
os.environ.setdefault("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")


def _collections_path():
    link = COLLECTIONS / "ansible_collections" / "oneclickvirt" / "virt"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(ROOT)
    return COLLECTIONS


def lab_nodes():
    path = ROOT / ".lab" / "nodes.yml"
    if not path.exists():
        pytest.fail(f"{path} is missing: the lab is not up (run `make lab`)", pytrace=False)
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="session")
def nodes():
    return lab_nodes()


def node_with(node, **changes):
    """A copy of a node description with some keys replaced (nested dicts merged one level deep)."""
    result = json.loads(json.dumps(node))
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key].update(value)
        else:
            result[key] = value
    return result


def free_port():
    """A TCP port on loopback that nothing listens on (at the moment of asking)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_port(port, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {seconds}s")


def unique(prefix):
    return f"{prefix}-{secrets.token_hex(3)}"


def run_module(module, args, check=False, diff=True, env=None):
    """Run one module of the collection as Ansible would, and return its JSON result."""
    collections = _collections_path()
    payload = dict(args, _ansible_check_mode=check, _ansible_diff=diff, _ansible_remote_tmp="/tmp",
                   _ansible_keep_remote_files=False, _ansible_tmpdir=None)
    args_file = ROOT / "tests" / "output" / f"args-{secrets.token_hex(4)}.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": payload}))
    args_file.chmod(0o600)
    process_env = dict(os.environ, PYTHONPATH=str(collections), **(env or {}))
    try:
        completed = subprocess.run(
            [sys.executable, "-m", f"ansible_collections.oneclickvirt.virt.plugins.modules.{module}", str(args_file)],
            capture_output=True, text=True, env=process_env, timeout=600)
    finally:
        args_file.unlink()
    output = completed.stdout.strip().splitlines()
    try:
        result = json.loads(output[-1] if output else "")
    except ValueError:
        raise AssertionError(f"{module} printed no JSON result.\nstdout:\n{completed.stdout}\nstderr:\n{completed.stderr}")
    result["_stderr"] = completed.stderr
    return result


def run_playbook(text, tmp_path, extra_args=(), env=None):
    """Run a playbook with ansible-playbook; returns the CompletedProcess (stdout holds the whole output)."""
    collections = _collections_path()
    playbook = tmp_path / f"play-{secrets.token_hex(3)}.yml"
    playbook.write_text(text)
    process_env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_FORCE_COLOR="0",
                       ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="False",
                       ANSIBLE_INVENTORY_UNPARSED_WARNING="False", ANSIBLE_PYTHON_INTERPRETER=sys.executable,
                       **(env or {}))
    return subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", *extra_args,
                           str(playbook)], capture_output=True, text=True, env=process_env, timeout=900)


class DockerEvents:
    """Events the Docker daemon itself emitted in a time window (`docker events`), not what we think we sent."""

    def __init__(self):
        self.since = None

    def start(self):
        time.sleep(0.01)
        self.since = time.time()
        time.sleep(0.01)

    def collect(self, name=None):
        until = time.time() + 0.2
        time.sleep(0.3)
        completed = subprocess.run(["docker", "events", "--since", f"{self.since:.3f}", "--until", f"{until:.3f}",
                                    "--format", "{{json .}}"], capture_output=True, text=True, timeout=60, check=True)
        events = [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]
        if name is not None:
            events = [event for event in events
                      if (event.get("Actor", {}).get("Attributes", {}) or {}).get("name") == name]
        return events


@pytest.fixture
def docker_events():
    return DockerEvents()


def docker_cli(*args, check=True):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=120)


@pytest.fixture
def docker_name():
    """A fresh container name, removed after the test whatever happened."""
    name = unique("t-docker")
    yield name
    docker_cli("rm", "-f", name, check=False)


def pytest_collection_modifyitems(items):
    """The Proxmox conformance test checks every request of the whole run, so it runs last."""
    last = [item for item in items if "conformance" in item.nodeid]
    items[:] = [item for item in items if item not in last] + last
