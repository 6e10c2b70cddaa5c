"""Sizes, cpu, names and ports: the shared vocabulary, parsed the same way for every backend."""

import pytest
from hypothesis import given, strategies as st

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import InvalidSpec
from ansible_collections.oneclickvirt.virt.plugins.module_utils.units import (
    check_name, check_port, cpu_value, size_to_mib)


@pytest.mark.parametrize("value, mib", [
    (512, 512), ("512", 512), ("512MiB", 512), ("512M", 512), ("1GiB", 1024), ("1G", 1024), ("2g", 2048),
    ("1TiB", 1024 * 1024), ("1T", 1024 * 1024), ("1024KiB", 1), ("1K", 1), ("1GB", 954), ("1MB", 1),
    ("1.5GiB", 1536), (" 64 MiB ", 64), ("1048576b", 1),
])
def test_sizes(value, mib):
    assert size_to_mib(value, "memory") == mib


@pytest.mark.parametrize("value", ["", "abc", "12 parsecs", "-1", "1.2.3G", "0", "0MiB", True, "1 G B", "1e9"])
def test_bad_sizes_name_the_option(value):
    with pytest.raises(InvalidSpec, match=r"^disk:"):
        size_to_mib(value, "disk")


def test_size_none_is_not_asked():
    assert size_to_mib(None, "memory") is None


@given(st.integers(min_value=1, max_value=1024 ** 3))
def test_integer_sizes_are_mib(value):
    assert size_to_mib(value, "memory") == value
    assert size_to_mib(f"{value}MiB", "memory") == value
    if value <= 1024 ** 2:
        assert size_to_mib(f"{value}GiB", "memory") == value * 1024


@pytest.mark.parametrize("value", ["9" * 400, 10 ** 30, 1024 ** 3 + 1, "1025TiB", "2PB"])
def test_sizes_beyond_a_pib_name_the_option(value):
    with pytest.raises(InvalidSpec, match="^memory: "):
        size_to_mib(value, "memory")


@pytest.mark.parametrize("name", ["web-1\n", "web-1\r\n", "\nweb-1"])
def test_a_trailing_or_leading_newline_is_not_a_name(name):
    with pytest.raises(InvalidSpec, match="^name: "):
        check_name(name)


@pytest.mark.parametrize("value, cores", [(1, 1), ("2", 2), (0.5, 0.5), ("1.25", 1.25), (2.0, 2)])
def test_cpu(value, cores):
    assert cpu_value(value) == cores


@pytest.mark.parametrize("value", [0, -1, "x", "nan", float("inf"), 10 ** 6, True, "true"])
def test_bad_cpu(value):
    with pytest.raises(InvalidSpec, match="^cpu:"):
        cpu_value(value)


@pytest.mark.parametrize("name", ["a", "web-1", "A1", "x" * 63, "1abc"])
def test_good_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a-", "a b", "a;b", "$(id)", "a/b", "ü", "x" * 64, "a_b", "a.b",
                                  "a\nb", None, 5])
def test_bad_names(name):
    with pytest.raises(InvalidSpec, match="^name:"):
        check_name(name)


@given(st.text())
def test_any_accepted_name_is_shell_safe(text):
    try:
        check_name(text)
    except InvalidSpec:
        return
    assert all(char.isascii() and (char.isalnum() or char == "-") for char in text)


@pytest.mark.parametrize("port", [0, 65536, -1, True, "80", None])
def test_bad_ports(port):
    with pytest.raises(InvalidSpec, match="^ports"):
        check_port(port, "ports[0].guest_port")


def test_instance_result_is_a_copy_with_every_field_and_sorted_ports():
    from dataclasses import fields

    from ansible_collections.oneclickvirt.virt.plugins.module_utils.models import Instance

    ports = [{"guest_port": 443, "host_port": 8443, "protocol": "tcp", "listen_address": None},
             {"guest_port": 53, "host_port": 5353, "protocol": "udp", "listen_address": None},
             {"guest_port": 53, "host_port": 5353, "protocol": "tcp", "listen_address": None}]
    instance = Instance(name="a", id="1", node="n", backend="docker", type="container", status="running",
                        cpu=0.5, ports=ports)
    result = instance.to_dict()
    assert list(result) == [field.name for field in fields(Instance)]
    assert [(port["guest_port"], port["protocol"]) for port in result["ports"]] == [
        (53, "tcp"), (53, "udp"), (443, "tcp")]
    result["ports"][0]["host_port"] = 1
    result["cpu"] = 2
    assert instance.ports[2]["host_port"] == 5353 and instance.cpu == 0.5  # the result never aliases the instance
