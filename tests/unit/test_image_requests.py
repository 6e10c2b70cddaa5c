"""virt_image's validation and its plan / check-mode flow, against a fake backend (no daemon needed)."""

import email.parser
import email.policy
import io
import json
import tarfile

import pytest

from ansible_collections.oneclickvirt.virt.plugins.module_utils.errors import Conflict, InvalidSpec, Unsupported
from ansible_collections.oneclickvirt.virt.plugins.module_utils.image_transfer import (
    Checksum, file_digest, image_id_from_manifest, docker_tar_image_id, json_lines, multipart)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.images import (
    ImageSource, build_image_request, check_url, docker_reference, ensure_image, lookup_name, lxd_alias,
    proxmox_volume, split_reference)
from ansible_collections.oneclickvirt.virt.plugins.module_utils.models import Image

SHA = "a" * 64


def params(**values):
    base = {"name": None, "state": "present", "source": None, "path": None, "metadata_path": None, "url": None,
            "metadata_url": None, "checksum": None, "metadata_checksum": None, "aliases": [], "storage": None,
            "content": None, "force": False, "timeout": 600}
    base.update(values)
    return base


# -- names ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("given, normalised", [
    ("busybox", "busybox:latest"),
    ("busybox:1.36", "busybox:1.36"),
    ("127.0.0.1:5000/team/app", "127.0.0.1:5000/team/app:latest"),
    ("registry.example:5000/app:v1.2-rc", "registry.example:5000/app:v1.2-rc"),
    ("docker.io/library/busybox:1", "busybox:1"),
    ("docker.io/team/app", "team/app:latest"),
    (f"app@sha256:{SHA}", f"app@sha256:{SHA}"),
    ("a__b/c-d.e:tag_1", "a__b/c-d.e:tag_1"),
])
def test_docker_references_are_normalised(given, normalised):
    assert docker_reference(given) == normalised


@pytest.mark.parametrize("bad", ["", "UPPER/case", "app:", "app:-x", "-app", "app@sha256:123", "app name",
                                 "a//b", "app:" + "x" * 200, "http://registry/app"])
def test_bad_docker_references_name_the_option(bad):
    with pytest.raises(InvalidSpec, match=r"^name:"):
        docker_reference(bad)


def test_docker_image_ids_only_where_allowed():
    assert docker_reference(SHA, allow_id=True) == f"sha256:{SHA}"
    assert docker_reference(f"sha256:{SHA}", allow_id=True) == f"sha256:{SHA}"
    with pytest.raises(InvalidSpec):
        docker_reference(f"sha256:{SHA}")
    with pytest.raises(InvalidSpec, match="digest"):
        docker_reference(f"app@sha256:{SHA}", "aliases", allow_digest=False)


@pytest.mark.parametrize("reference, parts", [
    ("app:latest", ("app", "latest", None)),
    ("127.0.0.1:5000/app:v1", ("127.0.0.1:5000/app", "v1", None)),
    ("127.0.0.1:5000/app", ("127.0.0.1:5000/app", None, None)),
    (f"127.0.0.1:5000/app@sha256:{SHA}", ("127.0.0.1:5000/app", None, f"sha256:{SHA}")),
])
def test_split_reference(reference, parts):
    assert split_reference(reference) == parts


@pytest.mark.parametrize("alias", ["debian-12", "a", "my.image:v1", "x+y@z", "A" * 255])
def test_lxd_aliases(alias):
    assert lxd_alias(alias) == alias


@pytest.mark.parametrize("bad", ["", "with space", "a/b", "-lead", SHA, "A" * 256, "tab\t"])
def test_bad_lxd_aliases(bad):
    with pytest.raises(InvalidSpec, match=r"^aliases:"):
        lxd_alias(bad, "aliases")


@pytest.mark.parametrize("name, storage, content, expected", [
    ("debian.tar.zst", None, None, ("local", "vztmpl", "debian.tar.zst")),
    ("x.iso", "isos", None, ("isos", "iso", "x.iso")),
    ("local:iso/x.iso", None, None, ("local", "iso", "x.iso")),
    ("disk.qcow2", None, "import", ("local", "import", "disk.qcow2")),
    ("local:vztmpl/t_1.0_amd64.tar.gz", "local", "vztmpl", ("local", "vztmpl", "t_1.0_amd64.tar.gz")),
])
def test_proxmox_volumes(name, storage, content, expected):
    assert proxmox_volume(name, storage, content) == expected


@pytest.mark.parametrize("name, storage, content, message", [
    ("file.bin", None, None, "^name: cannot tell"),
    ("x.iso", None, "vztmpl", "^name: a vztmpl volume"),
    ("local:iso/x.iso", "other", None, "^storage:"),
    ("local:iso/x.iso", None, "vztmpl", "^content:"),
    ("local:x.iso", None, None, "^name: .* is not a volume ID"),
    ("../x.iso", None, None, "^name:"),
    ("x.iso", "Bad Storage", None, "^storage:"),
])
def test_bad_proxmox_volumes(name, storage, content, message):
    with pytest.raises(InvalidSpec, match=message):
        proxmox_volume(name, storage, content)


# -- checksums and URLs -------------------------------------------------------------------------------------------
def test_checksums():
    assert str(Checksum.parse(f"sha256:{SHA.upper()}")) == f"sha256:{SHA}"
    assert Checksum.parse("sha512:" + "b" * 128).algorithm == "sha512"
    assert Checksum.parse(None) is None
    assert Checksum.parse(f"sha256:{SHA}") == Checksum("sha256", SHA)


@pytest.mark.parametrize("bad", [SHA, f"sha256:{SHA[:-1]}", f"md5:{SHA[:32]}", "sha512:" + "b" * 64,
                                 f"sha256:{'g' * 64}", f"SHA256:{SHA}", f"sha256: {SHA}"])
def test_bad_checksums_name_the_option(bad):
    with pytest.raises(InvalidSpec, match=r"^metadata_checksum:"):
        Checksum.parse(bad, "metadata_checksum")


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/x.tar", "https://images.example/a/b.tar.xz?x=1%20y"])
def test_urls(url):
    assert check_url(url) == url


@pytest.mark.parametrize("bad, message", [
    ("ftp://host/x", "not an http"), ("file:///etc/passwd", "not an http"), ("http:///x", "not an http"),
    ("http://host/a b", "spaces"), ('http://host/a"b', "spaces"), ("http://host/a\\b", "spaces"),
    ("http://host/a\nb", "spaces"), ("http://user:secret@host/x", "credentials"), ("", "give an"),
])
def test_bad_urls(bad, message):
    with pytest.raises(InvalidSpec, match=f"^metadata_url: .*{message}|^metadata_url: give"):
        check_url(bad, "metadata_url")


# -- requests -------------------------------------------------------------------------------------------------------
def test_request_docker_pull():
    request = build_image_request(params(name="127.0.0.1:5000/app", source="pull", aliases=["app", "app:latest"],
                                         checksum=f"sha256:{SHA}"), "docker")
    assert request.name == "127.0.0.1:5000/app:latest"
    assert request.aliases == ["app:latest"]
    assert str(request.checksum) == f"sha256:{SHA}"


@pytest.mark.parametrize("values, backend, message", [
    (dict(name="app", source="pull", checksum="sha512:" + "b" * 128), "docker", "^checksum: a registry"),
    (dict(name=f"app@sha256:{SHA}", source="pull", checksum="sha256:" + "b" * 64), "docker", "^checksum: differs"),
    (dict(name="app", source="url"), "docker", "^url: required"),
    (dict(name="app", source="upload"), "docker", "^path: required"),
    (dict(name="app", source="upload", path="/no/such/file.tar"), "docker", "^path: .* not a readable file"),
    (dict(name="app", source="file", path="relative.tar"), "docker", "^path: .* not an absolute path"),
    (dict(name="app", source="pull", url="http://x/y"), "docker", "^url: only used with source url"),
    (dict(name="app", source="url", url="http://x/y", path="/x"), "docker", "^path: only used with source"),
    (dict(name="app", source="url", url="http://x/y", metadata_url="http://x/m"), "docker", "^metadata_url: only LXD"),
    (dict(name="img", source="url", url="http://x/y", metadata_checksum=f"sha256:{SHA}"), "lxd",
     "^metadata_checksum: only with metadata_url"),
    (dict(name=SHA, source="url", url="http://x/y"), "incus", "^name: .* not an image alias"),
    (dict(name="img", source="url", url="http://x/y", storage="local"), "lxd", "^storage: only for Proxmox"),
    (dict(name="x.tar.zst", source="url", url="http://x/y", aliases=["other"]), "proxmox", "^aliases: Proxmox"),
    (dict(name="img", source="url", url="http://x/y", timeout=-1), "lxd", "^timeout:"),
    (dict(name="img", state="gone"), "lxd", "^state:"),
    (dict(name="img", source="torrent"), "lxd", "^source:"),
])
def test_bad_requests_fail_before_anything(values, backend, message):
    with pytest.raises(InvalidSpec, match=message):
        build_image_request(params(**values), backend)


def test_absent_ignores_the_source_options_and_takes_ids():
    request = build_image_request(params(name=SHA.upper(), state="absent", source="url", url="not a url"), "lxd")
    assert request.name == SHA and request.source is None
    request = build_image_request(params(name=SHA, state="absent"), "docker")
    assert request.name == f"sha256:{SHA}"


def test_proxmox_request_names_the_volume():
    request = build_image_request(params(name="t_1.0_amd64.tar.gz", source="url", url="http://127.0.0.1/t",
                                         checksum=f"sha256:{SHA}"), "proxmox")
    assert (request.name, request.storage, request.content, request.filename) == (
        "local:vztmpl/t_1.0_amd64.tar.gz", "local", "vztmpl", "t_1.0_amd64.tar.gz")


def test_lookup_names():
    assert lookup_name("busybox", {"type": "docker"}) == "busybox:latest"
    assert lookup_name("x.iso", {"type": "proxmox"}) == "local:iso/x.iso"
    assert lookup_name(SHA.upper(), {"type": "incus"}) == SHA
    assert lookup_name("alias", {"type": "lxd"}) == "alias"


# -- files --------------------------------------------------------------------------------------------------------
def _tar_with(tmp_path, manifest):
    path = tmp_path / "image.tar"
    with tarfile.open(path, "w") as tar:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_docker_tar_image_ids(tmp_path):
    path = _tar_with(tmp_path, [{"Config": f"{SHA}.json", "RepoTags": ["app:1"], "Layers": []}])
    assert docker_tar_image_id(str(path)) == (f"sha256:{SHA}", ["app:1"])
    # Docker 25+ writes the OCI layout.
    assert image_id_from_manifest(json.dumps([{"Config": f"blobs/sha256/{SHA}"}]), "x")[0] == f"sha256:{SHA}"
    with pytest.raises(InvalidSpec, match="2 images"):
        image_id_from_manifest(json.dumps([{"Config": f"{SHA}.json"}] * 2), "x")
    with pytest.raises(InvalidSpec, match="not a `docker save` tar"):
        docker_tar_image_id(str(tmp_path / "missing.tar"))


def test_file_digest_concatenates(tmp_path):
    (tmp_path / "a").write_bytes(b"meta")
    (tmp_path / "b").write_bytes(b"rootfs")
    (tmp_path / "ab").write_bytes(b"metarootfs")
    assert file_digest(str(tmp_path / "a"), "sha256", [str(tmp_path / "b")]) == file_digest(str(tmp_path / "ab"))


def test_json_lines_across_chunks():
    chunks = [b'{"status": "Pull', b'ing"}\n{"id": "x"}', b"\n\n", b'{"error": "boom"}']
    assert list(json_lines(chunks)) == [{"status": "Pulling"}, {"id": "x"}, {"error": "boom"}]


def test_multipart_is_what_a_form_parser_reads(tmp_path):
    upload = tmp_path / "t.tar.gz"
    upload.write_bytes(b"\x1f\x8b binary \r\n--not-a-boundary")
    content_type, parts = multipart([("content", "vztmpl"), ("checksum", SHA)], [("filename", "t.tar.gz", str(upload))])
    body = b"".join(part if isinstance(part, bytes) else open(part, "rb").read() for part in parts)
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    fields = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
    assert fields["content"].get_payload(decode=True) == b"vztmpl"
    assert fields["filename"].get_filename() == "t.tar.gz"
    assert fields["filename"].get_payload(decode=True) == upload.read_bytes()


def test_multipart_with_two_files_keeps_their_order(tmp_path):
    # LXD's split image upload: the metadata tarball first, then the rootfs, as two file parts and no fields.
    meta, rootfs = tmp_path / "meta.tar.gz", tmp_path / "rootfs.tar.gz"
    meta.write_bytes(b"metadata bytes\r\n")
    rootfs.write_bytes(b"rootfs \x00 bytes")
    content_type, parts = multipart([], [("metadata", "metadata", str(meta)), ("rootfs", "rootfs", str(rootfs))])
    body = b"".join(part if isinstance(part, bytes) else open(part, "rb").read() for part in parts)
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    received = [(part.get_param("name", header="content-disposition"), part.get_payload(decode=True))
                for part in message.iter_parts()]
    assert received == [("metadata", meta.read_bytes()), ("rootfs", rootfs.read_bytes())]


# -- the flow, against a fake backend -------------------------------------------------------------------------------
class FakeBackend:
    backend = "lxd"
    image_sources = ("url", "upload", "file")
    timeout = 600

    def __init__(self, images=(), identity="f" * 64):
        self.node = type("Node", (), {"name": "fake"})()
        self.images = {image.id: image for image in images}
        self.identity = identity
        self.writes = []
        self.warnings = []

    def warn(self, message):
        self.warnings.append(message)

    def find_image(self, name):
        for image in self.images.values():
            if name == image.id or name in image.aliases:
                return Image(**dict(image.to_dict(), name=name))
        return None

    def image_source(self, request, run):
        existing = self.find_image(self.identity)

        def fetch(run):
            self.writes.append("import")
            self.images.setdefault(self.identity, Image(name=self.identity, id=self.identity, node="fake",
                                                        backend="lxd"))
            return self.identity

        return ImageSource(action="import", identity=self.identity, existing=existing, fetch=fetch,
                           predicted=Image(name=request.name, id=self.identity, node="fake", backend="lxd"))

    def add_image_alias(self, image, alias):
        self.writes.append(f"alias {alias}")
        for other in self.images.values():
            if alias in other.aliases:
                other.aliases.remove(alias)
        self.images[image.id].aliases.append(alias)

    def delete_image(self, image, force=False):
        self.writes.append("delete")
        del self.images[image.id]


def lxd_request(**values):
    base = dict(name="web", source="upload", path=__file__)
    base.update(values)
    return build_image_request(params(**base), "lxd")


def test_check_mode_predicts_exactly_and_writes_nothing():
    backend = FakeBackend()
    predicted = ensure_image(backend, lxd_request(aliases=["web-2"]), check_mode=True)
    assert backend.writes == []
    assert predicted["changed"] is True
    assert predicted["actions"] == ["import", "alias web", "alias web-2"]
    assert predicted["image"]["aliases"] == ["web", "web-2"]
    assert predicted["diff"]["before"] == {}

    done = ensure_image(backend, lxd_request(aliases=["web-2"]), check_mode=False)
    assert done["actions"] == predicted["actions"] and backend.writes == ["import", "alias web", "alias web-2"]
    assert done["image"]["aliases"] == predicted["image"]["aliases"]
    assert [event["step"] for event in done["events"]] == done["actions"]

    again = ensure_image(backend, lxd_request(aliases=["web-2"]), check_mode=False)
    assert again["changed"] is False and again["actions"] == [] and len(backend.writes) == 3


def test_same_identity_under_another_name_only_gets_the_alias():
    backend = FakeBackend([Image(name="old", id="f" * 64, node="fake", backend="lxd", aliases=["old"])])
    result = ensure_image(backend, lxd_request(), check_mode=False)
    assert backend.writes == ["alias web"]
    assert sorted(result["image"]["aliases"]) == ["old", "web"]


def test_force_fetches_again():
    backend = FakeBackend([Image(name="web", id="f" * 64, node="fake", backend="lxd", aliases=["web"])])
    result = ensure_image(backend, lxd_request(force=True), check_mode=False)
    assert result["changed"] is True and backend.writes == ["import"]


def test_an_image_in_use_is_kept_unless_force():
    used = Image(name="web", id="f" * 64, node="fake", backend="lxd", aliases=["web"], used_by=["c1", "c2"])
    backend = FakeBackend([used])
    request = build_image_request(params(name="web", state="absent"), "lxd")
    with pytest.raises(Conflict, match="used by c1, c2.*force: true"):
        ensure_image(backend, request, check_mode=False)
    assert backend.writes == []
    forced = build_image_request(params(name="web", state="absent", force=True), "lxd")
    assert ensure_image(backend, forced, check_mode=True)["changed"] is True and backend.writes == []
    result = ensure_image(backend, forced, check_mode=False)
    assert result["changed"] is True and result["image"] is None and backend.writes == ["delete"]
    assert ensure_image(backend, forced, check_mode=False)["changed"] is False


def test_present_without_source_needs_the_image():
    with pytest.raises(InvalidSpec, match="^source: image web is not on node fake"):
        ensure_image(FakeBackend(), build_image_request(params(name="web"), "lxd"), check_mode=True)


def test_unsupported_source_is_refused_before_reading():
    request = build_image_request(params(name="app", source="pull"), "lxd")
    with pytest.raises(Unsupported, match="^source: pull is not supported on lxd node fake.*Docker's"):
        ensure_image(FakeBackend(), request, check_mode=True)
