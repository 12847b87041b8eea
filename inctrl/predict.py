"""`inctrl predict`: score image files against a folder of normal prompts, write JSON, map PNG, overlay."""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import torch

from model import InCTRLv2
from model.calibration import DEFAULT_TARGET_FPR, calibrate
from services.imaging.decoding import IMAGE_SUFFIXES, decode_image
from services.results.map_regions import map_statistics
from services.results.encoding import encode_map_png, render_overlay_jpeg
from services.imaging.geometry import stack_for_backbone

log = logging.getLogger(__name__)



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


def output_names(images: list[Path]) -> list[str]:
    """A unique, file-system-safe output name per input: its path below the inputs' deepest common folder,
    separators as "__", suffix dropped (a/good/000.png, a/bad/000.png -> good__000, bad__000; inputs of one
    folder keep their stems); a name taken already (the same file twice, a.png and a.jpg) gets -2, -3..."""
    resolved = [path.resolve() for path in images]
    common = Path(os.path.commonpath([path.parent for path in resolved])) if resolved else Path()
    names: list[str] = []
    taken: set[str] = set()
    for path in resolved:
        base = re.sub(r"[^A-Za-z0-9._-]", "_", "__".join(path.relative_to(common).with_suffix("").parts))
        name, copy = base, 1
        while name in taken:
            copy += 1
            name = f"{base}-{copy}"
        taken.add(name)
        names.append(name)
    return names


def predict(
    detector: InCTRLv2,
    prompts: Path,
    class_name: str,
    images: list[Path],
    out: Path,
    threshold: float | None = None,
    target_fpr: float = DEFAULT_TARGET_FPR,
) -> list[dict]:
    """Writes {name}.json, {name}_map.png (16-bit) and {name}_overlay.jpg per image (names: output_names).

    With K >= 2 prompts the thresholds are calibrated from them by leave-one-out (model/calibration.py):
    the image threshold for `target_fpr` (the verdict), the pixel threshold (area, boxes, outline; a given
    `threshold` replaces it) and the overlay's colour range. With one prompt, `threshold` is required.
    """
    references = [read_image(p) for p in image_files(prompts)]
    size = detector.backbone.image_size
    if len(references) >= 2:
        stacked = stack_for_backbone(references, size, "prompt images")
        bank, calibration = calibrate(detector, stacked, class_name, target_fpr=target_fpr)
        image_threshold, pixel_threshold, value_range = calibration.threshold, calibration.pixel_threshold, calibration.map_range
        calibrated: dict | None = {"method": calibration.method, "target_fpr": target_fpr, "threshold": image_threshold,
                                   "pixel_threshold": pixel_threshold, "map_range": list(value_range)}  # fmt: skip
    elif threshold is not None:
        bank = detector.build_prompt_bank(references, class_name)
        image_threshold, pixel_threshold, value_range, calibrated = None, threshold, (0.0, 1.0), None
    else:
        raise ValueError(f"prompt folder {prompts} holds 1 image: calibrating needs at least 2; give --threshold")
    pixel_threshold = pixel_threshold if threshold is None else threshold
    out.mkdir(parents=True, exist_ok=True)
    records = []
    log.info("scoring 0/%d", len(images), extra={"progress": {"task": "scoring", "done": 0, "total": len(images)}})
    for done, (path, name) in enumerate(zip(images, output_names(images)), start=1):
        image = read_image(path)
        result = detector.detect(image[None], bank)
        anomaly_map = result.maps[0].float().cpu().numpy()
        score = float(result.scores[0])
        record = {
            "image": str(path),
            "output": name,
            "class_name": class_name,
            "shots": bank.shots,
            "score": score,
            "threshold": image_threshold,
            "verdict": None if image_threshold is None else ("anomalous" if score >= image_threshold else "normal"),
            "image_score": float(result.image_scores[0]),
            "text_score": None if result.text_scores is None else float(result.text_scores[0]),
            "patch_score": float(result.patch_scores[0]),
            "calibration": calibrated,
            "map": map_statistics(anomaly_map, pixel_threshold, value_range).model_dump(),
        }
        overlay = render_overlay_jpeg(image.numpy().astype(np.float32), anomaly_map, value_range=value_range,
                                      outline_threshold=pixel_threshold)  # fmt: skip
        (out / f"{name}.json").write_text(json.dumps(record, indent=2))
        (out / f"{name}_map.png").write_bytes(encode_map_png(anomaly_map))
        (out / f"{name}_overlay.jpg").write_bytes(overlay)
        log.info("scoring %d/%d", done, len(images), extra={"progress": {"task": "scoring", "done": done, "total": len(images)}})
        log.debug("scored %s: %.4f", path, score)
        records.append(record)
    return records
