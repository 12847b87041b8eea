"""`inctrl data ...`: commands that produce datasets (mounted by the lead as `inctrl data`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from pipelines.synth import DEFECT_KINDS, DOMAINS, generate

app = typer.Typer(no_args_is_help=True)


@app.callback()
def data() -> None:
    """Datasets: synthetic factory data."""


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the MVTec-layout dataset into.")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives identical files.")] = 0,
    domains: Annotated[
        list[str] | None, typer.Option("--domains", help=f"Repeatable; default all: {', '.join(DOMAINS)}.")
    ] = None,
    defect_kinds: Annotated[
        list[str] | None, typer.Option("--defect-kinds", help=f"Repeatable; default all: {', '.join(DEFECT_KINDS)}.")
    ] = None,
    n_train: Annotated[int, typer.Option("--n-train", help="Normal train images per domain.")] = 10,
    n_test_good: Annotated[int, typer.Option("--n-test-good", help="Normal test images per domain.")] = 5,
    n_test_defect: Annotated[
        int, typer.Option("--n-test-defect", help="Defective test images per domain (spread over kinds).")
    ] = 6,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels.")] = 256,
) -> None:
    """Generate synthetic multi-domain factory data with exact defect masks."""
    started = time.perf_counter()
    try:
        meta = generate(
            out,
            seed=seed,
            domains=domains or tuple(DOMAINS),
            n_train=n_train,
            n_test_good=n_test_good,
            n_test_defect=n_test_defect,
            size=size,
            defect_kinds=defect_kinds or tuple(DEFECT_KINDS),
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    images = sum(c.train + c.test_good + sum(c.test_defect.values()) for c in meta.counts.values())
    typer.echo(
        f"wrote {images} images of {len(meta.domains)} domains to {out} in {time.perf_counter() - started:.1f} s"
    )
