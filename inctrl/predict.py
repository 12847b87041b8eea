"""`inctrl predict`: score image files against a folder of normal prompts, write JSON, map PNG, overlay."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from model import InCTRLv2
from services.result_encoding import decode_image, encode_map_png, render_overlay_jpeg

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def read_image(path: Path) -> torch.Tensor:
    """An image file -> (3, H, W) float in [0, 1]; the error names the file."""
    try:
        return torch.from_numpy(decode_image(path.read_bytes()))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc


def image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"prompt folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"prompt folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def predict(detector: InCTRLv2, prompts: Path, class_name: str, images: list[Path], out: Path, threshold: float) -> list[dict]:
    """Writes {stem}.json, {stem}_map.png (16-bit) and {stem}_overlay.jpg per image; returns the JSON records."""
    bank = detector.build_prompt_bank([read_image(p) for p in image_files(prompts)], class_name)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for path in images:
        image = read_image(path)
        result = detector.detect(image[None], bank)
        anomaly_map = result.maps[0].float().cpu().numpy()
        record = {
            "image": str(path),
            "class_name": class_name,
            "shots": bank.shots,
            "score": float(result.scores[0]),
            "image_score": float(result.image_scores[0]),
            "text_score": None if result.text_scores is None else float(result.text_scores[0]),
            "patch_score": float(result.patch_scores[0]),
            "map": {
                "max": float(anomaly_map.max()),
                "mean": float(anomaly_map.mean()),
                "threshold": threshold,
                "area_above_threshold": float((anomaly_map >= threshold).mean()),
            },
        }
        (out / f"{path.stem}.json").write_text(json.dumps(record, indent=2))
        (out / f"{path.stem}_map.png").write_bytes(encode_map_png(anomaly_map))
        (out / f"{path.stem}_overlay.jpg").write_bytes(render_overlay_jpeg(image.numpy().astype(np.float32), anomaly_map))
        log.info("scored %s: %.4f", path, record["score"])
        records.append(record)
    return records
