"""Synthetic multi-domain factory data with exact defect masks, in the MVTec AD layout."""

from pipelines.synth.defects import DEFECT_KINDS, apply_defect
from pipelines.synth.domains import DOMAINS, Rendering
from pipelines.synth.generator import GENERATOR_VERSION, SynthMeta, defect_example, generate, render_normal

__all__ = [
    "DEFECT_KINDS",
    "DOMAINS",
    "GENERATOR_VERSION",
    "Rendering",
    "SynthMeta",
    "apply_defect",
    "defect_example",
    "generate",
    "render_normal",
]
