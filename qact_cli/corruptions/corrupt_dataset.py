"""`qact corrupt` as a function of its options (qact_cli/options/corrupt.py): pick the input (a registry dataset or an .npy file), then stream it
through `writer.write_corrupted` with a progress bar and print where everything went."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.base import RowSubset, limit_indices
from ..errors import InputError, UsageError
from ..options.corrupt import CorruptOptions
from ..native import kernel, recorded
from .checks import check_images, used_profile


class SourceArray:
    """Read-only (N, H, W, 3) uint8 view of an ImageSource, sliced batch by batch (never loaded whole)."""

    dtype = np.dtype(np.uint8)

    def __init__(self, source):
        self.source = source
        h, w = source.image_size
        self.shape = (len(source), h, w, 3)
        self.ndim = 4

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self[int(key) : int(key) + 1][0]
        idx = np.arange(self.shape[0])[key]
        x, _ = self.source.__getitems__(idx)
        return x.permute(0, 2, 3, 1).numpy()

    def __array__(self, dtype=None, copy=None):
        return self[:]


def resume_state(out: Path, fmt: str, names: list[str], sev: list[int], seed: int) -> tuple[int, int] | None:
    """(files done, files in all) of an earlier run in `out` with this format, seed and kernels, or None when there
    is none. A run with other settings is refused later by the writer, with the difference named (so no
    "resuming" line is printed for it first)."""
    import json

    path = Path(out) / "manifest.json"
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(old, dict) or old.get("format") != fmt or old.get("severities") != sev \
            or old.get("seed") != seed or recorded(old) != kernel():
        return None
    wanted = [*names, "labels"] if fmt == "npy" else [f"{c}/{s}" for c in names for s in sev]
    done = set(old.get("completed") or [])
    return sum(w in done for w in wanted), len(wanted)


def load_input(input: Path | None, labels: Path | None, dataset: str | None, split: str, data_root, download,
               no_labels: bool = False, fmt: str = "npy"):
    """Returns (images array-like, labels, class names or None, description, images path or None)."""
    from ..data.arrays import load_npy

    if (input is None) == (dataset is None):
        raise UsageError("give exactly one of --dataset NAME or --input IMAGES.npy")
    if no_labels and (labels is not None or input is None):
        raise UsageError("--no-labels goes with --input alone (not with --labels or --dataset)")
    if input is not None:
        images = load_npy(Path(input), "input images")
        check_images(images, input)
        if labels is not None:
            y = np.asarray(load_npy(Path(labels), "labels"))
            if y.ndim != 1 or len(y) != len(images):
                raise InputError(f"{labels}: {y.shape} labels for {len(images)} images; need one integer per image")
        elif no_labels:  # placeholders (-1: no class), and the manifest says the folder is unlabelled
            if fmt != "npy":
                return images, np.zeros(len(images), np.int64), ["unlabelled"], str(input), input
            y = np.full(len(images), -1, np.int64)
        else:
            raise UsageError(f"--input {input} without --labels: give --labels LABELS.npy (one integer per image), "
                             "or --no-labels to corrupt unlabelled images (accuracy cannot be scored on them then)")
        return images, y, None, str(input), input
    from ..data import get_dataset

    ds = get_dataset(dataset, data_root, download)
    source = ds.split(split)
    arr = source.images if hasattr(source, "images") and getattr(source.images, "ndim", 0) == 4 and source.images.shape[-1] == 3 else SourceArray(source)
    return arr, np.asarray(source.labels), ds.classes, f"{dataset} ({split})", None


def run_corrupt(opts: CorruptOptions) -> dict:
    """`qact corrupt`: check the options, read the input, write the corrupted copies (resumable), print where."""
    from ..ui import progress, stderr_console
    from ..utils import check_output_dir, check_output_file, select_device
    from .writer import write_corrupted, write_preview

    names, sev = opts.check()
    out, fmt, limit, seed = opts.out, opts.format, opts.limit, opts.seed
    check_output_dir(out, "--out")  # before any work: an existing file or an unwritable place fails now
    check_output_file(opts.preview, "--preview")
    dev = select_device(opts.device)
    images, y, classes, what, path = load_input(opts.input, opts.labels, opts.dataset, opts.split, opts.data_root,
                                                 opts.download, opts.no_labels, fmt)
    used = used_profile(opts.profile, images.shape[1], images.shape[2])
    err = stderr_console()
    selection = None
    rows = limit_indices(len(images), limit)
    if rows is not None:
        selection = {"limit": int(limit), "of": len(images), "rows": "evenly spaced, in file order: (k * of) // limit"}
        images, y = RowSubset(images, rows), y[rows]
        what = f"{what}, {limit} evenly spaced of {selection['of']}"
    state = resume_state(Path(out), fmt, names, sev, int(seed))
    err.print(f"corrupting {len(images)} images of {what}: {len(names)} corruptions × severities {sev}, profile {used}, "
              f"seed {seed} -> {out}", highlight=False)
    if state is not None and state[0]:
        err.print(f"resuming: {state[0]} of {state[1]} files done in {out}", highlight=False)
    total = len(images) * len(names) * len(sev)
    with progress(err) as bar:
        task = bar.add_task("corrupt", total=total)
        manifest = write_corrupted(images, y, out, names, sev, profile=used, fmt=fmt, seed=seed, batch_size=opts.batch_size,
                                   device=dev, class_names=classes, progress=lambda n: bar.advance(task, n),
                                   images_path=path, labels_path=opts.labels,
                                   dataset=f"{opts.dataset} ({opts.split})" if opts.dataset else None,
                                   labelled=not opts.no_labels, selection=selection)
    if opts.preview:
        write_preview(images, opts.preview, names, sev, profile=used, seed=seed)
        err.print(f"preview grid -> {opts.preview}", highlight=False)
    print(f"wrote {len(names)} corruptions × {len(sev)} severities of {len(images)} images ({fmt}, profile {used}) to {out}")
    return manifest
