"""virt_exec and virt_instance_password logic: validation, creates/removes, check mode, states, password handling.

A fake provider records every exec; what runs on real backends is proved in tests/integration/test_exec_password.py.
"""

import pytest

from ansible_collections.oneclickvirt.virt.plugins.module_utils import execution
from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends.base import PASSWORD_ALPHABET, Provider
from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import (
    InvalidSpec, NotFound, TransportError, UncertainWrite, VirtError)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.execution import (
    build_exec_request, build_password_request, new_password, run_exec, set_password)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.models import ExecResult, Instance
from ansible_collections.oneclickvirt.virt.plugins.module_utils.node import validate_node_dict


class FakeProvider(Provider):
    """Answers exec from a table: {argv tuple: ExecResult}; anything else succeeds with no output."""

    backend = "docker"

    def __init__(self, status="running", answers=None, backend=None, exists=True):
        super().__init__(validate_node_dict({"name": "n1", "type": "docker", "api": {"url": "unix:///x.sock"}}))
        self.backend = backend or self.backend
        self.status, self.answers, self.exists = status, answers or {}, exists
        self.calls, self.warnings = [], []
        self.warn = self.warnings.append

    def get_instance(self, name):
        if not self.exists:
            return None
        return Instance(name=name, id="id-" + name, node="n1", backend=self.backend, type="container",
                        status=self.status)

    def exec(self, instance, argv, stdin=None, env=None, cwd=None, user=None, timeout=None):
        self.calls.append({"argv": list(argv), "stdin": stdin, "env": env, "cwd": cwd, "user": user,
                           "timeout": timeout})
        answer = self.answers.get(tuple(argv), ExecResult(0, "", ""))
        if isinstance(answer, Exception):
            raise answer
        return answer


def request(**params):
    return build_exec_request(dict({"name": "web-1", "argv": ["true"]}, **params))


# -- validation -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("params, option", [
    ({"argv": "ls -l /tmp"}, "argv:"),
    ({"argv": []}, "argv:"),
    ({"argv": None}, "argv:"),
    ({"argv": ["ls", {"a": 1}]}, r"argv\[1\]:"),
    ({"argv": ["ls", None]}, r"argv\[1\]:"),
    ({"argv": ["ls", True]}, r"argv\[1\]:"),
    ({"argv": ["ls", "a\0b"]}, r"argv\[1\]:"),
    ({"argv": [""]}, r"argv\[0\]:"),
    ({"argv": None, "command": "ls -l"}, "command:"),
    ({"argv": None, "command": "ls", "shell": False}, "command:"),
    ({"argv": None, "shell": True}, "command:"),
    ({"argv": None, "command": "  ", "shell": True}, "command:"),
    ({"argv": ["ls"], "shell": True, "command": None}, "argv:"),
    ({"env": {"1BAD": "x"}}, "env:"),
    ({"env": {"A B": "x"}}, "env:"),
    ({"env": {"A": None}}, "env.A:"),
    ({"env": {"A": "x\0y"}}, "env.A:"),
    ({"env": "A=1"}, "env:"),
    ({"cwd": "tmp"}, "cwd:"),
    ({"cwd": ""}, "cwd:"),
    ({"user": "root;id"}, "user:"),
    ({"user": "Root"}, "user:"),
    ({"user": "-rf"}, "user:"),
    ({"user": "a b"}, "user:"),
    ({"user": "x" * 33}, "user:"),
    ({"creates": ""}, "creates:"),
    ({"removes": "a\nb"}, "removes:"),
    ({"timeout": 0}, "timeout:"),
    ({"timeout": -5}, "timeout:"),
    ({"name": "a;b"}, "name:"),
])
def test_bad_exec_input_names_the_option(params, option):
    with pytest.raises(InvalidSpec, match=f"^{option}"):
        request(**params)


def test_argv_is_kept_literally_and_numbers_become_strings():
    hostile = ["printf", "%s", "$(touch /tmp/x)", "`id`", "a b", ";", "'", 5, 1.5]
    assert request(argv=hostile).argv == ["printf", "%s", "$(touch /tmp/x)", "`id`", "a b", ";", "'", "5", "1.5"]


def test_shell_true_is_an_explicit_sh_dash_c():
    built = build_exec_request({"name": "web-1", "shell": True, "command": "echo $HOME | tr a b"})
    assert built.argv == ["/bin/sh", "-c", "echo $HOME | tr a b"]


def test_stdin_newline_env_user_defaults():
    built = request(stdin="secret", env={"A": 1, "B_2": "x y"}, user=1000, cwd="/srv")
    assert built.stdin == "secret\n" and built.env == {"A": "1", "B_2": "x y"} and built.user == "1000"
    assert built.cwd == "/srv" and built.timeout == 120 and built.strip_empty_ends is True
    assert request(stdin="as is", stdin_add_newline=False).stdin == "as is"
    assert request(stdin="line\n").stdin == "line\n"
    assert request().stdin is None


# -- running the command ----------------------------------------------------------------------------------
def test_runs_and_shapes_the_result():
    provider = FakeProvider(answers={("cat",): ExecResult(0, "a\nb\n\n", "warn\n")})
    result = run_exec(provider, request(argv=["cat"], stdin="x", env={"K": "v"}, cwd="/tmp", user="nobody"), False)
    assert provider.calls == [{"argv": ["cat"], "stdin": "x\n", "env": {"K": "v"}, "cwd": "/tmp", "user": "nobody",
                               "timeout": 120}]
    assert result["changed"] is True and result["rc"] == 0 and "failed" not in result
    assert result["stdout"] == "a\nb" and result["stdout_lines"] == ["a", "b"]
    assert result["stderr"] == "warn" and result["stderr_lines"] == ["warn"]
    assert result["cmd"] == ["cat"] and result["delta"] is not None


def test_strip_empty_ends_off_keeps_newlines():
    provider = FakeProvider(answers={("cat",): ExecResult(0, "a\n", "")})
    assert run_exec(provider, request(argv=["cat"], strip_empty_ends=False), False)["stdout"] == "a\n"


def test_non_zero_rc_fails_with_the_output():
    provider = FakeProvider(answers={("false",): ExecResult(3, "out", "boom")})
    result = run_exec(provider, request(argv=["false"]), False)
    assert result["failed"] is True and result["msg"] == "non-zero return code"
    assert result["rc"] == 3 and result["stderr"] == "boom" and result["stdout"] == "out"
    unstartable = FakeProvider(answers={("nope",): ExecResult(126, 'exec: "nope": executable file not found\n', "")})
    result = run_exec(unstartable, request(argv=["nope"]), False)
    assert result["msg"] == 'non-zero return code (126: the command could not be started: exec: "nope": executable ' \
                            'file not found)'


@pytest.mark.parametrize("status", ["stopped", "paused", "error"])
def test_an_instance_that_is_not_running_is_a_clear_error(status):
    provider = FakeProvider(status=status)
    with pytest.raises(VirtError, match=f"web-1 on node n1 is {status}.*state: started"):
        run_exec(provider, request(), False)
    assert provider.calls == []


def test_a_missing_instance_is_a_clear_error():
    with pytest.raises(NotFound, match="web-1 does not exist on node n1"):
        run_exec(FakeProvider(exists=False), request(), False)


@pytest.mark.parametrize("exists", [True, False])
def test_check_mode_with_a_stopped_or_missing_instance_predicts_and_warns(exists):
    provider = FakeProvider(status="stopped", exists=exists)
    result = run_exec(provider, request(creates="/x"), True)
    assert result["changed"] is True and "not run in check mode" in result["msg"]
    assert provider.calls == [] and len(provider.warnings) == 1


def test_check_mode_never_runs_the_command():
    provider = FakeProvider()
    result = run_exec(provider, request(argv=["rm", "-rf", "/data"]), True)
    assert result["changed"] is True and result["rc"] == 0
    assert result["msg"] == "Would run the command; not run in check mode"
    assert provider.calls == []


def test_creates_is_a_fixed_test_inside_the_instance():
    path = "/tmp/a b;$(touch /x)"
    provider = FakeProvider(answers={("test", "-e", path): ExecResult(0, "", "")})
    result = run_exec(provider, request(argv=["touch", "x"], creates=path, cwd="/srv", user="1000",
                                        stdin="not for test"), False)
    assert result["changed"] is False and result["rc"] == 0 and path in result["msg"]
    assert provider.calls == [{"argv": ["test", "-e", path], "stdin": None, "env": None, "cwd": "/srv",
                               "user": "1000", "timeout": 120}]


def test_creates_missing_runs_the_command():
    provider = FakeProvider(answers={("test", "-e", "/m"): ExecResult(1, "", "")})
    result = run_exec(provider, request(argv=["touch", "/m"], creates="/m"), False)
    assert result["changed"] is True
    assert [call["argv"] for call in provider.calls] == [["test", "-e", "/m"], ["touch", "/m"]]


def test_removes():
    gone = FakeProvider(answers={("test", "-e", "/m"): ExecResult(1, "", "")})
    skipped = run_exec(gone, request(argv=["rm", "/m"], removes="/m"), False)
    assert skipped["changed"] is False and "does not exist" in skipped["msg"]
    there = FakeProvider()
    assert run_exec(there, request(argv=["rm", "/m"], removes="/m"), False)["changed"] is True
    assert [call["argv"] for call in there.calls] == [["test", "-e", "/m"], ["rm", "/m"]]


@pytest.mark.parametrize("check_mode, changed", [(True, False), (False, False)])
def test_check_mode_still_evaluates_creates(check_mode, changed):
    provider = FakeProvider()
    result = run_exec(provider, request(argv=["touch", "/m"], creates="/m"), check_mode)
    assert result["changed"] is changed
    assert result["msg"].startswith("Would not" if check_mode else "Did not")
    missing = FakeProvider(answers={("test", "-e", "/m"): ExecResult(1, "", "")})
    predicted = run_exec(missing, request(argv=["touch", "/m"], creates="/m"), True)
    assert predicted["changed"] is True and [call["argv"] for call in missing.calls] == [["test", "-e", "/m"]]


def test_a_broken_test_command_is_an_error_not_a_guess():
    provider = FakeProvider(answers={("test", "-e", "/m"): ExecResult(127, "", "test: not found")})
    with pytest.raises(VirtError, match="test -e exited 127"):
        run_exec(provider, request(creates="/m"), False)


@pytest.mark.parametrize("backend", ["lxd", "incus"])
def test_user_names_are_resolved_to_uids_where_exec_takes_uids(backend):
    provider = FakeProvider(backend=backend, answers={("id", "-u", "nobody"): ExecResult(0, "65534\n", "")})
    run_exec(provider, request(argv=["id"], user="nobody"), False)
    calls = [(call["argv"], call["user"]) for call in provider.calls]
    assert calls == [(["id", "-u", "nobody"], None), (["id"], "65534")]
    unknown = FakeProvider(backend=backend, answers={("id", "-u", "ghost"): ExecResult(1, "", "no such user")})
    with pytest.raises(VirtError, match="'ghost' is not a user inside web-1"):
        run_exec(unknown, request(user="ghost"), False)


def test_user_names_go_as_they_are_on_docker_and_uids_everywhere():
    docker = FakeProvider()
    run_exec(docker, request(argv=["id"], user="nobody"), False)
    lxd = FakeProvider(backend="lxd")
    run_exec(lxd, request(argv=["id"], user="0"), False)
    assert [call["user"] for call in docker.calls + lxd.calls] == ["nobody", "0"]


def test_timeout_and_lost_answers_say_what_they_mean():
    slow = FakeProvider(answers={("sleep", "9"): TransportError("timed out", sent=True)})
    with pytest.raises(VirtError, match=r"did not finish within timeout \(5s\).*may still be running"):
        run_exec(slow, request(argv=["sleep", "9"], timeout=5), False)
    lost = FakeProvider(answers={("x",): UncertainWrite(TransportError("reset", sent=True))})
    with pytest.raises(VirtError, match="may or may not have run, and it was not run again"):
        run_exec(lost, request(argv=["x"]), False)
    unsent = FakeProvider(answers={("x",): TransportError("refused", sent=False)})
    with pytest.raises(TransportError, match="refused"):
        run_exec(unsent, request(argv=["x"]), False)


# -- passwords ----------------------------------------------------------------------------------------------
def password_request(**params):
    return build_password_request(dict({"name": "web-1"}, **params))


@pytest.mark.parametrize("params, option", [
    ({}, "password:"),
    ({"password": ""}, "password:"),
    ({"password": "a\nb"}, "password:"),
    ({"password": "a\rb"}, "password:"),
    ({"password": "a\0b"}, "password:"),
    ({"password": "x", "generate": True}, "password and generate:"),
    ({"password": "x", "length": 30}, "length:"),
    ({"generate": True, "length": 11}, "length:"),
    ({"generate": True, "length": 257}, "length:"),
    ({"generate": True, "length": True}, "length:"),
    ({"generate": True, "user": "root:x"}, "user:"),
    ({"generate": True, "user": "0"}, "user:"),
    ({"generate": True, "user": "a\nroot"}, "user:"),
    ({"generate": True, "timeout": 0}, "timeout:"),
    ({"generate": True, "name": "$(id)"}, "name:"),
])
def test_bad_password_input_names_the_option(params, option):
    with pytest.raises(InvalidSpec, match=f"^{option}"):
        password_request(**params)


def test_password_request_defaults():
    built = password_request(generate=True)
    assert (built.user, built.length, built.timeout) == ("root", 24, 120)
    assert "pw" not in repr(password_request(password="pw-secret-value")), "the password stays out of repr()"


def test_a_given_password_goes_on_stdin_and_is_never_returned():
    secret = "it's: a \"pass\" $(x)"
    provider = FakeProvider()
    result = set_password(provider, password_request(password=secret, user="debian"), False)
    assert provider.calls[0]["argv"] == ["chpasswd"]
    assert provider.calls[0]["stdin"] == f"debian:{secret}\n"
    assert secret not in repr(result) and "generated_password" not in result
    assert result["changed"] is True and result["generated"] is False and result["user"] == "debian"


def test_a_generated_password_is_returned_once_and_strong():
    provider = FakeProvider()
    result = set_password(provider, password_request(generate=True, length=40), False)
    password = result["generated_password"]
    assert len(password) == 40 and set(password) <= set(PASSWORD_ALPHABET)
    assert provider.calls[0]["stdin"] == f"root:{password}\n"
    assert password not in provider.calls[0]["argv"]
    assert [key for key, value in result.items() if value == password] == ["generated_password"]


def test_a_generated_password_avoids_the_values_ansible_masks(monkeypatch):
    made = iter(["abcSECRETxyz1!", "cleanPassw0rd!", "unused"])
    monkeypatch.setattr(execution, "generate_password", lambda length: next(made))
    assert new_password(14, {"SECRET", None, ""}) == "cleanPassw0rd!"
    monkeypatch.setattr(execution, "generate_password", lambda length: "always-has-a")
    with pytest.raises(VirtError, match="no_log values"):
        new_password(12, {"a"})


def test_password_check_mode_sets_and_generates_nothing():
    provider = FakeProvider()
    result = set_password(provider, password_request(generate=True), True)
    assert result["changed"] is True and "generated_password" not in result and provider.calls == []
    stopped = FakeProvider(status="stopped")
    assert set_password(stopped, password_request(password="x"), True)["changed"] is True
    assert stopped.warnings and stopped.calls == []


def test_password_on_a_stopped_instance_is_a_clear_error():
    with pytest.raises(VirtError, match="is stopped; virt_instance_password needs a running instance"):
        set_password(FakeProvider(status="stopped"), password_request(password="x"), False)


def test_chpasswd_failures_are_clear_and_never_echo_the_password():
    secret = "Sup3r-secret!"
    missing = FakeProvider(answers={("chpasswd",): ExecResult(127, "", f"chpasswd: not found {secret}")})
    with pytest.raises(VirtError, match="needs chpasswd") as error:
        set_password(missing, password_request(password=secret), False)
    assert secret not in str(error.value)
    no_user = FakeProvider(answers={("chpasswd",): ExecResult(1, "", "chpasswd: line 1: user 'ghost' does not exist")})
    with pytest.raises(VirtError, match="user 'ghost' does not exist") as error:
        set_password(no_user, password_request(password=secret, user="ghost"), False)
    assert "needs chpasswd" not in str(error.value)


def test_an_exec_api_refusing_a_missing_chpasswd_is_explained():
    provider = FakeProvider(answers={("chpasswd",): VirtError("exec in web-1 failed: Command not found")})
    expected = "^setting the password of 'root' in web-1 failed: exec in web-1 failed: Command not found; the image"
    with pytest.raises(VirtError, match=expected + " needs chpasswd"):
        set_password(provider, password_request(password="Long-Secret-1"), False)


def test_a_backend_note_is_returned_and_warned(monkeypatch):
    provider = FakeProvider()
    monkeypatch.setattr(provider, "set_password", lambda *args, **kwargs: "applies at the next boot")
    result = set_password(provider, password_request(password="x"), False)
    assert result["note"] == "applies at the next boot" and provider.warnings == ["web-1: applies at the next boot"]
