"""The lab's daemons are real and reachable the way the collection reaches them.

Each test fails (never skips) when the lab is down: run `make lab`.
"""

import os
import subprocess
import sys

import pytest

from conftest import COLLECTIONS, ROOT, _collections_path, lab_nodes

_collections_path()
sys.path.insert(0, str(COLLECTIONS))

from ansible_collections.oneclickvirt.virt.plugins.module_utils.node import validate_node_dict  # noqa: E402
from ansible_collections.oneclickvirt.virt.plugins.module_utils.transport.http import (  # noqa: E402
    HttpClient, open_socket)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.transport.ssh import (  # noqa: E402
    ChannelStream, SshTransport)


def node(name):
    return validate_node_dict(lab_nodes()[name])


def test_requests_ca_bundle_is_set_as_users_have_it():
    assert os.environ.get("REQUESTS_CA_BUNDLE"), "tests run with REQUESTS_CA_BUNDLE set"


def test_docker_over_its_socket_and_over_ssh():
    docker = node("docker")
    local = HttpClient(lambda: open_socket(docker.api.url, 10)).request("GET", "/version").json()
    ssh = SshTransport(docker.ssh)
    tunnelled = HttpClient(lambda: ChannelStream(ssh.open_channel(["docker", "system", "dial-stdio"])))
    try:
        remote = tunnelled.request("GET", "/version").json()
    finally:
        tunnelled.close()
        ssh.close()
    assert local["Version"] == remote["Version"]
    assert local["Version"].startswith("20.10")
    cli = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True)
    assert cli.stdout.strip() == local["Version"]


def test_ssh_command_execution_with_paramiko_and_strict_host_keys():
    docker = node("docker")
    assert docker.ssh.host_key_checking == "strict"
    ssh = SshTransport(docker.ssh)
    try:
        result = ssh.run(["sh", "-c", 'read line; echo "got:$line"; echo err >&2; exit 3'], stdin="hello world\n")
    finally:
        ssh.close()
    assert (result.rc, result.stdout, result.stderr) == (3, "got:hello world\n", "err\n")


@pytest.mark.parametrize("kind, socket_path", [("lxd", "/var/lib/lxd/unix.socket"),
                                               ("incus", "/var/lib/incus/unix.socket")])
def test_lxd_and_incus_over_unix_socket(kind, socket_path):
    import pylxd

    client = pylxd.Client(endpoint=socket_path)
    assert client.host_info["environment"]["server"] == kind
    assert client.host_info["auth"] == "trusted"
    assert any(alias["name"] == "ocv-busybox" for image in client.images.all() for alias in image.aliases)


@pytest.mark.parametrize("kind", ["lxd", "incus"])
def test_lxd_and_incus_over_https_with_the_client_certificate(kind):
    import pylxd

    from pylxd.client import get_session_for_url

    described = node(kind)
    session = get_session_for_url(described.api.url, verify=described.api.server_cert,
                                  cert=(described.api.client_cert, described.api.client_key))
    # requests would replace the pinned certificate with REQUESTS_CA_BUNDLE: the collection's choice must win.
    session.trust_env = False
    client = pylxd.Client(endpoint=described.api.url, session=session)
    assert client.trusted is True
    assert client.host_info["environment"]["server"] == kind


@pytest.mark.parametrize("kind", ["lxd", "incus"])
def test_requests_ca_bundle_trap_is_real(kind):
    """Why the collection must make its own TLS choice win: a session's pinned cert loses to the variable."""
    import requests

    described = node(kind)
    session = requests.Session()
    session.verify = described.api.server_cert
    session.cert = (described.api.client_cert, described.api.client_key)
    with pytest.raises(requests.exceptions.SSLError):
        session.get(f"{described.api.url}/1.0", timeout=10)
    session.trust_env = False
    assert session.get(f"{described.api.url}/1.0", timeout=10).json()["metadata"]["auth"] == "trusted"


def test_nodes_file_has_complete_descriptions():
    nodes = lab_nodes()
    assert {"docker", "lxd", "incus"} <= set(nodes)
    for name, description in nodes.items():
        assert description["name"] == name
        validate_node_dict(description)


def test_lab_is_a_quick_no_op_when_up():
    completed = subprocess.run([sys.executable.replace(".venv/bin/python", ".venv/bin/python"),
                                str(ROOT / "lab" / "lab.py"), "up"], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "started" not in completed.stdout and "installing" not in completed.stdout, completed.stdout
    assert "importing" not in completed.stdout and "initialising" not in completed.stdout
