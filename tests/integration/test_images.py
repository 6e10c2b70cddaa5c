"""virt_image and virt_image_info against the lab's real dockerd, LXD, Incus and the Proxmox simulator.

Every source on every backend where it applies: the first run changes, the second does not (and the daemon
sees no write: `docker events`, `lxc monitor` / `incus monitor`, the simulator's request log), check mode
predicts and writes nothing. A wrong checksum fails and leaves nothing behind (no image, no partial file in
the node's staging directory or the storage); an image in use is not deleted without `force`.

Sources are served by this process: a loopback HTTP server over a temporary directory, and a local Docker
registry (Debian's `docker-registry`) on a free loopback port, started and stopped here.
"""

import functools
import glob
import hashlib
import importlib.util
import io
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


def _integration_conftest():
    """This folder's conftest module. Imported by path: when pytest is given a unit test file too (in any
    order), the name `conftest` may be the unit tests' one."""
    path = Path(__file__).resolve().parent / "conftest.py"
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) and Path(module.__file__).resolve() == path:
            return module
    spec = importlib.util.spec_from_file_location("ocv_integration_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_conftest = _integration_conftest()
LAB_DIR, DockerEvents, docker_cli = _conftest.LAB_DIR, _conftest.DockerEvents, _conftest.docker_cli
node_with, run_module, unique, free_port = _conftest.node_with, _conftest.run_module, _conftest.unique, _conftest.free_port
sys.path.insert(0, str(Path(__file__).resolve().parent))
from lxd_helpers import BACKENDS, Monitor, cli  # noqa: E402  (beside this file)

STAGING = "/var/tmp/ocv-image.*"
PVE_LOG = LAB_DIR / "pvesim" / "requests.log"
PVE_CACHE = LAB_DIR / "pvesim" / "storage" / "local" / "template" / "cache"
PVE_ISO = LAB_DIR / "pvesim" / "storage" / "local" / "template" / "iso"


def sha256(path):
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def wrong(checksum):
    algorithm, _, digest = checksum.partition(":")
    return f"{algorithm}:{'0' if digest[0] != '0' else '1'}{digest[1:]}"


def staging_left():
    return glob.glob(STAGING)


def image(args, node, check=False):
    result = run_module("virt_image", dict(args, node=node), check=check)
    assert "Traceback" not in result["_stderr"], result["_stderr"]
    return result


def converges(args, node, quiet, what):
    """Check mode predicts and writes nothing; the first run changes as predicted; the second writes nothing.

    `quiet(run)` runs `run()` and returns the writes the daemon saw while it ran.
    """
    predicted = None

    def check():
        nonlocal predicted
        predicted = image(args, node, check=True)

    assert quiet(check) == [], f"{what}: check mode made the backend write"
    assert predicted.get("failed") is not True, predicted
    assert predicted["changed"] is True, predicted
    first = image(args, node)
    assert first.get("failed") is not True, first
    assert first["changed"] is True and first["actions"] == predicted["actions"], (predicted, first)
    assert all(event["seconds"] >= 0 for event in first["events"])
    # What check mode predicts is what the run makes (an ID a pull has not fetched yet is unknown: "").
    assert predicted["image"]["id"] in ("", first["image"]["id"]), (predicted["image"], first["image"])
    assert set(predicted["image"]["aliases"]) <= set(first["image"]["aliases"]), (predicted, first)
    second = None

    def again():
        nonlocal second
        second = image(args, node)

    assert quiet(again) == [], f"{what}: the second run made the backend write"
    assert second["changed"] is False and second["actions"] == [], second
    assert second["image"] == first["image"]
    assert staging_left() == [], "a temporary directory stayed on the node"
    return first, second


# -- fixtures: what serves the sources ---------------------------------------------------------------------------
class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A loopback HTTP server over a temporary directory, in this process: (directory, base URL)."""
    root = tmp_path_factory.mktemp("served")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()



@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Debian's docker-registry on 127.0.0.1:<free port>, own config and storage; stopped at the end.

    dockerd treats 127.0.0.0/8 registries as insecure by default, so plain HTTP on loopback works.
    """
    if shutil.which("docker-registry") is None:
        subprocess.run(["apt-get", "install", "-y", "docker-registry"], check=True, capture_output=True, timeout=600,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = root / "config.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n"
                      f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n")
    with open(root / "registry.log", "w") as log:
        process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    (root / "registry.pid").write_text(str(process.pid))
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1):
                break
        except (OSError, urllib.error.URLError):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"docker-registry did not start: {(root / 'registry.log').read_text()}")
            time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


# -- Docker ------------------------------------------------------------------------------------------------------
@pytest.fixture
def docker_refs():
    """References and image IDs this test makes; all removed at the end."""
    made = []
    yield made
    for reference in reversed(made):
        docker_cli("rmi", "-f", reference, check=False)


def docker_node(nodes, rule="auto"):
    return node_with(nodes["docker"], execution_rule=rule)


def make_docker_image(reference, docker_refs):
    """A tiny image of its own content (so its own ID), made with `docker import`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = secrets.token_hex(16).encode()
        info = tarfile.TarInfo("token")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    completed = subprocess.run(["docker", "import", "-", reference], input=buffer.getvalue(), capture_output=True,
                               check=True, timeout=60)
    image_id = completed.stdout.decode().strip()
    docker_refs.append(image_id)
    return image_id


def docker_image_of(reference):
    completed = docker_cli("image", "inspect", reference, check=False)
    return json.loads(completed.stdout)[0] if completed.returncode == 0 else None


def docker_quiet(*markers):
    """`quiet` for converges(): the image events the daemon emitted that mention one of `markers`."""
    def quiet(run):
        events = DockerEvents()
        events.start()
        run()
        return [event for event in events.collect() if event.get("Type") == "image"
                and any(marker in json.dumps(event) for marker in markers)]
    return quiet


def saved_tar(reference, directory):
    path = Path(directory) / f"{reference.replace('/', '_').replace(':', '_')}.tar"
    docker_cli("save", reference, "-o", str(path))
    return path


@pytest.mark.parametrize("rule", ["api_only", "ssh_only"])
def test_docker_pull_by_digest(nodes, registry, docker_refs, rule):
    name = unique("t-img-pull")
    remote = f"{registry}/{name}:v1"
    image_id = make_docker_image(remote, docker_refs)
    docker_refs += [remote, f"{name}:local"]
    docker_cli("push", remote)
    docker_cli("rmi", remote)
    assert docker_image_of(remote) is None
    node = docker_node(nodes, rule)
    args = {"name": remote, "source": "pull", "aliases": [f"{name}:local"]}

    first, second = converges(args, node, docker_quiet(name, image_id), f"docker pull ({rule})")
    assert first["transport"] == ("ssh" if rule == "ssh_only" else "api")
    assert first["image"]["id"] == image_id == docker_image_of(remote)["Id"]
    assert sorted(first["image"]["aliases"]) == sorted([remote, f"{name}:local"])
    digest = docker_image_of(remote)["RepoDigests"][0]
    assert first["image"]["digests"] == [digest] and first["image"]["checksum"] == digest.split("@")[1]
    steps = [event["step"] for event in first["events"]]
    assert any("Pull complete" in step for step in steps) and f"pull {remote}" in steps, steps

    # A pinned checksum that the registry does not serve: an error, and nothing is pulled.
    docker_cli("rmi", remote, f"{name}:local")
    failed = image(dict(args, checksum=wrong(first["image"]["checksum"])), node)
    assert failed["failed"] is True and "checksum mismatch" in failed["msg"] and "nothing was pulled" in failed["msg"]
    assert docker_image_of(remote) is None


def test_docker_pull_failure_in_the_stream_is_an_error(nodes, registry):
    missing = f"{registry}/{unique('t-img-none')}:v1"
    result = image({"name": missing, "source": "pull"}, docker_node(nodes))
    assert result["failed"] is True and missing in result["msg"]


@pytest.mark.parametrize("rule", ["api_only", "ssh_only"])
def test_docker_load_upload(nodes, docker_refs, tmp_path, rule):
    name = unique("t-img-load")
    image_id = make_docker_image(f"{name}:v1", docker_refs)
    tar = saved_tar(f"{name}:v1", tmp_path)
    docker_cli("rmi", f"{name}:v1")
    docker_refs += [f"{name}:v1", f"{name}:v2"]
    args = {"name": f"{name}:v2", "source": "upload", "path": str(tar), "checksum": sha256(tar)}

    first, _ = converges(args, docker_node(nodes, rule), docker_quiet(name, image_id), f"docker upload ({rule})")
    assert first["image"]["id"] == image_id
    # The load applies the tar's own tag; the name asked is tagged too.
    assert sorted(first["image"]["aliases"]) == [f"{name}:v1", f"{name}:v2"]
    assert any(event["step"].startswith(f"load {tar}: Loaded image") for event in first["events"])

    docker_cli("rmi", f"{name}:v1", f"{name}:v2")
    failed = image(dict(args, checksum=wrong(args["checksum"])), docker_node(nodes, rule))
    assert failed["failed"] is True and "checksum mismatch" in failed["msg"]
    assert docker_image_of(image_id) is None


def test_docker_load_from_a_file_on_the_node_and_from_a_url(nodes, docker_refs, served, tmp_path):
    root, base = served
    name = unique("t-img-node")
    image_id = make_docker_image(f"{name}:v1", docker_refs)
    tar = saved_tar(f"{name}:v1", root)
    docker_cli("rmi", f"{name}:v1")
    docker_refs += [f"{name}:v1", f"{name}:file", f"{name}:url"]
    node = docker_node(nodes)

    file_args = {"name": f"{name}:file", "source": "file", "path": str(tar), "checksum": sha256(tar)}
    first, _ = converges(file_args, node, docker_quiet(name, image_id), "docker file")
    assert first["image"]["id"] == image_id

    docker_cli("rmi", f"{name}:v1", f"{name}:file")
    url_args = {"name": f"{name}:url", "source": "url", "url": f"{base}/{tar.name}", "checksum": sha256(tar)}
    first, second = converges(url_args, node, docker_quiet(name, image_id), "docker url")
    assert first["image"]["id"] == image_id
    assert any(event["step"].startswith(f"download {base}/{tar.name} (") for event in first["events"])
    # Without a checksum the node downloads again to learn the image ID: still no write.
    unverified = image({"name": f"{name}:url", "source": "url", "url": f"{base}/{tar.name}"}, node)
    assert unverified["changed"] is False and staging_left() == []

    for bad in (dict(file_args, checksum=wrong(file_args["checksum"])),
                dict(url_args, name=f"{name}:bad", checksum=wrong(url_args["checksum"]))):
        failed = image(bad, node)
        assert failed["failed"] is True and "checksum mismatch" in failed["msg"], failed
        assert staging_left() == [] and docker_image_of(f"{name}:bad") is None


def test_docker_image_in_use_is_kept_unless_force(nodes, docker_refs, docker_name):
    name = unique("t-img-used")
    image_id = make_docker_image(f"{name}:v1", docker_refs)
    docker_cli("create", "--name", docker_name, f"{name}:v1", "/token")
    node = docker_node(nodes)
    info = run_module("virt_image_info", {"node": node, "name": f"{name}:v1"})
    assert info["images"][0]["used_by"] == [docker_name] and info["images"][0]["id"] == image_id

    args = {"name": f"{name}:v1", "state": "absent"}
    for check in (True, False):
        refused = image(args, node, check=check)
        assert refused["failed"] is True and docker_name in refused["msg"] and "force" in refused["msg"]
    assert docker_image_of(f"{name}:v1")["Id"] == image_id
    predicted = image(dict(args, force=True), node, check=True)
    assert predicted["changed"] is True and docker_image_of(f"{name}:v1") is not None
    removed = image(dict(args, force=True), node)
    assert removed["changed"] is True and removed["image"] is None and docker_image_of(f"{name}:v1") is None
    assert image(dict(args, force=True), node)["changed"] is False


def test_docker_image_info_fields(nodes):
    listing = run_module("virt_image_info", {"node": docker_node(nodes, "api_only")})["images"]
    over_ssh = run_module("virt_image_info", {"node": docker_node(nodes, "ssh_only")})["images"]
    assert listing == over_ssh
    busybox = next(entry for entry in listing if entry["name"] == "ocv-busybox:latest")
    truth = docker_image_of("ocv-busybox:latest")
    assert busybox["id"] == truth["Id"] and busybox["architecture"] == truth["Architecture"]
    assert busybox["size"] == truth["Size"] and busybox["created"] == truth["Created"]
    one = run_module("virt_image_info", {"node": docker_node(nodes), "name": "ocv-busybox"})["images"]
    assert [entry["name"] for entry in one] == ["ocv-busybox:latest"]


# -- LXD and Incus ---------------------------------------------------------------------------------------------------
@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def lab_node(nodes, backend, rule="auto"):
    return node_with(nodes[backend], execution_rule=rule)


def lxd_image_files(directory, label):
    """A tiny split image (meta.tar.gz + rootfs.tar.gz) and the same as a unified tarball, of unique content."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16).encode()
    metadata = (f"architecture: x86_64\ncreation_date: {int(time.time())}\nproperties:\n  description: {label}\n"
                ).encode()

    def tar(path, members):
        with tarfile.open(path, "w:gz") as archive:
            for member_name, data in members:
                info = tarfile.TarInfo(member_name)
                info.size, info.mtime = len(data), 0
                archive.addfile(info, io.BytesIO(data))
        return path

    files = {
        "meta": tar(directory / f"{label}-meta.tar.gz", [("metadata.yaml", metadata)]),
        "rootfs": tar(directory / f"{label}-rootfs.tar.gz", [("token", token)]),
        "unified": tar(directory / f"{label}-unified.tar.gz", [("metadata.yaml", metadata), ("rootfs/token", token)]),
    }
    split = hashlib.sha256(files["meta"].read_bytes() + files["rootfs"].read_bytes()).hexdigest()
    return files, split, hashlib.sha256(files["unified"].read_bytes()).hexdigest()


def daemon_images(backend):
    listing = json.loads(cli(backend, "image", "list", "--format", "json").stdout)
    return {entry["fingerprint"]: sorted(alias["name"] for alias in entry.get("aliases") or []) for entry in listing}


@pytest.fixture
def lxd_cleanup(backend):
    """Fingerprints and instances this test makes; deleted at the end."""
    made = {"images": [], "instances": []}
    yield made
    for name in made["instances"]:
        cli(backend, "delete", "--force", name, check=False)
    for fingerprint in made["images"]:
        cli(backend, "image", "delete", fingerprint, check=False)


def lxd_quiet(backend, *markers):
    """`quiet` for converges(): the daemon's writes (lifecycle, operations, non-GET requests) naming a marker."""
    def quiet(run):
        before = daemon_images(backend)
        monitor = Monitor(backend).start()
        try:
            run()
        finally:
            events = monitor.events("")  # every event of the window; filtered below
        writes = []
        for event in events:
            text = json.dumps(event)
            if not any(marker in text for marker in markers):
                continue
            context = event["metadata"].get("context") or {}
            if event["type"] in ("lifecycle", "operation") or (
                    event["type"] == "logging" and event["metadata"].get("message") == "Handling API request"
                    and context.get("method") != "GET"):
                writes.append(event)
        after = daemon_images(backend)
        return writes + ([{"images": (before, after)}] if before != after else [])
    return quiet


@pytest.mark.parametrize("rule", ["api_only", "ssh_only"])
def test_lxd_upload_split_image(nodes, backend, lxd_cleanup, tmp_path, rule):
    alias = unique("t-img-up")
    files, fingerprint, _ = lxd_image_files(tmp_path, alias)
    lxd_cleanup["images"].append(fingerprint)
    args = {"name": alias, "source": "upload", "path": str(files["rootfs"]), "metadata_path": str(files["meta"]),
            "checksum": sha256(files["rootfs"]), "metadata_checksum": sha256(files["meta"]),
            "aliases": [f"{alias}-b"]}
    first, _ = converges(args, lab_node(nodes, backend, rule), lxd_quiet(backend, fingerprint, alias),
                         f"{backend} upload ({rule})")
    assert first["image"]["id"] == fingerprint and first["image"]["checksum"] == f"sha256:{fingerprint}"
    assert daemon_images(backend)[fingerprint] == [alias, f"{alias}-b"]
    assert first["image"]["type"] == "container" and first["image"]["architecture"] == "x86_64"


def test_lxd_upload_unified_then_alias_moves(nodes, backend, lxd_cleanup, tmp_path):
    alias = unique("t-img-uni")
    files, split, unified = lxd_image_files(tmp_path, alias)
    lxd_cleanup["images"] += [unified, split]
    node = lab_node(nodes, backend)
    args = {"name": alias, "source": "upload", "path": str(files["unified"])}
    first, _ = converges(args, node, lxd_quiet(backend, unified, alias), f"{backend} unified upload")
    assert first["image"]["id"] == unified

    # The same alias for another image: that image is imported and the alias moves to it.
    moved = image({"name": alias, "source": "upload", "path": str(files["rootfs"]),
                   "metadata_path": str(files["meta"])}, node)
    assert moved["changed"] is True and moved["image"]["id"] == split
    assert moved["diff"]["before"]["id"] == unified and moved["diff"]["after"]["id"] == split
    images = daemon_images(backend)
    assert images[split] == [alias] and images[unified] == []


def test_lxd_import_files_on_the_node(nodes, backend, lxd_cleanup, tmp_path):
    alias = unique("t-img-file")
    files, fingerprint, _ = lxd_image_files(tmp_path, alias)
    lxd_cleanup["images"].append(fingerprint)
    node = lab_node(nodes, backend)
    args = {"name": alias, "source": "file", "path": str(files["rootfs"]), "metadata_path": str(files["meta"]),
            "checksum": sha256(files["rootfs"])}
    first, _ = converges(args, node, lxd_quiet(backend, fingerprint, alias), f"{backend} file")
    assert first["image"]["id"] == fingerprint

    failed = image(dict(args, name=f"{alias}-bad", checksum=wrong(args["checksum"]), force=True), node)
    assert failed["failed"] is True and "checksum mismatch" in failed["msg"]
    assert f"{alias}-bad" not in json.dumps(daemon_images(backend)) and staging_left() == []
    under_api_only = image(args, lab_node(nodes, backend, "api_only"))
    assert under_api_only["failed"] is True and "needs SSH" in under_api_only["msg"]


def test_lxd_download_on_the_node(nodes, backend, lxd_cleanup, served):
    root, base = served
    alias = unique("t-img-url")
    files, split, unified = lxd_image_files(root / alias, alias)
    lxd_cleanup["images"] += [split, unified]
    url = {kind: f"{base}/{alias}/{path.name}" for kind, path in files.items()}
    node = lab_node(nodes, backend)

    # A unified tarball with its sha256: known without a download (its sha256 is the fingerprint).
    args = {"name": f"{alias}-u", "source": "url", "url": url["unified"], "checksum": sha256(files["unified"])}
    first, second = converges(args, node, lxd_quiet(backend, unified, alias), f"{backend} url unified")
    assert first["image"]["id"] == unified and second["events"] == []
    assert any(event["step"].startswith(f"download {url['unified']} (") for event in first["events"])

    # Split, with both checksums: the image carries them as properties, so the second run downloads nothing.
    args = {"name": f"{alias}-s", "source": "url", "url": url["rootfs"], "metadata_url": url["meta"],
            "checksum": sha256(files["rootfs"]), "metadata_checksum": sha256(files["meta"])}
    first, second = converges(args, node, lxd_quiet(backend, split, alias), f"{backend} url split")
    assert first["image"]["id"] == split and second["events"] == []

    # Without a checksum: downloaded on every run to learn the fingerprint, never imported twice.
    unverified = image({"name": f"{alias}-s", "source": "url", "url": url["rootfs"], "metadata_url": url["meta"]},
                       node)
    assert unverified["changed"] is False and any(e["step"].startswith("download") for e in unverified["events"])

    # A wrong checksum: an error, no image, nothing left in the node's staging directory.
    before = daemon_images(backend)
    for bad in (dict(args, name=f"{alias}-bad", checksum=wrong(args["checksum"])),
                {"name": f"{alias}-bad", "source": "url", "url": url["unified"],
                 "checksum": wrong(sha256(files["unified"]))}):
        failed = image(bad, node)
        assert failed["failed"] is True and "checksum mismatch" in failed["msg"], failed
    assert daemon_images(backend) == before and staging_left() == []


def test_lxd_image_in_use_and_delete_by_fingerprint(nodes, backend, lxd_cleanup, tmp_path):
    alias = unique("t-img-use")
    files, fingerprint, _ = lxd_image_files(tmp_path, alias)
    lxd_cleanup["images"].append(fingerprint)
    node = lab_node(nodes, backend)
    assert image({"name": alias, "source": "upload", "path": str(files["rootfs"]),
                  "metadata_path": str(files["meta"])}, node)["changed"] is True
    instance = unique("t-img-user")
    lxd_cleanup["instances"].append(instance)
    cli(backend, "init", alias, instance)
    info = run_module("virt_image_info", {"node": node, "name": alias})["images"][0]
    assert info["used_by"] == [instance] and info["id"] == fingerprint

    for check in (True, False):
        refused = image({"name": alias, "state": "absent"}, node, check=check)
        assert refused["failed"] is True and instance in refused["msg"] and "force" in refused["msg"]
    assert fingerprint in daemon_images(backend)
    by_fingerprint = {"name": fingerprint, "state": "absent", "force": True}
    assert image(by_fingerprint, node, check=True)["changed"] is True and fingerprint in daemon_images(backend)
    removed = image(by_fingerprint, lab_node(nodes, backend, "ssh_only"))
    assert removed["changed"] is True and fingerprint not in daemon_images(backend)
    assert image(by_fingerprint, node)["changed"] is False


def test_lxd_info_parity(nodes, backend):
    over_api = run_module("virt_image_info", {"node": lab_node(nodes, backend, "api_only"), "name": "ocv-busybox"})
    over_ssh = run_module("virt_image_info", {"node": lab_node(nodes, backend, "ssh_only"), "name": "ocv-busybox"})
    assert over_api["images"] == over_ssh["images"] and len(over_api["images"]) == 1
    entry = over_api["images"][0]
    assert entry["checksum"] == f"sha256:{entry['id']}" and entry["architecture"] == "x86_64"


# -- Proxmox (the simulator) -------------------------------------------------------------------------------------------
def pve_node(nodes, rule="auto"):
    return node_with(nodes["proxmox"], execution_rule=rule)


def pve_api(nodes, method, path, data=None):
    settings = nodes["proxmox"]["api"]
    context = ssl.create_default_context(cafile=settings["ca_file"])
    body = urllib.parse.urlencode(data).encode() if data else None
    request = urllib.request.Request(settings["url"] + "/api2/json" + path, data=body, method=method, headers={
        "Authorization": f"PVEAPIToken={settings['token_id']}={settings['token_secret']}"})
    with urllib.request.urlopen(request, context=context, timeout=30) as answer:
        return json.load(answer)["data"]


def pve_files(directory, filename):
    """Every file of the storage directory that belongs to `filename`: the volume, partial and temporary files."""
    return sorted(path.name for path in Path(directory).iterdir() if filename in path.name)


def pve_quiet(filename, directory=PVE_CACHE):
    """`quiet` for converges(): writes in the simulator's request log about `filename`, and file changes."""
    def quiet(run):
        offset = PVE_LOG.stat().st_size
        before = {name: os.stat(Path(directory) / name).st_mtime_ns for name in pve_files(directory, filename)}
        run()
        with open(PVE_LOG, "rb") as log:
            log.seek(offset)
            entries = [json.loads(line) for line in log.read().splitlines() if line.strip()]
        writes = [entry for entry in entries if entry["method"] != "GET" and filename in json.dumps(entry)]
        after = {name: os.stat(Path(directory) / name).st_mtime_ns for name in pve_files(directory, filename)}
        return writes + ([{"files": (before, after)}] if before != after else [])
    return quiet


@pytest.fixture
def pve_volumes(nodes):
    made = []
    yield made
    for directory, filename in made:
        for leftover in pve_files(directory, filename):
            (Path(directory) / leftover).unlink()


@pytest.mark.parametrize("rule", ["api_only", "ssh_only"])
def test_proxmox_download_url_with_checksum(nodes, served, pve_volumes, rule):
    root, base = served
    filename = f"{unique('t-tmpl')}_1.0_amd64.tar.gz"
    pve_volumes.append((PVE_CACHE, filename))
    files, _, _ = lxd_image_files(root / "pve", filename)
    (root / filename).write_bytes(files["rootfs"].read_bytes())
    node = pve_node(nodes, rule)
    args = {"name": filename, "source": "url", "url": f"{base}/{filename}", "checksum": sha256(root / filename)}
    first, second = converges(args, node, pve_quiet(filename), f"proxmox download-url ({rule})")
    assert first["image"]["id"] == f"local:vztmpl/{filename}" and first["image"]["type"] == "container"
    assert first["image"]["checksum"] == args["checksum"] and first["image"]["architecture"] == "amd64"
    assert pve_files(PVE_CACHE, filename) == [filename]
    assert any("checksum verified" in event["step"] for event in first["events"]), first["events"]
    if rule == "api_only":
        assert "compared by name only" in json.dumps(second.get("warnings"))

    gone = image({"name": f"local:vztmpl/{filename}", "state": "absent"}, node)
    assert gone["changed"] is True and pve_files(PVE_CACHE, filename) == []
    failed = image(dict(args, checksum=wrong(args["checksum"])), node)
    assert failed["failed"] is True and "checksum mismatch" in failed["msg"], failed
    assert pve_files(PVE_CACHE, filename) == []


@pytest.mark.parametrize("rule", ["api_only", "ssh_only"])
def test_proxmox_upload(nodes, pve_volumes, tmp_path, rule):
    filename = f"{unique('t-tmpl-up')}_1.0_amd64.tar.gz"
    pve_volumes.append((PVE_CACHE, filename))
    files, _, _ = lxd_image_files(tmp_path, filename)
    path = tmp_path / filename
    path.write_bytes(files["rootfs"].read_bytes())
    node = pve_node(nodes, rule)
    args = {"name": filename, "source": "upload", "path": str(path)}
    first, second = converges(args, node, pve_quiet(filename), f"proxmox upload ({rule})")
    assert (PVE_CACHE / filename).read_bytes() == path.read_bytes()
    assert first["image"]["checksum"] == sha256(path)
    if rule == "api_only":
        assert "compared by size only" in json.dumps(second.get("warnings"))

    # Other content under the same name replaces the volume (compared by checksum over SSH, by size without).
    path.write_bytes(path.read_bytes() + b"more")
    replaced = image(args, node)
    assert replaced["changed"] is True and replaced["actions"][0].startswith(f"replace local:vztmpl/{filename}")
    assert (PVE_CACHE / filename).read_bytes() == path.read_bytes()

    image({"name": filename, "state": "absent"}, node)
    failed = image(dict(args, checksum=wrong(sha256(path))), node)
    assert failed["failed"] is True and "checksum mismatch" in failed["msg"]
    assert pve_files(PVE_CACHE, filename) == []


def test_proxmox_copy_a_file_on_the_node(nodes, pve_volumes, tmp_path):
    filename = f"{unique('t-iso')}.iso"
    pve_volumes.append((PVE_ISO, filename))
    path = tmp_path / filename
    path.write_bytes(secrets.token_bytes(4096))
    node = pve_node(nodes)
    args = {"name": filename, "source": "file", "path": str(path), "checksum": sha256(path)}
    first, _ = converges(args, node, pve_quiet(filename, PVE_ISO), "proxmox file")
    assert first["image"]["id"] == f"local:iso/{filename}" and first["image"]["type"] == "vm"
    image({"name": filename, "state": "absent"}, node)
    failed = image(dict(args, checksum=wrong(args["checksum"])), node)
    assert failed["failed"] is True and pve_files(PVE_ISO, filename) == []
    under_api_only = image(args, pve_node(nodes, "api_only"))
    assert under_api_only["failed"] is True and "needs SSH" in under_api_only["msg"]


def test_proxmox_iso_in_use_is_kept_unless_force(nodes, pve_volumes, tmp_path):
    filename = f"{unique('t-iso-used')}.iso"
    pve_volumes.append((PVE_ISO, filename))
    path = tmp_path / filename
    path.write_bytes(secrets.token_bytes(1024))
    node = pve_node(nodes)
    assert image({"name": filename, "source": "upload", "path": str(path)}, node)["changed"] is True
    vm_name = unique("t-iso-vm")
    vmid = int(pve_api(nodes, "GET", "/cluster/nextid"))
    pve_api(nodes, "POST", "/nodes/pve/qemu",
            {"vmid": vmid, "name": vm_name, "memory": 256, "ide2": f"local:iso/{filename},media=cdrom"})
    try:
        deadline = time.monotonic() + 10
        while not any(int(guest["vmid"]) == vmid for guest in pve_api(nodes, "GET", "/nodes/pve/qemu")):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        info = run_module("virt_image_info", {"node": node, "name": f"local:iso/{filename}"})["images"]
        assert info[0]["used_by"] == [vm_name]
        refused = image({"name": filename, "state": "absent"}, node)
        assert refused["failed"] is True and vm_name in refused["msg"] and pve_files(PVE_ISO, filename) == [filename]
        removed = image({"name": filename, "state": "absent", "force": True}, node)
        assert removed["changed"] is True and pve_files(PVE_ISO, filename) == []
    finally:
        pve_api(nodes, "DELETE", f"/nodes/pve/qemu/{vmid}")


def test_proxmox_image_info(nodes):
    over_api = run_module("virt_image_info", {"node": pve_node(nodes, "api_only")})
    over_ssh = run_module("virt_image_info", {"node": pve_node(nodes, "ssh_only")})
    assert over_api["transport"] == "api" and over_ssh["transport"] == "ssh", (over_api.get("msg"), over_ssh.get("msg"))
    assert "images" in over_api and "images" in over_ssh, (over_api.get("msg"), over_ssh.get("msg"))
    assert over_api["images"] == over_ssh["images"]
    names = {entry["name"]: entry for entry in over_api["images"]}
    template = names["local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"]
    assert template["type"] == "container" and template["aliases"] == ["debian-12-standard_12.7-1_amd64.tar.zst"]
    assert names["local:iso/debian-12.8.0-amd64-netinst.iso"]["type"] == "vm"
    one = run_module("virt_image_info", {"node": pve_node(nodes), "name": "debian-12.8.0-amd64-netinst.iso"})
    assert [entry["id"] for entry in one["images"]] == ["local:iso/debian-12.8.0-amd64-netinst.iso"]
