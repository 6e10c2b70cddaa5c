# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Work inside an instance: run a command (virt_exec) and set a user's password (virt_instance_password).

The same for every backend: the backend's `exec` runs an argv, `set_password` delivers a password (on stdin or
in an API body). What is decided here: validation, `creates` / `removes` (checked inside the instance with a
fixed `test -e` whose path is its own argv element), check mode, the running-state check and the result.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field

from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends.base import generate_password
from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import (
    InvalidSpec, NotFound, TransportError, UncertainWrite, VirtError)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.units import check_name

SHELL = "/bin/sh"
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
# A POSIX-portable login name (what useradd accepts by default), or a numeric uid.
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
_UID = re.compile(r"^[0-9]{1,10}\Z")
# The LXD and Incus exec APIs take a numeric uid only; a name is resolved inside the instance first.
NUMERIC_USER_BACKENDS = ("lxd", "incus")
MIN_LENGTH, MAX_LENGTH, DEFAULT_LENGTH = 12, 256, 24
START_HINT = "start it first (oneclickvirt.virt.virt_instance with state: started)"


# -- validation ------------------------------------------------------------------------------------------
def check_user(value, option="user"):
    """A login name or a numeric uid; never anything a shell or chpasswd could misread."""
    if not isinstance(value, str) or not (_USER_NAME.match(value) or _UID.match(value)):
        raise InvalidSpec(f"{option}: {value!r} is not a user; give a login name (lowercase letters, digits, _ and -, "
                          "not starting with a digit or -, at most 32 characters) or a numeric uid")
    return value


def check_path(value, option):
    if not isinstance(value, str) or not value or "\0" in value or "\n" in value:
        raise InvalidSpec(f"{option}: give a path inside the instance (a non-empty string without NUL or newline)")
    return value


def check_env(env):
    if env is None:
        return None
    if not isinstance(env, dict):
        raise InvalidSpec("env: give a dictionary of variable names to values")
    checked = {}
    for key, value in env.items():
        if not _ENV_KEY.match(str(key)):
            raise InvalidSpec(f"env: {key!r} is not a variable name; use letters, digits and _ (not first a digit)")
        if value is None or isinstance(value, (dict, list)) or "\0" in str(value):
            raise InvalidSpec(f"env.{key}: give a string value (no NUL bytes)")
        checked[str(key)] = str(value)
    return checked


def check_timeout(value):
    if value is None:
        return 120
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidSpec(f"timeout: {value!r} is not a positive number of seconds")
    return value


def _argv(value):
    """`argv` must be a list: a string would need a shell (or a guess at splitting it) to run."""
    if isinstance(value, str):
        raise InvalidSpec("argv: give a list of strings, one element per argument (e.g. ['ls', '-l', '/tmp']); "
                          "a command line as one string runs only with `command` and `shell: true`")
    if not isinstance(value, (list, tuple)) or not value:
        raise InvalidSpec("argv: give a non-empty list of strings, e.g. ['ls', '-l', '/tmp']")
    argv = []
    for index, arg in enumerate(value):
        # Numbers are what YAML makes of `- 5`; anything else is a mistake worth naming.
        if isinstance(arg, bool) or not isinstance(arg, (str, int, float)):
            raise InvalidSpec(f"argv[{index}]: {arg!r} is not a string; every argument is a string")
        if "\0" in str(arg):
            raise InvalidSpec(f"argv[{index}]: must not contain a NUL byte")
        argv.append(str(arg))
    if not argv[0]:
        raise InvalidSpec("argv[0]: the program to run must not be empty")
    return argv


# -- virt_exec -------------------------------------------------------------------------------------------
@dataclass
class ExecRequest:
    name: str
    argv: list
    stdin: str | None = None
    env: dict | None = None
    cwd: str | None = None
    user: str | None = None
    timeout: int = 120
    creates: str | None = None
    removes: str | None = None
    strip_empty_ends: bool = True


def build_exec_request(params):
    """Validate virt_exec's parameters into an ExecRequest. Raises InvalidSpec naming the option and the fix."""
    name = check_name(params.get("name"))
    shell, command, argv = bool(params.get("shell")), params.get("command"), params.get("argv")
    if shell:
        if argv is not None:
            raise InvalidSpec("argv: with shell: true give the shell command line in `command`, not `argv`")
        if not isinstance(command, str) or not command.strip() or "\0" in command:
            raise InvalidSpec("command: shell: true needs `command`, a non-empty shell command line")
        argv = [SHELL, "-c", command]
    else:
        if command is not None:
            raise InvalidSpec("command: a shell command line runs only with shell: true; give `argv` as a list "
                              "instead (safer: no shell parses it), or set shell: true explicitly")
        if argv is None:
            raise InvalidSpec("argv: required; give the command as a list such as ['ls', '-l', '/tmp']")
        argv = _argv(argv)
    stdin = params.get("stdin")
    if stdin is not None:
        stdin = str(stdin)
        if params.get("stdin_add_newline", True) and not stdin.endswith("\n"):
            stdin += "\n"
    cwd = params.get("cwd")
    if cwd is not None:
        check_path(cwd, "cwd")
        if not cwd.startswith("/"):
            raise InvalidSpec(f"cwd: {cwd!r} is not an absolute path; give the directory inside the instance "
                              "starting with /")
    user = params.get("user")
    if user is not None:
        check_user(str(user))
        user = str(user)
    creates, removes = params.get("creates"), params.get("removes")
    if creates is not None:
        check_path(creates, "creates")
    if removes is not None:
        check_path(removes, "removes")
    strip = params.get("strip_empty_ends")
    return ExecRequest(name=name, argv=argv, stdin=stdin, env=check_env(params.get("env")), cwd=cwd, user=user,
                       timeout=check_timeout(params.get("timeout")), creates=creates, removes=removes,
                       strip_empty_ends=True if strip is None else bool(strip))


def _now():
    return datetime.datetime.now()


def _result(request, changed, rc, stdout="", stderr="", msg="", start=None, end=None):
    if request.strip_empty_ends:
        stdout, stderr = stdout.rstrip("\r\n"), stderr.rstrip("\r\n")
    result = {"changed": changed, "cmd": list(request.argv), "rc": rc, "stdout": stdout, "stderr": stderr,
              "stdout_lines": stdout.splitlines(), "stderr_lines": stderr.splitlines(), "msg": msg,
              "start": None, "end": None, "delta": None}
    if start is not None and end is not None:
        result.update(start=str(start), end=str(end), delta=str(end - start))
    return result


def running_instance(provider, name, check_mode, purpose):
    """The instance, running. Returns (instance, None), or in check mode (None, why it cannot be looked into).

    In check mode an absent or stopped instance is not a failure: an earlier task of the same play (not run in
    check mode either) may create or start it.
    """
    instance = provider.get_instance(name)
    if instance is None:
        problem = f"{name} does not exist on node {provider.node.name}"
        if check_mode:
            return None, problem
        raise NotFound(f"{problem}; {purpose} needs a running instance: create and start it first "
                       "(oneclickvirt.virt.virt_instance with state: started)")
    if instance.status != "running":
        problem = f"{name} on node {provider.node.name} is {instance.status}"
        if check_mode:
            return None, problem
        raise VirtError(f"{problem}; {purpose} needs a running instance: {START_HINT}")
    return instance, None


def _exec(provider, instance, argv, request, what):
    """provider.exec, with a lost stream or a timeout turned into a message that says what it means."""
    try:
        return provider.exec(instance, argv, stdin=request.stdin if what == "command" else None, env=request.env,
                             cwd=request.cwd, user=request.user, timeout=request.timeout)
    except UncertainWrite as error:
        raise VirtError(f"the {what} in {instance.name} was started but its answer was lost ({error.cause}); it may "
                        "or may not have run, and it was not run again")
    except TransportError as error:
        if not error.sent:
            raise
        raise VirtError(f"the {what} in {instance.name} did not finish within timeout ({request.timeout}s) or its "
                        f"stream broke: {error}. It may still be running inside the instance")


def _resolve_user(provider, instance, request):
    """LXD / Incus exec takes a uid: look the name up inside the instance (fixed argv, the name its own element)."""
    if request.user is None or _UID.match(request.user) or provider.backend not in NUMERIC_USER_BACKENDS:
        return request
    lookup = ExecRequest(name=request.name, argv=["id", "-u", request.user], timeout=request.timeout)
    found = _exec(provider, instance, lookup.argv, lookup, "user lookup")
    uid = found.stdout.strip()
    if found.rc != 0 or not _UID.match(uid):
        raise VirtError(f"user: {request.user!r} is not a user inside {instance.name} "
                        f"({(found.stderr or found.stdout).strip() or 'id -u failed'}); give an existing user or a uid")
    return ExecRequest(**dict(request.__dict__, user=uid))


def _path_exists(provider, instance, path, request):
    """`test -e PATH` inside the instance, as the same user and in the same directory as the command."""
    found = _exec(provider, instance, ["test", "-e", path], request, "creates/removes check")
    if found.rc in (0, 1):
        return found.rc == 0
    raise VirtError(f"checking {path!r} inside {instance.name} failed (test -e exited {found.rc}: "
                    f"{(found.stderr or found.stdout).strip() or 'no output'}); the instance needs a `test` command")


def run_exec(provider, request, check_mode):
    """virt_exec: returns the module result (with `failed` when the command exited non-zero)."""
    instance, problem = running_instance(provider, request.name, check_mode, "virt_exec")
    if instance is None:
        provider.warn(f"check mode: {problem}, so nothing was checked inside it; the command would fail unless "
                      f"an earlier task makes {request.name} run")
        return _result(request, True, 0, msg=f"Would run the command; not run in check mode ({problem} now)")
    request = _resolve_user(provider, instance, request)
    verb = "Would not" if check_mode else "Did not"
    if request.creates is not None and _path_exists(provider, instance, request.creates, request):
        return _result(request, False, 0, msg=f"{verb} run the command since '{request.creates}' exists")
    if request.removes is not None and not _path_exists(provider, instance, request.removes, request):
        return _result(request, False, 0, msg=f"{verb} run the command since '{request.removes}' does not exist")
    if check_mode:
        return _result(request, True, 0, msg="Would run the command; not run in check mode")
    start = _now()
    ran = _exec(provider, instance, request.argv, request, "command")
    result = _result(request, True, ran.rc, ran.stdout, ran.stderr, start=start, end=_now())
    if ran.rc != 0:
        result.update(failed=True, msg="non-zero return code")
        detail = (ran.stderr or ran.stdout).strip().splitlines()
        if ran.rc in (126, 127) and detail:
            # The shell's convention, which Docker and the CLIs follow: the command could not be started at all.
            result["msg"] += f" ({ran.rc}: the command could not be started: {detail[-1]})"
    return result


# -- virt_instance_password -----------------------------------------------------------------------------
@dataclass
class PasswordRequest:
    name: str
    user: str = "root"
    password: str | None = field(default=None, repr=False)
    generate: bool = False
    length: int = DEFAULT_LENGTH
    timeout: int = 120


def build_password_request(params):
    name = check_name(params.get("name"))
    user = params.get("user") or "root"
    if not _USER_NAME.match(str(user)):
        raise InvalidSpec(f"user: {user!r} is not a login name; give a name such as 'root' or 'debian' (lowercase "
                          "letters, digits, _ and -, not starting with a digit or -, at most 32 characters)")
    password, generate, length = params.get("password"), bool(params.get("generate")), params.get("length")
    if generate and password is not None:
        raise InvalidSpec("password and generate: give one of them, a password or generate: true")
    if not generate:
        if password is None:
            raise InvalidSpec("password: required unless generate: true; give the password (from a vault) or "
                              "set generate: true to have one made and returned")
        if length is not None:
            raise InvalidSpec("length: only with generate: true (it is the length of the generated password)")
        if not password:
            raise InvalidSpec("password: must not be empty")
        if "\n" in password or "\r" in password or "\0" in password:
            raise InvalidSpec("password: must not contain a newline, carriage return or NUL byte (chpasswd reads "
                              "one line)")
    length = DEFAULT_LENGTH if length is None else length
    if isinstance(length, bool) or not isinstance(length, int) or not MIN_LENGTH <= length <= MAX_LENGTH:
        raise InvalidSpec(f"length: {length!r} is not a length; give {MIN_LENGTH} to {MAX_LENGTH} characters")
    return PasswordRequest(name=name, user=str(user), password=password, generate=generate, length=length,
                           timeout=check_timeout(params.get("timeout")))


def new_password(length, masked_values=()):
    """A strong random password that no value AnsibleModule masks (its no_log values) occurs in.

    AnsibleModule replaces every occurrence of a no_log value (a node's SSH password, say) inside any string of
    the result; a generated password that happened to contain one would reach the user corrupted.
    """
    masked = [value for value in masked_values if isinstance(value, str) and value]
    for attempt in range(1000):
        password = generate_password(length)
        if not any(value in password for value in masked):
            return password
    raise VirtError("generate: could not make a password that contains none of the task's no_log values; give "
                    "longer no_log values (node.ssh.password, ...) or set the password yourself")


def set_password(provider, request, check_mode, masked_values=()):
    """virt_instance_password. A given password is never in the result; a generated one only under
    `generated_password`. Reports a change every run (the old password cannot be compared, only replaced)."""
    instance, problem = running_instance(provider, request.name, check_mode, "virt_instance_password")
    result = {"changed": True, "name": request.name, "user": request.user, "generated": request.generate}
    if check_mode:
        if problem:
            provider.warn(f"check mode: {problem}; setting the password would fail unless an earlier task makes "
                          f"{request.name} run")
        result["msg"] = f"Would set the password of {request.user!r}; nothing was changed in check mode"
        return result
    password = new_password(request.length, masked_values) if request.generate else request.password
    try:
        # A backend may return a note (a Proxmox VM's cloud-init password applies at the next boot).
        note = provider.set_password(instance, request.user, password, timeout=request.timeout)
    except VirtError as error:
        message = str(error).replace(password, "********")
        if not message.startswith("setting the password"):
            message = f"setting the password of {request.user!r} in {request.name} failed: {message}"
        # Some exec APIs (LXD, Incus) refuse a missing program outright instead of exiting 127.
        if "not found" in message.lower() and "needs chpasswd" not in message:
            message += "; the image needs chpasswd (the Debian image has it)"
        raise VirtError(message) from None
    result["msg"] = f"Set the password of {request.user!r} in {request.name}"
    if note:
        result["note"] = note
        provider.warn(f"{request.name}: {note}")
    if request.generate:
        result["generated_password"] = password
    return result
