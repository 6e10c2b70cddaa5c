# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Images and templates (virt_image): validate, plan, apply (or only predict, in check mode). Every backend.

The flow is written once here; each backend answers a few questions about its own image store:

  find_image(name)                -> Image or None: the image known by exactly this name (Docker reference or
                                     image ID, LXD/Incus alias or full fingerprint, Proxmox volume)
  image_source(request, run)      -> ImageSource: what the asked source is (its digest, fingerprint or
                                     checksum), the image already on the node that *is* that source (or None),
                                     and how to fetch it. Reads only; it may stage a download on the node in a
                                     private temporary directory, removed at the end of the run (run.staging).
  add_image_alias(image, alias)   -> None: Docker tag, LXD/Incus alias (created or moved)
  delete_image(image, force)      -> None
  image_sources                   -> the sources the backend supports

Idempotence is by identity, never by name alone: a Docker pull compares the registry's manifest digest with the
local RepoDigests, a Docker load compares the tar's image ID; LXD/Incus compare fingerprints (sha256 of the
image files); Proxmox compares the volume's checksum (computed on the node over SSH). Where a backend can only
match by name (a Proxmox volume under api_only, a URL without a checksum), it says so in a warning.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import (
    Conflict, InvalidSpec, UncertainWrite, Unsupported)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.image_transfer import Checksum, NodeStaging
from ansible_collections.oneclickvirt.virt.plugins.module_utils.models import Event, Image

STATES = ("present", "absent")
SOURCES = ("pull", "url", "upload", "file")
PROXMOX_CONTENT = {
    "vztmpl": (".tar.gz", ".tar.xz", ".tar.zst"),
    "iso": (".iso", ".img"),
    "import": (".qcow2", ".raw", ".vmdk", ".ova"),
}

# Docker's reference grammar (distribution/reference), without IPv6 hosts.
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_REFERENCE = re.compile(rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH_PART}(?:/{_PATH_PART})*)"
                        r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?\Z")
_IMAGE_ID = re.compile(r"^(?:sha256:)?[0-9a-f]{64}\Z")
_FINGERPRINT = re.compile(r"^[0-9a-fA-F]{64}\Z")
_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+@-]{0,254}\Z")
_PVE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*\Z")
_PVE_STORAGE = re.compile(r"^[a-z][a-z0-9._-]*[a-z0-9]\Z")
_URL_FORBIDDEN = re.compile(r"[\s\"'\\`<>{}|^\x00-\x1f\x7f]")


@dataclass
class ImageRequest:
    """Everything virt_image was asked, validated."""
    name: str
    backend: str
    state: str = "present"
    source: str | None = None
    path: str | None = None
    metadata_path: str | None = None
    url: str | None = None
    metadata_url: str | None = None
    checksum: Checksum | None = None
    metadata_checksum: Checksum | None = None
    aliases: list = field(default_factory=list)
    storage: str | None = None
    content: str | None = None
    filename: str | None = None
    force: bool = False
    timeout: int = 600


@dataclass
class ImageSource:
    """A source, resolved by the backend: what it is, whether the node already has it, how to fetch it."""
    action: str
    identity: str | None = None
    existing: Image | None = None
    fetch: object = None          # fetch(run) -> the name, ID or fingerprint to read the new image back by
    predicted: Image | None = None


# -- validation -----------------------------------------------------------------------------------------------
def docker_reference(value, option="name", allow_digest=True, allow_id=False):
    """A Docker image reference, normalised as Docker stores it: without a tag or digest it means `:latest`."""
    if not isinstance(value, str) or not value:
        raise InvalidSpec(f"{option}: give a Docker image reference such as 'registry.example:5000/app:1.2'")
    if _IMAGE_ID.match(value):
        if allow_id:
            return value if value.startswith("sha256:") else f"sha256:{value}"
        raise InvalidSpec(f"{option}: {value!r} is an image ID; here give a reference such as 'app:1.2'")
    match = _REFERENCE.match(value)
    domain = match.group("domain") if match else None
    if domain and not ("." in domain or ":" in domain or domain == "localhost"):
        # Docker reads a first component without a dot or port as a path component, which is lowercase.
        match = match if re.match(rf"^{_PATH_PART}\Z", domain) else None
    if not match or len(value) > 255:
        raise InvalidSpec(f"{option}: {value!r} is not a Docker image reference; use [host[:port]/]path[:tag] with "
                          "lowercase path components (e.g. '127.0.0.1:5000/team/app:1.2')")
    if match.group("digest") and not allow_digest:
        raise InvalidSpec(f"{option}: {value!r} has a digest; a tag is a name such as 'app:1.2'")
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"):
        if value.startswith(prefix) and "/" in value[len(prefix) - 1:]:
            value = value[len(prefix):]
            break
    if match.group("digest") or match.group("tag"):
        return value
    return f"{value}:latest"


def split_reference(reference):
    """(repository, tag or None, digest or None) of a normalised Docker reference."""
    name, _at, digest = reference.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repository, _colon, tag = name.rpartition(":")
        return repository, tag, digest or None
    return name, None, digest or None


def lxd_alias(value, option="name"):
    if not isinstance(value, str) or not _ALIAS.match(value) or _FINGERPRINT.match(value):
        raise InvalidSpec(f"{option}: {value!r} is not an image alias; use letters, digits and . _ : + @ - (no "
                          "slash or space, at most 255 characters, not 64 hex digits, which read as a fingerprint)")
    return value


def check_url(value, option="url"):
    if not isinstance(value, str) or not value:
        raise InvalidSpec(f"{option}: give an http:// or https:// URL")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidSpec(f"{option}: {value!r} is not an http:// or https:// URL with a host")
    if _URL_FORBIDDEN.search(value):
        raise InvalidSpec(f"{option}: {value!r} has spaces, quotes, backslashes or control characters; "
                          "percent-encode them")
    if parts.username or parts.password:
        raise InvalidSpec(f"{option}: credentials in the URL are not supported (they would travel to the node "
                          "in the clear and could be logged); serve the file without them")
    return value


def check_node_path(value, option):
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value or "\n" in value:
        raise InvalidSpec(f"{option}: {value!r} is not an absolute path of a file on the node")
    return value


def check_controller_file(value, option):
    if not isinstance(value, str) or not value:
        raise InvalidSpec(f"{option}: give the path of a file on the host that runs the module")
    path = os.path.expanduser(value)
    if not os.path.isfile(path):
        raise InvalidSpec(f"{option}: {value!r} is not a readable file on the host that runs the module")
    return path


def proxmox_volume(name, storage, content):
    """(storage, content, filename) of a Proxmox volume given as `storage:content/file` or as a file name."""
    if ":" in name:
        volume_storage, _colon, rest = name.partition(":")
        volume_content, _slash, filename = rest.partition("/")
        if not filename:
            raise InvalidSpec(f"name: {name!r} is not a volume ID; use 'storage:content/file' such as "
                              "'local:vztmpl/debian-12.tar.zst', or only the file name")
        if storage and storage != volume_storage:
            raise InvalidSpec(f"storage: {storage!r} differs from the storage in name {name!r}; give one")
        if content and content != volume_content:
            raise InvalidSpec(f"content: {content!r} differs from the content type in name {name!r}; give one")
        storage, content = volume_storage, volume_content
    else:
        filename = name
    storage = storage or "local"
    if not _PVE_STORAGE.match(storage):
        raise InvalidSpec(f"storage: {storage!r} is not a Proxmox storage ID")
    if not _PVE_FILE.match(filename):
        raise InvalidSpec(f"name: {filename!r} is not a file name; use letters, digits and . _ + - (no slash)")
    if content is None:
        content = next((kind for kind, endings in PROXMOX_CONTENT.items() if filename.endswith(endings)), None)
        if content is None:
            raise InvalidSpec(f"name: cannot tell the content type of {filename!r} from its extension; give "
                              "`content` (vztmpl, iso or import) and a matching extension")
    if content not in PROXMOX_CONTENT:
        raise InvalidSpec(f"content: {content!r} is not vztmpl, iso or import")
    if not filename.endswith(PROXMOX_CONTENT[content]):
        raise InvalidSpec(f"name: a {content} volume's file name ends with {' or '.join(PROXMOX_CONTENT[content])}; "
                          f"{filename!r} does not")
    return storage, content, filename


def _only_with(params, option, sources, source):
    if params.get(option) not in (None, [], "") and source not in sources:
        raise InvalidSpec(f"{option}: only used with source {' or '.join(sources)}; remove it or change `source`")


def build_image_request(params, backend):
    """Validate the module parameters into an ImageRequest. Raises InvalidSpec naming the option and the fix."""
    state = params.get("state") or "present"
    if state not in STATES:
        raise InvalidSpec(f"state: {state!r}; use present or absent")
    source = params.get("source")
    if source is not None and source not in SOURCES:
        raise InvalidSpec(f"source: {source!r}; use one of {', '.join(SOURCES)}")
    timeout = params.get("timeout") or 600
    if timeout <= 0:
        raise InvalidSpec("timeout: must be a positive number of seconds")
    name = params.get("name")
    request = ImageRequest(name=name, backend=backend, state=state, force=bool(params.get("force")), timeout=timeout)

    if backend == "docker":
        request.name = docker_reference(name, allow_id=state == "absent" or source is None)
    elif backend in ("lxd", "incus"):
        if _FINGERPRINT.match(name or "") and (state == "absent" or source is None):
            request.name = name.lower()
        else:
            request.name = lxd_alias(name)
    elif backend == "proxmox":
        request.storage, request.content, request.filename = proxmox_volume(
            name or "", params.get("storage"), params.get("content"))
        request.name = f"{request.storage}:{request.content}/{request.filename}"
    if backend != "proxmox":
        for option in ("storage", "content"):
            if params.get(option):
                raise InvalidSpec(f"{option}: only for Proxmox nodes (a storage and its content type); remove it")

    if state == "absent":
        return request  # the source options of a present task may stay in place; they are not used

    aliases = params.get("aliases") or []
    if backend == "docker":
        request.aliases = [docker_reference(alias, "aliases", allow_digest=False) for alias in aliases]
    elif backend in ("lxd", "incus"):
        request.aliases = [lxd_alias(alias, "aliases") for alias in aliases]
    elif aliases:
        raise InvalidSpec("aliases: Proxmox volumes have one name (the file name); remove `aliases`")
    request.aliases = [alias for index, alias in enumerate(request.aliases)
                       if alias != request.name and alias not in request.aliases[:index]]

    split = backend in ("lxd", "incus")
    _only_with(params, "url", ("url",), source)
    _only_with(params, "metadata_url", ("url",), source)
    _only_with(params, "metadata_checksum", ("url", "upload", "file"), source)
    _only_with(params, "path", ("upload", "file"), source)
    _only_with(params, "metadata_path", ("upload", "file"), source)
    _only_with(params, "checksum", ("pull", "url", "upload", "file"), source)
    if not split:
        for option in ("metadata_url", "metadata_path", "metadata_checksum"):
            if params.get(option):
                raise InvalidSpec(f"{option}: only LXD/Incus images come as metadata + rootfs; remove it")

    request.source = source
    request.checksum = Checksum.parse(params.get("checksum"), "checksum")
    request.metadata_checksum = Checksum.parse(params.get("metadata_checksum"), "metadata_checksum")
    if source == "pull":
        if request.checksum and request.checksum.algorithm != "sha256":
            raise InvalidSpec("checksum: a registry's manifest digest is sha256; use 'sha256:<64 hex digits>'")
        if backend == "docker" and "@" in request.name and request.checksum:
            if request.name.rsplit("@", 1)[1] != str(request.checksum):
                raise InvalidSpec("checksum: differs from the digest in `name`; give one of them")
    elif source == "url":
        if not params.get("url"):
            raise InvalidSpec("url: required with source url")
        request.url = check_url(params["url"])
        if params.get("metadata_url"):
            request.metadata_url = check_url(params["metadata_url"], "metadata_url")
        if request.metadata_checksum and not request.metadata_url:
            raise InvalidSpec("metadata_checksum: only with metadata_url (the checksum of that file)")
    elif source == "upload":
        if not params.get("path"):
            raise InvalidSpec("path: required with source upload (the file on the host that runs the module)")
        request.path = check_controller_file(params["path"], "path")
        if params.get("metadata_path"):
            request.metadata_path = check_controller_file(params["metadata_path"], "metadata_path")
    elif source == "file":
        if not params.get("path"):
            raise InvalidSpec("path: required with source file (an absolute path on the node)")
        request.path = check_node_path(params["path"], "path")
        if params.get("metadata_path"):
            request.metadata_path = check_node_path(params["metadata_path"], "metadata_path")
    if request.metadata_checksum and not (request.metadata_url or request.metadata_path):
        raise InvalidSpec("metadata_checksum: give it together with metadata_url or metadata_path")
    if request.source is not None and backend in ("lxd", "incus") and request.name != name:
        raise InvalidSpec("name: with a source, name is the alias to give the image, not a fingerprint")
    return request


# -- one run --------------------------------------------------------------------------------------------------
class ImageRun:
    """The writes of one run, applied in order (or only recorded in check mode), with timed events."""

    def __init__(self, check_mode, warn=None):
        self.check_mode = check_mode
        self.warn = warn or (lambda message: None)
        self.actions = []
        self.events = []
        self.cleanups = []
        self._mark = time.monotonic()

    def do(self, description, apply):
        """A write: recorded, and run outside check mode, timed."""
        self.actions.append(description)
        if self.check_mode:
            return None
        return self.step(description, apply)

    def step(self, description, work, describe=None):
        """Timed work that also runs in check mode (reads, staging a download). `describe(result)`, when
        given, names the finished step with what it found (a downloaded size)."""
        started = self._mark = time.monotonic()
        result = None
        try:
            result = work()
            return result
        finally:
            if describe is not None and result is not None:
                description = describe(result)
            self.events.append(Event(description, time.monotonic() - started))
            self._mark = time.monotonic()

    def progress(self, step):
        """A progress step of the work under way (a pulled layer, a task log line): seconds since the last."""
        now = time.monotonic()
        self.events.append(Event(step, now - self._mark))
        self._mark = now

    def staging(self, ssh, timeout):
        """A private temporary directory on the node, removed when the run ends, check mode included."""
        staging = NodeStaging(ssh, timeout)
        self.cleanups.append(staging.remove)
        return staging

    def cleanup(self):
        while self.cleanups:
            self.cleanups.pop()()


def ensure_image(backend, request, check_mode):
    """Converge one image. After a lost answer to a write, re-read and converge once more (never replay)."""
    run = ImageRun(check_mode, backend.warn)
    if request.source is not None and request.source not in backend.image_sources:
        hint = _source_hint(backend.backend, request.source)
        raise Unsupported(f"source: {request.source} is not supported on {backend.backend} node {backend.node.name}; "
                          f"use one of {', '.join(backend.image_sources)}{hint}")
    backend.timeout = request.timeout
    before = backend.find_image(request.name)
    try:
        try:
            after = _converge(backend, request, run, before)
        except UncertainWrite as error:
            backend.warn(f"the answer to a write was lost ({error}); re-reading {request.name} and converging")
            after = _converge(backend, request, run, backend.find_image(request.name))
    finally:
        run.cleanup()
    before_dict = before.to_dict() if before else None
    after_dict = after.to_dict() if after else None
    return {
        "changed": bool(run.actions),
        "actions": run.actions,
        "image": after_dict,
        "events": [event.to_dict() for event in run.events],
        "diff": {"before": before_dict or {}, "after": after_dict or {}},
    }


def _source_hint(backend, source):
    if source == "pull":
        return " (pulling from a registry is Docker's; LXD/Incus and Proxmox take url, upload or file)"
    return ""


def _converge(backend, request, run, current):
    if request.state == "absent":
        if current is None:
            return None
        if current.used_by and not request.force:
            raise Conflict(f"image {request.name} on node {backend.node.name} is used by "
                           f"{', '.join(current.used_by)}; it is not deleted. Delete those instances first, or "
                           "set force: true to delete it anyway")
        run.do(f"delete {request.name}", lambda: backend.delete_image(current, request.force))
        return None

    if request.source is None:
        if current is None:
            raise InvalidSpec(f"source: image {request.name} is not on node {backend.node.name}; give `source` "
                              f"({', '.join(backend.image_sources)}) to bring it there")
        image = current
    else:
        source = backend.image_source(request, run)
        image = source.existing
        if image is None or request.force:
            key = run.do(source.action, lambda: source.fetch(run))
            if run.check_mode:
                image = image or source.predicted
            else:
                image = backend.find_image(key) if key else None
                if image is None:
                    raise Unsupported(f"{source.action}: done, but node {backend.node.name} does not list the image "
                                      "afterwards")
    for alias in [request.name] + request.aliases:
        if alias in image.aliases or alias == image.id or request.backend == "proxmox" or "@" in alias:
            continue  # a Docker digest reference is no tag: the pull itself made it resolve
        run.do(f"alias {alias}", lambda alias=alias: backend.add_image_alias(image, alias))
        if run.check_mode:
            image = Image(**dict(image.to_dict(), aliases=sorted(set(image.aliases) | {alias})))
    if run.check_mode:
        return _named(image, request.name)
    return backend.find_image(request.name) or image


def _named(image, name):
    """The predicted image as find_image(name) would report it after the run."""
    if name in image.aliases and image.name != name:
        return Image(**dict(image.to_dict(), name=name))
    return image


# -- the module's glue ----------------------------------------------------------------------------------------------
def image_params(params):
    return {key: params.get(key) for key in (
        "name", "state", "source", "path", "metadata_path", "url", "metadata_url", "checksum", "metadata_checksum",
        "aliases", "storage", "content", "force", "timeout")}


def lookup_name(name, node_params):
    """The exact name an info lookup asks find_image() for, normalised as virt_image normalises it."""
    backend = (node_params or {}).get("type")
    if backend == "docker":
        return docker_reference(name, allow_id=True)
    if backend == "proxmox":
        storage, content, filename = proxmox_volume(name, None, None)
        return f"{storage}:{content}/{filename}"
    return name.lower() if _FINGERPRINT.match(name) else name
