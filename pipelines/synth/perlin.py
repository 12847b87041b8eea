"""Seeded 2-D Perlin (gradient) noise, the region generator DRAEM-style defects use."""

from __future__ import annotations

import numpy as np


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin_noise(shape: tuple[int, int], cells: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Perlin noise of `shape` with `cells` lattice cells per axis, values roughly in [-0.7, 0.7]."""
    height, width = shape
    cells_y, cells_x = cells
    angles = rng.uniform(0.0, 2.0 * np.pi, size=(cells_y + 1, cells_x + 1))
    grad_y, grad_x = np.sin(angles), np.cos(angles)
    y = np.arange(height, dtype=np.float64)[:, None] * cells_y / height
    x = np.arange(width, dtype=np.float64)[None, :] * cells_x / width
    iy, ix = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = y - iy, x - ix

    def corner(dy: int, dx: int) -> np.ndarray:
        return grad_y[iy + dy, ix + dx] * (fy - dy) + grad_x[iy + dy, ix + dx] * (fx - dx)

    wy, wx = _fade(fy), _fade(fx)
    top = corner(0, 0) * (1 - wx) + corner(0, 1) * wx
    bottom = corner(1, 0) * (1 - wx) + corner(1, 1) * wx
    return top * (1 - wy) + bottom * wy


def fractal_noise(shape: tuple[int, int], base_cells: int, octaves: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of Perlin octaves (cells doubling, amplitude halving), normalised to [0, 1]."""
    total = np.zeros(shape)
    for octave in range(octaves):
        cells = base_cells * 2**octave
        total += perlin_noise(shape, (cells, cells), rng) / 2**octave
    span = total.max() - total.min()
    return (total - total.min()) / span if span > 0 else np.zeros(shape)
