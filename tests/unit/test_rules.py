"""Execution rules: which transport serves a run, and when auto falls back (fakes for the error paths)."""

import pytest

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import (
    TransportError, UncertainWrite, Unsupported)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.node import validate_node_dict
from ansible_collections.oneclickvirt.virt.plugins.module_utils.rules import Router


class FakeClient:
    def __init__(self, name, fail=None):
        self.name, self.fail, self.calls, self.closed = name, fail, [], False

    def request(self, method, path, **kwargs):
        self.calls.append((method, path))
        if self.fail is not None:
            raise self.fail
        return f"{self.name}:{method} {path}"

    def close(self):
        self.closed = True


def router(rule, api_fail=None, ssh_fail=None, ssh=True):
    raw = {"name": "n", "type": "docker", "execution_rule": rule, "api": {"url": "unix:///x.sock"}}
    if ssh:
        raw["ssh"] = {"host": "h"}
    made, warnings = {}, []

    def api():
        return made.setdefault("api", FakeClient("api", api_fail))

    def ssh_client():
        return made.setdefault("ssh", FakeClient("ssh", ssh_fail))

    return Router(validate_node_dict(raw), api, ssh_client, warnings.append), made, warnings


def test_api_only_never_touches_ssh():
    r, made, dummy = router("api_only", api_fail=TransportError("refused"))
    with pytest.raises(TransportError, match="refused"):
        r.request("GET", "/x")
    assert "ssh" not in made


def test_ssh_only_never_touches_the_api():
    r, made, dummy = router("ssh_only")
    assert r.request("GET", "/x") == "ssh:GET /x"
    assert "api" not in made and r.transport == "ssh"


def test_auto_uses_the_api_and_builds_ssh_lazily():
    r, made, warnings = router("auto")
    assert r.request("POST", "/x") == "api:POST /x"
    assert "ssh" not in made and warnings == [] and r.fallback_reason is None


def test_auto_falls_back_on_a_read_with_a_warning():
    r, made, warnings = router("auto", api_fail=TransportError("connect refused", sent=True))
    assert r.request("GET", "/x") == "ssh:GET /x"
    assert r.transport == "ssh" and "connect refused" in r.fallback_reason
    assert len(warnings) == 1 and "connect refused" in warnings[0]
    assert r.request("GET", "/y") == "ssh:GET /y" and made["api"].calls == [("GET", "/x")]


def test_auto_resends_a_write_that_was_never_sent():
    r, made, dummy = router("auto", api_fail=TransportError("connect refused", sent=False))
    assert r.request("POST", "/create") == "ssh:POST /create"


def test_auto_never_replays_a_write_that_may_have_arrived():
    r, made, dummy = router("auto", api_fail=TransportError("answer lost", sent=True))
    with pytest.raises(UncertainWrite):
        r.request("POST", "/create")
    assert r.transport == "ssh"
    assert "ssh" not in made or made["ssh"].calls == [], "the write must not be replayed over SSH"


def test_both_failures_are_named():
    r, dummy, unused = router("auto", api_fail=TransportError("tls broke"), ssh_fail=TransportError("ssh refused"))
    with pytest.raises(TransportError) as error:
        r.request("GET", "/x")
    assert "tls broke" in str(error.value) and "ssh refused" in str(error.value)


def test_auto_without_ssh_cannot_fall_back():
    r, made, dummy = router("auto", api_fail=TransportError("refused"), ssh=False)
    with pytest.raises(TransportError, match="refused"):
        r.request("GET", "/x")
    assert "ssh" not in made


def test_node_work_needs_ssh_under_api_only():
    r, dummy, unused = router("api_only")
    with pytest.raises(Unsupported, match="api_only"):
        r.ssh("iptables rules")


def test_close_closes_every_client():
    r, made, dummy = router("auto", api_fail=TransportError("refused"))
    r.request("GET", "/x")
    r.close()
    assert made["api"].closed and made["ssh"].closed
