# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The node description: one argument spec, one validation, used by every module, the inventory and the role.

Every connection and auth option falls back to an ONECLICKVIRT_* environment variable, so AWX credential
types and module_defaults can supply it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ansible.module_utils.basic import env_fallback

from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends import PROVIDERS
from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import InvalidSpec

BACKENDS = tuple(sorted(PROVIDERS))
EXECUTION_RULES = ("api_only", "ssh_only", "auto")
HOST_KEY_CHECKING = ("strict", "accept_new", "ignore")


def _env(name):
    return {"fallback": (env_fallback, [f"ONECLICKVIRT_{name}"])}


SSH_SPEC = {
    "host": {"type": "str", **_env("SSH_HOST")},
    "port": {"type": "int", "default": 22, **_env("SSH_PORT")},
    "user": {"type": "str", "default": "root", **_env("SSH_USER")},
    "private_key_file": {"type": "path", "no_log": False, **_env("SSH_PRIVATE_KEY_FILE")},
    "private_key": {"type": "str", "no_log": True, **_env("SSH_PRIVATE_KEY")},
    "password": {"type": "str", "no_log": True, **_env("SSH_PASSWORD")},
    "host_key_checking": {"type": "str", "default": "strict", "choices": list(HOST_KEY_CHECKING),
                          **_env("SSH_HOST_KEY_CHECKING")},
    "known_hosts_file": {"type": "path", **_env("SSH_KNOWN_HOSTS_FILE")},
    "connect_timeout": {"type": "int", "default": 10, **_env("SSH_CONNECT_TIMEOUT")},
    "command_timeout": {"type": "int", "default": 120, **_env("SSH_COMMAND_TIMEOUT")},
}

API_SPEC = {
    "url": {"type": "str", **_env("API_URL")},
    "validate_certs": {"type": "bool", "default": True, **_env("API_VALIDATE_CERTS")},
    "ca_file": {"type": "path", **_env("API_CA_FILE")},
    "server_cert": {"type": "path", **_env("API_SERVER_CERT")},
    "client_cert": {"type": "path", **_env("API_CLIENT_CERT")},
    "client_key": {"type": "path", "no_log": False, **_env("API_CLIENT_KEY")},
    "token_id": {"type": "str", "no_log": False, **_env("API_TOKEN_ID")},
    "token_secret": {"type": "str", "no_log": True, **_env("API_TOKEN_SECRET")},
    "timeout": {"type": "int", "default": 30, **_env("API_TIMEOUT")},
}

NODE_SPEC = {
    "name": {"type": "str", "required": True},
    "type": {"type": "str", "required": True, "choices": list(BACKENDS)},
    "execution_rule": {"type": "str", "default": "auto", "choices": list(EXECUTION_RULES)},
    "ssh": {"type": "dict", "options": SSH_SPEC, "apply_defaults": True},
    "api": {"type": "dict", "options": API_SPEC, "apply_defaults": True},
    "project": {"type": "str", "default": "default"},
    "proxmox_node": {"type": "str"},
    "public_ip": {"type": "str"},
    "port_range": {"type": "dict", "apply_defaults": True, "options": {
        "start": {"type": "int", "default": 10000},
        "end": {"type": "int", "default": 65535},
    }},
}

# What a module puts in its argument_spec: `node=NODE_OPTION`.
NODE_OPTION = {"type": "dict", "required": True, "options": NODE_SPEC}


@dataclass
class SshSettings:
    host: str
    port: int = 22
    user: str = "root"
    private_key_file: str | None = None
    private_key: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    host_key_checking: str = "strict"
    known_hosts_file: str | None = None
    connect_timeout: int = 10
    command_timeout: int = 120


@dataclass
class ApiSettings:
    url: str
    validate_certs: bool = True
    ca_file: str | None = None
    server_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    token_id: str | None = None
    token_secret: str | None = field(default=None, repr=False)
    timeout: int = 30


@dataclass
class Node:
    name: str
    type: str
    execution_rule: str = "auto"
    ssh: SshSettings | None = None
    api: ApiSettings | None = None
    project: str = "default"
    proxmox_node: str | None = None
    public_ip: str | None = None
    port_range: tuple = (10000, 65535)

    def secrets(self):
        """Every secret of this node, so that error messages can be scrubbed of them."""
        values = []
        if self.ssh:
            values += [self.ssh.password, self.ssh.private_key]
        if self.api:
            values.append(self.api.token_secret)
        return [value for value in values if value]


def _check_file(path, option):
    if path and not os.path.isfile(path):
        raise InvalidSpec(f"{option}: file {path!r} does not exist; give the path of a readable file")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def build_node(params):
    """Validate a node description (already through NODE_SPEC) and return a Node. Raises InvalidSpec."""
    name, backend, rule = params.get("name"), params.get("type"), params.get("execution_rule") or "auto"
    if not name:
        raise InvalidSpec("node.name: required; give the node a label such as 'pve-fra-1'")
    if _CONTROL.search(name) or len(name) > 64:
        # A label in results, reports and log lines: one line of at most 64 characters.
        raise InvalidSpec(f"node.name: {name!r} is not a label; use at most 64 characters and no control "
                          "characters (no newline or tab), e.g. 'pve-fra-1'")
    if backend not in BACKENDS:
        raise InvalidSpec(f"node.type: {backend!r} is not a backend; use one of {', '.join(BACKENDS)}")
    if rule not in EXECUTION_RULES:
        raise InvalidSpec(f"node.execution_rule: {rule!r} is not a rule; use one of {', '.join(EXECUTION_RULES)}")

    ssh_params = params.get("ssh") or {}
    api_params = params.get("api") or {}
    ssh = SshSettings(**{k: v for k, v in ssh_params.items() if v is not None}) if ssh_params.get("host") else None
    api = ApiSettings(**{k: v for k, v in api_params.items() if v is not None}) if api_params.get("url") else None

    if rule == "api_only" and api is None:
        raise InvalidSpec(f"node {name}: execution_rule api_only needs node.api.url; set it, or use "
                          "execution_rule ssh_only or auto")
    if rule == "ssh_only" and ssh is None:
        raise InvalidSpec(f"node {name}: execution_rule ssh_only needs node.ssh.host; set it, or use "
                          "execution_rule api_only or auto")
    if api is None and ssh is None:
        raise InvalidSpec(f"node {name}: neither node.api.url nor node.ssh.host is set; give at least one")

    if ssh:
        if not 1 <= ssh.port <= 65535:
            raise InvalidSpec(f"node.ssh.port: {ssh.port} is not a port; use 1-65535")
        if ssh.host_key_checking not in HOST_KEY_CHECKING:
            raise InvalidSpec(f"node.ssh.host_key_checking: use one of {', '.join(HOST_KEY_CHECKING)}")
        _check_file(ssh.private_key_file, "node.ssh.private_key_file")
        if ssh.host_key_checking == "strict" and ssh.known_hosts_file:
            _check_file(ssh.known_hosts_file, "node.ssh.known_hosts_file")
    if api:
        _check_api(name, backend, api)

    port_range = params.get("port_range") or {}
    start, end = port_range.get("start") or 10000, port_range.get("end") or 65535
    if not 1 <= start <= end <= 65535:
        raise InvalidSpec(f"node.port_range: {start}-{end} is not a range of ports; use 1 <= start <= end <= 65535")
    return Node(name=name, type=backend, execution_rule=rule, ssh=ssh, api=api,
                project=params.get("project") or "default", proxmox_node=params.get("proxmox_node"),
                public_ip=params.get("public_ip"), port_range=(start, end))


def _check_api(name, backend, api):
    scheme = api.url.split("://", 1)[0] if "://" in api.url else ""
    allowed = {"docker": ("unix", "tcp", "https", "http"), "lxd": ("unix", "https"), "incus": ("unix", "https"),
               "proxmox": ("https",)}.get(backend, ("https",))
    if scheme not in allowed:
        raise InvalidSpec(f"node.api.url: {api.url!r} is not a {backend} endpoint; use a URL starting with "
                          + " or ".join(f"{s}://" for s in allowed))
    for option in ("ca_file", "server_cert", "client_cert", "client_key"):
        _check_file(getattr(api, option), f"node.api.{option}")
    if bool(api.client_cert) != bool(api.client_key):
        raise InvalidSpec("node.api.client_cert and node.api.client_key go together; set both or neither")
    if backend == "proxmox" and not (api.token_id and api.token_secret):
        raise InvalidSpec(f"node {name}: a Proxmox API needs node.api.token_id and node.api.token_secret "
                          "(or ONECLICKVIRT_API_TOKEN_ID / ONECLICKVIRT_API_TOKEN_SECRET)")
    if backend in ("lxd", "incus") and scheme == "https" and not api.client_cert:
        raise InvalidSpec(f"node {name}: LXD/Incus over HTTPS needs node.api.client_cert and node.api.client_key")
    if api.timeout <= 0:
        raise InvalidSpec("node.api.timeout: must be a positive number of seconds")


def validate_node_dict(raw):
    """Validate a raw node description outside AnsibleModule (inventory plugin, tests): spec, env, checks."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    result = ArgumentSpecValidator(NODE_SPEC).validate(raw or {})
    if result.error_messages:
        label = (raw or {}).get("name", "?")
        raise InvalidSpec(f"node {label}: " + "; ".join(result.error_messages))
    return build_node(result.validated_parameters)
