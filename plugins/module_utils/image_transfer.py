# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Moving image files: checksums, streamed HTTP bodies, files onto the node, downloads on the node.

What every backend's image methods share, so that each is written once:

- `Checksum`: `sha256:<hex>` / `sha512:<hex>`, computed on the controller (`file_digest`) or on the node
  (`NodeStaging.digest`).
- `json_lines`: Docker's JSON progress lines, from an answer read as it arrives (HttpClient.iter_body); request
  bodies (a tar of any size) stream from files through HttpClient.send.
- `NodeStaging`: a private directory on the node (`/var/tmp/ocv-image.XXXXXXXX`, disk-backed where /tmp may
  be a small tmpfs), removed at the end of the run whatever happened. Files reach it streamed over an SSH
  exec channel (`cat > file`), which works on every OpenSSH server, also where SFTP is disabled or a
  ForceCommand wrapper takes every session. URLs are fetched into it by the node itself (curl, else wget,
  else python3), the URL on standard input so that it never appears in a process argv on the node.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tarfile
import time

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import (
    BackendError, InvalidSpec, OperationTimeout, TransportError, VirtError)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.transport.http import file_chunks

CHUNK = 1 << 16
ALGORITHMS = {"sha256": 64, "sha512": 128}
_CHECKSUM = re.compile(r"^(sha256|sha512):([0-9a-fA-F]+)\Z")
STAGING_PREFIX = "/var/tmp/ocv-image."


class Checksum:
    """An expected or computed digest: algorithm and lowercase hex."""

    def __init__(self, algorithm, hexdigest):
        self.algorithm = algorithm
        self.hex = hexdigest.lower()

    @classmethod
    def parse(cls, text, option="checksum"):
        if text is None:
            return None
        match = _CHECKSUM.match(str(text).strip())
        if not match or len(match.group(2)) != ALGORITHMS[match.group(1)]:
            raise InvalidSpec(f"{option}: {text!r} is not a checksum; use 'sha256:' followed by 64 hex digits or "
                              "'sha512:' followed by 128 hex digits")
        return cls(match.group(1), match.group(2))

    def __str__(self):
        return f"{self.algorithm}:{self.hex}"

    def __eq__(self, other):
        return isinstance(other, Checksum) and (self.algorithm, self.hex) == (other.algorithm, other.hex)

    def __hash__(self):
        return hash(str(self))


def file_digest(path, algorithm="sha256", extra_paths=()):
    """The digest of a controller file (or of several, concatenated: LXD's fingerprint of a split image)."""
    digest = hashlib.new(algorithm)
    for each in (path, *extra_paths):
        with open(each, "rb") as handle:
            while True:
                chunk = handle.read(1 << 20)
                if not chunk:
                    break
                digest.update(chunk)
    return Checksum(algorithm, digest.hexdigest())


def mismatch(what, expected, actual):
    return VirtError(f"checksum mismatch for {what}: expected {expected}, got {actual}")


def human_size(size):
    if size is None:
        return "unknown size"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024.0
    return f"{size} B"


# -- docker save tars -----------------------------------------------------------------------------------------
def image_id_from_manifest(text, where):
    """The image ID (sha256:<config digest>) from a `docker save` manifest.json; one image per tar."""
    try:
        manifest = json.loads(text)
    except ValueError:
        raise InvalidSpec(f"{where}: manifest.json is not JSON; give a tar written by `docker save`")
    if not isinstance(manifest, list) or len(manifest) != 1 or not manifest[0].get("Config"):
        count = len(manifest) if isinstance(manifest, list) else 0
        raise InvalidSpec(f"{where}: the tar holds {count} images; give a tar of exactly one image "
                          "(`docker save NAME:TAG -o file.tar`)")
    config = manifest[0]["Config"]
    # Docker < 25: "<hex>.json"; OCI layout (Docker 25+): "blobs/sha256/<hex>".
    hexdigest = config.rsplit("/", 1)[-1]
    hexdigest = hexdigest[:-len(".json")] if hexdigest.endswith(".json") else hexdigest
    if not re.match(r"^[0-9a-f]{64}\Z", hexdigest):
        raise InvalidSpec(f"{where}: manifest.json names the config {config!r}, not a sha256 digest")
    return f"sha256:{hexdigest}", list(manifest[0].get("RepoTags") or [])


def docker_tar_image_id(path):
    """(image ID, RepoTags) of a `docker save` tar on the controller (plain or compressed)."""
    try:
        with tarfile.open(path, "r:*") as tar:
            member = tar.extractfile("manifest.json")
            text = member.read().decode("utf-8") if member else ""
    except (tarfile.TarError, KeyError, OSError) as error:
        raise InvalidSpec(f"path: {path} is not a `docker save` tar with a manifest.json ({error})")
    return image_id_from_manifest(text, f"path {path}")


def json_lines(chunks):
    """JSON documents, one per line, from a stream of chunks (Docker's progress streams)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                try:
                    yield json.loads(line.decode("utf-8", "replace"))
                except ValueError:
                    yield {"stream": line.decode("utf-8", "replace")}
    if pending.strip():
        try:
            yield json.loads(pending.decode("utf-8", "replace"))
        except ValueError:
            yield {"stream": pending.decode("utf-8", "replace")}


def multipart(fields, files, boundary=None):
    """(content type, parts) of a multipart/form-data body: plain `fields` (name, value), then streamed `files`
    (field name, file name, controller path) in their order."""
    boundary = boundary or "ocv" + hashlib.sha256(os.urandom(16)).hexdigest()[:24]
    parts, text = [], ""
    for name, value in fields:
        text += f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
    for field, file_name, path in files:
        text += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{file_name}\"\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n")
        parts += [text.encode("utf-8"), path]
        text = "\r\n"
    parts.append(f"{text}--{boundary}--\r\n".encode("utf-8"))
    return f"multipart/form-data; boundary={boundary}", parts


# -- files on the node --------------------------------------------------------------------------------------------
_DOWNLOAD = r"""set -u
dest=$1
algorithm=$2
IFS= read -r url
if command -v curl >/dev/null 2>&1; then
  printf 'url = "%s"\n' "$url" | curl -fsSL --proto =http,https --proto-redir =http,https -K - -o "$dest" || exit $?
elif command -v wget >/dev/null 2>&1; then
  printf '%s\n' "$url" | wget -q -O "$dest" -i - || exit $?
elif command -v python3 >/dev/null 2>&1; then
  printf '%s\n' "$url" | python3 -c 'import shutil, sys, urllib.request
with urllib.request.build_opener().open(sys.stdin.readline().strip(), timeout=60) as answer, open(sys.argv[1], "wb") as out:
    shutil.copyfileobj(answer, out)' "$dest" || exit $?
else
  echo "the node has neither curl nor wget nor python3 to download with" >&2
  exit 127
fi
size=$(stat -c %s -- "$dest") || exit $?
if [ -n "$algorithm" ]; then
  sum=$("${algorithm}sum" -- "$dest") || exit $?
  echo "$size ${sum%% *}"
else
  echo "$size"
fi
"""


class NodeStaging:
    """A private temporary directory on the node for one run's image files; `remove()` always runs after."""

    def __init__(self, ssh, timeout):
        self.ssh = ssh
        self.timeout = timeout
        self.path = None

    def _run(self, argv, stdin=None, what=None):
        result = self.ssh.run(argv, stdin=stdin, timeout=self.timeout)
        if result.rc != 0:
            raise BackendError(f"{what or argv[0]} on the node failed (rc {result.rc}): "
                               f"{(result.stderr or result.stdout).strip()[:500]}")
        return result

    def create(self):
        if self.path is None:
            result = self._run(["mktemp", "-d", STAGING_PREFIX + "XXXXXXXX"], what="creating a temporary directory")
            self.path = result.stdout.strip()
            if not self.path.startswith(STAGING_PREFIX):
                raise BackendError(f"mktemp on the node answered {self.path!r}, not a directory under /var/tmp")
        return self.path

    def file(self, name):
        return f"{self.create()}/{name}"

    def put(self, local_path, name):
        """Stream a controller file into the staging directory; returns its path on the node."""
        remote = self.file(name)
        ssh_put(self.ssh, local_path, remote, self.timeout)
        return remote

    def link(self, node_path, name):
        """A fixed name in the staging directory for a file already on the node (no copy)."""
        remote = self.file(name)
        result = self.ssh.run(["test", "-f", node_path], timeout=self.timeout)
        if result.rc != 0:
            raise InvalidSpec(f"path: {node_path} is not a file on the node")
        self._run(["ln", "-s", "--", node_path, remote], what="linking the image file")
        return remote

    def download(self, url, name, algorithm=None):
        """Have the node fetch `url` into the staging directory, in one command with its size and (given an
        algorithm) its digest. Returns (path on the node, size in bytes, Checksum or None)."""
        if algorithm is not None and algorithm not in ALGORITHMS:
            raise InvalidSpec(f"checksum: {algorithm} is not supported; use sha256 or sha512")
        remote = self.file(name)
        try:
            result = self.ssh.run(["sh", "-c", _DOWNLOAD, "sh", remote, algorithm or ""], stdin=url + "\n",
                                  timeout=self.timeout)
        except TransportError as error:
            if "no exit within" in str(error):
                raise OperationTimeout(f"downloading {url} on the node took longer than {self.timeout}s; raise "
                                       "`timeout`")
            raise
        words = result.stdout.split()
        if result.rc != 0 or not words or not words[0].isdigit():
            self.ssh.run(["rm", "-f", "--", remote], timeout=self.timeout)
            raise BackendError(f"downloading {url} on the node failed (rc {result.rc}): "
                               f"{(result.stderr or result.stdout).strip()[:500]}")
        digest = Checksum(algorithm, words[1]) if algorithm and len(words) > 1 else None
        return remote, int(words[0]), digest

    def size(self, remote):
        result = self._run(["stat", "-L", "-c", "%s", "--", remote], what="stat")
        return int(result.stdout.strip() or 0)

    def digest(self, paths, algorithm="sha256"):
        """The digest of node files (concatenated when several: LXD's fingerprint of a split image)."""
        if algorithm not in ALGORITHMS:
            raise InvalidSpec(f"checksum: {algorithm} is not supported; use sha256 or sha512")
        result = self._run(["sh", "-c", f'cat -- "$@" | {algorithm}sum', "sh", *paths], what=f"{algorithm}sum")
        hexdigest = result.stdout.split()[0] if result.stdout.split() else ""
        if len(hexdigest) != ALGORITHMS[algorithm]:
            raise BackendError(f"{algorithm}sum on the node answered {result.stdout.strip()[:200]!r}")
        return Checksum(algorithm, hexdigest)

    def remove(self):
        if self.path is not None:
            try:
                self.ssh.run(["rm", "-rf", "--", self.path], timeout=self.timeout)
            except TransportError:
                pass
            self.path = None


def ssh_put(ssh, local_path, remote, timeout):
    """Stream a controller file to `remote` on the node over an exec channel (`cat > file`, umask 077)."""
    channel = ssh.open_channel(["sh", "-c", 'umask 077 && cat > "$1"', "sh", remote], timeout)
    deadline = time.monotonic() + timeout
    try:
        for chunk in file_chunks(local_path, CHUNK):
            channel.sendall(chunk)
        channel.shutdown_write()
        while not channel.exit_status_ready():
            if time.monotonic() > deadline:
                raise socket.timeout(f"no exit within {timeout}s")
            channel.status_event.wait(0.05)
        stderr = b""
        while channel.recv_stderr_ready():
            stderr += channel.recv_stderr(65536)
        rc = channel.recv_exit_status()
    except (OSError, socket.timeout, EOFError) as error:
        ssh.close()
        raise TransportError(f"copying {local_path} to the node broke off: {error}", sent=True)
    finally:
        channel.close()
    if rc != 0:
        raise BackendError(f"writing {remote} on the node failed (rc {rc}): {stderr.decode('utf-8', 'replace')}")


def node_digest(ssh, paths, algorithm, timeout):
    """Digest of files on the node without a staging directory (a read)."""
    return NodeStaging(ssh, timeout).digest(paths, algorithm)
