"""The `inctrl` command line: one root composing the model, pipelines and services commands."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.data_commands import app as data_app
from pipelines.train_commands import evaluate, quality, train
from services.console.commands import console_app
from services.consumer.commands import consume_command, replay_dead_letters_command
from services.index.commands import index_command
from services.producer.commands import produce
from services.registry.commands import domain_app
from services.serving.commands import serve_command

from .progress import configure_logging

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, help="InCTRLv2 few-shot anomaly inspection.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print numbers.")
app.add_typer(data_app, name="data", help="Datasets: synthetic factory data.")
app.add_typer(bench_app, name="bench")
app.add_typer(domain_app, name="domain")
app.add_typer(console_app)  # inctrl console, inctrl review ...
app.command("train")(train)
app.command("evaluate")(evaluate)
app.command("quality")(quality)
app.command("produce", help="Feed a folder of images to the frames topic.")(produce)
app.command("serve")(serve_command)
app.command("consume")(consume_command)
app.command("replay-dead-letters")(replay_dead_letters_command)
app.command("index")(index_command)


def _add_dev_commands() -> None:
    """The demo and the stream/reliability benches live in inctrl/dev/, which a source checkout has and
    the container image does not ship (deploy/Dockerfile.dockerignore)."""
    try:
        from inctrl.dev.commands import add_dev_commands
    except ModuleNotFoundError as error:
        if error.name is None or not error.name.startswith("inctrl.dev"):
            raise
        return
    add_dev_commands(app, bench_app)


_add_dev_commands()


@app.callback()
def _root(
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="-v: debug logging, third-party libraries at INFO; -vv: everything at DEBUG.")
    ] = 0,
) -> None:
    configure_logging(verbose)


@app.command()
def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files to score.")],
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint folder (config.json + heads.safetensors).")],
    prompts: Annotated[Path, typer.Option(help="Folder of K normal reference images of the class.")],
    class_name: Annotated[str, typer.Option(help="Product name used in the text prompts, e.g. 'capsule'.")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    threshold: Annotated[
        Optional[float], typer.Option(help="Pixel threshold for area, boxes and outline; default: calibrated from the prompts.")
    ] = None,
    target_fpr: Annotated[float, typer.Option(help="False-positive rate the calibrated image threshold aims at.")] = 0.01,
    device: Annotated[Optional[str], typer.Option(help="torch device; default cuda when present.")] = None,
) -> None:
    """Score images: per image a JSON (score, verdict, map statistics, defect boxes), the map as 16-bit PNG
    and an overlay JPEG on the calibrated colour range; output names are unique per input path."""
    from model import InCTRLv2

    from .predict import predict as run_predict

    detector = InCTRLv2.load(checkpoint, device=device)
    records = run_predict(detector, prompts, class_name, images, out, threshold, target_fpr)
    for record in records:
        typer.echo(json.dumps({"image": record["image"], "output": record["output"], "score": round(record["score"], 4),
                               "verdict": record["verdict"], "boxes": len(record["map"]["boxes"])}))  # fmt: skip


@bench_app.command("model")
def bench_model(
    backbone: Annotated[str, typer.Option(help='OpenCLIP name, "tiny" or "efficientnet-lite0".')] = "ViT-B-16-plus-240",
    pretrained: Annotated[Optional[str], typer.Option(help='Weights; "none" = random (speed does not depend on them).')] = "none",
    batch: Annotated[list[str], typer.Option(help="Batch sizes, e.g. --batch 1,16.")] = ["1", "16"],
    shots: Annotated[list[str], typer.Option(help="Prompt counts K, e.g. --shots 1,4,16,64.")] = ["1", "4"],
    nn_backend: Annotated[str, typer.Option(help='Nearest-patch search: "torch" or "faiss".')] = "torch",
    iters: Annotated[int, typer.Option(min=1, help="Timed iterations per configuration.")] = 3,
    device: Annotated[Optional[str], typer.Option(help="torch device; default cuda when present.")] = None,
    json_out: Annotated[Optional[Path], typer.Option(help="Also write the rows as JSON here.")] = None,
) -> None:
    """Images/s and peak memory: bare backbone forward vs the full detector."""
    from model import InCTRLv2Config
    from pipelines.model_bench import format_table, run_model_bench
    from pipelines.train_commands import parse_integers

    weights = None if pretrained in (None, "none") else pretrained
    config = InCTRLv2Config(backbone=backbone, pretrained=weights, nn_backend=nn_backend)
    rows = run_model_bench(config, parse_integers(batch, "--batch"), parse_integers(shots, "--shots"), iters=iters, device=device)
    typer.echo(f"backbone {backbone} ({weights or 'random weights'}), search {nn_backend}, device {device or 'auto'}")
    typer.echo(format_table(rows))
    if json_out:
        json_out.write_text(json.dumps([r.as_dict() for r in rows], indent=2))


def main() -> None:
    """Entry point: expected failures (bad input, missing files or weights) print one line, exit 2."""
    from model import CheckpointError, InvalidImageError, PromptBankError, WeightsUnavailableError

    try:
        app()
    except (CheckpointError, InvalidImageError, PromptBankError, WeightsUnavailableError, FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
