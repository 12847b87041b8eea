"""Product domains: how a defect-free image of each is rendered, with natural variation.

Textures are real photographs from scikit-image's data module (brick, grass, gravel; CC0), tinted and
randomly cropped. Objects (capsule, washer, pcb, screw) are drawn procedurally with anti-aliased edges;
their layout is fixed per domain, while each image varies in position, rotation, lighting and noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy import ndimage
from skimage import data as skimage_data

from pipelines.synth.perlin import fractal_noise


@dataclass(frozen=True)
class Rendering:
    """A defect-free image (HxWx3 float in [0, 1]), where the product is, and what lies behind it."""

    image: np.ndarray
    foreground: np.ndarray
    background: np.ndarray


@cache
def photo_texture(name: str) -> np.ndarray:
    """A scikit-image grey texture as float in [0, 1] (loaded once per process)."""
    return getattr(skimage_data, name)().astype(np.float64) / 255.0


def _crop(texture: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    side = min(texture.shape)
    if side < size:
        texture = ndimage.zoom(texture, size / side + 1e-6, order=1)
    top = int(rng.integers(0, texture.shape[0] - size + 1))
    left = int(rng.integers(0, texture.shape[1] - size + 1))
    patch = texture[top : top + size, left : left + size]
    return patch[:, ::-1] if rng.random() < 0.5 else patch


def _lighting(size: int, rng: np.random.Generator) -> np.ndarray:
    """Global gain times a gentle linear illumination gradient."""
    gain = rng.uniform(0.85, 1.15)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    ramp = np.linspace(-1.0, 1.0, size)
    gradient = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    return (gain * (1.0 + 0.08 * gradient))[:, :, None]


def _finish(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    lit = image * _lighting(size, rng) + rng.normal(0.0, 0.012, size=image.shape)
    return np.clip(lit, 0.0, 1.0)


def _texture_domain(photo: str, tint: tuple[float, float, float]) -> Callable[[int, np.random.Generator], Rendering]:
    def render(size: int, rng: np.random.Generator) -> Rendering:
        grey = _crop(photo_texture(photo), size, rng)
        image = _finish(grey[:, :, None] * np.asarray(tint)[None, None, :], size, rng)
        return Rendering(image=image, foreground=np.ones((size, size), dtype=bool), background=image)

    return render


def _frame(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Object coordinates (u, v) in [-1, 1] units after a small random shift and rotation."""
    shift = rng.uniform(-0.05, 0.05, size=2)
    theta = np.deg2rad(rng.uniform(-8.0, 8.0))
    axis = np.linspace(-1.0, 1.0, size)
    x, y = axis[None, :] - shift[0], axis[:, None] - shift[1]
    u = np.cos(theta) * x + np.sin(theta) * y
    v = -np.sin(theta) * x + np.cos(theta) * y
    return u, v


def _coverage(signed_distance: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased inside-ness from a signed distance (negative inside) in [-1, 1] units."""
    pixel = 2.0 / size
    return np.clip(0.5 - signed_distance / pixel, 0.0, 1.0)


def _compose(layers: list[tuple[np.ndarray, np.ndarray]], background: np.ndarray) -> np.ndarray:
    image = background.copy()
    for alpha, colour in layers:
        image = image * (1.0 - alpha[:, :, None]) + colour * alpha[:, :, None]
    return image


def _plain_background(size: int, level: float) -> np.ndarray:
    return np.full((size, size, 3), level)


def _object_result(
    layers: list[tuple[np.ndarray, np.ndarray]], background: np.ndarray, size: int, rng: np.random.Generator
) -> Rendering:
    foreground = np.maximum.reduce([alpha for alpha, _ in layers]) > 0.5
    lighting = _lighting(size, rng)
    noise = rng.normal(0.0, 0.012, size=(size, size, 3))
    image = np.clip(_compose(layers, background) * lighting + noise, 0.0, 1.0)
    return Rendering(image=image, foreground=foreground, background=np.clip(background * lighting + noise, 0.0, 1.0))


def render_capsule(size: int, rng: np.random.Generator) -> Rendering:
    """A two-tone pill lying horizontally on a dark tray."""
    u, v = _frame(size, rng)
    half_length, radius = 0.55, 0.22
    distance = np.hypot(np.clip(np.abs(u) - half_length, 0.0, None), v) - radius
    body = _coverage(distance, size)
    shade = (1.0 - 0.35 * (v / radius) ** 2).clip(0.5, 1.0)[:, :, None]
    colour = np.where((u < 0)[:, :, None], np.array([0.78, 0.18, 0.16]), np.array([0.92, 0.9, 0.82])) * shade
    return _object_result([(body, colour)], _plain_background(size, 0.12), size, rng)


def render_washer(size: int, rng: np.random.Generator) -> Rendering:
    """A brushed metal ring on a light table."""
    u, v = _frame(size, rng)
    r = np.hypot(u, v)
    ring = _coverage(np.maximum(r - 0.7, 0.3 - r), size)
    brushed = 0.62 + 0.12 * np.sin(np.arctan2(v, u) * 40.0) * 0.3 + 0.15 * (r - 0.5)
    colour = np.repeat(brushed[:, :, None], 3, axis=2) * np.array([1.0, 0.98, 0.95])
    return _object_result([(ring, colour)], _plain_background(size, 0.82), size, rng)


@cache
def _pcb_layout() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed trace segments, pad centres and chip box of the board (same for every image)."""
    layout_rng = np.random.default_rng(20240611)
    traces = layout_rng.uniform(-0.85, 0.85, size=(14, 3))
    pads = layout_rng.uniform(-0.8, 0.8, size=(10, 2))
    chip = np.array([-0.25, -0.15, 0.25, 0.2])
    return traces, pads, chip


def render_pcb(size: int, rng: np.random.Generator) -> Rendering:
    """A green board with copper traces, round pads and a black chip."""
    u, v = _frame(size, rng)
    traces, pads, chip = _pcb_layout()
    board = _coverage(np.maximum(np.abs(u), np.abs(v)) - 0.92, size)
    trace_distance = np.full(u.shape, np.inf)
    for index, (position, start, end) in enumerate(traces):
        along, across = (u, v) if index % 2 else (v, u)
        low, high = min(start, end), max(start, end)
        gap = np.clip(np.maximum(low - along, along - high), 0.0, None)
        trace_distance = np.minimum(trace_distance, np.hypot(gap, across - position) - 0.018)
    pad_distance = np.min([np.hypot(u - px, v - py) - 0.045 for px, py in pads], axis=0)
    chip_distance = np.maximum(np.maximum(chip[0] - u, u - chip[2]), np.maximum(chip[1] - v, v - chip[3]))
    layers = [
        (board, np.array([0.1, 0.42, 0.2])),
        (_coverage(trace_distance, size) * board, np.array([0.78, 0.58, 0.25])),
        (_coverage(pad_distance, size) * board, np.array([0.85, 0.8, 0.7])),
        (_coverage(chip_distance, size) * board, np.array([0.08, 0.08, 0.09])),
    ]
    return _object_result(layers, _plain_background(size, 0.2), size, rng)


def render_screw(size: int, rng: np.random.Generator) -> Rendering:
    """A threaded steel screw with a round head, lying diagonally."""
    u, v = _frame(size, rng)
    a, b = (u + v) / np.sqrt(2.0), (v - u) / np.sqrt(2.0)
    shaft = np.maximum(np.abs(a - 0.1) - 0.6, np.abs(b) - 0.09)
    head = np.hypot(a + 0.62, b) - 0.2
    body = _coverage(np.minimum(shaft, head), size)
    thread = 0.55 + 0.25 * (np.sin(a * 90.0) > 0) * (shaft < 0)
    colour = np.repeat((thread * (1.0 - 0.3 * (b / 0.2) ** 2).clip(0.4, 1.0))[:, :, None], 3, axis=2)
    return _object_result([(body, colour)], _plain_background(size, 0.9), size, rng)


DOMAINS: dict[str, Callable[[int, np.random.Generator], Rendering]] = {
    "brick": _texture_domain("brick", (0.82, 0.5, 0.4)),
    "grass": _texture_domain("grass", (0.45, 0.75, 0.35)),
    "gravel": _texture_domain("gravel", (0.8, 0.78, 0.74)),
    "capsule": render_capsule,
    "washer": render_washer,
    "pcb": render_pcb,
    "screw": render_screw,
}


def foreign_texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """A texture alien to every domain: a tinted photo crop or coloured fractal noise."""
    if rng.random() < 0.5:
        grey = _crop(photo_texture(str(rng.choice(["camera", "brick", "grass", "gravel"]))), size, rng)
    else:
        grey = fractal_noise((size, size), int(rng.integers(2, 6)), 4, rng)
    colour = rng.uniform(0.2, 1.0, size=3)
    return np.clip(grey[:, :, None] * colour[None, None, :] * 1.3, 0.0, 1.0)
