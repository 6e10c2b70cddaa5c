# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Proxmox VE storage content for virt_image / virt_image_info: container templates (`vztmpl`), ISOs (`iso`)
and disk images to import (`import`), as volumes of a storage (`local:vztmpl/debian-12.tar.zst`).

`ProxmoxImageMethods` is mixed into the Proxmox backend (backends/proxmox.py); it needs only `self.router`
(whose clients answer `request(method, path, params=None)` -> PVE's `data`, path segments already
percent-encoded), `self.node`, `self.warn` and `self.timeout`. `PveApiClient` (HTTPS with the API token) and
`PveSshClient` (`pvesh` over SSH) are the backend's two clients.

Roads: API `POST .../download-url` (the node fetches, PVE verifies `checksum`), `POST .../upload` (multipart,
the file streamed from the controller), `DELETE .../content/{volume}`; over SSH `pvesh` with JSON output for
the same calls, `pvesm free` to delete, and the file streamed into the storage's directory (then verified
on the node, then renamed into place) for an upload.

Idempotence by checksum: PVE's API reports no checksum of a volume, so the volume's checksum is computed on
the node (`pvesm path` + `sha256sum`) over SSH. Under `api_only` (no SSH) an existing volume is compared by
size for an upload and taken by name for a URL, with a warning saying so. No sidecar files: they would
drift from the volume whenever anything else touches the storage.
"""

from __future__ import annotations

import functools
import json
import os
import time
from urllib.parse import quote, urlencode, urlsplit

from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends.base import image_code
from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import (
    BackendError, InvalidSpec, NotFound, OperationTimeout, TransportError, Unsupported, VirtError)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.models import Image

SECRET_PARAMS = ("password", "cipassword", "new-password")
CONTENT_DIRS = {"vztmpl": "template/cache", "iso": "template/iso", "import": "import"}
IMAGE_CONTENT = tuple(CONTENT_DIRS)
# partial target algorithm expected [source]: copy (when a source is given), verify, rename; exit 4 on a mismatch.
_PLACE = r"""set -u
partial=$1 target=$2 algorithm=$3 expected=$4 source=$5
if [ -n "$source" ]; then
  cp -- "$source" "$partial" || { rm -f -- "$partial"; exit 3; }
fi
sum=$("${algorithm}sum" -- "$partial") || { rm -f -- "$partial"; exit 3; }
sum=${sum%% *}
if [ "$sum" != "$expected" ]; then
  rm -f -- "$partial"
  echo "$sum"
  exit 4
fi
mv -f -- "$partial" "$target" || { rm -f -- "$partial"; exit 5; }
"""


def segment(value):
    return quote(str(value), safe="")


class PveApiClient:
    """The PVE API over HTTPS with an API token (the collection's own HTTP client, its own TLS choice)."""

    label = "api"

    def __init__(self, api, open_stream=None, host_header=None):
        """`open_stream` replaces the direct connection to api.url (the Proxmox backend's SSH tunnel)."""
        from ansible_collections.oneclickvirt.virt.plugins.module_utils.transport.http import (
            HttpClient, open_socket, tls_context)

        self.api = api
        if open_stream is None:
            parts = urlsplit(api.url)
            context = tls_context(api.validate_certs, api.ca_file)
            base = f"https://{parts.hostname}:{parts.port or 8006}"
            host_header = parts.netloc
            open_stream = functools.partial(open_socket, base, api.timeout, context)
        self.http = HttpClient(open_stream, host_header=host_header, timeout=api.timeout,
                               headers={"Authorization": f"PVEAPIToken={api.token_id}={api.token_secret}"},
                               base_path="/api2/json")

    def request(self, method, path, params=None, timeout=None, parts=None, content_type=None):
        params = {key: value for key, value in (params or {}).items() if value is not None}
        headers = {}
        if parts is not None:
            target, headers["Content-Type"] = self.http.target(path), content_type
        elif method in ("GET", "DELETE"):
            target, parts = self.http.target(path, params), []
        else:
            target = self.http.target(path)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            parts = [urlencode(params, doseq=True).encode("utf-8")]
        response = self.http.exchange(method, target, headers, parts, timeout=timeout or self.api.timeout)
        try:
            document = response.json() or {}
        except ValueError:
            document = {}
        if response.status in (401, 403) and not document.get("errors"):
            # Refused before anything was done: a failed road, which `auto` may leave for SSH.
            reason = str(document.get("message") or "no reason given").strip()
            raise TransportError(f"authentication failed: the Proxmox API refused token {self.api.token_id} "
                                 f"(HTTP {response.status}: {reason}); check node.api.token_id / token_secret "
                                 "and the token's privileges")
        if response.status >= 400:
            message = (document.get("message") or f"HTTP {response.status}").strip()
            errors = document.get("errors") or {}
            if errors:
                message += " (" + "; ".join(f"{key}: {value.strip()}" for key, value in sorted(errors.items())) + ")"
            error = NotFound if "does not exist" in message or response.status == 404 else BackendError
            raise error(f"proxmox {method} {path.split('?', 1)[0]} failed ({response.status}): {message}")
        return document.get("data")

    def close(self):
        self.http.close()


class PveSshClient:
    """`pvesh` with JSON output over the collection's SSH transport (plus `pvesm` where the CLI is the way)."""

    label = "ssh"

    def __init__(self, ssh):
        self.ssh = ssh

    def request(self, method, path, params=None, timeout=None, parts=None, content_type=None):
        if parts is not None:
            raise Unsupported("internal: uploads over SSH go through the storage directory")
        verb = {"GET": "get", "POST": "create", "PUT": "set", "DELETE": "delete"}[method]
        from urllib.parse import unquote

        argv = ["pvesh", verb, "/".join(unquote(part) for part in path.split("/"))]
        for key, value in sorted((params or {}).items()):
            if key in SECRET_PARAMS:
                # pvesh takes parameters only as arguments: the node's process list would show the secret.
                raise Unsupported(f"internal: {key} must not go through pvesh; send it through the API")
            for item in (value if isinstance(value, list) else [value]):
                if item is not None:
                    argv += [f"--{key}", str(item)]
        result = self.ssh.run(argv + ["--output-format", "json"], timeout=timeout)
        if result.rc != 0:
            message = (result.stderr or result.stdout).strip()
            error = NotFound if "does not exist" in message else BackendError
            # A failed task printed its log first: its last lines say why.
            log = [line for line in result.stdout.splitlines() if line.strip()][-5:] if result.stderr else []
            tail = f"; last log lines: {' | '.join(log)}" if log else ""
            raise error(f"pvesh {verb} {argv[2]} failed (rc {result.rc}): {message[:500]}{tail}",
                        backend_message=message)
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        # A task's log comes first (pvesh runs it in the foreground), the answer last.
        for index in range(len(lines) - 1, -1, -1):
            try:
                data = json.loads(lines[index])
            except ValueError:
                continue
            self.last_log = lines[:index]
            return data
        self.last_log = lines
        return None

    def close(self):
        self.ssh.close()


class ProxmoxImageMethods:
    """The image work on a Proxmox node; see the module docstring for what the host class provides."""

    image_sources = ("url", "upload", "file")

    def _pve_node(self):
        if self.node.proxmox_node:
            return self.node.proxmox_node
        nodes = self._pve("GET", "/nodes") or []
        if len(nodes) != 1:
            raise InvalidSpec(f"node {self.node.name}: set node.proxmox_node (this cluster has "
                              f"{len(nodes)} nodes: {', '.join(sorted(n.get('node', '?') for n in nodes))})")
        self.node.proxmox_node = nodes[0]["node"]
        return self.node.proxmox_node

    def _pve(self, method, path, params=None, timeout=None):
        return self.router.request(method, path, params=params, timeout=timeout)

    def _storage_path(self, storage, suffix=""):
        return f"/nodes/{segment(self._pve_node())}/storage/{segment(storage)}{suffix}"

    # -- reads -------------------------------------------------------------------------------------------------
    def list_images(self):
        images = []
        for storage in self._pve("GET", f"/nodes/{segment(self._pve_node())}/storage") or []:
            kinds = set(str(storage.get("content") or "").split(",")) & set(IMAGE_CONTENT)
            if kinds and storage.get("active", 1):
                images += [self._image_of(item) for item in self._content(storage["storage"])]
        self._fill_users(images)
        return sorted(images, key=lambda image: image.name)

    def _content(self, storage):
        try:
            listing = self._pve("GET", self._storage_path(storage, "/content")) or []
        except NotFound:
            raise InvalidSpec(f"storage: {storage!r} does not exist on Proxmox node {self.node.name}")
        return [item for item in listing if item.get("content") in IMAGE_CONTENT
                or item.get("volid", "").partition(":")[2].split("/", 1)[0] in IMAGE_CONTENT]

    def _image_of(self, item):
        volid = item["volid"]
        content, _slash, filename = volid.partition(":")[2].partition("/")
        ctime = item.get("ctime")
        architecture = None
        for arch in ("amd64", "arm64", "i386", "armhf"):
            if f"_{arch}." in filename or f"-{arch}." in filename or f"-{arch}-" in filename:
                architecture = arch
        return Image(name=volid, id=volid, node=self.node.name, backend="proxmox", aliases=[filename],
                     size=item.get("size"), architecture=architecture,
                     created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ctime)) if ctime else None,
                     type="container" if content == "vztmpl" else "vm",
                     checksum=getattr(self, "_checksums", {}).get(volid))

    def _fill_users(self, images):
        """VMs whose config names an ISO or disk volume (a CD drive, `import-from`). A container does not keep
        the template it was created from: templates have no users."""
        watched = {image.id: image for image in images if image.type == "vm"}
        if not watched:
            return
        node = segment(self._pve_node())
        for guest in self._pve("GET", f"/nodes/{node}/qemu") or []:
            try:
                config = self._pve("GET", f"/nodes/{node}/qemu/{guest['vmid']}/config") or {}
            except (NotFound, BackendError) as error:
                # A guest deleted between the listing and this read (PVE answers 500 "... does not exist").
                if isinstance(error, NotFound) or "does not exist" in str(error):
                    continue
                raise
            label = guest.get("name") or str(guest["vmid"])
            for value in config.values():
                for part in str(value).split(","):
                    volid = part.partition("=")[2] if part.startswith("import-from=") else part
                    if volid in watched and label not in watched[volid].used_by:
                        watched[volid].used_by.append(label)
        for image in watched.values():
            image.used_by.sort()

    def find_image(self, name):
        storage = name.partition(":")[0]
        for item in self._content(storage):
            if item["volid"] == name:
                image = self._image_of(item)
                self._fill_users([image])
                return image
        return None

    # -- checksums -----------------------------------------------------------------------------------------------
    def _ssh_usable(self):
        return self.node.execution_rule != "api_only" and self.node.ssh is not None

    def _volume_checksum(self, image, algorithm):
        """The checksum of a volume's file, computed on the node; None without SSH (PVE's API has none)."""
        ALGORITHMS, Checksum = image_code("image_transfer", "ALGORITHMS", "Checksum")

        if not self._ssh_usable():
            return None
        if algorithm not in ALGORITHMS:
            raise InvalidSpec(f"checksum: {algorithm} is not supported; use sha256 or sha512")
        ssh = self.router.ssh("the checksum of an existing volume").ssh
        # One command: the volume's path as PVE resolves it, then its digest.
        script = f'path=$(pvesm path "$1") || exit $?; {algorithm}sum -- "$path"'
        result = ssh.run(["sh", "-c", script, "sh", image.id], timeout=self.timeout)
        words = result.stdout.split()
        if result.rc != 0 or not words or len(words[0]) != ALGORITHMS[algorithm]:
            raise BackendError(f"the {algorithm} of {image.id} on the node: "
                               f"{(result.stderr or result.stdout).strip()[:300]}")
        return Checksum(algorithm, words[0])

    # -- virt_image -----------------------------------------------------------------------------------------------
    def image_source(self, request, run):
        NodeStaging, file_digest, mismatch = image_code("image_transfer", "NodeStaging", "file_digest", "mismatch")
        ImageSource = image_code("images", "ImageSource")

        if not hasattr(self, "_checksums"):
            self._checksums = {}
        current = self.find_image(request.name)
        wanted = request.checksum
        if request.source == "upload":
            if wanted is not None:
                actual = run.step(f"verify {wanted.algorithm} of {request.path}",
                                  lambda: file_digest(request.path, wanted.algorithm))
                if actual != wanted:
                    raise mismatch(request.path, wanted, actual)
            else:
                wanted = run.step(f"sha256 of {request.path}", lambda: file_digest(request.path, "sha256"))
        elif request.source == "file":
            ssh = self.router.ssh("source file (a file on the node copied into the storage)").ssh
            result = ssh.run(["test", "-f", request.path], timeout=self.timeout)
            if result.rc != 0:
                raise InvalidSpec(f"path: {request.path} is not a file on the node")
            actual = run.step(f"{(wanted.algorithm if wanted else 'sha256')} of {request.path}", lambda: NodeStaging(
                ssh, self.timeout).digest([request.path], wanted.algorithm if wanted else "sha256"))
            if wanted is not None and actual != wanted:
                raise mismatch(request.path, wanted, actual)
            wanted = actual

        existing = None
        if current is not None:
            if request.force:
                pass
            elif wanted is None:
                self.warn(f"{request.name}: no checksum given, so the existing volume is kept as it is (matched by "
                          "name only); give `checksum` to compare its content, or `force: true` to download again")
                existing = current
            else:
                actual = None
                if self._ssh_usable():
                    actual = run.step(f"{wanted.algorithm} of {request.name}",
                                      lambda: self._volume_checksum(current, wanted.algorithm))
                if actual is not None:
                    existing = current if actual == wanted else None
                elif request.source == "upload" and current.size != os.path.getsize(request.path):
                    existing = None
                else:
                    how = "size" if request.source == "upload" else "name"
                    self.warn(f"{request.name}: PVE's API reports no checksum of a volume and execution_rule is "
                              f"api_only, so the existing volume was compared by {how} only; give node.ssh (rule "
                              "auto) to compare checksums")
                    existing = current
            if existing is not None and wanted is not None:
                self._checksums[request.name] = str(wanted)
                existing.checksum = str(wanted)

        verb = {"url": f"download {request.url}", "upload": f"upload {request.path}",
                "file": f"copy {request.path}"}[request.source]
        action = f"{'replace ' + request.name + ': ' if current is not None else ''}{verb} to {request.name}"
        predicted = Image(name=request.name, id=request.name, node=self.node.name, backend="proxmox",
                          aliases=[request.filename], type="container" if request.content == "vztmpl" else "vm",
                          checksum=str(wanted) if wanted else None)

        def fetch(run):
            if current is not None:
                run.step(f"delete {request.name} (replaced)", lambda: self.delete_image(current, True))
            {"url": self._download_url, "upload": self._upload, "file": self._copy_on_node}[request.source](
                request, wanted, run)
            if wanted is not None:
                self._checksums[request.name] = str(wanted)
            return request.name

        return ImageSource(action=action, identity=str(wanted) if wanted else None, existing=existing,
                           fetch=fetch, predicted=predicted)

    def _download_url(self, request, wanted, run):
        params = {"url": request.url, "filename": request.filename, "content": request.content}
        if wanted is not None:
            params.update({"checksum": wanted.hex, "checksum-algorithm": wanted.algorithm})
        self._task(lambda client: client.request("POST", self._storage_path(request.storage, "/download-url"),
                                                 params, timeout=self.timeout), run, f"download {request.url}")

    def _upload(self, request, wanted, run):
        multipart = image_code("image_transfer", "multipart")

        def send(client):
            if client.label == "ssh":
                return self._upload_over_ssh(client, request, wanted, run)
            fields = [("content", request.content)]
            if wanted is not None:
                fields += [("checksum", wanted.hex), ("checksum-algorithm", wanted.algorithm)]
            content_type, parts = multipart(fields, [("filename", request.filename, request.path)])
            return client.request("POST", self._storage_path(request.storage, "/upload"), timeout=self.timeout,
                                  parts=parts, content_type=content_type)

        self._task(send, run, f"upload {request.path}")

    def _storage_dir(self, client, request):
        config = client.request("GET", f"/storage/{segment(request.storage)}", timeout=self.timeout) or {}
        if not config.get("path"):
            raise Unsupported(f"storage {request.storage} ({config.get('type')}) has no directory on the node to copy "
                              "a file into; use a directory storage such as `local`, or the API (rule auto)")
        return f"{config['path'].rstrip('/')}/{CONTENT_DIRS[request.content]}"

    def _place_on_node(self, ssh, partial, target, wanted, run, source=None):
        """In one command on the node: (copy `source` beside the target,) verify, rename into place. A mismatch or
        a failure removes the partial file: the storage never lists a half-written or unverified volume."""
        mismatch = image_code("image_transfer", "mismatch")

        argv = ["sh", "-c", _PLACE, "sh", partial, target, wanted.algorithm, wanted.hex, source or ""]
        result = run.step(f"{'copy ' + source + ', ' if source else ''}verify {wanted.algorithm} on the node",
                          lambda: ssh.run(argv, timeout=self.timeout))
        if result.rc == 4:
            raise mismatch(source or target, wanted, f"{wanted.algorithm}:{result.stdout.strip()}")
        if result.rc != 0:
            raise BackendError(f"placing {target} on the node failed (rc {result.rc}): "
                               f"{(result.stderr or result.stdout).strip()[:300]}")

    def _upload_over_ssh(self, client, request, wanted, run):
        ssh_put = image_code("image_transfer", "ssh_put")

        directory = self._storage_dir(client, request)
        # A dot name with a suffix no content type lists: the storage never shows a half-written volume.
        partial = f"{directory}/.{request.filename}.ocv-partial"
        try:
            run.step(f"copy {request.path} to the node", lambda: ssh_put(client.ssh, request.path, partial,
                                                                         self.timeout))
        except VirtError:
            client.ssh.run(["rm", "-f", "--", partial], timeout=self.timeout)
            raise
        self._place_on_node(client.ssh, partial, f"{directory}/{request.filename}", wanted, run)

    def _copy_on_node(self, request, wanted, run):
        client = self.router.ssh("source file (a file on the node copied into the storage)")
        directory = self._storage_dir(client, request)
        self._place_on_node(client.ssh, f"{directory}/.{request.filename}.ocv-partial",
                            f"{directory}/{request.filename}", wanted, run, source=request.path)

    def _task(self, send, run, what):
        """Send a request that starts a task (UPID) and wait on the task, its log lines as progress steps."""
        def action(client):
            upid = send(client)
            if client.label == "ssh":  # pvesh ran the task in the foreground and printed its log
                for line in getattr(client, "last_log", []) or []:
                    run.progress(f"{what}: {line}")
                return upid
            if isinstance(upid, str) and upid.startswith("UPID:"):
                self._wait_task(client, upid, run, what)
            return upid

        return self.router.run(True, action)

    def _wait_task(self, client, upid, run, what):
        task = f"/nodes/{segment(self._pve_node())}/tasks/{segment(upid)}"
        deadline, seen = time.monotonic() + self.timeout, 0
        while True:
            status = client.request("GET", f"{task}/status") or {}
            lines = client.request("GET", f"{task}/log", {"start": seen, "limit": 500}) or []
            for line in lines:
                text = str(line.get("t", ""))
                seen = max(seen, int(line.get("n", seen)))
                if text and text != "no content" and not text.startswith("TASK "):
                    run.progress(f"{what}: {text}")
            if status.get("status") == "stopped":
                if status.get("exitstatus") != "OK":
                    raise BackendError(f"{what} failed: {status.get('exitstatus')}",
                                       backend_message=status.get("exitstatus"))
                return
            if time.monotonic() > deadline:
                raise OperationTimeout(f"{what}: task {upid} still running after {self.timeout}s")
            time.sleep(0.2)

    def add_image_alias(self, image, alias):
        raise Unsupported("aliases: Proxmox volumes have one name (the file name)")

    def delete_image(self, image, force=False):
        storage = image.id.partition(":")[0]

        def action(client):
            if client.label == "ssh":
                result = client.ssh.run(["pvesm", "free", image.id], timeout=self.timeout)
                if result.rc != 0 and "does not exist" not in result.stderr:
                    raise BackendError(f"pvesm free {image.id} failed: {(result.stderr or result.stdout).strip()}")
                return None
            try:
                upid = client.request("DELETE", self._storage_path(storage, f"/content/{segment(image.id)}"))
            except NotFound:
                return None
            if isinstance(upid, str) and upid.startswith("UPID:"):
                ImageRun = image_code("images", "ImageRun")

                self._wait_task(client, upid, ImageRun(False), f"delete {image.id}")
            return None

        self.router.run(True, action)
        if hasattr(self, "_checksums"):
            self._checksums.pop(image.id, None)
