# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Docker backend: the Docker Engine API, over the node's socket / TCP+TLS, or tunnelled through SSH.

Why the tunnel (`docker system dial-stdio`, as the docker SDK's ssh:// does) and not the docker CLI: both
transports then speak the very same API, so every operation is written once, and the API-only and SSH-only
runs give the same normalised result by construction. The CLI would need a second parser for every read.
"""

from __future__ import annotations

import struct
import threading
import time
from urllib.parse import urlsplit

from ansible_collections.oneclickvirt.virt.plugins.module_utils.backends.base import Provider, count_statuses, image_code
from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import (
    BackendError, InvalidSpec, NotFound, OperationTimeout, TransportError, Unsupported)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.models import (
    ExecResult, Image, Instance, NodeFacts, NodeResources, PublishedPort)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.transport.http import (
    HttpClient, HttpResponse, open_socket, pem_fingerprint, tls_context)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.units import MIB

MANAGED_LABEL = "oneclickvirt.managed"
STATUS = {"running": "running", "restarting": "running", "created": "stopped", "exited": "stopped",
          "paused": "paused", "dead": "error", "removing": "unknown"}
RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")
# Inspects sent back to back before their answers are read: small enough that the requests always fit in the
# socket buffers (so sending never waits on the daemon), large enough that a listing costs a few round trips.
PIPELINE_BATCH = 64


class DockerEngine:
    """The Engine API over one HttpClient, wherever its stream comes from."""

    def __init__(self, http, ssh=None):
        self.http = http
        self.ssh = ssh

    def request(self, method, path, query=None, body=None, timeout=None):
        return self.http.request(method, path, query=query, body=body, timeout=timeout)

    def get_many(self, paths, timeout=None):
        """GET every path over one connection, pipelined (dockerd, Go's net/http, answers in order). The Engine
        API has no batched inspect, and one round trip per container is what makes a listing slow over SSH."""
        return self.http.get_many(paths, timeout=timeout, batch=PIPELINE_BATCH)

    def exec_start(self, exec_id, stdin, timeout):
        """Start an exec with its stdin attached; returns (stdout, stderr) when the command ends."""
        status, stream, leftover = self.http.upgrade("POST", f"/exec/{exec_id}/start",
                                                     body={"Detach": False, "Tty": False}, timeout=timeout)
        if status != 101:
            raise BackendError(f"exec start failed ({status}): {_message(stream)}", status=status)
        writer = None
        try:
            data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
            if data is None:
                stream.close_write()
            elif getattr(stream, "tls", False):
                _feed(stream, data)  # an SSL socket must not be written and read from two threads at once
            else:
                # Input is written from a thread while the output is read here: a command that echoes its input
                # (`cat`) would otherwise fill the buffers of both directions and wait forever.
                writer = threading.Thread(target=_feed, args=(stream, data), daemon=True)
                writer.start()
            return _demultiplex(stream, leftover)
        except (OSError, EOFError) as error:
            raise TransportError(f"exec stream broke: {error}", sent=True)
        finally:
            stream.close()
            if writer is not None:
                writer.join(5)

    def close(self):
        self.http.close()
        if self.ssh is not None:
            self.ssh.close()


def _feed(stream, data):
    try:
        stream.send_all(data)
        stream.close_write()
    except OSError:
        # The command ended without reading all its input (`true`, `head -1`): its output was read all the
        # same, and its exit code says whether it finished (DockerProvider.exec checks).
        pass


def _demultiplex(stream, data):
    """Docker's attach stream: frames of [type, 0, 0, 0, size(4, big endian)] + payload."""
    out, err = [], []
    while True:
        while len(data) < 8 or len(data) < 8 + struct.unpack(">I", data[4:8])[0]:
            try:
                chunk = stream.recv(65536)
            except ConnectionResetError:
                chunk = b""  # the daemon closed the stream with input left unread: the end of the output
            if not chunk:
                return b"".join(out).decode("utf-8", "replace"), b"".join(err).decode("utf-8", "replace")
            data += chunk
        size = struct.unpack(">I", data[4:8])[0]
        (err if data[0] == 2 else out).append(data[8:8 + size])
        data = data[8 + size:]


def _message(response):
    try:
        return (response.json() or {}).get("message") or response.body.decode("utf-8", "replace")
    except ValueError:
        return response.body.decode("utf-8", "replace")


def _image_reference(image):
    """Docker's own default: a reference without tag or digest means :latest."""
    last = image.rsplit("/", 1)[-1]
    return image if ("@" in image or ":" in last) else f"{image}:latest"


def _cores(host_config):
    if host_config.get("NanoCpus"):
        cores = host_config["NanoCpus"] / 1e9
    elif host_config.get("CpuQuota") and host_config.get("CpuPeriod"):
        cores = host_config["CpuQuota"] / host_config["CpuPeriod"]
    else:
        return None
    return int(cores) if cores == int(cores) else round(cores, 3)


def _port_bindings(ports):
    exposed, bindings = {}, {}
    for port in ports:
        key = f"{port.guest_port}/{port.protocol}"
        exposed[key] = {}
        bindings.setdefault(key, []).append({"HostIp": port.listen_address or "",
                                             "HostPort": str(port.host_port or "")})
    return exposed, bindings


def _published(port_bindings, bound=None):
    """The ports asked for at creation (HostConfig.PortBindings). With `bound` (NetworkSettings.Ports, filled
    while the container runs), a port left for Docker to choose reports the one it chose."""
    ports = []
    for key, bindings in (port_bindings or {}).items():
        guest_port, _slash, protocol = key.partition("/")
        chosen = [item for item in (bound or {}).get(key) or [] if item.get("HostPort")]
        for binding in bindings or [{}]:
            address = binding.get("HostIp") or ""
            host_port = binding.get("HostPort") or next(
                (item["HostPort"] for item in chosen if not address or item.get("HostIp") == address), None)
            ports.append(PublishedPort(guest_port=int(guest_port), host_port=int(host_port) if host_port else None,
                                       protocol=protocol or "tcp", listen_address=binding.get("HostIp") or None))
    return ports


class DockerProvider(Provider):
    backend = "docker"
    instance_types = ("container",)
    in_place_fields = ("cpu", "memory", "restart_policy")

    def __init__(self, node, warn=None):
        super().__init__(node, warn)
        self._inspected = {}

    # -- transports --------------------------------------------------------------------------------------
    def make_api_client(self):
        api = self.node.api
        parts = urlsplit(api.url)
        secure = parts.scheme == "https" or (parts.scheme == "tcp" and (api.ca_file or api.client_cert))
        context = pin = None
        if secure:
            context = tls_context(api.validate_certs, api.ca_file, api.server_cert, api.client_cert, api.client_key)
            pin = pem_fingerprint(api.server_cert) if api.server_cert else None
            if not api.validate_certs:
                self.warn(f"node {self.node.name}: TLS certificate checking is off (api.validate_certs: false)")
        url = api.url.replace("tcp://", "https://" if secure else "http://", 1)
        http = HttpClient(lambda: open_socket(url, api.timeout, context, pin),
                          host_header=parts.hostname or "docker", timeout=api.timeout)
        return DockerEngine(http)

    def make_ssh_client(self):
        from ansible_collections.oneclickvirt.virt.plugins.module_utils.transport.ssh import ChannelStream, SshTransport

        ssh = SshTransport(self.node.ssh, self.warn)
        http = HttpClient(lambda: ChannelStream(ssh.open_channel(["docker", "system", "dial-stdio"])),
                          host_header="docker", timeout=self.node.ssh.command_timeout)
        return DockerEngine(http, ssh=ssh)

    # -- requests ----------------------------------------------------------------------------------------
    def _call(self, method, path, query=None, body=None, ok=(200, 201, 204, 304), timeout=None):
        response = self.router.request(method, path, query=query, body=body, timeout=timeout)
        if response.status == 404:
            raise NotFound(f"docker: {_message(response)}")
        if response.status not in ok:
            raise BackendError(f"docker {method} {path} failed ({response.status}): {_message(response)}",
                               status=response.status, backend_message=_message(response))
        return response.json() if response.body else None

    # -- reads -------------------------------------------------------------------------------------------
    def version(self):
        return self._call("GET", "/version")["Version"]

    def info(self):
        return self._call("GET", "/info")

    def _inspect(self, name_or_id):
        try:
            return self._call("GET", f"/containers/{name_or_id}/json")
        except NotFound:
            return None

    def get_instance(self, name):
        data = self._inspect(name)
        # Docker also resolves ID prefixes: only a container whose name is exactly `name` counts.
        if data is None or data.get("Name") != f"/{name}":
            return None
        self._inspected[name] = data
        return self._instance(data)

    def list_instances(self):
        """Every container: one listing, then every inspect pipelined (one round trip per PIPELINE_BATCH).

        The listing lacks cpu and memory, so each container is inspected too; the inspects go back to back
        over the same connection instead of one round trip each.
        """
        summaries = self._call("GET", "/containers/json", query={"all": "1"})
        paths = [f"/containers/{summary['Id']}/json" for summary in summaries]
        responses = self.router.run(False, lambda engine: engine.get_many(paths)) if paths else []
        instances = []
        for response in responses:
            if response.status == 404:
                continue  # removed since the listing
            if response.status != 200:
                raise BackendError(f"docker GET /containers/{{id}}/json failed ({response.status}): "
                                   f"{_message(response)}", status=response.status,
                                   backend_message=_message(response))
            data = response.json()
            self._inspected[data["Name"].lstrip("/")] = data
            instances.append(self._instance(data))
        return sorted(instances, key=lambda instance: instance.name)

    def _instance(self, data):
        host_config, settings = data.get("HostConfig") or {}, data.get("NetworkSettings") or {}
        networks = list((settings.get("Networks") or {}).values())
        ipv4 = settings.get("IPAddress") or next((n["IPAddress"] for n in networks if n.get("IPAddress")), None)
        ipv6 = settings.get("GlobalIPv6Address") or next(
            (n["GlobalIPv6Address"] for n in networks if n.get("GlobalIPv6Address")), None)
        memory = host_config.get("Memory") or 0
        return Instance(
            name=data["Name"].lstrip("/"), id=data["Id"], node=self.node.name, backend=self.backend,
            type="container", status=STATUS.get(data["State"]["Status"], "unknown"),
            image=data["Config"].get("Image"), cpu=_cores(host_config), memory=memory // MIB if memory else None,
            disk=None, private_ip=ipv4 or None, ipv6=ipv6 or None,
            ports=[port.__dict__ for port in _published(host_config.get("PortBindings"), settings.get("Ports"))],
            created=data.get("Created"))

    def list_images(self):
        """Every image, inspected (architecture, digests) in one pipelined batch, with the containers using it."""
        summaries = self._call("GET", "/images/json")
        paths = [f"/images/{summary['Id']}/json" for summary in summaries]
        responses = self.router.run(False, lambda engine: engine.get_many(paths)) if paths else []
        users = self._image_users()
        images = []
        for response in responses:
            if response.status != 200:
                continue  # removed since the listing
            data = response.json()
            tags = sorted(tag for tag in data.get("RepoTags") or [] if tag != "<none>:<none>")
            images.append(self._image_of(data, tags[0] if tags else data["Id"], users))
        return sorted(images, key=lambda image: image.name)

    # -- plan --------------------------------------------------------------------------------------------
    def check_spec(self, spec):
        super().check_spec(spec)
        if spec.network:
            unsupported = sorted(key for key, value in spec.network.items() if value is not None and key != "bridge")
            if unsupported:
                raise Unsupported(f"network: {', '.join(unsupported)} not supported on Docker; only network.bridge "
                                  "(a Docker network name) is")
        if spec.restart_policy is not None and spec.restart_policy not in RESTART_POLICIES:
            raise InvalidSpec(f"config.restart_policy: use one of {', '.join(RESTART_POLICIES)}")
        if spec.disk is not None:
            info = self.info()
            backing = dict(info.get("DriverStatus") or []).get("Backing Filesystem", "unknown")
            if not (info.get("Driver") == "overlay2" and backing == "xfs"):
                raise Unsupported(f"disk: Docker's {info.get('Driver')} storage driver on {backing} cannot enforce a "
                                  "disk quota on this node (it needs overlay2 on xfs with pquota); remove `disk`")

    def _current(self, instance):
        data = self._inspected.get(instance.name) or self._inspect(instance.id)
        config, host_config = data["Config"], data["HostConfig"]
        return config, host_config

    def drift(self, instance, spec):
        config, host_config = self._current(instance)
        changes = {}
        if spec.image is not None and _image_reference(spec.image) != _image_reference(instance.image or ""):
            changes["image"] = (instance.image, spec.image)
        if spec.cpu is not None and instance.cpu != spec.cpu:
            changes["cpu"] = (instance.cpu, spec.cpu)
        if spec.memory is not None and instance.memory != spec.memory:
            changes["memory"] = (instance.memory, spec.memory)
        if spec.env is not None:
            current_env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
            wanted = {key: str(value) for key, value in spec.env.items()}
            if any(current_env.get(key) != value for key, value in wanted.items()):
                changes["env"] = ({key: current_env.get(key) for key in wanted}, wanted)
        if spec.hostname is not None and config.get("Hostname") != spec.hostname:
            changes["hostname"] = (config.get("Hostname"), spec.hostname)
        if spec.command is not None and (config.get("Cmd") or []) != spec.command:
            changes["command"] = (config.get("Cmd"), spec.command)
        if spec.ports is not None:
            # Compared with what was asked at creation: a port Docker chose is not a drift from "any port".
            current = sorted(port.key() for port in _published(host_config.get("PortBindings")))
            if current != sorted(port.key() for port in spec.ports):
                changes["ports"] = (instance.ports, [port.__dict__ for port in spec.ports])
        if spec.restart_policy is not None:
            current_policy = (host_config.get("RestartPolicy") or {}).get("Name") or "no"
            if current_policy != spec.restart_policy:
                changes["restart_policy"] = (current_policy, spec.restart_policy)
        return changes

    # -- writes ------------------------------------------------------------------------------------------
    def create_instance(self, spec, events):
        image = _image_reference(spec.image)
        try:
            self._call("GET", f"/images/{image}/json")
        except NotFound:
            raise NotFound(f"image: {spec.image!r} is not on Docker node {self.node.name}; pull or load it first "
                           "(oneclickvirt.virt.virt_image), then run again")
        exposed, bindings = _port_bindings(spec.ports or [])
        host_config = {"PortBindings": bindings, "Init": bool(spec.config.get("init", False))}
        if spec.cpu is not None:
            host_config["NanoCpus"] = int(spec.cpu * 1e9)
        if spec.memory is not None:
            host_config["Memory"] = spec.memory * MIB
            host_config["MemorySwap"] = 2 * spec.memory * MIB
        if spec.restart_policy:
            host_config["RestartPolicy"] = {"Name": spec.restart_policy}
        if spec.network and spec.network.get("bridge"):
            host_config["NetworkMode"] = spec.network["bridge"]
        body = {"Image": image, "Labels": {MANAGED_LABEL: "true"}, "ExposedPorts": exposed, "HostConfig": host_config,
                "Env": [f"{key}={value}" for key, value in sorted((spec.env or {}).items())]}
        if spec.hostname:
            body["Hostname"] = spec.hostname
        if spec.command:
            body["Cmd"] = spec.command
        self._call("POST", "/containers/create", query={"name": spec.name}, body=body)

    def update_instance(self, instance, changes):
        body = {}
        if "cpu" in changes:
            body["NanoCpus"] = int(changes["cpu"] * 1e9)
        if "memory" in changes:
            body["Memory"] = changes["memory"] * MIB
            body["MemorySwap"] = 2 * changes["memory"] * MIB
        if "restart_policy" in changes:
            body["RestartPolicy"] = {"Name": changes["restart_policy"]}
        self._call("POST", f"/containers/{instance.id}/update", body=body)

    def start(self, instance, timeout):
        self._call("POST", f"/containers/{instance.id}/start")
        self._wait_status(instance, ("running",), timeout, "start")

    def stop(self, instance, timeout, force=False):
        if force:
            self._call("POST", f"/containers/{instance.id}/kill", ok=(204, 409))
        else:
            # Docker waits `t` seconds for the process, then kills it; the HTTP answer comes after that.
            grace = max(1, min(int(timeout) - 1, 10))
            self._call("POST", f"/containers/{instance.id}/stop", query={"t": str(grace)}, timeout=timeout + 5)
        self._wait_status(instance, ("stopped", "error"), timeout, "stop")

    def restart(self, instance, timeout):
        grace = max(1, min(int(timeout) - 1, 10))
        self._call("POST", f"/containers/{instance.id}/restart", query={"t": str(grace)}, timeout=timeout + 5)
        self._wait_status(instance, ("running",), timeout, "restart")

    def delete(self, instance, timeout):
        try:
            self._call("DELETE", f"/containers/{instance.id}", query={"force": "1", "v": "1"}, timeout=timeout)
        except NotFound:
            pass

    def _wait_status(self, instance, wanted, timeout, operation):
        deadline = time.monotonic() + timeout
        while True:
            data = self._inspect(instance.id)
            status = STATUS.get(data["State"]["Status"], "unknown") if data else "unknown"
            if status in wanted:
                self._inspected[instance.name] = data
                return
            if operation in ("start", "restart") and status == "stopped":
                state = data["State"]
                raise BackendError(f"{instance.name} exited right after {operation} (exit code "
                                   f"{state.get('ExitCode')}, {state.get('Error') or 'no error message'}); its "
                                   "command must keep running")
            if time.monotonic() > deadline:
                raise OperationTimeout(f"{operation} of {instance.name}: still {status} after {timeout}s")
            time.sleep(0.1)

    def exec(self, instance, argv, stdin=None, env=None, cwd=None, user=None, timeout=None):
        if instance.status != "running":
            raise Unsupported(f"{instance.name} is {instance.status}; commands run only in a running instance")
        body = {"AttachStdin": stdin is not None, "AttachStdout": True, "AttachStderr": True, "Tty": False,
                "Cmd": list(argv), "Env": [f"{key}={value}" for key, value in (env or {}).items()]}
        if cwd:
            body["WorkingDir"] = cwd
        if user:
            body["User"] = user
        timeout = timeout or 120
        exec_id = self._call("POST", f"/containers/{instance.id}/exec", body=body)["Id"]
        stdout, stderr = self.router.run(True, lambda engine: engine.exec_start(exec_id, stdin, timeout))
        state = self._call("GET", f"/exec/{exec_id}/json")
        if state.get("Running"):
            raise TransportError(f"exec in {instance.name}: the stream ended while the command still runs", sent=True)
        rc = state.get("ExitCode")
        return ExecResult(rc=rc if rc is not None else -1, stdout=stdout, stderr=stderr)

    # -- the node ----------------------------------------------------------------------------------------
    def node_facts(self):
        """Version, host name, container counts, cores and memory from the Engine API; the data root for `df`."""
        version = self._call("GET", "/version")
        info = self.info()
        summaries = self._call("GET", "/containers/json", query={"all": "1"})
        resources = NodeResources(storage_pool=info.get("Driver"), disk_path=info.get("DockerRootDir"))
        if info.get("NCPU"):
            resources.cpu_cores, resources.sources["cpu_cores"] = int(info["NCPU"]), "api"
        if info.get("MemTotal"):
            resources.memory_total, resources.sources["memory_total"] = int(info["MemTotal"]) // MIB, "api"
        return NodeFacts(
            version=version.get("Version"), hostname=info.get("Name"), instance_types=list(self.instance_types),
            instances=count_statuses(STATUS.get(summary.get("State"), "unknown") for summary in summaries),
            resources=resources)

    # -- images (virt_image; the flow is in module_utils/images.py) ----------------------------------------
    image_sources = ("pull", "url", "upload", "file")

    def find_image(self, name):
        """The image known by exactly this normalised reference (`repo:tag`, `repo@digest`) or image ID."""
        try:
            data = self._call("GET", f"/images/{name}/json")
        except NotFound:
            return None
        # Docker also resolves ID prefixes and untagged names: only an exact name counts.
        if name != data.get("Id") and name not in (data.get("RepoTags") or []) + (data.get("RepoDigests") or []):
            return None
        return self._image_of(data, name, self._image_users())

    def _image_users(self):
        users = {}
        for summary in self._call("GET", "/containers/json", query={"all": "1"}):
            users.setdefault(summary.get("ImageID"), []).append(summary["Names"][0].lstrip("/"))
        return users

    def _image_of(self, data, name, users):
        tags = sorted(tag for tag in data.get("RepoTags") or [] if tag != "<none>:<none>")
        digests = sorted(data.get("RepoDigests") or [])
        return Image(name=name, id=data["Id"], node=self.node.name, backend=self.backend, aliases=tags,
                     size=data.get("Size"), created=data.get("Created"), architecture=data.get("Architecture"),
                     type="container", checksum=digests[0].rsplit("@", 1)[1] if digests else None,
                     used_by=sorted(users.get(data["Id"], [])), digests=digests)

    def image_source(self, request, run):
        docker_tar_image_id, file_digest, human_size, image_id_from_manifest, mismatch = image_code(
            "image_transfer", "docker_tar_image_id", "file_digest", "human_size", "image_id_from_manifest", "mismatch")
        ImageSource = image_code("images", "ImageSource")

        if request.source == "pull":
            return self._pull_source(request)
        predicted = Image(name=request.name, id="", node=self.node.name, backend=self.backend, type="container",
                          aliases=[request.name])
        if request.source == "upload":
            if request.checksum:
                actual = run.step(f"verify {request.checksum.algorithm} of {request.path}",
                                  lambda: file_digest(request.path, request.checksum.algorithm))
                if actual != request.checksum:
                    raise mismatch(request.path, request.checksum, actual)
            image_id, tags = docker_tar_image_id(request.path)
            predicted.id, predicted.aliases = image_id, sorted(tags)  # a load applies the tar's own tags
            return ImageSource(action=f"load {request.path}", identity=image_id, existing=self.find_image(image_id),
                               fetch=lambda run: self._load_stream(request.path, image_id, run), predicted=predicted)
        engine = self.router.ssh(f"source {request.source} (a tar on the node, loaded with `docker load -i`)")
        staging = run.staging(engine.ssh, request.timeout)
        path, actual = request.path, None
        if request.source == "url":
            algorithm = request.checksum.algorithm if request.checksum else None
            path, _size, actual = run.step(
                f"download {request.url}", lambda: staging.download(request.url, "image.tar", algorithm),
                describe=lambda got: f"download {request.url} ({human_size(got[1])})")
        if request.checksum:
            if actual is None:
                actual = run.step(f"verify {request.checksum.algorithm} of {path}",
                                  lambda: staging.digest([path], request.checksum.algorithm))
            if actual != request.checksum:
                staging.remove()  # nothing downloaded stays on the node
                raise mismatch(request.url or path, request.checksum, actual)
        result = engine.ssh.run(["tar", "-xOf", path, "manifest.json"], timeout=request.timeout)
        if result.rc != 0:
            raise InvalidSpec(f"{'url' if request.url else 'path'}: {request.url or path} is not a `docker save` tar "
                              f"(tar: {result.stderr.strip()[:200]})")
        image_id, tags = image_id_from_manifest(result.stdout, request.url or path)
        predicted.id, predicted.aliases = image_id, sorted(tags)
        return ImageSource(action=f"load {request.url or path}", identity=image_id,
                           existing=self.find_image(image_id), fetch=lambda run: self._load_on_node(path, image_id, run),
                           predicted=predicted)

    def _pull_source(self, request):
        mismatch = image_code("image_transfer", "mismatch")
        ImageSource, split_reference = image_code("images", "ImageSource", "split_reference")

        name = request.name
        repository, _tag, digest = split_reference(name)
        if digest is None:
            try:
                digest = self._call("GET", f"/distribution/{name}/json")["Descriptor"]["digest"]
            except (NotFound, BackendError) as error:
                raise BackendError(f"reading the manifest digest of {name} from its registry failed: {error}. "
                                   "virt_image compares it with the local image before pulling; check the name, "
                                   "the registry and the node's access to it")
        if request.checksum and str(request.checksum) != digest:
            raise mismatch(f"the registry's manifest of {name} (nothing was pulled)", request.checksum, digest)
        current = self.find_image(name)
        existing = current if current and f"{repository}@{digest}" in current.digests else None
        predicted = Image(name=name, id=current.id if existing else "", node=self.node.name, backend=self.backend,
                          type="container", aliases=[name] if "@" not in name else [], checksum=digest,
                          digests=[f"{repository}@{digest}"])
        return ImageSource(action=f"pull {name}", identity=digest, existing=existing,
                           fetch=lambda run: self._pull(name, run), predicted=predicted)

    def _pull(self, name, run):
        split_reference = image_code("images", "split_reference")

        repository, tag, digest = split_reference(name)
        query = {"fromImage": f"{repository}@{digest}"} if digest else {"fromImage": repository, "tag": tag}
        self._image_stream("POST", "/images/create", query, run, f"pull {name}")
        return name

    def _load_stream(self, path, image_id, run):
        self._image_stream("POST", "/images/load", {"quiet": "0"}, run, f"load {path}", parts=[path],
                           headers={"Content-Type": "application/x-tar"})
        return image_id

    def _load_on_node(self, path, image_id, run):
        ssh = self.router.ssh("loading a tar on the node").ssh
        result = ssh.run(["docker", "load", "-i", path], timeout=self.timeout)
        if result.rc != 0:
            raise BackendError(f"docker load -i {path} failed (rc {result.rc}): {result.stderr.strip()[:500]}")
        for line in result.stdout.splitlines():
            if line.strip():
                run.progress(f"load: {line.strip()}")
        return image_id

    def _image_stream(self, method, path, query, run, what, parts=(), headers=None):
        """A request whose answer is a stream of JSON progress lines; an `error` line is a failure."""
        from urllib.parse import quote

        json_lines = image_code("image_transfer", "json_lines")

        def send(engine):
            http = engine.http
            target = http.target(quote(path, safe="/:@"), query)
            http.send(method, target, headers, parts, timeout=self.timeout)
            status, response_headers = http.receive_head(method, target)
            chunks = http.iter_body(response_headers, method, target)
            if status >= 400:
                response = HttpResponse(status, response_headers, b"".join(chunks))
                raise (NotFound if status == 404 else BackendError)(f"docker {what} failed ({status}): "
                                                                    f"{_message(response)}")
            seen = set()
            for line in json_lines(chunks):
                if line.get("error") or line.get("errorDetail"):
                    message = line.get("error") or (line.get("errorDetail") or {}).get("message")
                    raise BackendError(f"docker {what} failed: {message}", backend_message=message)
                text = " ".join(str(line[key]).strip() for key in ("status", "id", "stream") if line.get(key))
                # Byte counters ("Downloading", "Extracting") would be hundreds of lines: keep the steps.
                if text and text not in seen and not line.get("progressDetail", {}).get("current"):
                    seen.add(text)
                    run.progress(f"{what}: {text}")

        return self.router.run(True, send)

    def add_image_alias(self, image, alias):
        split_reference = image_code("images", "split_reference")

        repository, tag, _digest = split_reference(alias)
        self._call("POST", f"/images/{image.id}/tag", query={"repo": repository, "tag": tag or "latest"})

    def delete_image(self, image, force=False):
        try:
            self._call("DELETE", f"/images/{image.name}", query={"force": "1"} if force else None,
                       timeout=self.timeout)
        except NotFound:
            pass
