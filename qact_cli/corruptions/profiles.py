"""Per-profile parameter tables of the reference generators, as data (docs/corruption-fidelity.md, "Profiles").

`cifar` is Hendrycks' `make_cifar_c.py` (32 px), `tiny` is `make_tinyimagenet_c.py` (64 px, also
ImageNet-64x64), `imagenet` is `make_imagenet_c.py` (224 px): each corruption function there opens with
its list `c = [...][severity - 1]`, copied here. Each entry lists the parameters for severities 1..5.
Values that the reference computes (zoom factors from `np.arange`, elastic constants as multiples of the
image size) are computed here the same way, so the floats are bit-identical to the reference's.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

PROFILES = ("cifar", "tiny", "imagenet")


# Named records of the multi-parameter families, in the reference's parameter order (its tuples `c`), so a
# record still unpacks like the reference's tuple. One-parameter corruptions take a plain number; zoom blur
# takes its tuple of zoom factors.
class GlassBlur(NamedTuple):
    sigma: float  # Gaussian blur before and after the pixel shuffle
    max_delta: int  # pixels swap with a neighbour up to this far
    iterations: int  # shuffle passes


class DefocusBlur(NamedTuple):
    radius: float  # disk kernel radius
    alias_blur: float  # sigma of the Gaussian that anti-aliases the disk


class MotionBlur(NamedTuple):
    radius: int  # ImageMagick motion blur radius
    sigma: float


class Fog(NamedTuple):
    strength: float  # weight of the plasma fractal
    wibble_decay: float  # the fractal's roughness


class Frost(NamedTuple):
    image_weight: float
    frost_weight: float
    texture_scale: float  # the frost textures are resized by this factor before the crop


class Snow(NamedTuple):
    loc: float  # mean and std of the Gaussian snow layer
    scale: float
    zoom: float  # centre zoom of the layer
    threshold: float  # layer values below it are no snow
    radius: int  # motion blur of the flakes
    sigma: float
    blend: float  # weight of the image against its brightened greyscale


class Spatter(NamedTuple):
    loc: float  # mean and std of the Gaussian liquid layer
    scale: float
    sigma: float  # its smoothing
    threshold: float
    intensity: float  # water: mask strength; mud: smoothing of the blobs
    mode: int  # 0 water drops, 1 mud


class Saturate(NamedTuple):
    factor: float  # S' = S * factor + offset
    offset: float


class ElasticTransform(NamedTuple):
    alpha: float  # displacement scale
    sigma: float  # smoothing of the displacement field
    max_shift: float  # jitter of the affine warp's three points


def _zoom(*ranges: tuple[float, float, float]) -> list[tuple[float, ...]]:
    # np.arange's float endpoint handling is part of the reference: arange(1, 1.06, 0.01) has 7 factors
    # (1.06 included) but arange(1, 1.16, 0.01) has 16 (1.16 excluded).
    return [tuple(float(z) for z in np.arange(a, b, s)) for a, b, s in ranges]


def _scaled(size: float, rows: list[tuple[float, float, float]]) -> list[ElasticTransform]:
    # the reference writes these as multiples of the image size (e.g. 244 * 0.08): the same products here
    return [ElasticTransform(size * a, size * b, size * c) for a, b, c in rows]


TABLES: dict[str, dict[str, list]] = {  # profile -> corruption -> severities 1..5
    "cifar": {
        "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
        "shot_noise": [500, 250, 100, 75, 50],
        "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],
        "speckle_noise": [0.06, 0.1, 0.12, 0.16, 0.2],
        "gaussian_blur": [0.4, 0.6, 0.7, 0.8, 1],
        "glass_blur": [GlassBlur(0.05, 1, 1), GlassBlur(0.25, 1, 1), GlassBlur(0.4, 1, 1), GlassBlur(0.25, 1, 2),
                       GlassBlur(0.4, 1, 2)],
        "defocus_blur": [DefocusBlur(0.3, 0.4), DefocusBlur(0.4, 0.5), DefocusBlur(0.5, 0.6), DefocusBlur(1, 0.2),
                         DefocusBlur(1.5, 0.1)],
        "motion_blur": [MotionBlur(6, 1), MotionBlur(6, 1.5), MotionBlur(6, 2), MotionBlur(8, 2), MotionBlur(9, 2.5)],
        "zoom_blur": _zoom((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)),
        "fog": [Fog(0.2, 3), Fog(0.5, 3), Fog(0.75, 2.5), Fog(1, 2), Fog(1.5, 1.75)],
        "frost": [Frost(1, 0.2, 0.2), Frost(1, 0.3, 0.2), Frost(0.9, 0.4, 0.2), Frost(0.85, 0.4, 0.2),
                  Frost(0.75, 0.45, 0.2)],
        "snow": [Snow(0.1, 0.2, 1, 0.6, 8, 3, 0.95), Snow(0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                 Snow(0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), Snow(0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                 Snow(0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
        "spatter": [Spatter(0.62, 0.1, 0.7, 0.7, 0.5, 0), Spatter(0.65, 0.1, 0.8, 0.7, 0.5, 0),
                    Spatter(0.65, 0.3, 1, 0.69, 0.5, 0), Spatter(0.65, 0.1, 0.7, 0.69, 0.6, 1),
                    Spatter(0.65, 0.1, 0.5, 0.68, 0.6, 1)],
        "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
        "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
        "saturate": [Saturate(0.3, 0), Saturate(0.1, 0), Saturate(1.5, 0), Saturate(2, 0.1), Saturate(2.5, 0.2)],
        "jpeg_compression": [80, 65, 58, 50, 40],
        "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
        "elastic_transform": _scaled(32, [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                                          (0.1, 0.03, 0.03)]),
    },
    "tiny": {
        "gaussian_noise": [0.04, 0.08, 0.12, 0.15, 0.18],
        "shot_noise": [250, 100, 50, 30, 15],
        "impulse_noise": [0.01, 0.02, 0.05, 0.08, 0.14],
        "speckle_noise": [0.15, 0.2, 0.25, 0.3, 0.35],
        "gaussian_blur": [0.5, 0.75, 1, 1.25, 1.5],
        "glass_blur": [GlassBlur(0.1, 1, 1), GlassBlur(0.5, 1, 1), GlassBlur(0.6, 1, 2), GlassBlur(0.7, 2, 1),
                       GlassBlur(0.9, 2, 2)],
        "defocus_blur": [DefocusBlur(0.5, 0.6), DefocusBlur(1, 0.1), DefocusBlur(1.5, 0.1), DefocusBlur(2.5, 0.01),
                         DefocusBlur(3, 0.1)],
        "motion_blur": [MotionBlur(10, 1), MotionBlur(10, 1.5), MotionBlur(10, 2), MotionBlur(10, 2.5),
                        MotionBlur(12, 3)],
        "zoom_blur": _zoom((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)),
        "fog": [Fog(0.4, 3), Fog(0.7, 3), Fog(1, 2.5), Fog(1.5, 2), Fog(2, 1.75)],
        "frost": [Frost(1, 0.3, 0.3), Frost(0.9, 0.4, 0.3), Frost(0.8, 0.45, 0.3), Frost(0.75, 0.5, 0.3),
                  Frost(0.7, 0.55, 0.3)],
        "snow": [Snow(0.1, 0.2, 1, 0.6, 8, 3, 0.8), Snow(0.1, 0.2, 1, 0.5, 10, 4, 0.8),
                 Snow(0.15, 0.3, 1.75, 0.55, 10, 4, 0.7), Snow(0.25, 0.3, 2.25, 0.6, 12, 6, 0.65),
                 Snow(0.3, 0.3, 1.25, 0.65, 14, 12, 0.6)],
        "spatter": [Spatter(0.62, 0.1, 0.7, 0.7, 0.6, 0), Spatter(0.65, 0.1, 0.8, 0.7, 0.6, 0),
                    Spatter(0.65, 0.3, 1, 0.69, 0.6, 0), Spatter(0.65, 0.1, 0.7, 0.68, 0.6, 1),
                    Spatter(0.65, 0.1, 0.5, 0.67, 0.6, 1)],
        "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],
        "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],
        "saturate": [Saturate(0.3, 0), Saturate(0.1, 0), Saturate(2, 0), Saturate(5, 0.1), Saturate(30, 0.2)],
        "jpeg_compression": [65, 58, 50, 40, 25],
        "pixelate": [0.9, 0.8, 0.7, 0.6, 0.5],
        "elastic_transform": _scaled(64, [(0, 0, 0.08), (0.05, 0.3, 0.06), (0.1, 0.08, 0.06), (0.1, 0.03, 0.03),
                                          (0.16, 0.03, 0.02)]),
    },
    "imagenet": {
        "gaussian_noise": [0.08, 0.12, 0.18, 0.26, 0.38],
        "shot_noise": [60, 25, 12, 5, 3],
        "impulse_noise": [0.03, 0.06, 0.09, 0.17, 0.27],
        "speckle_noise": [0.15, 0.2, 0.35, 0.45, 0.6],
        "gaussian_blur": [1, 2, 3, 4, 6],
        "glass_blur": [GlassBlur(0.7, 1, 2), GlassBlur(0.9, 2, 1), GlassBlur(1, 2, 3), GlassBlur(1.1, 3, 2),
                       GlassBlur(1.5, 4, 2)],
        "defocus_blur": [DefocusBlur(3, 0.1), DefocusBlur(4, 0.5), DefocusBlur(6, 0.5), DefocusBlur(8, 0.5),
                         DefocusBlur(10, 0.5)],
        "motion_blur": [MotionBlur(10, 3), MotionBlur(15, 5), MotionBlur(15, 8), MotionBlur(15, 12),
                        MotionBlur(20, 15)],
        "zoom_blur": _zoom((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)),
        "fog": [Fog(1.5, 2), Fog(2, 2), Fog(2.5, 1.7), Fog(2.5, 1.5), Fog(3, 1.4)],
        "frost": [Frost(1, 0.4, 1.0), Frost(0.8, 0.6, 1.0), Frost(0.7, 0.7, 1.0), Frost(0.65, 0.7, 1.0),
                  Frost(0.6, 0.75, 1.0)],
        "snow": [Snow(0.1, 0.3, 3, 0.5, 10, 4, 0.8), Snow(0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                 Snow(0.55, 0.3, 4, 0.9, 12, 8, 0.7), Snow(0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                 Snow(0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)],
        "spatter": [Spatter(0.65, 0.3, 4, 0.69, 0.6, 0), Spatter(0.65, 0.3, 3, 0.68, 0.6, 0),
                    Spatter(0.65, 0.3, 2, 0.68, 0.5, 0), Spatter(0.65, 0.3, 1, 0.65, 1.5, 1),
                    Spatter(0.67, 0.4, 1, 0.65, 1.5, 1)],
        "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],
        "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],
        "saturate": [Saturate(0.3, 0), Saturate(0.1, 0), Saturate(2, 0), Saturate(5, 0.1), Saturate(20, 0.2)],
        "jpeg_compression": [25, 18, 15, 10, 7],
        "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],
        # "244 should have been 224, but ultimately nothing is incorrect" (make_imagenet_c.py)
        "elastic_transform": _scaled(244, [(2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02),
                                           (0.12, 0.01, 0.02)]),
    },
}

# Frost textures are shrunk before the random crop: cv2.resize(fx=fy=...) in the CIFAR and Tiny scripts.
FROST_SCALE = {profile: table["frost"][0].texture_scale for profile, table in TABLES.items()}


def params(profile: str, name, severity: int):
    """The reference parameters `c` of corruption `name` (a name or the registered function) at `severity`
    (1..5) in `profile`: a number, a tuple of zoom factors or a named record."""
    return TABLES[profile][getattr(name, "__name__", name)][severity - 1]


def resolve_profile(height: int, width: int) -> str:
    """`auto` profile for an image size: <= 48 px cifar, <= 128 px tiny, else imagenet (by the longer side)."""
    side = max(int(height), int(width))
    if side <= 48:
        return "cifar"
    if side <= 128:
        return "tiny"
    return "imagenet"
