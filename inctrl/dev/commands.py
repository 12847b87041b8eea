"""Development-only commands: the demo and the stream, reliability, views and fusion benches (they use pipelines/ and the
local stack, so they live above services/ and stay out of the container image)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

# The model benches' shared arguments (inctrl/dev/bench_inputs.py): one checkpoint on one dataset's prompt draws.
Checkpoint = Annotated[Path, typer.Option(help="A trained checkpoint folder (inctrl train).")]
DataRoot = Annotated[Path, typer.Option("--data", help="Dataset root, e.g. runs/quality/<run>/synth-train, .../synth or .../textiles.")]
DatasetReader = Annotated[str, typer.Option("--dataset", help="Dataset reader: mvtec (the synthetic sets) or folder (the textiles).")]
Categories = Annotated[str | None, typer.Option(help="Comma-separated categories (default: all).")]
Shots = Annotated[int, typer.Option(help="K references per draw.")]
Draws = Annotated[int, typer.Option("--seeds", help="Prompt draws per category.")]


def _split_categories(categories: str | None) -> list[str] | None:
    return [c.strip() for c in categories.split(",")] if categories else None


def quiet_service_logs() -> None:
    """The demo and the stream bench run the consumer and the Serve driver in this process: their per-batch and
    per-deployment INFO records would bury the progress and the summary. WARNING unless -v asked for DEBUG."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("services").setLevel(logging.WARNING)
        # Importing ray.serve sets its own non-propagating logger to INFO, over what configure_logging set.
        import ray.serve  # noqa: F401

        logging.getLogger("ray.serve").setLevel(logging.WARNING)


def demo_command(
    work_dir: Path = typer.Option(Path(".demo"), "--work-dir", help="Folder for the stack, data, checkpoint and Ray."),
    backbone: str | None = typer.Option(None, help="Backbone (default: ViT-B-16-plus-240 if its weights load, else efficientnet-lite0)."),
    frames_per_line: int = typer.Option(16, help="Frames each of the three lines sends."),
) -> None:
    """End to end on a fresh machine: stack, synthetic data, training, registration, streaming, summary."""
    from inctrl.dev.demo import DemoOptions, run_demo

    quiet_service_logs()
    summary = run_demo(DemoOptions(work_dir=work_dir, backbone=backbone, frames_per_line=frames_per_line))
    typer.echo(summary.render())


def bench_stream_command(
    backbone: str = typer.Option("tiny", help="Backbone: tiny, efficientnet-lite0 or an OpenCLIP name."),
    frames: int = typer.Option(96, help="Frames to send through Kafka."),
    batch_size: int = typer.Option(8, help="Serve max batch size, also the in-process batch size."),
    domains: int = typer.Option(3, help="Domains the frames are spread over."),
    work_dir: Path = typer.Option(Path(".bench"), "--work-dir", help="Folder for the stack, checkpoint and Ray."),
) -> None:
    """Frames/s and latency percentiles through Kafka -> Serve -> S3 against the in-process detector."""
    from inctrl.dev.stream_bench import StreamBenchOptions, run_stream_bench

    quiet_service_logs()
    report = run_stream_bench(
        StreamBenchOptions(backbone=backbone, frames=frames, batch_size=batch_size, domains=domains, work_dir=work_dir)
    )
    typer.echo(report.render())


def bench_views_command(
    checkpoint: Checkpoint,
    data: DataRoot,
    dataset: DatasetReader = "mvtec",
    categories: Categories = None,
    shots: Shots = 4,
    seeds: Draws = 3,
    target_fpr: float = typer.Option(0.01, help="Target false-positive rate of the calibrated threshold."),
    components: bool = typer.Option(
        False, help="Instead: each fused component's z-score on normal frames, held-out references and each kind of view."
    ),
) -> None:
    """Served AUROC with and without the banks' exposure views, and the calibrated FPR / recall with and
    without calibration's nuisance views, per category (inctrl/dev/views_bench.py); with --components, where
    each kind of view puts each component (inctrl/dev/view_components.py)."""
    from inctrl.dev.view_components import run_view_components
    from inctrl.dev.views_bench import run_views_bench

    chosen = _split_categories(categories)
    if components:
        typer.echo(run_view_components(checkpoint, dataset, data, chosen, shots, seeds))
    else:
        typer.echo(run_views_bench(checkpoint, dataset, data, chosen, shots, seeds, target_fpr))


def bench_fusion_command(
    checkpoint: Checkpoint,
    data: DataRoot,
    dataset: DatasetReader = "mvtec",
    categories: Categories = None,
    shots: Shots = 4,
    seeds: Draws = 3,
    shifted: bool = typer.Option(False, help="Also score each category's normals against global-shift copies of them."),
    sweep: bool = typer.Option(
        False, help="Instead of the candidates: a grid of fusions, printed as the frontier of worst-row loss against mean gain."
    ),
) -> None:
    """Image AUROC / TPR@1%FPR of candidate fusions on the same components, per category (inctrl/dev/fusion_bench.py);
    with --sweep, what mean gain over max M_x each worst-row loss can buy (inctrl/dev/fusion_sweep.py)."""
    from inctrl.dev.fusion_bench import run_fusion_bench
    from inctrl.dev.fusion_sweep import run_fusion_sweep

    run = run_fusion_sweep if sweep else run_fusion_bench
    typer.echo(run(checkpoint, dataset, data, _split_categories(categories), shots, seeds, shifted))


def add_dev_commands(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Mount `inctrl demo`, `inctrl bench stream`, `inctrl bench reliability`, `inctrl bench views` and `inctrl bench fusion` on the root CLI."""
    from inctrl.dev.reliability.bench import bench_reliability_command

    app.command("demo")(demo_command)
    bench_app.command("stream")(bench_stream_command)
    bench_app.command("reliability")(bench_reliability_command)
    bench_app.command("views")(bench_views_command)
    bench_app.command("fusion")(bench_fusion_command)
