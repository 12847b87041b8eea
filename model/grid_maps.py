"""Phi and the optional blur of Eq 17 as one linear operator per axis: patch-grid map -> model-resolution map.

Bilinear upsampling (Phi, model/fusion.py `upsample`) and the Gaussian blur with reflect padding
(`gaussian_blur`) are both linear and act on rows and columns independently, so for a grid map m (h, w)

    blur(Phi(m)) = A_h m A_w^T,    A_h (S, h), A_w (S, w).

The two matrices are built once, by running those same functions on unit impulses (so there is one
implementation of each step), and a call costs two small matmuls instead of an interpolation, a padding and
two convolutions over S x S pixels per image.
"""
from __future__ import annotations

import torch
from torch import nn

from .fusion import gaussian_blur, upsample


def axis_operators(grid: tuple[int, int], size: int, blur_sigma: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(A_h (S, h), A_w (S, w)) in float64 such that A_h m A_w^T = blur(Phi(m)) (blur skipped when sigma is None).

    An impulse on grid row i that is constant along the columns maps to (A_h e_i) (A_w 1)^T, and every row
    of A_w sums to 1 (bilinear weights, a normalised kernel, padding that repeats values), so any output
    column of it is column i of A_h.
    """
    h, w = grid

    def respond(impulses: torch.Tensor) -> torch.Tensor:  # (n, h, w) -> (n, S, S)
        maps = upsample(impulses.reshape(len(impulses), h * w), grid, size)
        return maps if blur_sigma is None else gaussian_blur(maps, blur_sigma)

    eye_h, eye_w = torch.eye(h, dtype=torch.float64), torch.eye(w, dtype=torch.float64)
    rows = respond(eye_h[:, :, None].expand(h, h, w))[:, :, 0].T  # (S, h)
    cols = respond(eye_w[:, None, :].expand(w, h, w))[:, 0, :].T  # (S, w)
    return rows, cols


class GridToImage(nn.Module):
    """(B, N) patch-grid maps -> (B, S, S): Phi, then the blur when a sigma is given."""

    def __init__(self, grid: tuple[int, int], size: int, blur_sigma: float | None):
        super().__init__()
        self.grid = grid
        rows, cols = axis_operators(grid, size, blur_sigma)
        self.register_buffer("rows", rows.float(), persistent=False)  # moves with the detector's .to(device)
        self.register_buffer("cols_t", cols.T.contiguous().float(), persistent=False)

    def forward(self, grid_maps: torch.Tensor) -> torch.Tensor:
        return self.rows @ grid_maps.reshape(-1, *self.grid).to(self.rows.dtype) @ self.cols_t
