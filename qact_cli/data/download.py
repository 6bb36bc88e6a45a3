"""Verified, resumable downloads and atomic extraction of the published datasets (docs/data.md).

`download_url` streams to `<dest>.part`, resumes a partial file with an HTTP Range request,
checks the md5 and only then gives the file its final name. `download_and_extract` does that for
an archive of `sources.SOURCES`, unpacks it into a hidden temporary folder of the data root
(refusing absolute paths, `..` and links), checks the md5 of each file it knows, and renames the
top folder to its final name last: a folder under its final name is always complete.
Only the standard library (urllib) touches the network.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, Mapping

from ..version import __version__
from ..errors import InputError, UsageError
from .sources import SOURCES, Source

Progress = Callable[[int, "int | None"], None]  # (bytes done, total bytes or None when unknown)

_CHUNK = 1 << 20
_RETRY_DELAY_S = 1.0  # first pause between tries; doubles each time, at most 30 s


class _Unreachable(InputError):
    """This URL could not deliver the file (HTTP error, network failure): another mirror may."""


class _Interrupted(Exception):
    """The connection failed or ended early; the `.part` file keeps what arrived."""


def md5sum(path: str | os.PathLike, chunk: int = _CHUNK) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total) from 'bytes 100-199/200' or 'bytes */200'; None where absent or '*'."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    return (int(m.group(1)) if m.group(1) else None), (int(m.group(2)) if m.group(2) != "*" else None)


def _fetch(url: str, part: Path, progress: Progress | None, timeout: float) -> bool:
    """One request: append to `part` (resuming with Range) or rewrite it. True when the whole
    body arrived (or its length is unknown); False when it must be restarted from scratch."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": f"qact/{__version__}", "Accept-Encoding": "identity"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            # Nothing left after `have`: the part may already be whole ('bytes */TOTAL').
            _, total = _content_range(e.headers.get("Content-Range"))
            if total == have:
                return True
            part.unlink()
            return False
        if e.code in (408, 429) or e.code >= 500:
            raise _Interrupted(f"HTTP {e.code} {e.reason}") from None
        raise _Unreachable(f"HTTP {e.code} {e.reason} for {url}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise _Interrupted(str(getattr(e, "reason", e))) from None
    with resp:
        start, total = _content_range(resp.headers.get("Content-Range"))
        length = resp.headers.get("Content-Length")
        if have and resp.status == 206 and start == have:
            mode = "ab"
            if total is None and length is not None:
                total = have + int(length)
        elif resp.status == 206:  # a range we did not ask for: its body cannot be placed
            part.unlink(missing_ok=True)
            return False
        else:
            # A fresh request, or a server that ignored Range and sent the whole file (200):
            # start over rather than append the beginning again.
            have, mode = 0, "wb"
            total = int(length) if length is not None else None
        if progress:
            progress(have, total)
        with open(part, mode) as f:
            while True:
                try:
                    block = resp.read(_CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise _Interrupted(f"connection lost after {have} bytes ({e})") from None
                if not block:
                    break
                f.write(block)
                have += len(block)
                if progress:
                    progress(have, total)
            f.flush()
            os.fsync(f.fileno())
    # urllib returns a short body silently when the server closes early: compare with the length.
    if total is not None and have < total:
        raise _Interrupted(f"connection closed after {have} of {total} bytes")
    return True


def download_url(url: str, dest: str | os.PathLike, md5: str | None = None, progress: Progress | None = None,
                 timeout: float = 60, retries: int = 3) -> Path:
    """Download `url` to `dest`, resuming `<dest>.part` from an earlier try, and check its md5.

    A `dest` that already exists is kept when its md5 matches (or none is given) and fetched
    again otherwise. A connection that fails or ends early is resumed up to `retries` times;
    after that an InputError says how far it got (the `.part` stays for the next run).
    A checksum mismatch deletes the `.part` and raises InputError; an existing `dest` with the wrong md5
    (e.g. fetched by hand) is renamed `<dest>.md5-mismatch`, and a failure to fetch it again says so.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    note = ""
    if dest.exists():
        got = None if md5 is None else md5sum(dest)
        if got == md5:
            return dest
        # a damaged or hand-fetched copy: kept aside (never deleted: it may be all the user has), then fetched again
        aside = dest.with_name(dest.name + ".md5-mismatch")
        os.replace(dest, aside)
        note = f"checksum mismatch: {dest} has md5 {got}, expected {md5} (kept as {aside}); "
    try:
        _fetch_retrying(url, part, progress, timeout, retries)
    except _Unreachable as e:
        raise _Unreachable(f"{note}{e}") from None
    if md5 is not None:
        got = md5sum(part)
        if got != md5:
            part.unlink()
            raise InputError(f"checksum mismatch for {url} → {dest}: expected {md5} got {got}; run again to re-download")
    os.replace(part, dest)
    return dest


def _fetch_retrying(url: str, part: Path, progress, timeout: float, retries: int) -> None:
    for attempt in range(retries + 1):
        try:
            if _fetch(url, part, progress, timeout):
                break
        except _Interrupted as e:
            if attempt == retries:
                have = part.stat().st_size if part.exists() else 0
                raise _Unreachable(f"download of {url} failed after {retries + 1} tries ({e}); {have} bytes "
                                   f"are kept in {part}: run again to resume") from None
            time.sleep(min(30.0, _RETRY_DELAY_S * 2 ** attempt))
    else:
        raise _Unreachable(f"download of {url} could not be resumed or restarted; delete {part} and run again")


# ---------------------------------------------------------------------------------------------
# Safe extraction


def _member_path(name: str, archive: Path) -> PurePosixPath:
    """The member's relative path; InputError for absolute paths, drive letters or `..`."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", name):
        raise InputError(f"refusing to extract {archive}: member {name!r} would land outside the target folder; "
                         "the archive is corrupt or malicious, delete it")
    return path


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:*") as tf:
        for member in tf:  # one pass, so a .tar.gz is decompressed once
            _member_path(member.name, archive)
            if not (member.isfile() or member.isdir()):
                raise InputError(f"refusing to extract {archive}: member {member.name!r} is a link or device, "
                                 "which a dataset archive should not contain; delete the archive")
            tf.extract(member, dest, filter="data")


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            _member_path(info.filename, archive)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise InputError(f"refusing to extract {archive}: member {info.filename!r} is a symbolic link; "
                                 "delete the archive")
            zf.extract(info, dest)


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Unpack a .zip, .tar, .tar.gz, .tgz, .tar.bz2 or .tar.xz into `dest`, refusing unsafe members."""
    archive, dest = Path(archive), Path(dest)
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, dest)
        else:
            _extract_tar(archive, dest)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
        why = " ".join(str(e).split())  # tarfile's reasons span several lines
        raise InputError(f"cannot extract {archive} ({why}); the archive is damaged, delete it and run again") from None


# ---------------------------------------------------------------------------------------------
# Published datasets


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive lock across processes (e.g. several torchrun ranks asking for the same data)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _urls(src: Source) -> list[str]:
    """QACT_MIRROR (a base URL holding the archives under their file names) first, then the sources."""
    mirror = os.environ.get("QACT_MIRROR", "").strip()
    return ([f"{mirror.rstrip('/')}/{src.filename}"] if mirror else []) + list(src.urls)


def _extract_verified(src: Source, archive: Path, root: Path, final: Path) -> None:
    for stale in root.glob(f".{src.folder}.*.extracting"):  # left by a run that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{src.folder}.", suffix=".extracting", dir=root))
    try:
        extract_archive(archive, tmp)
        top = tmp / src.archive_folder
        if not top.is_dir():
            found = ", ".join(sorted(p.name for p in tmp.iterdir())) or "nothing"
            raise InputError(f"{archive} does not hold the folder {src.archive_folder}/ (found: {found}); "
                             "delete it and run again")
        for rel, md5 in src.files.items():
            path = top / rel
            if not path.is_file():
                raise InputError(f"{archive} lacks {src.archive_folder}/{rel}; delete it and run again")
            got = md5sum(path)
            if got != md5:
                raise InputError(f"checksum mismatch for {src.archive_folder}/{rel} extracted from {archive}: "
                                 f"expected {md5} got {got}; delete the archive and run again")
        os.rename(top, final)  # the last step: the final name appears complete or not at all
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download_and_extract(name: str, root: str | os.PathLike, progress: Progress | None = None,
                         sources: Mapping[str, Source] | None = None, keep_archive: bool = False) -> Path:
    """Fetch the published dataset `name` into `root` and return its folder (`root/<folder>`).

    Nothing happens when the folder is already there. The archive is downloaded (resumably,
    md5-checked) to `root/.downloads/`, extracted and checked file by file in a hidden folder of
    `root`, then renamed into place; the archive is deleted afterwards unless `keep_archive`.
    An archive fetched by hand and put in `root/.downloads/` under its file name is used as is
    (after its md5 check). `sources` replaces the table of `sources.SOURCES` (tests, mirrors).
    """
    table = SOURCES if sources is None else sources
    if name not in table:
        raise UsageError(f"no download is known for dataset {name!r}; downloadable: {', '.join(sorted(table))}")
    src = table[name]
    root = Path(root).expanduser()
    final = root / src.folder
    if final.is_dir():
        return final
    if src.manual:
        raise InputError(f"{final} not found. " + src.manual.format(root=root))
    downloads = root / ".downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    with _locked(downloads / f"{src.filename}.lock"):
        if final.is_dir():  # another process finished it while we waited
            return final
        archive = downloads / src.filename
        failures = []
        for url in _urls(src):
            try:
                download_url(url, archive, md5=src.md5, progress=progress)
                break
            except _Unreachable as e:
                failures.append(str(e))
        else:
            raise InputError(f"could not download {name}: {' | '.join(failures)}. You can also fetch {src.filename} "
                             f"by hand (md5 {src.md5}) into {downloads}/ and run again")
        _extract_verified(src, archive, root, final)
        if not keep_archive:
            archive.unlink(missing_ok=True)
    return final
