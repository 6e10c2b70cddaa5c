"""Every command is an argv list, quoted in one place: what reaches the node's shell is exactly the argv."""

import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import InvalidSpec
from ansible_collections.oneclickvirt.virt.plugins.module_utils.transport.ssh import quote_argv

HOSTILE = ["$(touch /tmp/x)", "`id`", "a b", "'", '"', ";", "&&", "|", ">", "\\", "\n", "*", "~", "-rf", "", "ü"]


def shell_argv(command):
    """What /bin/sh makes of a command line: the argv the program would receive."""
    script = 'for a in "$@"; do printf "%s\\0" "$a"; done'
    out = subprocess.run(["/bin/sh", "-c", f"set -- {command}; {script}"], capture_output=True, check=True)
    return out.stdout.split(b"\0")[:-1]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_stay_one_argument(value):
    assert shell_argv(quote_argv(["echo", value])) == [b"echo", value.encode()]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",))),
                min_size=1, max_size=5))
def test_any_argv_round_trips_through_the_shell(argv):
    assert shell_argv(quote_argv(argv)) == [arg.encode() for arg in argv]


def test_strings_are_refused():
    with pytest.raises(InvalidSpec):
        quote_argv("rm -rf /")
    with pytest.raises(InvalidSpec):
        quote_argv([])
