"""Defect kinds applied to a defect-free rendering, each returning the exact pixel mask.

Every defect only writes inside a region it chooses; the mask is then the set of pixels whose 8-bit
value actually changed, so it is exactly the defect (no pixel outside it differs from the clean image).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from pipelines.synth.domains import Rendering, foreign_texture
from pipelines.synth.perlin import fractal_noise

# A defect smaller than this share of the image is redrawn: it would be invisible at CLIP resolution.
MIN_AREA_FRACTION = 0.0015
_MAX_ATTEMPTS = 25


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float [0, 1] image to 8-bit with rounding."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _blob(rendering: Rendering, rng: np.random.Generator, radius: tuple[float, float]) -> np.ndarray:
    """A Perlin-edged blob centred on the product: a soft weight map in [0, 1]."""
    size = rendering.image.shape[0]
    ys, xs = np.nonzero(rendering.foreground)
    pick = int(rng.integers(0, ys.size))
    cy, cx = ys[pick], xs[pick]
    ry, rx = rng.uniform(*radius, size=2) * size
    yy, xx = np.mgrid[0:size, 0:size]
    ellipse = 1.0 - np.hypot((yy - cy) / ry, (xx - cx) / rx)
    edge = fractal_noise((size, size), int(rng.integers(3, 7)), 3, rng) - 0.5
    return np.clip((ellipse + 0.6 * edge) * 4.0, 0.0, 1.0)


def _on_product(weight: np.ndarray, rendering: Rendering) -> np.ndarray:
    return weight * rendering.foreground


def _stroke(size: int, points: np.ndarray, width: float) -> np.ndarray:
    """Soft coverage of a polyline (points in pixel coordinates) of the given width."""
    dense = np.concatenate(
        [np.linspace(a, b, max(2, int(np.hypot(*(b - a))) * 2)) for a, b in zip(points[:-1], points[1:], strict=True)]
    )
    line = np.zeros((size, size), dtype=bool)
    rows, cols = np.round(dense).astype(int).T
    keep = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
    line[rows[keep], cols[keep]] = True
    distance = ndimage.distance_transform_edt(~line)
    return np.clip(width / 2.0 + 0.5 - distance, 0.0, 1.0)


def _start_on_product(rendering: Rendering, rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.nonzero(rendering.foreground)
    pick = int(rng.integers(0, ys.size))
    return np.array([ys[pick], xs[pick]], dtype=float)


def foreign_patch(rendering: Rendering, rng: np.random.Generator) -> np.ndarray:
    """DRAEM-style: a thresholded Perlin region blended with a foreign texture."""
    size = rendering.image.shape[0]
    noise = fractal_noise((size, size), int(rng.integers(2, 5)), 3, rng)
    region = (noise > 0.62) * _blob(rendering, rng, (0.12, 0.3))
    opacity = rng.uniform(0.6, 1.0)
    weight = _on_product((region > 0.5) * opacity, rendering)
    return _blend(rendering.image, foreign_texture(size, rng), weight)


def scratch(rendering: Rendering, rng: np.random.Generator) -> np.ndarray:
    """A thin curved bright or dark line."""
    size = rendering.image.shape[0]
    start = _start_on_product(rendering, rng)
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction)
    length = rng.uniform(0.15, 0.4) * size
    bend = rng.normal(size=2) * 0.15 * size
    t = np.linspace(0.0, 1.0, 12)[:, None]
    points = start + t * direction * length + (4 * t * (1 - t)) * bend
    weight = _on_product(_stroke(size, points, rng.uniform(1.5, 3.0)), rendering)
    colour = np.full(3, 0.95 if rng.random() < 0.5 else 0.05)
    return _blend(rendering.image, colour, 0.85 * weight)


def crack(rendering: Rendering, rng: np.random.Generator) -> np.ndarray:
    """A dark jagged random walk with one branch."""
    size = rendering.image.shape[0]
    start = _start_on_product(rendering, rng)
    heading = rng.uniform(0.0, 2.0 * np.pi)
    steps = rng.uniform(0.015, 0.03) * size
    angles = heading + np.cumsum(rng.normal(0.0, 0.5, size=18))
    trunk = start + np.concatenate([[[0.0, 0.0]], np.cumsum(steps * np.stack([np.sin(angles), np.cos(angles)], 1), 0)])
    fork = trunk[len(trunk) // 2]
    branch_angles = angles[len(angles) // 2] + rng.choice([-1.0, 1.0]) * 0.9 + np.cumsum(rng.normal(0.0, 0.4, size=8))
    branch = fork + np.concatenate(
        [[[0.0, 0.0]], np.cumsum(steps * np.stack([np.sin(branch_angles), np.cos(branch_angles)], 1), 0)]
    )
    width = rng.uniform(1.2, 2.2)
    weight = _on_product(np.maximum(_stroke(size, trunk, width), _stroke(size, branch, width * 0.7)), rendering)
    return _blend(rendering.image, rendering.image * 0.15, weight)


def stain(rendering: Rendering, rng: np.random.Generator) -> np.ndarray:
    """A translucent tinted blob (oil, rust) with soft edges."""
    weight = _on_product(_blob(rendering, rng, (0.06, 0.14)), rendering)
    tint = rng.choice([np.array([0.45, 0.28, 0.1]), np.array([0.15, 0.15, 0.2]), np.array([0.6, 0.5, 0.1])])
    return _blend(rendering.image, rendering.image * tint * 1.2, 0.8 * weight)


def missing_material(rendering: Rendering, rng: np.random.Generator) -> np.ndarray:
    """Part of the product gone: the background (or, for textures, a dark pit) shows through."""
    weight = _on_product(_blob(rendering, rng, (0.05, 0.12)) > 0.5, rendering).astype(float)
    full_frame = bool(rendering.foreground.all())
    behind = rendering.image * 0.2 if full_frame else rendering.background
    return _blend(rendering.image, behind, weight)


def extra_material(rendering: Rendering, rng: np.random.Generator) -> np.ndarray:
    """A lump of foreign material lying on the product, possibly overhanging its edge."""
    size = rendering.image.shape[0]
    weight = (_blob(rendering, rng, (0.04, 0.1)) > 0.5).astype(float)
    shading = fractal_noise((size, size), 4, 3, rng)[:, :, None]
    colour = rng.uniform(0.1, 0.9, size=3) * (0.7 + 0.6 * shading)
    return _blend(rendering.image, colour, weight)


def _blend(image: np.ndarray, colour: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return image * (1.0 - weight[:, :, None]) + colour * weight[:, :, None]


DEFECT_KINDS: dict[str, Callable[[Rendering, np.random.Generator], np.ndarray]] = {
    "foreign_texture": foreign_patch,
    "scratch": scratch,
    "crack": crack,
    "stain": stain,
    "missing_material": missing_material,
    "extra_material": extra_material,
}


def apply_defect(rendering: Rendering, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Apply defect `kind`; return the 8-bit defective image and its exact boolean mask."""
    if kind not in DEFECT_KINDS:
        raise ValueError(f"unknown defect kind {kind!r}; known: {sorted(DEFECT_KINDS)}")
    clean = to_uint8(rendering.image)
    min_area = MIN_AREA_FRACTION * clean.shape[0] * clean.shape[1]
    for _ in range(_MAX_ATTEMPTS):
        defective = to_uint8(DEFECT_KINDS[kind](rendering, rng))
        mask = (defective != clean).any(axis=2)
        if mask.sum() >= min_area:
            return defective, mask
    raise RuntimeError(f"defect {kind!r} changed fewer than {min_area:.0f} pixels in {_MAX_ATTEMPTS} attempts")
