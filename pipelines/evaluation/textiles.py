"""The conformal-clip-data textiles (MIT, PyPI `conformal-clip-data`) as two folder-layout categories.

The package ships 1,000 nominal textile images and 500 each with local defects and with global shifts.
Reference prompts are drawn from the first `references` nominals, the normal test images are the last
`normals` nominals, so the two never overlap; each category's defects are the first `defects` images of
its kind. The images are linked (or copied where links are not allowed), never modified.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

KINDS = ("global", "local")


class TextileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    references: int = Field(50, ge=1, le=500, description="Nominals the prompts are drawn from (the first ones).")
    normals: int = Field(500, ge=1, le=500, description="Nominal test images (the last ones).")
    defects: int = Field(500, ge=1, le=500, description="Defect images per kind.")


def _link(source: Path, target: Path) -> None:
    try:
        os.symlink(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_textile_layout(root: Path, spec: TextileSpec) -> list[str]:
    """Write ROOT/textile-{global,local}/{reference,good,defect}; returns the category names."""
    try:
        import conformal_clip_data as data
    except ImportError as exc:
        raise RuntimeError("the textile evaluation needs the package conformal-clip-data (the pipelines extra)") from exc
    nominal = sorted(Path(data.nominal_dir()).iterdir())
    defects = {"global": sorted(Path(data.global_dir()).iterdir()), "local": sorted(Path(data.local_dir()).iterdir())}
    categories = []
    for kind in KINDS:
        base = root / f"textile-{kind}"
        parts = {"reference": nominal[: spec.references], "good": nominal[-spec.normals :], "defect": defects[kind][: spec.defects]}
        for folder, images in parts.items():
            (base / folder).mkdir(parents=True, exist_ok=True)
            for image in images:
                _link(image, base / folder / image.name)
        categories.append(base.name)
    log.info("textile layout written to %s (%s)", root, spec.model_dump())
    return categories
