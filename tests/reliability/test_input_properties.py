"""Bad input, in process: property-based tests over every option that reaches a node.

For any value, validation either refuses it with InvalidSpec (a message that names the option) or accepts it
in a form that is safe to send: never another exception (a traceback instead of a message), never a value
that a shell on the node could read as more than one word. These tests are the fast subset (no lab needed,
about 10 s); the lab-bound scenarios are in tests/reliability/lab/.
"""
import shlex
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = ROOT / "tests" / "output" / "collections"
_link = COLLECTIONS / "ansible_collections" / "oneclickvirt" / "virt"
_link.parent.mkdir(parents=True, exist_ok=True)
if not _link.is_symlink():
    _link.symlink_to(ROOT)
sys.path.insert(0, str(COLLECTIONS))

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import InvalidSpec  # noqa: E402
from ansible_collections.oneclickvirt.virt.plugins.module_utils.execution import (  # noqa: E402
    build_exec_request, build_password_request)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.images import build_image_request  # noqa: E402
from ansible_collections.oneclickvirt.virt.plugins.module_utils.instance import build_request  # noqa: E402
from ansible_collections.oneclickvirt.virt.plugins.module_utils.node import validate_node_dict  # noqa: E402
from ansible_collections.oneclickvirt.virt.plugins.module_utils.portmap import manager  # noqa: E402
from ansible_collections.oneclickvirt.virt.plugins.module_utils.transport.ssh import quote_argv  # noqa: E402
from ansible_collections.oneclickvirt.virt.plugins.module_utils.units import size_to_mib  # noqa: E402

EXAMPLES = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Text as YAML and JSON can carry it: any code point but lone surrogates.
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)
HOSTILE = st.sampled_from(["; touch /tmp/rel-canary", "$(id)", "`id`", "a b", "'", '"', "\n", "|", "&", ">", "<",
                           "*", "~", "-rf", "\\", "\0", "../..", "%s", "${IFS}", "\t"])
MIXED = st.one_of(TEXT, HOSTILE, st.builds(lambda a, b: a + b, TEXT, HOSTILE))
ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), MIXED,
                      st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def shell_word(value):
    """True when a POSIX shell reads the value as exactly itself, with no quoting needed."""
    return shlex.quote(value) == value


def refused_or(check, function, *args):
    """Run a validator: InvalidSpec is a fine answer; anything else must pass `check`."""
    try:
        result = function(*args)
    except InvalidSpec as error:
        assert str(error), "an InvalidSpec without a message"
        return None
    check(result)
    return result


# -- virt_instance ---------------------------------------------------------------------------------------------
@EXAMPLES
@given(MIXED)
def test_instance_names_are_refused_or_shell_words(name):
    def check(request):
        assert request.spec.name == name and shell_word(name) and len(name) <= 63 and not name.startswith("-")
    refused_or(check, build_request, {"name": name, "image": "ocv-busybox"})


@EXAMPLES
@given(st.one_of(ANY_VALUE, st.builds(lambda n, u: f"{n}{u}", st.integers(-10, 10 ** 6),
                                      st.sampled_from(["", "K", "MiB", "GB", "t", " MiB", "parsec", "b"]))))
def test_sizes_are_refused_or_whole_mib(value):
    def check(mib):
        assert (mib is None and value is None) or (isinstance(mib, int) and mib >= 1)
    refused_or(check, size_to_mib, value, "memory")


def test_a_size_past_float_range_is_a_clear_error():
    with pytest.raises(InvalidSpec, match="memory"):
        size_to_mib("9" * 400, "memory")


@EXAMPLES
@given(ANY_VALUE)
def test_cpu_is_refused_or_a_positive_number(cpu):
    def check(request):
        assert request.spec.cpu is None or 0 < request.spec.cpu <= 4096
    refused_or(check, build_request, {"name": "rel-a", "cpu": cpu})


@EXAMPLES
@given(st.one_of(st.integers(-70000, 140000), ANY_VALUE), st.one_of(st.none(), st.integers(-5, 70000)))
def test_published_ports_are_refused_or_in_range(guest_port, host_port):
    def check(request):
        port = request.spec.ports[0]
        assert 1 <= port.guest_port <= 65535 and (port.host_port is None or 1 <= port.host_port <= 65535)
    try:
        refused_or(check, build_request, {"name": "rel-a", "ports": [{"guest_port": guest_port,
                                                                       "host_port": host_port}]})
    except TypeError:
        # A dict or list as a port: Ansible's argument spec (type: int) refuses it before build_request runs.
        assert not isinstance(guest_port, (int, type(None)))


@EXAMPLES
@given(st.dictionaries(MIXED, st.one_of(MIXED, st.integers(), st.none()), max_size=4))
def test_env_keys_are_names_and_values_arrive_unchanged(env):
    def check(request):
        for key, value in request.spec.env.items():
            assert shell_word(key) and "=" not in key
            assert value == str(env[key])  # never trimmed, escaped or otherwise rewritten
    refused_or(check, build_request, {"name": "rel-a", "env": env})


@EXAMPLES
@given(MIXED)
def test_passwords_without_newline_or_nul_are_kept_verbatim(password):
    def check(request):
        assert request.password == password and "\n" not in password and "\0" not in password
    refused_or(check, build_request, {"name": "rel-a", "password": password})


# -- virt_exec, virt_instance_password -------------------------------------------------------------------------
@EXAMPLES
@given(st.lists(st.one_of(MIXED, st.integers()), max_size=5), st.dictionaries(MIXED, MIXED, max_size=2),
       st.one_of(st.none(), MIXED), st.one_of(st.none(), MIXED, st.integers(-1, 70000)))
def test_exec_argv_round_trips_through_the_one_quoting_place(argv, env, cwd, user):
    params = {"name": "rel-a", "argv": argv, "env": env, "cwd": cwd, "user": user}

    def check(request):
        assert request.argv == [str(arg) for arg in argv]
        # What goes over SSH is quote_argv(argv): a shell splits it back into exactly the same words.
        assert shlex.split(quote_argv(request.argv)) == request.argv
        assert request.cwd is None or request.cwd.startswith("/")
        assert request.user is None or shell_word(request.user)
    refused_or(check, build_exec_request, params)


@EXAMPLES
@given(st.one_of(MIXED, st.integers(-3, 70000)), st.one_of(st.none(), MIXED))
def test_password_requests_name_a_plain_user(user, password):
    def check(request):
        assert shell_word(str(request.user))
        assert request.password in (None, password)
    refused_or(check, build_password_request, {"name": "rel-a", "user": user, "password": password})


# -- virt_image ------------------------------------------------------------------------------------------------
@EXAMPLES
@given(st.sampled_from(["docker", "lxd", "incus", "proxmox"]), MIXED,
       st.lists(MIXED, max_size=2), st.sampled_from([None, "pull", "url", "file"]), st.one_of(st.none(), MIXED))
def test_image_references_are_refused_or_shell_words(backend, name, aliases, source, location):
    params = {"name": name, "aliases": aliases, "source": source, "state": "present",
              "url": location if source == "url" else None, "path": location if source == "file" else None}

    def check(request):
        assert shell_word(request.name) and not request.name.startswith("-"), request.name
        for alias in request.aliases:
            assert shell_word(alias) and not alias.startswith("-")
        if request.url:
            assert request.url.startswith(("http://", "https://"))
            assert not any(char in request.url for char in " '\"`\\\n<>|")
        if source == "file":
            assert request.path.startswith("/") and "\n" not in request.path and "\0" not in request.path
    refused_or(check, build_image_request, params, backend)


# -- virt_portmap ----------------------------------------------------------------------------------------------
PORTMAP_NODE = validate_node_dict({"name": "rel-node", "type": "docker", "api": {"url": "unix:///var/run/docker.sock"},
                                   "port_range": {"start": 20000, "end": 20999}})


@EXAMPLES
@given(MIXED, st.one_of(st.none(), st.integers(-5, 70000)), st.one_of(st.none(), st.integers(19990, 21010)),
       st.one_of(st.none(), st.integers(-2, 1100)), st.one_of(st.none(), MIXED, st.sampled_from(["::1", "10.165.0.1"])),
       st.sampled_from([None, "tcp", "udp", "both", "sctp", "tcp;id"]))
def test_portmap_requests_stay_in_the_node_range(instance, guest_port, host_port, count, listen, protocol):
    params = {"instance": instance, "guest_port": guest_port, "host_port": host_port, "count": count,
              "listen_address": listen, "protocol": protocol}

    def check(request):
        assert shell_word(request.instance)
        last_guest = request.guest_port + request.count - 1
        assert 1 <= request.guest_port and last_guest <= 65535
        if request.host_port is not None:
            assert 20000 <= request.host_port and request.host_port + request.count - 1 <= 20999
        assert set(request.protocols) <= {"tcp", "udp"}
    refused_or(check, manager.build_request, params, PORTMAP_NODE)


# -- a bug the properties found (fixed) ---------------------------------------------------------------------------
# The validators used re.match(r"^...$"), and `$` also matches before a final newline: "web-1\n" passed as a
# name. They anchor with \Z now; every case here must be refused.
TRAILING_NEWLINE = {
    "instance name": lambda: build_request({"name": "web-1\n"}),
    "hostname": lambda: build_request({"name": "web-1", "hostname": "h\n"}),
    "env key": lambda: build_request({"name": "web-1", "env": {"A\n": "1"}}),
    "exec env key": lambda: build_exec_request({"name": "web-1", "argv": ["true"], "env": {"A\n": "1"}}),
    "exec user": lambda: build_exec_request({"name": "web-1", "argv": ["true"], "user": "root\n"}),
    "password user": lambda: build_password_request({"name": "web-1", "user": "root\n", "password": "x"}),
    "docker image": lambda: build_image_request({"name": "busybox\n"}, "docker"),
    "lxd alias": lambda: build_image_request({"name": "busybox\n"}, "lxd"),
    "portmap instance": lambda: manager.build_request({"instance": "web\n", "guest_port": 80}, PORTMAP_NODE),
    "node name": lambda: validate_node_dict({"name": "n\n", "type": "docker", "api": {"url": "unix:///x"}}),
}


@pytest.mark.parametrize("case", sorted(TRAILING_NEWLINE))
def test_a_trailing_newline_is_refused(case):
    with pytest.raises(InvalidSpec):
        TRAILING_NEWLINE[case]()
