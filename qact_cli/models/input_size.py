"""The cap on a model's input size (docs/reference.md, "Models from elsewhere").

Images are resized on the device in whole batches: a batch of 256 RGB images of 100,000 px a side is
a 30 TB float tensor, which no machine holds. Pretrained image classifiers take a few hundred pixels
a side (224 for most, 800 for the largest EfficientNet), so 4,096 px leaves room for any real model
while an absurd `--input-size` is refused before any work (exit 2).
"""

from __future__ import annotations

from ..errors import UsageError

MAX_INPUT_SIDE = 4096


def check_input_size(size, where: str = "--input-size") -> None:
    """Refuse an input size with a side above MAX_INPUT_SIDE pixels (exit 2); None (any size) passes."""
    if size is None:
        return
    sides = [int(s) for s in (size if isinstance(size, (list, tuple)) else [size])]
    if max(sides) > MAX_INPUT_SIDE:
        raise UsageError(f"{where} {'x'.join(map(str, sides))}: at most {MAX_INPUT_SIDE} px a side (a batch of "
                         "such images must fit in memory); give the size the model was trained at")
