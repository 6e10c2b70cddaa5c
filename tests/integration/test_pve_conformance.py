"""Every request the Proxmox simulator served during this pytest run, checked against the official PVE API
schema (8.4 and 9.1, read from ../shared/pve-api/, never copied into the repository).

For each logged request: the path and method exist; every parameter name is defined; values have the
schema's type, enum, pattern, range and length; required parameters are present; property strings with an
inline `format` (`net[n]`, `scsi[n]`, `rootfs`, ...) are parsed and checked key by key, and named formats
(`pve-vmid`, `urlencoded`, `pve-qm-ipconfig`, ...) by a validator of their own. The check runs both ways:
what the simulator accepted must be valid, what it refused as a parameter error must be invalid, and an
operation it answered "not implemented" must be one PVE lacks too. Every 2xx answer is checked against
the operation's `returns` (including the property strings in it), every error against PVE's error shape.

The request-log offset is taken when pytest imports this module, i.e. during collection, before any test
of the session runs; the test checks that it runs after every other test of the session (the ordering
hook is in tests/integration/conftest.py). Without the schema folder it skips, or fails when CI=true.
"""
import ipaddress
import json
import os
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import unquote

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = PROJECT_ROOT.parent / "shared" / "pve-api"
SCHEMA_FILES = ("pve-8.4.json", "pve-9.1.json")
LAB_DIR = Path(os.environ.get("OCV_LAB_DIR", "/var/lib/oneclickvirt-lab"))
REQUEST_LOG = LAB_DIR / "pvesim" / "requests.log"
# Pytest imports this module while collecting, before any test of the session runs: the log size now
# is where this session's requests begin.
LOG_OFFSET_AT_COLLECTION = REQUEST_LOG.stat().st_size if REQUEST_LOG.exists() else 0

# Answer fields the schema does not list but PVE does return. Each needs a reason; nothing else may be
# invented by the simulator (a field our backend then relies on would not exist on a real node).
UNDOCUMENTED_FIELDS_PVE_RETURNS = {
    ("/nodes/{node}/qemu/{vmid}/config", "meta"):
        "PVE 8 writes `meta: creation-qemu=...,ctime=...` into every new VM config and GET config returns it; "
        "the 9.1 schema documents it, the 8.4 schema does not",
    **{("/nodes", field): "PVE builds GET /nodes from the cluster resources and returns their `id`, `type`, "
                          "`disk` and `maxdisk` too; the community.proxmox inventory plugin reads `type`"
       for field in ("id", "type", "disk", "maxdisk")},
    ("/nodes/{node}/status", "available"):
        "the 9.1 schema requires `memory.available`, the 8.4 schema does not list it; one answer serves both",
    **{("/storage", field): "GET /storage returns each storage's configuration (`pvesh get /storage`); the schema "
                            "lists only `storage`"
       for field in ("type", "content", "digest", "path", "thinpool", "vgname")},
    ("/nodes/{node}/storage/{storage}/content", "content"):
        "PVE returns each volume's content type (pvesm list prints it as the Content column); the schema omits it",
}

BOOLEAN_TEXT = {"1", "0", "true", "false", "yes", "no", "on", "off"}
SCHEMA_LEVEL_MESSAGES = ("property is not defined in schema", "property is missing and it is not optional",
                         "type check (", "does not have a value in the enumeration", "invalid format",
                         "value must have a minimum value", "value may have a maximum value",
                         "value may only be", "value does not match the regex pattern")


# --- the schema ----------------------------------------------------------------------------------------------

class Schema:
    def __init__(self, path):
        self.name = path.stem
        self.ops = {}
        self.templates = []
        self.typetexts = {}     # named format -> typetext, from the parameters that use it
        self._walk(json.loads(path.read_text()))

    def _walk(self, nodes):
        for node in nodes:
            segments = tuple(part for part in node["path"].split("/") if part)
            self.templates.append((segments, node["path"]))
            for method, op in (node.get("info") or {}).items():
                self.ops[(method, node["path"])] = op
                for spec in (op.get("parameters", {}).get("properties") or {}).values():
                    if isinstance(spec.get("format"), str) and spec.get("typetext"):
                        self.typetexts.setdefault(spec["format"], spec["typetext"])
            self._walk(node.get("children") or [])

    def resolve(self, path):
        """-> (template, {path param: value}) for a concrete path, preferring literal segments; or None."""
        parts = [unquote(part) for part in path.split("/") if part]
        best = None
        for segments, template in self.templates:
            if len(segments) != len(parts):
                continue
            found, literals = {}, 0
            for expected, actual in zip(segments, parts):
                if expected.startswith("{"):
                    found[expected[1:-1]] = actual
                elif expected == actual:
                    literals += 1
                else:
                    break
            else:
                if best is None or literals > best[2]:
                    best = (template, found, literals)
        return (best[0], best[1]) if best else None


def perl_regex(pattern):
    """PVE's patterns are Perl regexes: `(?^:x)` is a group with default flags, `(?^i:x)` with /i."""
    pattern = pattern.replace("(?^:", "(?:").replace("(?^i:", "(?i:").replace("\\z", "\\Z")
    return re.compile(pattern)


# --- named formats ---------------------------------------------------------------------------------------------

def is_ip(value, version=None, cidr=False):
    try:
        parsed = ipaddress.ip_interface(value) if cidr else ipaddress.ip_address(value)
    except ValueError:
        return False
    return (version is None or parsed.version == version) and (not cidr or "/" in value)


DNS_NAME_RE = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?)*")
HOTPLUG_FEATURES = {"network", "disk", "cpu", "memory", "usb", "cloudinit"}
VOLUME_RE = re.compile(r"[a-z][a-z0-9\-_.]*[a-z0-9]:.+")
NAMED_FORMATS = {
    "string": lambda v: True,
    "pve-node": lambda v: re.fullmatch(r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?", v),
    "pve-vmid": lambda v: re.fullmatch(r"[1-9]\d{2,8}", v),
    "pve-configid": lambda v: re.fullmatch(r"[a-z][a-z0-9_\-]+", v),
    "pve-configid-list": lambda v: all(re.fullmatch(r"[a-z][a-z0-9_\-]+", x) for x in re.split(r"[,;\s]+", v) if x),
    "pve-storage-id": lambda v: re.fullmatch(r"[a-z][a-z0-9\-_.]*[a-z0-9]", v),
    "pve-storage-content": lambda v: v in ("images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import", "none"),
    "pve-storage-content-list": lambda v: all(x in ("images", "rootdir", "vztmpl", "iso", "backup", "snippets",
                                                    "import", "none") for x in v.split(",")),
    "pve-poolid": lambda v: re.fullmatch(r"[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+){0,2}", v),
    "pve-bridge-id": lambda v: re.fullmatch(r"[-_.\w\d]+", v),
    "pve-iface": lambda v: re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_]{1,20}([:\.]\d+)?", v),
    "pve-iface-list": lambda v: all(re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_]{1,20}([:\.]\d+)?", x)
                                    for x in re.split(r"[,;\s]+", v) if x),
    "pve-tag-list": lambda v: all(re.fullmatch(r"[a-z0-9_][a-z0-9_\-+.]*", t, re.I) for t in re.split(r"[;, ]", v) if t),
    "pve-userid": lambda v: re.fullmatch(r"[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+", v),
    "pve-realm": lambda v: re.fullmatch(r"[A-Za-z][A-Za-z0-9.\-_]+", v),
    "dns-name": DNS_NAME_RE.fullmatch,
    "dns-name-list": lambda v: all(DNS_NAME_RE.fullmatch(x) for x in re.split(r"[,; ]+", v) if x),
    "mac-addr": lambda v: re.fullmatch(r"[a-fA-F0-9]{2}(:[a-fA-F0-9]{2}){5}", v) and not int(v[:2], 16) & 1,
    "urlencoded": lambda v: re.fullmatch(r"[-%a-zA-Z0-9_.!~*'()]*", v),
    "disk-size": lambda v: re.fullmatch(r"\d+(\.\d+)?[KMGT]?", v),
    "ipv4": lambda v: is_ip(v, 4),
    "ipv6": lambda v: is_ip(v, 6),
    "ip": is_ip,
    "ipv4mask": lambda v: is_ip(v, 4),
    "CIDR": lambda v: is_ip(v, cidr=True),
    "CIDRv4": lambda v: is_ip(v, 4, cidr=True),
    "CIDRv6": lambda v: is_ip(v, 6, cidr=True),
    "address-list": lambda v: all(is_ip(x) for x in re.split(r"[,; ]+", v) if x),
    "lxc-ip-with-ll-iface-list": lambda v: all(is_ip(x.split("%")[0]) for x in re.split(r"[,; ]+", v) if x),
    "pve-ipv4-config": lambda v: v in ("dhcp", "manual") or is_ip(v, 4, cidr=True),
    "pve-ipv6-config": lambda v: v in ("auto", "dhcp", "manual") or is_ip(v, 6, cidr=True),
    "pve-volume-id": VOLUME_RE.fullmatch,
    "pve-volume-id-or-qm-path": lambda v: v == "none" or v == "cdrom" or v.startswith("/") or VOLUME_RE.fullmatch(v),
    "pve-volume-id-or-absolute-path": lambda v: v.startswith("/") or VOLUME_RE.fullmatch(v),
    "pve-lxc-mp-string": lambda v: not re.search(r"(^|/)\.\.(/|$)", v) and "," not in v,
    "pve-qm-ide": lambda v: v in ("none", "cdrom") or v.startswith("/") or VOLUME_RE.fullmatch(v),
    "pve-qm-bootdisk": lambda v: re.fullmatch(r"(ide|sata|scsi|virtio)\d+", v),
    "pve-hotplug-features": lambda v: v in ("0", "1") or set(v.split(",")) <= HOTPLUG_FEATURES,
    "pve-ct-timezone": lambda v: re.fullmatch(r"[\w\-+/]+", v),
    "pve-cpuset": lambda v: re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", v),
    "storage-pair-list": lambda v: all(re.fullmatch(r"[a-z][a-z0-9\-_.]*[a-z0-9](:[a-z][a-z0-9\-_.]*[a-z0-9])?", x)
                                       for x in re.split(r"[,;]", v) if x),
    "pve-task-status-type-list": lambda v: all(x in ("ok", "error", "warning", "unknown") for x in v.split(",")),
}

# Named formats that are property strings: the keys come from the schema's `typetext`, the checks of
# their values from here (key -> validator); a key without a validator here accepts any text.
NAMED_PROPERTY_STRINGS = {
    "pve-qm-ipconfig": {"ip": lambda v: v == "dhcp" or is_ip(v, 4, cidr=True), "gw": lambda v: is_ip(v, 4),
                        "ip6": lambda v: v in ("dhcp", "auto") or is_ip(v, 6, cidr=True), "gw6": lambda v: is_ip(v, 6)},
    "pve-startup-order": {"order": lambda v: v.isdigit(), "up": lambda v: v.isdigit(), "down": lambda v: v.isdigit()},
    "pve-vm-cpu-conf": {"hidden": lambda v: v in BOOLEAN_TEXT, "phys-bits": lambda v: v == "host" or v.isdigit()},
    "pve-qm-boot": {"legacy": lambda v: re.fullmatch(r"[acdn]{1,4}", v),
                    "order": lambda v: all(re.fullmatch(r"(ide|sata|scsi|virtio|efidisk|tpmstate)\d+|net\d+|hostpci\d+|usb\d+", d)
                                           for d in v.split(";") if d)},
    "pve-qm-smbios1": {"uuid": lambda v: re.fullmatch(r"[a-fA-F0-9]{8}(-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}", v),
                       "base64": lambda v: v in BOOLEAN_TEXT},
    "pve-qm-cicustom": {},
    "pve-qm-watchdog": {"model": lambda v: v in ("i6300esb", "ib700")},
}


def typetext_keys(typetext):
    """Keys of a named property-string format, read from its typetext: `[[order=]\\d+] [,up=\\d+]`."""
    default = re.match(r"\s*\[\[([\w\-]+)=\]", typetext or "")
    keys = set(re.findall(r"[\[,]([\w\-]+)=", typetext or ""))
    return keys, default.group(1) if default else None


def split_property_string(text):
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
    return [part for part in parts if part]


# --- checking values -------------------------------------------------------------------------------------------

class Checker:
    """Collects the problems of one request against one schema."""

    def __init__(self, schema=None):
        self.schema = schema
        self.problems = []

    def fail(self, where, message):
        self.problems.append(f"{where}: {message}")

    # request parameters arrive as text (or lists of text for arrays)
    def wire_value(self, schema, value, where):
        kind = schema.get("type", "string")
        if kind == "array":
            for index, item in enumerate(value if isinstance(value, list) else [value]):
                self.wire_value(schema.get("items") or {}, item, f"{where}[{index}]")
            return
        if isinstance(value, list):
            self.fail(where, f"repeated parameter for a {kind}")
            return
        text = str(value)
        if kind == "integer":
            if not re.fullmatch(r"[+-]?\d+", text):
                return self.fail(where, f"not an integer: {text!r}")
            self.range(schema, int(text), where)
        elif kind == "number":
            try:
                number = float(text)
            except ValueError:
                return self.fail(where, f"not a number: {text!r}")
            self.range(schema, number, where)
        elif kind == "boolean":
            if text.lower() not in BOOLEAN_TEXT:
                self.fail(where, f"not a boolean: {text!r}")
        elif kind in ("string", "any"):
            self.string(schema, text, where)
        elif kind == "object":
            self.fail(where, "an object parameter cannot travel as form data")
        self.enum(schema, text, where)

    def range(self, schema, number, where):
        if "minimum" in schema and number < schema["minimum"]:
            self.fail(where, f"{number} is below the minimum {schema['minimum']}")
        if "maximum" in schema and number > schema["maximum"]:
            self.fail(where, f"{number} is above the maximum {schema['maximum']}")

    def enum(self, schema, text, where):
        if "enum" in schema and text not in [str(e) for e in schema["enum"]]:
            self.fail(where, f"{text!r} is not one of {schema['enum']}")

    def string(self, schema, text, where):
        if "maxLength" in schema and len(text) > schema["maxLength"]:
            self.fail(where, f"longer than {schema['maxLength']}")
        if "minLength" in schema and len(text) < schema["minLength"]:
            self.fail(where, f"shorter than {schema['minLength']}")
        if "pattern" in schema and not perl_regex(schema["pattern"]).fullmatch(text):
            self.fail(where, f"{text!r} does not match the pattern {schema['pattern']}")
        fmt = schema.get("format")
        if isinstance(fmt, dict):
            self.property_string(fmt, text, where)
        elif isinstance(fmt, str):
            self.named_format(fmt, schema, text, where)

    def named_format(self, fmt, schema, text, where):
        if fmt in NAMED_PROPERTY_STRINGS:
            # Answers carry no typetext; the parameters using the same format do.
            typetext = schema.get("typetext") or (self.schema.typetexts.get(fmt) if self.schema else None)
            keys, default = typetext_keys(typetext)
            if not keys:
                return self.fail(where, f"no typetext to read the keys of format {fmt!r} from")
            validators = NAMED_PROPERTY_STRINGS[fmt]
            unknown_validators = set(validators) - keys
            if unknown_validators:
                self.fail(where, f"checker knows keys {sorted(unknown_validators)} the schema's {fmt} lacks")
            seen = set()
            for part in split_property_string(text):
                key, sep, value = part.partition("=")
                if not sep:
                    key, value = default, part
                if key is None or key not in keys:
                    self.fail(where, f"{fmt}: unknown key {key or part!r}")
                elif key in seen:
                    self.fail(where, f"{fmt}: duplicate key {key!r}")
                elif key in validators and not validators[key](value):
                    self.fail(where, f"{fmt}: bad value for {key}: {value!r}")
                seen.add(key)
            return
        validator = NAMED_FORMATS.get(fmt)
        if validator is None:
            return self.fail(where, f"no validator for the named format {fmt!r} (value {text!r}); add one")
        if not validator(text):
            self.fail(where, f"{text!r} is not a valid {fmt}")

    def property_string(self, fmt, text, where):
        """Parse `k=v,k2=v2` against an inline format: aliases, keyAlias, default_key; key by key."""
        default_key = next((k for k, d in fmt.items() if d.get("default_key")), None)
        values = {}
        for part in split_property_string(text):
            key, sep, value = part.partition("=")
            if not sep:
                if default_key is None or default_key in values:
                    self.fail(where, f"value {part!r} without a key (the format has no default key left)")
                    continue
                key, value = default_key, part
            entry = fmt.get(key)
            if entry is None:
                self.fail(where, f"unknown key {key!r} in property string")
                continue
            if "keyAlias" in entry:
                values[entry["keyAlias"]] = key
                key = entry["alias"]
            elif "alias" in entry:
                key = entry["alias"]
            if key in values:
                self.fail(where, f"duplicate key {key!r} in property string")
            values[key] = value.strip('"')
        for key, value in values.items():
            self.wire_value(fmt[key], value, f"{where}.{key}")
        for key, entry in fmt.items():
            if "alias" in entry or entry.get("optional"):
                continue
            if key not in values:
                self.fail(where, f"required key {key!r} missing from property string")

    # answers arrive as JSON
    def answer(self, schema, value, where):
        kind = schema.get("type")
        if isinstance(kind, list) or kind in (None, "any"):
            return
        if value is None:
            if kind != "null" and not schema.get("optional"):
                self.fail(where, f"null where a {kind} is expected")
            return
        checks = {"null": lambda v: v is None, "object": lambda v: isinstance(v, dict),
                  "array": lambda v: isinstance(v, list), "string": lambda v: isinstance(v, str),
                  "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
                  "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
                  "boolean": lambda v: isinstance(v, bool) or v in (0, 1)}
        if not checks.get(kind, lambda v: True)(value):
            return self.fail(where, f"{type(value).__name__} {value!r:.80} where a {kind} is expected")
        if kind == "object":
            self.answer_object(schema, value, where)
        elif kind == "array" and isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                self.answer(schema["items"], item, f"{where}[{index}]")
        elif kind == "string":
            self.string(schema, value, where)
            self.enum(schema, value, where)
        elif kind in ("integer", "number"):
            self.range(schema, value, where)
            self.enum(schema, str(value), where)

    def answer_object(self, schema, value, where):
        properties = schema.get("properties")
        if properties is None:
            return
        for key, item in value.items():
            sub = properties.get(key) or indexed(properties, key)
            if sub is None:
                if schema.get("additionalProperties") or (where.split(" returns")[0], key) in UNDOCUMENTED_FIELDS_PVE_RETURNS:
                    continue
                self.fail(where, f"field {key!r} is not in the schema's returns")
                continue
            self.answer(sub, item, f"{where}.{key}")
        for key, sub in properties.items():
            if not sub.get("optional") and "[n]" not in key and key not in value:
                self.fail(where, f"required field {key!r} missing")


def indexed(properties, name):
    """`net0` -> the `net[n]` entry, within the "(n is 0 to N)" range its description gives."""
    match = re.fullmatch(r"([a-z][a-z_\-]*?)(\d+)", name)
    if not match:
        return None
    entry = properties.get(f"{match.group(1)}[n]")
    if entry is None:
        return None
    limit = re.search(r"n is 0 to (\d+)", entry.get("description", ""))
    if limit and int(match.group(2)) > int(limit.group(1)):
        return None
    return entry


def check_request(schema, entry):
    """-> list of problems of one logged request against one schema version."""
    checker = Checker(schema)
    method, path, status = entry["method"], entry["path"], entry["status"]
    where = f"{method} {path}"
    resolved = schema.resolve(path)
    op = schema.ops.get((method, resolved[0])) if resolved else None
    if status == 501 and not entry.get("fault"):
        if op is not None:
            checker.fail(where, "the simulator answered 501, but PVE implements this operation")
        return checker.problems
    if status == 401:
        return checker.problems + error_shape(entry, where)
    if op is None:
        checker.fail(where, "no such operation in the schema")
        return checker.problems
    template, path_params = resolved
    params = dict(entry["params"])
    properties = op.get("parameters", {}).get("properties", {})
    request_checker = Checker(schema)
    for name, value in {**params, **path_params}.items():
        spec = properties.get(name) or indexed(properties, name)
        if spec is None:
            if not op.get("parameters", {}).get("additionalProperties"):
                request_checker.fail(f"{where} param {name}", "not defined in the schema")
            continue
        if isinstance(value, str) and value.startswith("<redacted "):
            continue   # secrets are logged redacted; their schema type is string
        request_checker.wire_value(spec, value, f"{where} param {name}")
    for name, spec in properties.items():
        if not spec.get("optional") and "[n]" not in name and name not in params and name not in path_params:
            request_checker.fail(f"{where} param {name}", "required, but missing")
    refused = status == 400 and not entry.get("fault") and schema_level_refusal(entry)
    if refused:
        # The simulator refused parameters: the schema must refuse the same ones.
        flagged = set(refused)
        found = {p.split(" param ")[1].split(":")[0].split(".")[0].split("[")[0]
                 for p in request_checker.problems}
        for name in sorted(flagged - found):
            checker.fail(f"{where} param {name}", f"the simulator refused it ({refused[name]!r}), the schema accepts it")
    else:
        checker.problems.extend(request_checker.problems)
    if 200 <= status < 300:
        body = entry["response"]
        if not isinstance(body, dict) or "data" not in body:
            checker.fail(where, "answer is not wrapped in {'data': ...}")
        else:
            extra = set(body) - {"data", "total", "changes"}
            if extra:
                checker.fail(where, f"unexpected top-level answer keys {sorted(extra)}")
            checker.answer(op.get("returns", {}), body["data"], f"{template} returns")
    elif status:
        checker.problems.extend(error_shape(entry, where))
    return checker.problems


def schema_level_refusal(entry):
    errors = (entry.get("response") or {}).get("errors") or {}
    return {name: message for name, message in errors.items()
            if any(marker in message for marker in SCHEMA_LEVEL_MESSAGES)}


def error_shape(entry, where):
    body = entry.get("response")
    if body is None and entry.get("fault"):
        return []       # a dropped connection has no answer
    if not isinstance(body, dict) or body.get("data", "missing") is not None:
        return [f"{where}: error answer is not {{'data': null, ...}}: {body!r:.200}"]
    if not isinstance(body.get("message"), str) or not body["message"]:
        return [f"{where}: error answer has no message"]
    if "errors" in body and not isinstance(body["errors"], dict):
        return [f"{where}: 'errors' is not an object"]
    unexpected = set(body) - {"data", "message", "errors"}
    return [f"{where}: unexpected error keys {sorted(unexpected)}"] if unexpected else []


# --- the tests ----------------------------------------------------------------------------------------------------

def load_schemas():
    missing = [name for name in SCHEMA_FILES if not (SCHEMA_DIR / name).exists()]
    if missing:
        message = f"PVE API schema not found: {SCHEMA_DIR} lacks {', '.join(missing)}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: the conformance check is mandatory)")
        pytest.skip(message)
    return [Schema(SCHEMA_DIR / name) for name in SCHEMA_FILES]


@pytest.fixture(scope="module")
def schemas():
    return load_schemas()


def read_log(offset):
    if not REQUEST_LOG.exists():
        return []
    with open(REQUEST_LOG, "rb") as stream:
        stream.seek(offset)
        return [json.loads(line) for line in stream.read().splitlines() if line.strip()]


def test_checker_catches_what_it_must(schemas):
    """The checker itself can fail: each of these requests breaks the schema in one way."""
    ok = {"via": "api", "method": "POST", "path": "/nodes/pve/qemu", "status": 200, "fault": False,
          "params": {"vmid": "100", "name": "vm1", "net0": "virtio,bridge=vmbr0", "scsi0": "local-lvm:8"},
          "response": {"data": "UPID:pve:00000001:00000001:00000001:qmcreate:100:root@pam:"}}
    broken = {
        "unknown parameter": {"params": {**ok["params"], "flavour": "x"}},
        "integer type": {"params": {**ok["params"], "cores": "two"}},
        "enum": {"params": {**ok["params"], "ostype": "plan9"}},
        "missing required": {"params": {"name": "vm1"}},
        "net0 unknown key": {"params": {**ok["params"], "net0": "virtio,bridge=vmbr0,speed=10"}},
        "net0 key type": {"params": {**ok["params"], "net0": "virtio,bridge=vmbr0,tag=lots"}},
        "rootless sshkeys": {"params": {**ok["params"], "sshkeys": "ssh-ed25519 AAAA x"}},
        "ipconfig key": {"params": {**ok["params"], "ipconfig0": "ip=dhcp,gateway=10.0.0.1"}},
        "index range": {"params": {**ok["params"], "ide4": "local-lvm:1"}},
        "no such path": {"path": "/nodes/pve/qemu/100/frobnicate"},
        "unwrapped answer": {"response": "UPID:..."},
        "answer type": {"path": "/cluster/nextid", "method": "GET", "params": {}, "response": {"data": "100"}},
        "answer field": {"path": "/version", "method": "GET", "params": {},
                         "response": {"data": {"version": "8.4.1", "release": "8.4", "repoid": "2a5fa54a",
                                               "colour": "blue"}}},
        "missing answer field": {"path": "/version", "method": "GET", "params": {},
                                 "response": {"data": {"release": "8.4", "repoid": "2a5fa54a"}}},
        "bad error shape": {"status": 500, "response": {"error": "boom"}},
        "refused but valid": {"status": 400, "response": {"data": None, "message": "Parameter verification failed.\n",
                                                          "errors": {"name": "invalid format - nope"}}},
        "501 for a real operation": {"path": "/nodes/pve/qemu/100/status/current", "method": "GET", "params": {},
                                     "status": 501, "response": {"data": None, "message": "not implemented\n"}},
    }
    for schema in schemas:
        assert check_request(schema, ok) == [], schema.name
        for what, change in broken.items():
            assert check_request(schema, {**ok, **change}), f"{schema.name}: the checker missed: {what}"


def test_absent_schema_skips_outside_ci_and_fails_in_ci(monkeypatch, tmp_path):
    monkeypatch.setattr(sys.modules[__name__], "SCHEMA_DIR", tmp_path / "no-such-folder")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="schema not found"):
        load_schemas()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        load_schemas()


def test_every_simulator_request_conforms(schemas, request):
    items = request.session.items
    position = items.index(request.node)
    later = [item.nodeid for item in items[position + 1:] if item.module is not request.module]
    assert not later, f"the conformance check must run after every other test, but these follow it: {later[:5]}"
    offset = LOG_OFFSET_AT_COLLECTION
    entries = read_log(offset)
    assert entries, (f"no simulator requests were logged during this run (log {REQUEST_LOG} from byte {offset}); "
                     "run this test together with the rest of the suite")
    problems = defaultdict(list)
    for entry in entries:
        for schema in schemas:
            for problem in check_request(schema, entry):
                problems[f"[{schema.name}] {problem}"].append(entry)
    operations = Counter((e["method"], (schemas[0].resolve(e["path"]) or (e["path"],))[0]) for e in entries)
    statuses = Counter(e["status"] for e in entries)
    summary = (f"checked {len(entries)} simulator requests ({sum(e['via'] == 'cli' for e in entries)} from the "
               f"node tools) over {len(operations)} operations against {', '.join(s.name for s in schemas)}; "
               f"statuses {dict(sorted(statuses.items()))}")
    print(summary)
    if problems:
        lines = [f"{problem}  (x{len(hits)}; e.g. params {json.dumps(hits[0]['params'])[:300]})"
                 for problem, hits in sorted(problems.items())]
        pytest.fail(f"{len(problems)} conformance problems; {summary}\n" + "\n".join(lines[:200]))
