"""virt_exec and virt_instance_password against the lab's real Docker, LXD and Incus daemons, over both transports.

Instances are made and inspected with the daemons' own CLIs (docker / lxc / incus), never through the collection,
so every assertion compares the collection's result with what the instance itself says.

The Proxmox proof (pct exec, the guest agent, cipassword) is in test_proxmox.py.
"""

import crypt
import json
import subprocess
import time

import pytest

from conftest import LAB_DIR, node_with, run_module, run_playbook, unique

RULES = ("api_only", "ssh_only")
LOGS = [LAB_DIR / "ssh" / "argv.log", LAB_DIR / "ssh" / "commands.log", LAB_DIR / "logs" / "sshd.log",
        LAB_DIR / "logs" / "dockerd.out", LAB_DIR / "logs" / "lxd.log", LAB_DIR / "logs" / "incus.log"]


# Proxmox has its own proof in test_proxmox.py: its containers run commands through `pct exec` (SSH only) and its
# VMs through the guest agent, so its matrix of rules differs from this one.
BACKENDS = ["docker", "lxd", "incus"]


# -- the instances, made and read with the daemons' own tools ------------------------------------------------
class CliLab:
    """One backend's instances: a running busybox, a running Debian (has chpasswd) and a stopped busybox."""

    def __init__(self, cli):
        self.cli = cli
        self.names = []

    def run(self, *args, check=True, stdin=None):
        return subprocess.run([self.cli, *args], capture_output=True, text=True, check=check, timeout=180,
                              input=stdin)

    def make(self, image, running=True):
        name = unique(f"t-exec-{self.cli[:3]}")
        self.names.append(name)  # before creating: cleanup must find it even if creation half-fails
        if self.cli == "docker":
            # No network: exec needs none, and the tests then do not depend on docker0.
            self.run("run" if running else "create", *(["-d"] if running else []), "--network", "none",
                     "--name", name, image)
        else:
            self.run("launch" if running else "init", image, name, "-q")
        return name

    def inside(self, name, *argv, check=False):
        if self.cli == "docker":
            return self.run("exec", name, *argv, check=check)
        return self.run("exec", name, "--", *argv, check=check)

    def stored_hash(self, name, user="root"):
        line = self.inside(name, "getent", "shadow", user, check=True).stdout
        return line.split(":")[1]

    def remove_all(self):
        for name in self.names:
            if self.cli == "docker":
                self.run("rm", "-f", name, check=False)
            else:
                self.run("delete", "-f", name, check=False)


def make_lab(backend):
    return CliLab({"lxd": "lxc"}.get(backend, backend))


class Instances:
    def __init__(self, lab):
        self.lab = lab
        self.busybox = lab.make("ocv-busybox")
        self.debian = lab.make("ocv-debian")
        self.stopped = lab.make("ocv-busybox", running=False)


@pytest.fixture(scope="module")
def instances():
    """Instances per backend, made on first use and removed at the end whatever happened."""
    made, labs = {}, []

    def get(backend):
        if backend not in made:
            lab = make_lab(backend)
            labs.append(lab)
            try:
                made[backend] = Instances(lab)
            except subprocess.CalledProcessError as error:
                made[backend] = error
        if isinstance(made[backend], Exception):
            pytest.fail(f"making the {backend} test instances failed: {made[backend].stderr}", pytrace=False)
        return made[backend]

    try:
        yield get
    finally:
        for lab in labs:
            lab.remove_all()


@pytest.fixture(params=[(backend, rule) for backend in BACKENDS for rule in RULES],
                ids=lambda param: f"{param[0]}-{param[1]}")
def case(request, nodes, instances):
    backend, rule = request.param
    return Case(backend, rule, node_with(nodes[backend], execution_rule=rule), instances(backend))


class Case:
    def __init__(self, backend, rule, node, made):
        self.backend, self.rule, self.node, self.made, self.lab = backend, rule, node, made, made.lab
        self.transport = "api" if rule == "api_only" else "ssh"

    def exec(self, name=None, check=False, **args):
        return run_module("virt_exec", dict(args, node=self.node, name=name or self.made.busybox), check=check)

    def password(self, name=None, check=False, **args):
        return run_module("virt_instance_password", dict(args, node=self.node, name=name or self.made.debian),
                          check=check)


def log_offsets():
    return {path: path.stat().st_size if path.exists() else 0 for path in LOGS}


def logged_since(offsets):
    text = {}
    for path, offset in offsets.items():
        if path.exists():
            with open(path, "rb") as handle:
                handle.seek(offset)
                text[path.name] = handle.read().decode("utf-8", "replace")
    return text


def docker_events_since(since, name, until=None):
    until = until or time.time()
    time.sleep(0.3)
    completed = subprocess.run(["docker", "events", "--since", f"{since:.3f}", "--until", f"{until:.3f}",
                                "--format", "{{json .}}", "--filter", f"container={name}"],
                               capture_output=True, text=True, timeout=60, check=True)
    return [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]


# -- virt_exec ---------------------------------------------------------------------------------------------------
def test_exec_with_stdin_env_cwd_and_user(case):
    result = case.exec(argv=["sh", "-c", 'printf "%s|%s|%s|" "$OCV_GREETING" "$(pwd)" "$(id -u)"; cat; echo oops >&2'],
                       stdin="line one\nline two", env={"OCV_GREETING": "hello  there"}, cwd="/tmp", user="nobody")
    assert result.get("failed") is not True, result
    assert result["changed"] is True and result["rc"] == 0
    assert result["transport"] == case.transport
    assert result["stdout"] == "hello  there|/tmp|65534|line one\nline two"
    assert result["stdout_lines"] == ["hello  there|/tmp|65534|line one", "line two"]
    assert result["stderr"] == "oops" and result["stderr_lines"] == ["oops"]
    assert result["cmd"][0] == "sh" and result["delta"]


def test_exec_stdin_larger_than_the_stream_buffers(case):
    big = "0123456789abcdef" * 65536  # 1 MiB: echoed back, it fills the buffers of both directions
    echoed = case.exec(argv=["cat"], stdin=big, timeout=60)
    assert echoed.get("failed") is not True, echoed.get("msg")
    assert echoed["stdout"] == big


def test_exec_command_that_leaves_its_input_unread(case):
    # 8 MiB that `head` never reads: the write side breaks when the command ends, which only means nobody reads.
    result = case.exec(argv=["sh", "-c", "head -c 4; exit 5"], stdin="0123456789abcdef" * 65536 * 8, timeout=60)
    assert result["rc"] == 5 and result["stdout"] == "0123", result.get("msg")


def test_exec_argv_arrives_literally(case, tmp_path):
    hostile = ["$(touch /tmp/ocv-exec-canary)", "`touch /tmp/ocv-exec-canary`", "a b", ";", "&&", "'", '"', "*", "~"]
    result = case.exec(argv=["printf", "%s\\n", *hostile])
    assert result["stdout_lines"] == hostile
    assert case.lab.inside(case.made.busybox, "test", "-e", "/tmp/ocv-exec-canary").returncode == 1


def test_exec_shell_only_when_asked(case):
    refused = case.exec(argv="echo $((40+2)) | tr 4 x")
    assert refused["failed"] is True and refused["msg"].startswith("argv:") and "shell: true" in refused["msg"]
    refused = case.exec(command="echo hi")
    assert refused["failed"] is True and refused["msg"].startswith("command:")
    shell = case.exec(command="echo $((40+2)) | tr 4 x", shell=True)
    assert shell["stdout"] == "x2" and shell["cmd"] == ["/bin/sh", "-c", "echo $((40+2)) | tr 4 x"]


def test_exec_non_zero_rc_fails_with_its_output(case):
    result = case.exec(argv=["sh", "-c", "echo partial; echo broken >&2; exit 3"])
    assert result["failed"] is True and result["msg"] == "non-zero return code"
    assert result["rc"] == 3 and result["stdout"] == "partial" and result["stderr"] == "broken"


def test_a_missing_program_fails_clearly(case):
    result = case.exec(argv=["ocv-no-such-program", "--flag"])
    assert result["failed"] is True, result
    assert "not found" in (result["msg"] + result.get("stderr", "")).lower(), result


def test_creates_makes_the_second_run_unchanged(case):
    marker, tally = f"/tmp/{unique('created')}", f"/tmp/{unique('tally')}"
    args = {"argv": ["sh", "-c", f"echo ran >> {tally}; touch {marker}"], "creates": marker}
    assert case.exec(check=True, **args)["changed"] is True
    since = time.time()
    first = case.exec(**args)
    assert first["changed"] is True and first["rc"] == 0
    second = case.exec(**args)
    assert second["changed"] is False and second["rc"] == 0, second
    assert marker in second["msg"] and second["msg"].startswith("Did not run")
    predicted = case.exec(check=True, **args)
    assert predicted["changed"] is False and predicted["msg"].startswith("Would not run")
    until = time.time()
    assert case.lab.inside(case.made.busybox, "cat", tally).stdout == "ran\n", "the command ran exactly once"
    if case.backend == "docker":
        started = [event["Action"] for event in docker_events_since(since, case.made.busybox, until)
                   if event["Action"].startswith("exec_start")]
        assert started == [f"exec_start: test -e {marker}", f"exec_start: sh -c {args['argv'][2]}",
                           f"exec_start: test -e {marker}", f"exec_start: test -e {marker}"]


def test_removes_skips_when_the_path_is_gone(case):
    path = f"/tmp/{unique('removes')}"
    case.lab.inside(case.made.busybox, "touch", path, check=True)
    args = {"argv": ["rm", path], "removes": path}
    assert case.exec(**args)["changed"] is True
    second = case.exec(**args)
    assert second["changed"] is False and "does not exist" in second["msg"]


def test_check_mode_runs_nothing_and_says_so(case):
    path = f"/tmp/{unique('check')}"
    result = case.exec(check=True, argv=["touch", path])
    assert result["changed"] is True and "not run in check mode" in result["msg"]
    assert case.lab.inside(case.made.busybox, "test", "-e", path).returncode == 1


def test_stopped_and_missing_instances_are_clear_errors(case):
    stopped = case.exec(name=case.made.stopped, argv=["true"])
    assert stopped["failed"] is True
    assert f"{case.made.stopped} on node {case.node['name']} is stopped" in stopped["msg"]
    assert "state: started" in stopped["msg"]
    missing_name = unique("t-nothing")
    missing = case.exec(name=missing_name, argv=["true"])
    assert missing["failed"] is True and f"{missing_name} does not exist on node" in missing["msg"]
    predicted = case.exec(name=case.made.stopped, argv=["true"], check=True)
    assert predicted["changed"] is True and "is stopped" in json.dumps(predicted["warnings"])


def test_unknown_user_is_a_clear_error(case):
    result = case.exec(argv=["true"], user="ghost")
    assert result["failed"] is True and "ghost" in result["msg"], result


# -- virt_instance_password ---------------------------------------------------------------------------------------
def test_given_password_is_set_and_never_leaks(case, tmp_path):
    password = f"it's a \"pass\"; with $(spaces) & `ticks` {unique('pw')}"
    offsets = log_offsets()
    since = time.time()
    playbook = f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Set the password
      oneclickvirt.virt.virt_instance_password:
        node: {json.dumps(case.node)}
        name: {case.made.debian}
        password: {json.dumps(password)}
      register: set_result
    - name: Show the result
      ansible.builtin.debug:
        var: set_result
"""
    completed = run_playbook(playbook, tmp_path, extra_args=["-vvv"])
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "changed=1" in output
    assert password not in output and json.dumps(password)[1:-1] not in output
    assert "generated_password" not in output
    recorded = logged_since(offsets)
    for log_name, text in recorded.items():
        assert password not in text and json.dumps(password)[1:-1] not in text, f"the password is in {log_name}"
    if case.rule == "ssh_only":
        assert recorded["commands.log"], "the run did not go over the lab's SSH node"
        if case.backend != "docker":
            assert f"exec --force-local {case.made.debian}" in recorded["commands.log"]
            assert "chpasswd" in recorded["commands.log"]
    if case.backend == "docker":
        events = docker_events_since(since, case.made.debian)
        assert "exec_create: chpasswd " in [event["Action"] for event in events]
        assert password not in json.dumps(events)
    stored = case.lab.stored_hash(case.made.debian)
    assert stored.startswith("$") and crypt.crypt(password, stored) == stored
    assert crypt.crypt(password + "x", stored) != stored


def test_generated_password_is_returned_once_and_works(case):
    before = case.lab.stored_hash(case.made.debian)
    predicted = case.password(generate=True, check=True)
    assert predicted["changed"] is True and "generated_password" not in predicted
    assert case.lab.stored_hash(case.made.debian) == before, "check mode changed the password"

    result = case.password(generate=True, length=32)
    assert result.get("failed") is not True, result
    password = result["generated_password"]
    assert result["changed"] is True and result["generated"] is True and result["user"] == "root"
    assert len(password) == 32 and "*" not in password
    assert json.dumps(result).count(password) == 1, "returned once, under generated_password only"
    stored = case.lab.stored_hash(case.made.debian)
    assert stored != before and crypt.crypt(password, stored) == stored

    again = case.password(generate=True)
    assert again["changed"] is True and again["generated_password"] != password
    assert len(again["generated_password"]) == 24


def test_password_of_another_user_and_a_given_one_is_not_returned(case):
    password = unique("nobody-Pw1!")
    result = case.password(user="nobody", password=password)
    assert result.get("failed") is not True, result
    assert result["changed"] is True and result["user"] == "nobody"
    assert password not in json.dumps(result)
    stored = case.lab.stored_hash(case.made.debian, "nobody")
    assert crypt.crypt(password, stored) == stored


def test_password_errors_are_clear(case):
    no_chpasswd = case.password(name=case.made.busybox, password="Secret-123456")
    assert no_chpasswd["failed"] is True and "chpasswd" in no_chpasswd["msg"], no_chpasswd
    assert "Secret-123456" not in json.dumps(no_chpasswd)
    stopped = case.password(name=case.made.stopped, generate=True)
    assert stopped["failed"] is True and "is stopped" in stopped["msg"] and "state: started" in stopped["msg"]
    ghost = case.password(user="ghost", password="Secret-123456")
    assert ghost["failed"] is True and "ghost" in ghost["msg"] and "Secret-123456" not in json.dumps(ghost)
    both = case.password(password="x", generate=True)
    assert both["failed"] is True and both["msg"].startswith("password and generate")


def test_action_group_and_a_generated_password_kept_out_of_the_log(case, tmp_path):
    """The documented workflow: module_defaults for the group, generate under no_log, store the password."""
    stored_at = tmp_path / "password.txt"
    playbook = f"""
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/oneclickvirt.virt.virt:
      node: {json.dumps(case.node)}
  tasks:
    - name: Exec with the node from module_defaults
      oneclickvirt.virt.virt_exec:
        name: {case.made.busybox}
        argv: [cat]
        stdin: through the group
      register: echoed
    - name: Check it
      ansible.builtin.assert:
        that: echoed.stdout == "through the group"
    - name: Generate a password
      oneclickvirt.virt.virt_instance_password:
        name: {case.made.debian}
        generate: true
      register: generated
      no_log: true
    - name: Store it
      ansible.builtin.copy:
        content: "{{{{ generated.generated_password }}}}"
        dest: {stored_at}
        mode: "0600"
      no_log: true
"""
    completed = run_playbook(playbook, tmp_path, extra_args=["-vvv"])
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    password = stored_at.read_text()
    assert len(password) == 24
    assert password not in output
    stored = case.lab.stored_hash(case.made.debian)
    assert crypt.crypt(password, stored) == stored


UNREACHABLE_API = {"docker": "unix:///run/ocv-no-such-docker.sock", "lxd": "https://127.0.0.1:1",
                   "incus": "https://127.0.0.1:1"}


@pytest.mark.parametrize("backend", [backend for backend in BACKENDS if backend in UNREACHABLE_API])
def test_auto_falls_back_to_ssh_when_the_api_is_down(nodes, instances, backend):
    made = instances(backend)
    node = node_with(nodes[backend], execution_rule="auto", api={"url": UNREACHABLE_API[backend]})
    result = run_module("virt_exec", {"node": node, "name": made.busybox, "argv": ["cat"], "stdin": "fallback"})
    assert result.get("failed") is not True, result
    assert result["stdout"] == "fallback" and result["transport"] == "ssh"
    assert result["fallback_reason"] and "continuing over SSH" in json.dumps(result["warnings"])
