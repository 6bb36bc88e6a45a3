"""Parsing of `--corruptions` (common|extra|all|NAME,...) and `--severities` (0-5, 1,3,5)."""

from __future__ import annotations

from .errors import UsageError
from .suggest import unknown

# the corruption names of Hendrycks and Dietterich (ICLR 2019): 15 common, 4 extra. Written here so that
# `--corruptions` is checked without importing the corruption code (torch); tests/test_option_schema.py
# keeps them equal to the registry in qact_cli/corruptions.
COMMON_NAMES = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
                "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
                "jpeg_compression")
EXTRA_NAMES = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
# datasets whose corruptions have names of their own (MNIST-C: shear, zigzag, ...); every other dataset's
# are among the 19 above (a `corrupted:DIR` folder holds a subset). A test keeps this equal to the registry.
OWN_NAMES = ("mnistc",)


def parse_severities(text: str | int | list, lo: int = 0, hi: int = 5, flag: str = "--severities") -> list[int]:
    """'0-5' -> [0..5]; '1,3,5' -> [1, 3, 5]; order as written, duplicates dropped."""
    if isinstance(text, int):
        text = str(text)
    if isinstance(text, list):
        text = ",".join(str(t) for t in text)
    out: list[int] = []
    try:
        for part in str(text).replace(" ", "").split(","):
            if not part:
                continue
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                if int(a) > int(b):
                    raise UsageError(f"{flag} {text!r}: the range {a}-{b} is reversed; write {b}-{a} "
                                     f"(or a list like {a},{b} for that order)")
                out += list(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected a range like {lo}-{hi} or a list like 1,3,5") from None
    bad = [s for s in out if not lo <= s <= hi]
    if not out or bad:
        raise UsageError(f"{flag} {text!r}: severities must lie in {lo}..{hi}")
    return list(dict.fromkeys(out))


def parse_corruptions(text: str | list) -> list[str]:
    COMMON, EXTRA = COMMON_NAMES, EXTRA_NAMES
    CORRUPTIONS = COMMON + EXTRA
    if isinstance(text, list):
        text = ",".join(text)
    groups = {"common": list(COMMON), "extra": list(EXTRA), "all": list(CORRUPTIONS)}
    out: list[str] = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        if part in groups:
            out += groups[part]
        elif part in CORRUPTIONS:
            out.append(part)
        else:
            raise UsageError(unknown("corruption", part, ["common", "extra", "all", *CORRUPTIONS]))
    if not out:
        raise UsageError("--corruptions is empty; use common, extra, all or a list of names")
    return list(dict.fromkeys(out))


def check_selection(dataset: str, corruptions: str | list, severities: str | int | list | None) -> None:
    """The usage errors of `--corruptions` / `--severities` that need no data, answered before torch is
    imported (the names a dataset really holds are checked again once it is open)."""
    if severities is not None:
        parse_severities(severities)
    if str(dataset).split(":", 1)[0] not in OWN_NAMES:
        parse_corruptions(corruptions)
