"""``autoprune models``: what autoprune can build, and what it can prune in each."""

from __future__ import annotations

import typer
from rich.table import Table

from autoprune.cli.common import out_console, print_json
from autoprune.models import available_models
from autoprune.pruning.capabilities import model_capabilities


def _mark(value: bool | None) -> str:
    return "?" if value is None else ("yes" if value else "-")


def models(json_output: bool = typer.Option(False, "--json", help="print one record per model as JSON (name, "
                                            "family, width, heads, nm, depth, note, min_input).")) -> None:
    """List the torchvision classification models autoprune can build and prune, with what it prunes in each
    (width: channels; heads: attention heads; N:M: 2:4 sparsity; depth: whole residual blocks, with --depth)."""
    records = [model_capabilities(name) for name in available_models()]
    if json_output:
        print_json([r.to_dict() for r in records])
        return
    table = Table(box=None, pad_edge=False)
    for column in ("model", "width", "heads", "N:M", "depth", "min input", "note"):
        table.add_column(column)
    for r in records:
        table.add_row(r.name, _mark(r.width), _mark(r.heads), _mark(r.nm), _mark(r.depth), str(r.min_input),
                      r.note)
    out_console.print(table)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
