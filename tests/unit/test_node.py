"""The node description: one spec, one validation, environment fallbacks."""

import pytest

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import InvalidSpec
from ansible_collections.oneclickvirt.virt.plugins.module_utils.node import validate_node_dict


def test_minimal_docker_node():
    node = validate_node_dict({"name": "d", "type": "docker", "api": {"url": "unix:///var/run/docker.sock"}})
    assert node.execution_rule == "auto" and node.ssh is None
    assert node.api.url == "unix:///var/run/docker.sock" and node.api.validate_certs is True
    assert node.port_range == (10000, 65535)


def test_environment_fallbacks(monkeypatch, tmp_path):
    key = tmp_path / "id"
    key.write_text("x")
    monkeypatch.setenv("ONECLICKVIRT_SSH_HOST", "10.0.0.5")
    monkeypatch.setenv("ONECLICKVIRT_SSH_PRIVATE_KEY_FILE", str(key))
    monkeypatch.setenv("ONECLICKVIRT_API_URL", "https://pve:8006")
    monkeypatch.setenv("ONECLICKVIRT_API_TOKEN_ID", "root@pam!ocv")
    monkeypatch.setenv("ONECLICKVIRT_API_TOKEN_SECRET", "s3cret")
    node = validate_node_dict({"name": "p", "type": "proxmox"})
    assert node.ssh.host == "10.0.0.5" and node.ssh.private_key_file == str(key)
    assert node.api.token_secret == "s3cret" and "s3cret" in node.secrets()
    assert "s3cret" not in repr(node)


@pytest.mark.parametrize("raw, fragment", [
    ({"name": "x", "type": "vmware", "api": {"url": "unix:///x"}}, "type"),
    ({"name": "x", "type": "docker", "execution_rule": "api_only", "ssh": {"host": "h"}}, "api_only needs node.api.url"),
    ({"name": "x", "type": "docker", "execution_rule": "ssh_only", "api": {"url": "unix:///x"}}, "ssh_only needs node.ssh.host"),
    ({"name": "x", "type": "docker"}, "neither node.api.url nor node.ssh.host"),
    ({"name": "x", "type": "proxmox", "api": {"url": "https://h:8006"}}, "token_id"),
    ({"name": "x", "type": "proxmox", "api": {"url": "http://h:8006", "token_id": "a", "token_secret": "b"}}, "https://"),
    ({"name": "x", "type": "lxd", "api": {"url": "https://h:8443"}}, "client_cert"),
    ({"name": "x", "type": "docker", "ssh": {"host": "h", "port": 70000}}, "port"),
    ({"name": "x", "type": "docker", "ssh": {"host": "h", "private_key_file": "/no/such/key"}}, "private_key_file"),
    ({"name": "x", "type": "docker", "ssh": {"host": "h", "host_key_checking": "sometimes"}}, "host_key_checking"),
    ({"name": "x", "type": "docker", "api": {"url": "unix:///x"}, "port_range": {"start": 2000, "end": 1000}}, "port_range"),
])
def test_bad_nodes_fail_naming_the_option(raw, fragment):
    with pytest.raises(InvalidSpec) as error:
        validate_node_dict(raw)
    assert fragment in str(error.value)
