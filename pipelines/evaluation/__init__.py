"""Evaluation harness: InCTRLv2 and two training-free baselines on the same prompts; tables and plots."""

from pipelines.evaluation.harness import EvaluationError, EvaluationReport, Metrics, RunResult, SummaryRow, evaluate
from pipelines.evaluation.methods import ALL_METHODS, INCTRL, PATCH_NN, ZERO_SHOT_TEXT
from pipelines.evaluation.report import markdown, summary_table, write_outputs
from pipelines.evaluation.runner import EvaluationRequest, load_detector, run_evaluation

__all__ = [
    "ALL_METHODS",
    "INCTRL",
    "PATCH_NN",
    "ZERO_SHOT_TEXT",
    "EvaluationError",
    "EvaluationReport",
    "EvaluationRequest",
    "Metrics",
    "RunResult",
    "SummaryRow",
    "evaluate",
    "load_detector",
    "markdown",
    "run_evaluation",
    "summary_table",
    "write_outputs",
]
