"""The SSH and HTTP transports against the lab's real sshd and the real LXD HTTPS endpoint."""

import json
import sys

import pytest

from conftest import COLLECTIONS, LAB_DIR, _collections_path, lab_nodes, node_with, run_module, unique

_collections_path()
sys.path.insert(0, str(COLLECTIONS))

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import TransportError  # noqa: E402
from ansible_collections.oneclickvirt.virt.plugins.module_utils.node import validate_node_dict  # noqa: E402
from ansible_collections.oneclickvirt.virt.plugins.module_utils.transport.http import (  # noqa: E402
    HttpClient, open_socket, pem_fingerprint, tls_context)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.transport.ssh import SshTransport  # noqa: E402


def ssh_settings(tmp_path, mode, known_hosts_text=None):
    raw = node_with(lab_nodes()["docker"], ssh={"host_key_checking": mode})
    known_hosts = tmp_path / "known_hosts"
    if known_hosts_text is not None:
        known_hosts.write_text(known_hosts_text)
        raw["ssh"]["known_hosts_file"] = str(known_hosts)
    else:
        raw["ssh"]["known_hosts_file"] = str(known_hosts)
        known_hosts.write_text("")
    return validate_node_dict(raw).ssh, known_hosts


def test_strict_refuses_an_unknown_host_key(tmp_path):
    settings, _ = ssh_settings(tmp_path, "strict", "")
    with pytest.raises(TransportError, match="unknown"):
        SshTransport(settings).run(["true"])


def test_accept_new_records_then_refuses_a_changed_key(tmp_path):
    settings, known_hosts = ssh_settings(tmp_path, "accept_new", "")
    transport = SshTransport(settings)
    assert transport.run(["true"]).rc == 0
    transport.close()
    recorded = known_hosts.read_text()
    assert "[127.0.0.1]:2222 ssh-ed25519" in recorded
    # The same host with another key: a changed key is refused, never re-recorded.
    other_key = (LAB_DIR / "ssh" / "id_ed25519.pub").read_text().split()[1]
    known_hosts.write_text(f"[127.0.0.1]:2222 ssh-ed25519 {other_key}\n")
    with pytest.raises(TransportError, match="changed"):
        SshTransport(settings).run(["true"])
    assert known_hosts.read_text() == f"[127.0.0.1]:2222 ssh-ed25519 {other_key}\n"


def test_ignore_connects_and_warns(tmp_path):
    settings, _ = ssh_settings(tmp_path, "ignore", "")
    warnings = []
    transport = SshTransport(settings, warn=warnings.append)
    assert transport.run(["echo", "ok"]).stdout == "ok\n"
    transport.close()
    assert len(warnings) == 1 and "host key checking is off" in warnings[0]


@pytest.fixture
def own_ssh_key(tmp_path):
    """A key of this test's own, authorized on the lab node while the test runs: sshd logs each login with the
    key's fingerprint, so the test counts its own connections even while others use the node."""
    import subprocess

    key = tmp_path / "id_test"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    fingerprint = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], check=True, capture_output=True,
                                 text=True).stdout.split()[1]
    authorized = LAB_DIR / "ssh" / "authorized_keys"
    original = authorized.read_text()
    authorized.write_text(original + (tmp_path / "id_test.pub").read_text())
    yield key, fingerprint
    authorized.write_text(original)


def test_one_ssh_connection_per_module_run(nodes, own_ssh_key):
    key, fingerprint = own_ssh_key
    log = LAB_DIR / "logs" / "sshd.log"
    before = log.read_text().count(fingerprint)
    name = unique("t-onessh")
    node = node_with(nodes["docker"], execution_rule="ssh_only", ssh={"private_key_file": str(key)})
    try:
        result = run_module("virt_instance", {"node": node, "name": name, "image": "ocv-debian",
                                              "password": "S0me-pass-word", "ssh_authorized_keys": [
                                                  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL0cvlabkey000000000000000 x"]})
        assert result["changed"] is True and result["transport"] == "ssh", result
        assert result["actions"] == ["create", "start", "set password", "add ssh keys"]
        assert log.read_text().count(fingerprint) - before == 1, "every command of the run shares one connection"
    finally:
        run_module("virt_instance", {"node": node, "name": name, "state": "absent"})


def lxd_https():
    return validate_node_dict(lab_nodes()["lxd"]).api


def test_http_client_pins_the_server_certificate():
    api = lxd_https()
    context = tls_context(True, None, api.server_cert, api.client_cert, api.client_key)
    client = HttpClient(lambda: open_socket(api.url, 10, context, pem_fingerprint(api.server_cert)))
    assert client.request("GET", "/1.0").json()["metadata"]["auth"] == "trusted"
    client.close()


def test_http_client_refuses_a_wrong_pinned_certificate_before_sending():
    api = lxd_https()
    wrong = "/var/lib/incus/server.crt"
    context = tls_context(True, None, wrong, api.client_cert, api.client_key)
    client = HttpClient(lambda: open_socket(api.url, 10, context, pem_fingerprint(wrong)))
    with pytest.raises(TransportError, match="not the pinned") as error:
        client.request("POST", "/1.0/instances", body={"name": "never"})
    assert error.value.sent is False
    assert client.requests_sent == 0


def test_http_client_verifies_against_a_ca_file_and_the_system_store():
    api = lxd_https()
    # A CA file that signed the server's certificate (here the self-signed certificate itself) is accepted;
    # any other CA file, and the system store, refuse it.
    good = tls_context(True, api.server_cert, None, api.client_cert, api.client_key)
    assert HttpClient(lambda: open_socket(api.url, 10, good)).request("GET", "/1.0").status == 200
    other = tls_context(True, "/var/lib/incus/server.crt")
    with pytest.raises(TransportError, match="TLS"):
        HttpClient(lambda: open_socket(api.url, 10, other)).request("GET", "/1.0")
    with pytest.raises(TransportError, match="TLS"):
        HttpClient(lambda: open_socket(api.url, 10, tls_context(True))).request("GET", "/1.0")


def test_http_client_timeout_is_a_transport_error(tmp_path):
    import socket
    import threading

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = str(tmp_path / "silent.sock")
    server.bind(path)
    server.listen(1)
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    client = HttpClient(lambda: open_socket(f"unix://{path}", 0.5), timeout=0.5)
    with pytest.raises(TransportError) as error:
        client.request("GET", "/_ping")
    assert error.value.sent is True
    server.close()


def test_ssh_private_key_given_inline(nodes):
    raw = node_with(nodes["docker"], execution_rule="ssh_only")
    key_text = (LAB_DIR / "ssh" / "id_ed25519").read_text()
    raw["ssh"].pop("private_key_file")
    raw["ssh"]["private_key"] = key_text
    result = run_module("virt_instance_info", {"node": raw, "name": unique("t-none")})
    assert result["exists"] is False and result["transport"] == "ssh"
    assert key_text.strip().splitlines()[1] not in json.dumps(result)
