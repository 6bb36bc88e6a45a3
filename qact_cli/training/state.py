"""The resume state `<out>.state`, written after every epoch so that `--resume` continues a run.

A dict of primitives and tensors (loadable with weights_only=True) with its own header:
`format` "qact-train-state" and `format_version`. States written before the header existed
(`format` "qact-checkpoint", no version) have the same layout and are read as version 0.
"""

from __future__ import annotations

from pathlib import Path

from ..models.checkpoint_file import check_finite, load_file, save_checkpoint
from ..errors import InputError

STATE_FORMAT = "qact-train-state"
STATE_VERSION = 1
# what a resumed run must share with the saved one (--epochs and --early-stop may change: to train longer)
RESUME_KEYS = ("act", "loss", "head", "batch_size", "lr", "seed", "placement", "augment", "qact", "weights", "probe_res")
# what resuming reads back (written by every version)
STATE_KEYS = ("config", "epoch", "best", "best_epoch", "stale", "history", "state_dict", "optimizer", "scheduler",
              "best_state_dict", "rng")


def state_path(out: str | Path) -> Path:
    return Path(str(out) + ".state")


def save_state(state: dict, path: Path) -> None:
    save_checkpoint({"format": STATE_FORMAT, "format_version": STATE_VERSION, **state}, path)


def read_state(path: Path) -> dict:
    """The state at `path`, its header checked; every failure is one InputError naming the file."""
    st = load_file(path)
    fresh = "remove it (or change --out) to start afresh"
    if not isinstance(st, dict):
        raise InputError(f"{path} is not a qact training state; {fresh}")
    version = st.get("format_version")
    if st.get("format") == "qact-checkpoint" and version is None:
        version = 0  # written before the state had a header of its own: same layout
    elif st.get("format") != STATE_FORMAT:
        raise InputError(f"{path} is not a qact training state (no '{STATE_FORMAT}' header); {fresh}")
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputError(f"{path}: format_version {version!r} is not an integer; the state is damaged, {fresh}")
    if version > STATE_VERSION:
        raise InputError(f"{path} has training-state format {version}, newer than this qact reads; upgrade qact, or {fresh}")
    if isinstance(st.get("state_dict"), dict):
        check_finite(path, st["state_dict"])
    return st


def check_resumable(path: Path, st: dict, arch: str, dataset: str, current: dict) -> None:
    """Refuse a state from another run, or one saved with other options (each named by its flag)."""
    saved = st.get("config", {})
    if saved.get("arch") != arch or saved.get("dataset") != dataset:
        raise InputError(f"{path} belongs to another run ({saved.get('arch')} on {saved.get('dataset')}); "
                         "remove it or change --out")
    for key in RESUME_KEYS:
        if key in saved and key in current and saved[key] != current[key]:
            flag = "--" + ("context-size" if key == "qact" else key.replace("_", "-"))
            raise InputError(f"{path} was saved with {flag} {saved[key]!r}, not {current[key]!r}; resume with the "
                             f"same options, or remove the state file (or change --out) to start afresh")
    missing = [k for k in STATE_KEYS if k not in st]
    if missing:
        raise InputError(f"{path} lacks {', '.join(missing)}: the state is damaged; remove it (or change --out) "
                         "to start afresh")
