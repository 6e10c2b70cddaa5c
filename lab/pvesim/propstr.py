"""Property strings (`virtio,bridge=vmbr0,rate=10`) and sizes (`8G`), the way PVE writes and reads them."""
import re
from dataclasses import dataclass, field

UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}
SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)$")


class FormatError(ValueError):
    """A property string or size that PVE would refuse; the message is PVE's wording where we know it."""


@dataclass
class PropFormat:
    """What the simulator knows of one property-string format: its keys, the key a bare value fills,
    and aliases such as `virtio=<mac>` (key `virtio` means model=virtio, macaddr=<mac>)."""
    keys: frozenset
    default_key: str = ""
    required: frozenset = frozenset()
    key_aliases: dict = field(default_factory=dict)   # alias key -> (key it names, key its value fills)
    first: tuple = ()                                   # keys printed before the sorted rest


def split_parts(text):
    """Split on commas, keeping commas inside double quotes (PVE accepts quoted values)."""
    parts, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part for part in parts if part != ""]


def parse(text, fmt, name="value"):
    """Parse `text` into an ordered dict of strings, refusing keys the format lacks."""
    result = {}
    for part in split_parts(text):
        key, sep, value = part.partition("=")
        if not sep:
            if not fmt.default_key or fmt.default_key in result:
                raise FormatError(f"{name}: value without key, but schema does not define a default key")
            key, value = fmt.default_key, part
        elif key in fmt.key_aliases:
            alias_of, value_key = fmt.key_aliases[key]
            result[alias_of] = key
            key = value_key
        if key not in fmt.keys:
            raise FormatError(f"{name}.{key}: property is not defined in schema and the schema does not "
                              f"allow additional properties")
        if key in result:
            raise FormatError(f"{name}.{key}: duplicate key in comma-separated list property")
        result[key] = value.strip('"')
    for key in fmt.required:
        if key not in result:
            raise FormatError(f"{name}.{key}: property is missing and it is not optional")
    return result


def render(values, fmt):
    """The canonical text PVE writes back into the config: default key (or alias) first, then sorted."""
    values = dict(values)
    parts = []
    alias_used = next((alias for alias, (alias_of, value_key) in fmt.key_aliases.items()
                       if values.get(alias_of) == alias and value_key in values), None)
    if alias_used:
        alias_of, value_key = fmt.key_aliases[alias_used]
        parts.append(f"{alias_used}={values.pop(value_key)}")
        values.pop(alias_of)
    elif fmt.default_key and fmt.default_key in values:
        parts.append(values.pop(fmt.default_key))
    for key in fmt.first:
        if key in values:
            parts.append(f"{key}={values.pop(key)}")
    parts.extend(f"{key}={values[key]}" for key in sorted(values))
    return ",".join(parts)


def parse_size(text, default_unit=""):
    """`8G` -> bytes. A bare number is bytes unless the caller says otherwise (`local-lvm:8` is GiB)."""
    match = SIZE_RE.match(str(text).strip())
    if not match:
        raise FormatError(f"invalid size '{text}'")
    number, unit = match.groups()
    return int(float(number) * UNITS[unit or default_unit])


def format_size(size_bytes):
    """bytes -> `8G`, in the largest unit that divides exactly, as PVE prints sizes in configs."""
    for unit in ("T", "G", "M", "K"):
        if size_bytes and size_bytes % UNITS[unit] == 0:
            return f"{size_bytes // UNITS[unit]}{unit}"
    return str(size_bytes)
