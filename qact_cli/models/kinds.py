"""What kind of MODEL argument a value is: the one table of file suffixes every command reads.

A MODEL is an `nn.Module` (Python only), a model card (a dict, or a `.yaml`/`.yml` file), a
TorchScript or torch.export archive (`.ts`, `.pt2`, or a zip holding one: weights.archive_kind), a
qact checkpoint (any other existing file), or else a spec string (`torchvision:NAME`, `timm:NAME`,
`pkg.module:callable`).
"""

from __future__ import annotations

from pathlib import Path

CARD_SUFFIXES = (".yaml", ".yml")
ARCHIVE_KINDS = {".ts": "torchscript", ".pt2": "export"}
ARCHIVE_SUFFIXES = tuple(ARCHIVE_KINDS)


def is_card(model) -> bool:
    return isinstance(model, dict) or (isinstance(model, (str, Path)) and Path(str(model)).suffix in CARD_SUFFIXES)


def is_checkpoint(model) -> bool:
    """A qact checkpoint file (not a card, an archive, a spec or an in-memory model)."""
    if not isinstance(model, (str, Path)):
        return False
    path = Path(str(model))
    return path.is_file() and path.suffix.lower() not in CARD_SUFFIXES + ARCHIVE_SUFFIXES
