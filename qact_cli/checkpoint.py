"""Checkpoints (docs/reference.md, "Checkpoints"), as the Python API names them: `load_model(path)`
rebuilds the network a qact checkpoint describes, probes on frozen backbones included.

The file format (writing, reading with weights_only=True) is models/checkpoint_file.py, rebuilding
is `models.load_checkpoint`; this module only gathers them under their documented names. It imports
`qact_cli.probes`, whose model families then rebuild probe checkpoints.
"""

from __future__ import annotations

from .models import load_checkpoint as load_model
from .models.checkpoint_file import (FORMAT, FORMAT_VERSION, check_finite, load_file, make_checkpoint, read_checkpoint,
                                     save_checkpoint)
from .models.weights import clean_state_dict
from .probes import model as _probe_families  # noqa: F401  (registers the dinov2_* and probe families)

__all__ = ["FORMAT", "FORMAT_VERSION", "check_finite", "clean_state_dict", "load_file", "load_model", "make_checkpoint",
           "read_checkpoint", "save_checkpoint"]
