"""What a model returns, as the metrics need it, and the model's own failures named as the model's.

- `call_model`: one forward pass; an exception raised inside the model (a `forward` that raises, a
  1-channel model fed RGB, an exported program traced for other shapes) becomes one input-error line
  naming the model, the input shape and the exception (exit 3). Running out of memory stays a
  MemoryError, which the CLI answers with "lower --batch-size".
- `as_logits`: a model declared to return `probs` or `log-probs` is scored on log p, which the
  metrics' softmax turns back into p (softmax(log p) = p / sum p = p); `logits` pass unchanged.
- `check_outputs`: the first batch of a cell must look like what was declared: rows that are
  non-negative and sum to 1, or whose logsumexp is 0, are probabilities / log-probabilities, so
  declaring `logits` for them (the default) would score softmax(p), a flattened distribution; it is
  exit 3 saying which `--outputs` to pass. Declared probabilities that do not sum to 1 are exit 3 too.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError, QactError, UsageError, first_line
from ..options.model import OUTPUT_KINDS
# a zero probability becomes log(float32 tiny) ~ -87.3, the floor the NLL uses as well
_LOG_FLOOR = float(torch.log(torch.tensor(torch.finfo(torch.float32).tiny)))
_SUM_TOL = 1e-4  # |row sum - 1| (or |logsumexp|) allowed for float32 outputs; wider for half precision


class OutputWidth(InputError):
    """A batch of outputs of another width than the model's class count; `got` is that width (the
    evaluation names where the count came from: eval/classes.py width_mismatch)."""

    def __init__(self, message: str, got: int):
        super().__init__(message)
        self.got = got


def call_model(model: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
    """model(x); any exception from the model's own code is an InputError naming `name` and x's shape."""
    try:
        return model(x)
    except (QactError, MemoryError, KeyboardInterrupt):
        raise
    except torch.OutOfMemoryError as e:  # CUDA / MPS: the same answer as a host MemoryError
        raise MemoryError(first_line(e)) from None
    except Exception as e:  # the user's code: whatever it raises is the model's failure
        text = first_line(e, with_type=True)
        if "can't allocate memory" in text or "not enough memory" in text:
            raise MemoryError(text) from None
        hint = ""
        if isinstance(model, torch.fx.GraphModule) and "Guard failed" in text:
            hint = ("; the archive was exported for other input shapes: export it with a dynamic batch dimension "
                    "(torch.export.Dim) and the image size qact feeds it")
        elif x.ndim == 4 and x.shape[1] == 3 and "channels" in text:
            hint = "; a model of 1-channel (grayscale) images needs --channels 1"
        raise InputError(f"model {name} failed on input {tuple(x.shape)}: {text}{hint}") from None


def declared_kind(info: dict) -> str:
    """What the model of `meta["model"]` returns: its `outputs` (card key / flag) when given, else
    log-probabilities for qact's quantile heads (they return log p, nn/heads.py), else logits."""
    kind = info.get("outputs") or ("log-probs" if str(info.get("head") or "").startswith("quantile") else "logits")
    if kind not in OUTPUT_KINDS:
        raise UsageError(f"outputs must be one of {', '.join(OUTPUT_KINDS)}, got {kind!r}")
    return kind


def as_logits(out: torch.Tensor, kind: str) -> torch.Tensor:
    """Scores whose softmax is the model's probability vector (float32)."""
    out = out.float()
    if kind == "probs":
        return out.clamp_min(0).log().clamp_min(_LOG_FLOOR)
    if kind == "log-probs":
        return out.clamp_min(_LOG_FLOOR)  # -inf (a zero probability) -> the floor, so it stays finite
    return out


def _tolerance(out: torch.Tensor) -> float:
    eps = torch.finfo(out.dtype).eps if out.dtype.is_floating_point else 0.0
    return max(_SUM_TOL, 16 * eps)


def check_outputs(out: torch.Tensor, kind: str, name: str) -> None:
    """Refuse (exit 3) a batch of outputs that contradicts the declared `kind` (see the module docstring)."""
    if out.shape[0] == 0 or out.shape[1] < 2:
        return
    tol = _tolerance(out)
    x = out.detach().double()
    sums = x.sum(1)
    is_probs = bool((x.min() >= 0) & ((sums - 1).abs().max() <= tol))
    lse = torch.logsumexp(x, 1)
    is_log_probs = bool(torch.isfinite(lse).all() & (lse.abs().max() <= tol) & (x.max() <= tol))
    if kind == "logits":
        if is_probs:
            raise InputError(f"model {name} returns probabilities (each row non-negative, summing to 1), but logits are "
                             "assumed; pass --outputs probs (card key outputs: probs)")
        if is_log_probs:
            raise InputError(f"model {name} returns log-probabilities (each row's logsumexp is 0), but logits are "
                             "assumed; pass --outputs log-probs (card key outputs: log-probs)")
    elif kind == "probs" and not is_probs:
        lo, hi = float(sums.min()), float(sums.max())
        raise InputError(f"model {name} is declared to return probabilities, but its rows sum to {lo:.4g}..{hi:.4g}"
                         f"{' with negative values' if float(x.min()) < 0 else ''}; pass --outputs logits if it "
                         "returns logits")
    elif kind == "log-probs" and not is_log_probs:
        lo, hi = float(lse.min()), float(lse.max())
        raise InputError(f"model {name} is declared to return log-probabilities, but its rows' logsumexp is "
                         f"{lo:.4g}..{hi:.4g}, not 0; pass --outputs logits if it returns logits")
