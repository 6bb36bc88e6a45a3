"""`write_corrupted` / `write_preview`: layouts, manifest, resume after an interruption, bad inputs."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest
from PIL import Image

import qact_cli.corruptions.writer as writer
from qact_cli.corruptions import corrupt
from qact_cli.corruptions.writer import write_corrupted, write_preview
from qact_cli.errors import InputError, UsageError
from fixtures_images import natural

N = 7


@pytest.fixture(scope="module")
def data():
    return natural((32, 32), N, seed=9), np.arange(N) % 3


def test_npy_layout_and_manifest(tmp_path, data):
    x, y = data
    seen = []
    m = write_corrupted(x, y, tmp_path, ["fog", "contrast"], [4, 2], seed=1, batch_size=3, progress=seen.append)
    assert sum(seen) == 2 * 2 * N
    fog = np.load(tmp_path / "fog.npy")
    assert fog.shape == (2 * N, 32, 32, 3) and fog.dtype == np.uint8
    assert np.array_equal(fog[:N], corrupt(x, "fog", 4, profile="cifar", seed=1))  # severities in the order asked
    assert np.array_equal(fog[N:], corrupt(x, "fog", 2, profile="cifar", seed=1))
    labels = np.load(tmp_path / "labels.npy")
    assert np.array_equal(labels, np.tile(y, 2)) and labels.dtype == np.uint8
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == m and m["complete"] and m["profile"] == "cifar" and m["seed"] == 1
    assert m["severities"] == [4, 2] and m["n_images"] == N and m["image_size"] == [32, 32] and m["format"] == "npy"
    assert set(m["versions"]) == {"qact", "torch", "numpy"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contrast.npy", "fog.npy", "labels.npy", "manifest.json"]


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_tree_layout(tmp_path, data, fmt):
    x, y = data
    m = write_corrupted(x, y, tmp_path, ["pixelate"], [1, 3], fmt=fmt, class_names=["cat", "dog", "emu"], batch_size=4)
    for s in (1, 3):
        files = sorted((tmp_path / "pixelate" / str(s)).rglob(f"*.{fmt}"))
        assert len(files) == N
        assert {f.parent.name for f in files} == {"cat", "dog", "emu"}
        first = tmp_path / "pixelate" / str(s) / "cat" / f"00000.{fmt}"
        img = np.asarray(Image.open(first))
        assert img.shape == (32, 32, 3)
        if fmt == "png":
            assert np.array_equal(img, corrupt(x[:1], "pixelate", s, profile="cifar")[0])
    assert m["classes"] == ["cat", "dog", "emu"] and sorted(m["completed"]) == ["pixelate/1", "pixelate/3"]
    assert not list(tmp_path.rglob("*.partial"))


def test_labels_as_folder_names_without_classes(tmp_path, data):
    x, y = data
    write_corrupted(x, y, tmp_path, ["contrast"], [1], fmt="png")
    assert sorted(p.name for p in (tmp_path / "contrast" / "1").iterdir() if p.is_dir()) == ["0", "1", "2"]


class Stop(Exception):
    pass


def test_resume_after_interruption(tmp_path, data, monkeypatch):
    x, y = data
    names, sev = ["gaussian_noise", "glass_blur", "zoom_blur"], [1, 5]
    full = tmp_path / "full"
    write_corrupted(x, y, full, names, sev, seed=2, batch_size=2)

    part = tmp_path / "part"
    count = {"n": 0}

    def stop_midway(k):  # dies inside glass_blur's file, as a kill would
        count["n"] += k
        if count["n"] > 2 * N + 3:
            raise Stop

    with pytest.raises(Stop):
        write_corrupted(x, y, part, names, sev, seed=2, batch_size=2, progress=stop_midway)
    assert (part / "gaussian_noise.npy").is_file() and not (part / "glass_blur.npy").exists()
    assert (part / ".glass_blur.npy.partial").exists()  # the half-written file never had the final name
    assert json.loads((part / "manifest.json").read_text())["completed"] == ["gaussian_noise", "labels"]

    calls = []
    real = writer.corrupt
    monkeypatch.setattr(writer, "corrupt", lambda img, name, *a, **k: calls.append(name) or real(img, name, *a, **k))
    m = write_corrupted(x, y, part, names, sev, seed=2, batch_size=2)
    assert "gaussian_noise" not in calls and m["complete"]
    for f in ["labels.npy"] + [f"{c}.npy" for c in names]:
        assert (part / f).read_bytes() == (full / f).read_bytes()
    assert not list(part.glob("*.partial"))


def test_resume_tree_and_refuse_other_run(tmp_path, data):
    x, y = data
    write_corrupted(x, y, tmp_path, ["frost"], [2], fmt="png", seed=4)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.png")}
    (tmp_path / "frost" / "2" / ".done").unlink()
    victim = next(iter(before))
    victim.unlink()  # as if the run had stopped before this file
    write_corrupted(x, y, tmp_path, ["frost"], [2], fmt="png", seed=4)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.png")} == before
    with pytest.raises(UsageError, match="seed"):
        write_corrupted(x, y, tmp_path, ["frost"], [2], fmt="png", seed=5)


def test_resume_refuses_other_kernels_and_reads_older_manifests(tmp_path, data, monkeypatch):
    """The native kernels' float filters give other bytes (within one grey level): a run is resumed only under
    the kernels that began it; a manifest from before the key was written by the default kernels."""
    from qact_cli import native

    x, y = data
    monkeypatch.setattr(native, "_state", {**native._state, "kernel": "torch"})  # whatever QACT_KERNEL says
    m = write_corrupted(x, y, tmp_path, ["contrast"], [1], seed=2)
    assert m["kernels"] == "torch"
    monkeypatch.setattr(native, "_state", {**native._state, "kernel": "native"})
    with pytest.raises(UsageError, match="kernels 'torch' -> 'native'"):
        write_corrupted(x, y, tmp_path, ["contrast"], [1], seed=2)
    monkeypatch.setattr(native, "_state", {**native._state, "kernel": "torch"})
    old = json.loads((tmp_path / "manifest.json").read_text())
    del old["kernels"]
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    assert write_corrupted(x, y, tmp_path, ["contrast"], [1], seed=2)["kernels"] == "torch"


def test_preview(tmp_path, data):
    x, _ = data
    out = write_preview(x, tmp_path / "grid.png", ["fog", "snow"], [1, 5], n=2)
    img = Image.open(out)
    assert img.size[0] > 3 * 2 * 32 and img.size[1] > 2 * 32


def test_bad_inputs(tmp_path, data):
    x, y = data
    with pytest.raises(InputError, match="lab.npy"):
        write_corrupted(x, y[:-1], tmp_path, ["fog"], [1], labels_path="lab.npy")
    with pytest.raises(InputError, match="img.npy.*uint8"):
        write_corrupted(x.astype(np.float32), y, tmp_path, ["fog"], [1], images_path="img.npy")
    with pytest.raises(InputError):
        write_corrupted(x[:, :, :, :2], y, tmp_path, ["fog"], [1])
    with pytest.raises(UsageError, match="gaussian_noise"):
        write_corrupted(x, y, tmp_path, ["blizzard"], [1])
    for bad in ([0], [6], [1, 1]):
        with pytest.raises(UsageError):
            write_corrupted(x, y, tmp_path, ["fog"], bad)
    with pytest.raises(UsageError):
        write_corrupted(x, y, tmp_path, ["fog"], [1], fmt="tiff")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match=str(blocker)):
        write_corrupted(x, y, blocker / "out", ["fog"], [1])


def test_full_disk_leaves_nothing_half_written(tmp_path, data, monkeypatch):
    x, y = data

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    with pytest.raises(InputError, match=f"{tmp_path}.*full"):
        write_corrupted(x, y, tmp_path, ["fog"], [1])
    assert not (tmp_path / "fog.npy").exists() and not list(tmp_path.glob("*.partial"))


def test_lock_file_removed_after_a_run_and_after_a_failure(tmp_path, data):
    x, y = data
    write_corrupted(x, y, tmp_path / "ok", ["contrast"], [1])
    assert not (tmp_path / "ok" / ".lock").exists()

    def fail(_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_corrupted(x, y, tmp_path / "stopped", ["contrast"], [1], progress=fail)
    assert not (tmp_path / "stopped" / ".lock").exists()


def test_lock_held_while_running_refuses_a_second_run(tmp_path, data):
    x, y = data
    seen = []

    def second_run(_):  # runs while the first one holds the folder
        with pytest.raises(InputError, match="another qact corrupt run holds"):
            write_corrupted(x, y, tmp_path, ["contrast"], [1])
        seen.append((tmp_path / ".lock").exists())

    write_corrupted(x, y, tmp_path, ["contrast"], [1], progress=second_run)
    assert seen == [True] and not (tmp_path / ".lock").exists()


def test_lock_orphaned_by_a_finished_run_is_not_taken(tmp_path, monkeypatch):
    """A run that opened .lock just before the finishing run removed it locks that orphan, sees that it is no
    longer out/.lock, and tries the new file, which a third run holds: refused, not run alongside the third."""
    import fcntl

    (tmp_path / ".lock").touch()
    orphan = os.open(tmp_path / ".lock", os.O_RDWR)
    (tmp_path / ".lock").unlink()
    holder = os.open(tmp_path / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    real_open, calls = os.open, []

    def open_orphan_first(path, *a, **k):
        calls.append(path)
        return os.dup(orphan) if len(calls) == 1 else real_open(path, *a, **k)

    monkeypatch.setattr(writer.os, "open", open_orphan_first)
    try:
        with pytest.raises(InputError, match="another qact corrupt run holds"):
            with writer._folder_lock(tmp_path):
                pass
    finally:
        monkeypatch.undo()
        os.close(orphan)
        os.close(holder)
    assert len(calls) == 2 and (tmp_path / ".lock").exists()  # the holder's file stays
