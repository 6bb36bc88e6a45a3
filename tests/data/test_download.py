"""download_url / download_and_extract against a local HTTP server on 127.0.0.1 that supports
Range requests and can misbehave on demand (drop the connection, ignore Range, serve bad bytes)."""

import hashlib
import http.server
import io
import os
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

import qact_cli.data.download as D
from qact_cli.data.download import download_and_extract, download_url
from qact_cli.data.sources import SOURCES, Source
from qact_cli.errors import InputError, UsageError


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        path = self.path.split("?")[0]
        rng = self.headers.get("Range")
        srv.log.append((path, rng))
        data = srv.files.get(path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng and not srv.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = srv.drop_after.pop(path, None)
        if cut is not None:  # send part of the body, then hang up
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.log, srv.drop_after, srv.ignore_range = {}, [], {}, False
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _no_retry_pause(monkeypatch):
    monkeypatch.setattr(D, "_RETRY_DELAY_S", 0.0)
    monkeypatch.delenv("QACT_MIRROR", raising=False)


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


BLOB = os.urandom(300_000)


def test_download_url_verifies_and_reports_progress(server, tmp_path):
    server.files["/blob.bin"] = BLOB
    calls = []
    out = download_url(server.url + "/blob.bin?download=1", tmp_path / "d" / "blob.bin", md5=md5(BLOB),
                       progress=lambda done, total: calls.append((done, total)))
    assert out == tmp_path / "d" / "blob.bin" and out.read_bytes() == BLOB
    assert not (tmp_path / "d" / "blob.bin.part").exists()
    assert calls[-1] == (len(BLOB), len(BLOB))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    # Already there with the right md5: no request at all.
    n = len(server.log)
    download_url(server.url + "/blob.bin", out, md5=md5(BLOB))
    assert len(server.log) == n


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    server.files["/blob.bin"] = BLOB
    server.drop_after["/blob.bin"] = 100_000
    calls = []
    out = download_url(server.url + "/blob.bin", tmp_path / "blob.bin", md5=md5(BLOB),
                       progress=lambda d, t: calls.append(d))
    assert out.read_bytes() == BLOB
    assert server.log == [("/blob.bin", None), ("/blob.bin", "bytes=100000-")]
    assert calls[-1] == len(BLOB) and 100_000 in calls


def test_partial_kept_when_retries_run_out_then_resumed_next_run(server, tmp_path):
    server.files["/blob.bin"] = BLOB
    server.drop_after["/blob.bin"] = 50_000
    dest = tmp_path / "blob.bin"
    with pytest.raises(InputError, match="run again to resume"):
        download_url(server.url + "/blob.bin", dest, md5=md5(BLOB), retries=0)
    part = tmp_path / "blob.bin.part"
    assert part.stat().st_size == 50_000 and not dest.exists()
    download_url(server.url + "/blob.bin", dest, md5=md5(BLOB), retries=0)
    assert dest.read_bytes() == BLOB and not part.exists()
    assert server.log[-1] == ("/blob.bin", "bytes=50000-")


def test_server_ignoring_range_restarts_instead_of_appending(server, tmp_path):
    server.files["/blob.bin"] = BLOB
    server.ignore_range = True
    (tmp_path / "blob.bin.part").write_bytes(BLOB[:70_000])
    out = download_url(server.url + "/blob.bin", tmp_path / "blob.bin", md5=md5(BLOB))
    assert out.read_bytes() == BLOB
    assert server.log == [("/blob.bin", "bytes=70000-")]


def test_complete_part_is_finished_through_416(server, tmp_path):
    server.files["/blob.bin"] = BLOB
    (tmp_path / "blob.bin.part").write_bytes(BLOB)
    out = download_url(server.url + "/blob.bin", tmp_path / "blob.bin", md5=md5(BLOB))
    assert out.read_bytes() == BLOB and server.log == [("/blob.bin", f"bytes={len(BLOB)}-")]


def test_checksum_mismatch_is_refused_and_nothing_kept(server, tmp_path):
    server.files["/blob.bin"] = BLOB
    dest = tmp_path / "blob.bin"
    with pytest.raises(InputError, match=r"checksum mismatch for .*blob\.bin → .*: expected 0{32} got "
                                         + md5(BLOB) + "; run again to re-download"):
        download_url(server.url + "/blob.bin", dest, md5="0" * 32)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_existing_file_is_fetched_again(server, tmp_path):
    server.files["/blob.bin"] = BLOB
    dest = tmp_path / "blob.bin"
    dest.write_bytes(b"garbage")
    assert download_url(server.url + "/blob.bin", dest, md5=md5(BLOB)).read_bytes() == BLOB


def test_http_error_and_refused_connection(server, tmp_path):
    with pytest.raises(InputError, match="HTTP 404"):
        download_url(server.url + "/missing.bin", tmp_path / "x")
    with pytest.raises(InputError, match="failed after 2 tries"):
        download_url("http://127.0.0.1:1/x", tmp_path / "y", retries=1, timeout=5)


# ---------------------------------------------------------------------------------------------
# Archives


def make_tar(members: dict[str, bytes], compress: bool = True, extra=()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if compress else "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in extra:
            tf.addfile(info)
    return buf.getvalue()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


TOY = {"toy-data/a.npy": b"A" * 1000, "toy-data/sub/b.txt": b"hello", "other/ignored.txt": b"x"}


def toy_source(server, archive: bytes, filename="toy.tar.gz", files=None, urls=None, folder="toy-final") -> dict:
    server.files["/" + filename] = archive
    src = Source(
        name="toy", urls=tuple(urls or (server.url + "/" + filename + "?download=1",)), filename=filename,
        md5=md5(archive), archive_folder="toy-data", folder=folder,
        files={"a.npy": md5(b"A" * 1000), "sub/b.txt": md5(b"hello")} if files is None else files,
    )
    return {"toy": src}


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name != ".downloads") if root.exists() else []


@pytest.mark.parametrize("kind", ["tar.gz", "tar", "zip"])
def test_download_and_extract_and_idempotent(server, tmp_path, kind):
    archive = make_zip(TOY) if kind == "zip" else make_tar(TOY, compress=kind == "tar.gz")
    sources = toy_source(server, archive, filename=f"toy.{kind}")
    root = tmp_path / "data"
    out = download_and_extract("toy", root, sources=sources)
    assert out == root / "toy-final"
    assert (out / "a.npy").read_bytes() == b"A" * 1000 and (out / "sub" / "b.txt").read_bytes() == b"hello"
    assert leftovers(root) == ["toy-final"]  # no temporary folder, nothing from outside toy-data/
    # the archive is removed after success (the lock file stays: deleting it would race a waiter)
    assert [p.name for p in (root / ".downloads").iterdir()] == [f"toy.{kind}.lock"]
    n = len(server.log)
    assert download_and_extract("toy", root, sources=sources) == out
    assert len(server.log) == n  # already present: no network


def test_archive_put_by_hand_is_used_and_can_be_kept(server, tmp_path):
    archive = make_tar(TOY)
    sources = toy_source(server, archive)
    root = tmp_path / "data"
    (root / ".downloads").mkdir(parents=True)
    (root / ".downloads" / "toy.tar.gz").write_bytes(archive)
    download_and_extract("toy", root, sources=sources, keep_archive=True)
    assert server.log == [] and (root / ".downloads" / "toy.tar.gz").exists()


def test_mirror_fallback_and_qact_mirror(server, tmp_path, monkeypatch):
    archive = make_tar(TOY)
    dead = ["http://127.0.0.1:1/toy.tar.gz", server.url + "/nope/toy.tar.gz"]
    sources = toy_source(server, archive, urls=dead + [server.url + "/toy.tar.gz"])
    monkeypatch.setattr(D, "_RETRY_DELAY_S", 0.0)
    assert (download_and_extract("toy", tmp_path / "a", sources=sources) / "a.npy").exists()
    # QACT_MIRROR is tried first, under the archive's file name.
    server.files["/mirror/toy.tar.gz"] = archive
    monkeypatch.setenv("QACT_MIRROR", server.url + "/mirror/")
    server.log.clear()
    download_and_extract("toy", tmp_path / "b", sources=sources)
    assert server.log == [("/mirror/toy.tar.gz", None)]


def test_all_urls_failing_names_them_all(server, tmp_path):
    sources = toy_source(server, make_tar(TOY), urls=[server.url + "/nope1.tar", server.url + "/nope2.tar"])
    with pytest.raises(InputError, match=r"nope1.*nope2.*by hand"):
        download_and_extract("toy", tmp_path, sources=sources)


def _refused(server, tmp_path, archive, match):
    root = tmp_path / "data"
    with pytest.raises(InputError, match=match) as err:
        download_and_extract("toy", root, sources=toy_source(server, archive))
    assert leftovers(root) == []  # no final folder, no temporary folder
    return str(err.value)


def test_path_traversal_refused(server, tmp_path):
    archive = make_tar({"toy-data/a.npy": b"A" * 1000, "toy-data/../../evil.txt": b"pwned"})
    _refused(server, tmp_path, archive, "outside the target folder")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "data" / "evil.txt").exists()
    _refused(server, tmp_path, make_tar({"/tmp/abs-evil.txt": b"x"}), "outside the target folder")
    _refused(server, tmp_path, make_zip({"toy-data/a.npy": b"A", "../zip-evil.txt": b"x"}), "outside the target folder")
    assert not (tmp_path / "zip-evil.txt").exists()


def test_links_refused(server, tmp_path):
    link = tarfile.TarInfo("toy-data/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    _refused(server, tmp_path, make_tar({"toy-data/a.npy": b"A" * 1000}, extra=[link]), "link")


def test_extracted_file_checksum_and_missing_file(server, tmp_path):
    bad = dict(TOY, **{"toy-data/sub/b.txt": b"HELLO"})
    _refused(server, tmp_path, make_tar(bad), r"checksum mismatch for toy-data/sub/b\.txt")
    missing = {k: v for k, v in TOY.items() if not k.endswith("b.txt")}
    _refused(server, tmp_path, make_tar(missing), r"lacks toy-data/sub/b\.txt")
    _refused(server, tmp_path, make_tar({"wrong-top/a.npy": b"A"}), r"does not hold the folder toy-data/")


@pytest.mark.parametrize("compress", [True, False])
def test_damaged_archive(server, tmp_path, compress):
    big = dict(TOY, **{"toy-data/big.bin": os.urandom(50_000)})
    whole = make_tar(big, compress=compress)
    archive = whole[: len(whole) // 2]  # its md5 is what the source table says: damaged at the origin
    message = _refused(server, tmp_path, archive, "cannot extract|lacks")
    assert "\n" not in message  # one line, even when tarfile's reason has several


def test_extraction_is_atomic_when_interrupted(server, tmp_path, monkeypatch):
    sources = toy_source(server, make_tar(TOY))
    root = tmp_path / "data"
    real_md5sum = D.md5sum

    def dies_on_extracted_files(path, *a, **k):
        if ".extracting" in str(path):
            raise KeyboardInterrupt
        return real_md5sum(path, *a, **k)

    monkeypatch.setattr(D, "md5sum", dies_on_extracted_files)
    with pytest.raises(KeyboardInterrupt):
        download_and_extract("toy", root, sources=sources, keep_archive=True)
    assert leftovers(root) == []
    # A run killed harder leaves its temporary folder; the next run removes it and finishes.
    (root / ".toy-final.zzz.extracting" / "toy-data").mkdir(parents=True)
    monkeypatch.setattr(D, "md5sum", real_md5sum)
    n = len(server.log)
    assert download_and_extract("toy", root, sources=sources).is_dir()
    assert leftovers(root) == ["toy-final"] and len(server.log) == n  # the kept archive was reused


def test_unknown_and_manual_datasets(tmp_path):
    with pytest.raises(UsageError, match="no download is known"):
        download_and_extract("nosuch", tmp_path)
    with pytest.raises(InputError, match=r"ImageNet-C.*not downloaded automatically.*2235448.*noise\.tar"):
        download_and_extract("imagenetc", tmp_path)
    (tmp_path / "ImageNet-C").mkdir()
    assert download_and_extract("imagenetc", tmp_path) == tmp_path / "ImageNet-C"


def test_published_source_table():
    assert {"cifar10", "cifar100", "cifar10c", "cifar100c", "tinyimagenet", "tinyimagenetc", "mnistc",
            "imagenetc"} <= set(SOURCES)
    folders = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python", "cifar10c": "CIFAR-10-C",
               "cifar100c": "CIFAR-100-C", "tinyimagenet": "tiny-imagenet-200", "tinyimagenetc": "Tiny-ImageNet-C",
               "mnistc": "mnist_c", "imagenetc": "ImageNet-C"}
    for name, src in SOURCES.items():
        assert src.folder == folders[name]
        assert all(len(m) == 32 and int(m, 16) >= 0 for m in [src.md5 or "0" * 32, *src.files.values()])
        assert src.manual or (src.urls and src.md5 and src.filename)
    assert len(SOURCES["cifar10c"].files) == 20 and "labels.npy" in SOURCES["cifar100c"].files
    assert SOURCES["cifar10c"].md5 == "56bf5dcef84df0e2308c6dcbcbbd8499"
