"""Shared helpers: the file hash (plain and memoised) and the one-line form of an exception."""

from __future__ import annotations

import hashlib
import os

from qact_cli.errors import first_line
from qact_cli.utils import sha256_file


def test_sha256_plain_sees_every_rewrite_and_cached_is_memoised_by_path_size_and_mtime(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 1000)
    first = sha256_file(path, cached=True)
    assert first == sha256_file(path) == hashlib.sha256(b"a" * 1000).hexdigest()
    st = os.stat(path)
    path.write_bytes(b"b" * 1000)  # same size; restore the mtime: only the memo cannot tell
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert sha256_file(path, cached=True) == first
    assert sha256_file(path) == hashlib.sha256(b"b" * 1000).hexdigest()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert sha256_file(path, cached=True) == hashlib.sha256(b"b" * 1000).hexdigest()


def test_first_line_drops_backend_prefixes_and_names_empty_errors():
    assert first_line(RuntimeError("[../gloo/transport/tcp/pair.cc:561] Connection refused\nmore")) == "Connection refused"
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(OSError("no such file"), with_type=True) == "OSError: no such file"
    assert len(first_line(RuntimeError("x" * 500))) == 200
