"""Evaluation outputs: results.json (everything), results.md (tables), roc_K<k>.png, maps.png and errors.png
(the worst false positives and missed defects at the calibrated threshold)."""

from __future__ import annotations

from pathlib import Path

from pipelines.evaluation.harness import KIND_METRICS, MEAN_ROW, METRIC_NAMES, Evaluation, EvaluationReport, SummaryRow
from pipelines.evaluation.plots import plot_error_montage, plot_maps, plot_roc_curves

HEADERS = {
    "image_auroc": "image AUROC", "image_ap": "image AP", "tpr_at_1fpr": "TPR@1%FPR", "tpr_at_5fpr": "TPR@5%FPR",
    "pixel_auroc": "pixel AUROC", "aupro": "AUPRO", "calibrated_fpr": "FPR (calibrated)", "calibrated_recall": "recall (calibrated)",
}  # fmt: skip


def _cell(row: SummaryRow, name: str) -> str:
    mean, std = row.mean[name], row.std[name]
    return "n/a" if mean is None or std is None else f"{100 * mean:.1f} ± {100 * std:.1f}"


def summary_table(report: EvaluationReport, category: str = MEAN_ROW) -> str:
    """Markdown table of one category (default: the average over categories), one row per method and K."""
    lines = [
        "| method | K | " + " | ".join(HEADERS[n] for n in METRIC_NAMES) + " |",
        "|---|---|" + "---|" * len(METRIC_NAMES),
    ]
    for row in report.summary:
        if row.category == category:
            lines.append(f"| {row.method} | {row.shots} | " + " | ".join(_cell(row, n) for n in METRIC_NAMES) + " |")
    return "\n".join(lines)


def kind_table(report: EvaluationReport, category: str) -> str:
    """Markdown table per defect kind of one category (largest K), or "" when it has a single kind."""
    shots = max(report.shots)
    rows = [row for row in report.kinds if row.category == category and row.shots == shots]
    if not rows:
        return ""
    lines = [f"| method | defect kind (K={shots}) | n | " + " | ".join(HEADERS[n] for n in KIND_METRICS) + " |",
             "|---|---|---|" + "---|" * len(KIND_METRICS)]  # fmt: skip
    for row in rows:
        cells = " | ".join(f"{100 * row.mean[n]:.1f} ± {100 * row.std[n]:.1f}" for n in KIND_METRICS)
        lines.append(f"| {row.method} | {row.kind} | {row.count} | {cells} |")
    return "\n".join(lines)


def markdown(report: EvaluationReport) -> str:
    parts = [
        f"# Evaluation: {report.dataset} ({report.root})",
        "",
        f"- checkpoint: {report.checkpoint or 'none (training-free baselines only)'}",
        f"- backbone: {report.backbone_id}",
        f"- K: {report.shots}; prompt seeds: {report.seeds} (the same prompts for every method); image size {report.image_size}",
        "- values: percent, mean ± std over seeds; TPR@x%FPR: image-level recall with at most x% of normal test images "
        "flagged; FPR/recall (calibrated): at the image threshold calibrated from the K prompts alone (leave-one-out, "
        "target 1% FPR), as a registered domain is served",
        *[f"- note: {note}" for note in report.notes],
        "",
        f"## Average over {len(report.categories)} categories",
        "",
        summary_table(report),
    ]
    for category in report.categories:
        parts += ["", f"## {category}", "", summary_table(report, category)]
        kinds = kind_table(report, category)
        if kinds:
            parts += ["", kinds]
    return "\n".join(parts) + "\n"


def write_outputs(evaluation: Evaluation, out: Path) -> list[Path]:
    """Write every output file under `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    report = evaluation.report
    written = [out / "results.json", out / "results.md"]
    written[0].write_text(report.model_dump_json(indent=2) + "\n")
    written[1].write_text(markdown(report))
    for k in report.shots:
        curves = {key: value for key, value in evaluation.curves.items() if key[1] == k}
        written.append(plot_roc_curves(curves, report.categories, out / f"roc_K{k}.png", title=f"ROC, K={k}, seed {report.seeds[0]}"))
    if evaluation.examples:
        written.append(plot_maps(evaluation.examples, out / "maps.png"))
    if evaluation.cases:
        written.append(plot_error_montage(evaluation.cases, out / "errors.png"))
    return written
