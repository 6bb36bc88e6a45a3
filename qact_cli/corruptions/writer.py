"""The job behind `qact corrupt`: stream a uint8 image array through the corruptions and write the
CIFAR-10-C (`npy`) or ImageNet-C (`jpeg`/`png`) layout, resumably.

- npy: `out/<corruption>.npy` of shape (S*N, H, W, 3), rows [k*N:(k+1)*N] = the k-th severity asked, and
  `out/labels.npy` (S*N,). Each file is filled through `np.lib.format.open_memmap` under a hidden temporary
  name and renamed when complete.
- jpeg/png: `out/<corruption>/<severity>/<class>/<index>.<ext>`, every file written atomically, a cell
  (corruption, severity) marked finished by `.done` in its folder.
- `out/manifest.json` (written atomically) records the settings and the finished cells. A rerun with the same
  settings skips finished work, so an interrupted run (even kill -9) resumes and ends with the same bytes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..version import __version__
from ..data.identity import input_fingerprint
from ..errors import InputError, UsageError
from ..native import kernel, recorded
from . import corrupt
from .checks import check_images, check_request, used_profile

SCHEMA = "qact.corrupt/1"
JPEG_QUALITY = 85  # as the published Tiny-ImageNet-C / ImageNet-C files
_PARTIAL = ".partial"


# ------------------------------------------------------------------------------------------------ checks


def _check_labels(labels, n: int, labels_path) -> np.ndarray:
    y = np.asarray(labels)
    where = str(labels_path) if labels_path else "labels"
    if y.ndim != 1 or len(y) != n:
        raise InputError(f"{where}: {tuple(y.shape)} labels for {n} images; need one integer label per image")
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        raise InputError(f"{where}: labels must be integers, got {y.dtype}")
    return y.astype(np.int64)


def _prepare_folder(out: Path) -> None:
    """Create `out` and prove it writable, or raise an InputError naming it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"cannot write into {out}: {e.strerror}; choose a writable folder with free space") from None


def _write_failed(out: Path, e: OSError) -> InputError:
    what = "the disk is full" if e.errno == errno.ENOSPC else e.strerror
    return InputError(f"writing into {out} failed: {what}; free space or choose another --out, then rerun to resume")


# ------------------------------------------------------------------------------------------------ helpers


def _rgb(batch: np.ndarray) -> np.ndarray:
    if batch.ndim == 3:
        batch = batch[..., None]
    return np.repeat(batch, 3, axis=-1) if batch.shape[-1] == 1 else batch


def _corrupt_batch(batch: np.ndarray, name: str, severity: int, profile: str, seed: int, start: int,
                   device: torch.device) -> np.ndarray:
    batch = _rgb(np.asarray(batch))
    if not batch.flags.writeable or not batch.flags.c_contiguous:  # slices of read-only memmaps
        batch = np.array(batch)
    x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2)
    out = corrupt(x, name, severity, profile=profile, seed=seed, start_index=start)
    return out.permute(0, 2, 3, 1).cpu().numpy()


def _write_manifest(out: Path, manifest: dict) -> None:
    tmp = out / f".manifest.json{_PARTIAL}"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / "manifest.json")


def _load_manifest(out: Path, settings: dict) -> set[str]:
    """Finished cells of an earlier run with the same settings; a different run in `out` is an error."""
    path = out / "manifest.json"
    if not path.is_file():
        return set()
    try:
        old = json.loads(path.read_text())
        old_settings = {k: old[k] if k != "kernels" else recorded(old) for k in settings}
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InputError(f"{path} is not a qact corrupt manifest; remove it or choose another --out") from None
    if old_settings != settings:
        diff = ", ".join(f"{k} {old_settings[k]!r} -> {settings[k]!r}" for k in settings if old_settings[k] != settings[k])
        raise UsageError(f"{out} holds a different corruption run ({diff}); choose another --out or delete that folder")
    return set(old.get("completed", []))


def _batches(n: int, size: int):
    for a in range(0, n, size):
        yield a, min(n, a + size)


# ------------------------------------------------------------------------------------------------ writers


def _write_npy_cell(out: Path, images, name: str, sev: list[int], profile: str, seed: int, n: int, hw, batch_size: int,
                    device, progress) -> None:
    final = out / f"{name}.npy"
    tmp = out / f".{name}.npy{_PARTIAL}"
    tmp.unlink(missing_ok=True)  # a run killed mid-file starts that file again
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(sev) * n, *hw, 3))
    if hasattr(os, "posix_fallocate"):  # reserve the space now: a full disk is an OSError here, not a SIGBUS later
        with open(tmp, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    try:
        for k, s in enumerate(sev):
            for a, b in _batches(n, batch_size):
                mm[k * n + a:k * n + b] = _corrupt_batch(images[a:b], name, s, profile, seed, a, device)
                if progress:
                    progress(b - a)
        mm.flush()
    finally:
        del mm
    os.replace(tmp, final)


def _image_name(index: int, n: int, ext: str) -> str:
    return f"{index:0{max(5, len(str(n - 1)))}d}.{ext}"


def _write_tree_cell(out: Path, images, y: np.ndarray, folders: list[str], name: str, s: int, profile: str, seed: int,
                     n: int, batch_size: int, device, fmt: str, progress) -> None:
    from PIL import Image

    ext = "jpeg" if fmt == "jpeg" else "png"
    cell = out / name / str(s)
    for f in sorted(set(folders)):
        (cell / f).mkdir(parents=True, exist_ok=True)
    for a, b in _batches(n, batch_size):
        paths = [cell / folders[y[i]] / _image_name(i, n, ext) for i in range(a, b)]
        if not all(p.is_file() for p in paths):  # files only ever appear complete, so existing ones are done
            batch = _corrupt_batch(images[a:b], name, s, profile, seed, a, device)
            for img, path in zip(batch, paths):
                tmp = path.with_name(f".{path.name}{_PARTIAL}")
                im = Image.fromarray(img)
                if fmt == "jpeg":
                    im.save(tmp, "JPEG", quality=JPEG_QUALITY, optimize=True)
                else:
                    im.save(tmp, "PNG")
                os.replace(tmp, path)
        if progress:
            progress(b - a)
    (cell / ".done").touch()


def _class_folders(y: np.ndarray, class_names: Sequence[str] | None, labels_path) -> list[str]:
    """Folder name of each label value: class_names[label], else the label as text."""
    top = int(y.max()) if len(y) else 0
    if class_names is None:
        return [str(i) for i in range(top + 1)]
    names = [str(c).replace(os.sep, "_") for c in class_names]
    if int(y.min()) < 0 or top >= len(names):
        where = labels_path or "labels"
        raise InputError(f"{where}: labels span {int(y.min())}..{top} but there are {len(names)} class names")
    return names


def write_corrupted(images, labels, out_dir, corruptions: Sequence[str], severities: Sequence[int],
                    profile: str = "auto", fmt: str = "npy", seed: int = 0, batch_size: int = 256,
                    device: str | torch.device = "cpu", class_names: Sequence[str] | None = None,
                    progress: Callable[[int], None] | None = None, images_path=None, labels_path=None,
                    dataset: str | None = None, labelled: bool = True, selection: dict | None = None) -> dict:
    """Corrupt `images` (uint8 (N, H, W, 3) / (N, H, W) array-like, read slice by slice) with every corruption
    at every severity and write them under `out_dir` in `fmt`; returns the manifest. Reruns resume.
    `dataset` names where the images come from (e.g. "cifar10 (test)"), recorded in the manifest.
    `labelled=False` (`--no-labels`): the labels are placeholders; the manifest says so and eval refuses to
    score accuracy on the folder. `selection` ({"limit", "of"}: `--limit`) says which rows of the file at
    `images_path` `images` are, so eval reads the same rows back as severity 0. Another run writing into
    `out_dir` at the same time is refused (a lock)."""
    names, sev = check_request(corruptions, severities, fmt, profile)
    n, h, w = check_images(images, images_path)
    y = _check_labels(labels, n, labels_path)
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise UsageError(f"batch size must be a positive integer, got {batch_size!r}")
    device = torch.device(device)
    used = used_profile(profile, h, w)
    folders = _class_folders(y, class_names, labels_path) if fmt != "npy" else None
    out = Path(out_dir)
    _prepare_folder(out)
    with _folder_lock(out):
        return _write_all(out, images, y, names, sev, profile, used, fmt, seed, batch_size, device, folders, n, h, w,
                          progress, images_path, labels_path, dataset, labelled, selection)


@contextlib.contextmanager
def _folder_lock(out: Path):
    """An advisory lock on out/.lock for the whole run: a second run on the same folder is refused, not interleaved.
    The holder removes the file before it lets go, so a finished run leaves no `.lock` behind. A run that opened
    the file just before it was removed may then lock that orphan: it checks that the file it locked is still
    the one at out/.lock and otherwise opens the new one."""
    import fcntl

    path = out / ".lock"
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise InputError(f"cannot write into {out}: {e.strerror}; choose a writable folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if not isinstance(e, BlockingIOError):
                raise
            raise InputError(f"another qact corrupt run holds {out} (lock {path}); wait for it to finish "
                             "or choose another --out") from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # the orphan of a run that just finished: lock the file now at out/.lock
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still locked: nobody can lock this inode and find it current afterwards
        os.close(fd)


def _write_all(out, images, y, names, sev, profile, used, fmt, seed, batch_size, device, folders, n, h, w, progress,
               images_path, labels_path, dataset, labelled, selection) -> dict:
    settings = {"format": fmt, "profile": used, "seed": int(seed), "severities": sev, "n_images": n,
                "image_size": [h, w], "input_fingerprint": input_fingerprint(images, y),
                "kernels": kernel()}
    done = _load_manifest(out, settings)
    manifest = {
        "schema": SCHEMA,
        **settings,
        "profile_requested": profile,
        "corruptions": names,
        "layout": ("<corruption>.npy: (len(severities)*n_images, H, W, 3) uint8, rows [k*n:(k+1)*n] = severities[k]; "
                   "labels.npy: the labels repeated per severity" if fmt == "npy" else
                   f"<corruption>/<severity>/<class>/<index>.{'jpeg' if fmt == 'jpeg' else 'png'}"),
        "row_layout": {"block": n, "severities": sev} if fmt == "npy" else None,
        "channels": 3,
        "jpeg_quality": JPEG_QUALITY if fmt == "jpeg" else None,
        "classes": list(folders) if folders is not None else None,
        # absolute: eval reads the clean images back as severity 0 from wherever it runs (and checks the fingerprint)
        "source": {"dataset": dataset, "images": str(Path(images_path).resolve()) if images_path else None,
                   "labels": str(Path(labels_path).resolve()) if labels_path else None,
                   **({"selection": dict(selection)} if selection else {})},
        "labelled": bool(labelled),
        "versions": {"qact": __version__, "torch": torch.__version__, "numpy": np.__version__},
        "device_type": device.type,
        "completed": sorted(done),
        "complete": False,
    }
    try:
        _write_manifest(out, manifest)
        if fmt == "npy":
            labels_file = out / "labels.npy"
            if "labels" not in done:
                tiled = np.tile(y, len(sev)).astype(np.uint8 if len(y) and y.min() >= 0 and y.max() < 256 else np.int64)
                tmp = out / f".labels.npy{_PARTIAL}"
                with open(tmp, "wb") as f:
                    np.save(f, tiled)
                os.replace(tmp, labels_file)
                done.add("labels")
        for name in names:
            if fmt == "npy":
                if name in done and (out / f"{name}.npy").is_file():
                    if progress:
                        progress(n * len(sev))
                    continue
                _write_npy_cell(out, images, name, sev, used, seed, n, (h, w), batch_size, device, progress)
                done.add(name)
            else:
                for s in sev:
                    key = f"{name}/{s}"
                    if key in done and (out / name / str(s) / ".done").is_file():
                        if progress:
                            progress(n)
                        continue
                    _write_tree_cell(out, images, y, folders, name, s, used, seed, n, batch_size, device, fmt, progress)
                    done.add(key)
            manifest["completed"] = sorted(done)
            _write_manifest(out, manifest)
        manifest["complete"] = True
        _write_manifest(out, manifest)
    except OSError as e:
        for tmp in out.rglob(f"*{_PARTIAL}"):
            tmp.unlink(missing_ok=True)
        raise _write_failed(out, e) from None
    return manifest


# ------------------------------------------------------------------------------------------------ preview


def write_preview(images, out_png, corruptions: Sequence[str], severities: Sequence[int] = (1, 2, 3, 4, 5),
                  profile: str = "auto", seed: int = 0, n: int = 3, device: str | torch.device = "cpu") -> Path:
    """A labelled PNG grid: one row per corruption, one column per severity (0 = clean, then those asked),
    each cell showing the first `n` images side by side."""
    from PIL import Image, ImageDraw

    names, sev = check_request(corruptions, severities, "npy", profile)
    count, h, w = check_images(images)
    k = min(int(n), count)
    sample = np.ascontiguousarray(_rgb(np.asarray(images[:k])))
    used = used_profile(profile, h, w)
    zoom = max(1, 96 // max(h, w))  # small images are enlarged (nearest) so they stay visible
    cell_w, cell_h, pad, label_w, head = k * w * zoom, h * zoom, 4, 150, 18
    cols = [0] + sev
    grid = Image.new("RGB", (label_w + len(cols) * (cell_w + pad), head + len(names) * (cell_h + pad)), "white")
    draw = ImageDraw.Draw(grid)
    for j, s in enumerate(cols):
        draw.text((label_w + j * (cell_w + pad) + 2, 3), "clean" if s == 0 else f"severity {s}", fill="black")
    dev = torch.device(device)
    for i, name in enumerate(names):
        top = head + i * (cell_h + pad)
        draw.text((4, top + cell_h // 2 - 6), name, fill="black")
        for j, s in enumerate(cols):
            imgs = sample if s == 0 else _corrupt_batch(sample, name, s, used, seed, 0, dev)
            strip = Image.fromarray(np.concatenate(list(imgs), axis=1))
            if zoom > 1:
                strip = strip.resize((cell_w, cell_h), Image.NEAREST)
            grid.paste(strip, (label_w + j * (cell_w + pad), top))
    from ..utils import atomic_path

    out = Path(out_png)
    with atomic_path(out, ".png") as tmp:
        grid.save(tmp, "PNG")
    return out
