"""`inctrl train`, `inctrl evaluate` and `inctrl quality` (the lead mounts `app` on the root CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from model import InCTRLv2Config

app = typer.Typer(no_args_is_help=True)


def parse_integers(values: list[str], option: str) -> tuple[int, ...]:
    """Accept "--shots 1 --shots 2" and "--shots 1,2,4"."""
    try:
        return tuple(int(part) for value in values for part in value.split(",") if part.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"{option} takes integers, e.g. {option} 1,2,4; got {values}") from exc


@app.command()
def train(config: Annotated[Path, typer.Option("--config", help="Training config, YAML or JSON (see configs/).")]) -> None:
    """Train the InCTRLv2 heads on Ray Train (frozen backbone)."""
    from pipelines.training import TrainConfigError, TrainingDataError, TrainingError, load_train_config, run_training

    try:
        result = run_training(load_train_config(config))
    except (TrainConfigError, TrainingDataError, TrainingError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"checkpoint: {result.checkpoint}")
    typer.echo("last epoch: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(result.history[-1].items())))


@app.command()
def evaluate(
    checkpoint: Annotated[str, typer.Option("--checkpoint", help='Checkpoint folder or s3:// URI; "none" for baselines only.')],
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset reader name, e.g. mvtec, visa, folder.")],
    root: Annotated[Path, typer.Option("--root", help="Dataset root folder.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for results.md, results.json and PNGs.")],
    shots: Annotated[list[str], typer.Option("--shots", help="K values: --shots 1,2,4 or repeated --shots 1 --shots 2.")] = ["1,2,4"],
    seeds: Annotated[int, typer.Option("--seeds", help="Prompt-sampling seeds 0..N-1.")] = 3,
    categories: Annotated[list[str] | None, typer.Option("--categories", help="Repeatable or comma-separated.")] = None,
    backbone: Annotated[str, typer.Option("--backbone", help="With --checkpoint none: backbone name.")] = "efficientnet-lite0",
    pretrained: Annotated[str, typer.Option("--pretrained", help='With --checkpoint none: weights, "none" = random.')] = "imagenet",
    image_size: Annotated[int, typer.Option("--image-size", help="Images and masks are resized to this square size.")] = 256,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 32,
    allow_test_normals: Annotated[bool, typer.Option("--allow-test-normals", help="Draw prompts from normal test images when a category has no train split.")] = False,
    device: Annotated[str | None, typer.Option("--device")] = None,
) -> None:
    """Evaluate a checkpoint and the training-free baselines on the same prompts."""
    from pipelines.evaluation import EvaluationRequest, run_evaluation, summary_table

    trained = checkpoint.lower() != "none"
    try:
        request = EvaluationRequest(
            dataset=dataset,
            root=root,
            out=out,
            checkpoint=checkpoint if trained else None,
            backbone=None if trained else InCTRLv2Config(backbone=backbone, pretrained=None if pretrained.lower() == "none" else pretrained),
            shots=parse_integers(shots, "--shots"),
            seeds=seeds,
            categories=tuple(c for value in categories or [] for c in value.split(",") if c) or None,
            image_size=image_size,
            batch_size=batch_size,
            allow_test_normals=allow_test_normals,
            device=device,
        )
        evaluation = run_evaluation(request)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(summary_table(evaluation.report))
    typer.echo(f"written to {out}")


@app.command()
def quality(config: Annotated[Path, typer.Option("--config", help="Quality-run config (configs/quality-synthetic.yaml).")]) -> None:
    """Train on some synthetic domains, evaluate on unseen ones, compare with the training-free baselines."""
    from pipelines.evaluation.quality import load_quality_config, run_quality

    try:
        path = run_quality(load_quality_config(config))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(path.read_text())
    typer.echo(f"written to {path}")
