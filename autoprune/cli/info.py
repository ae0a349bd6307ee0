"""``autoprune models``: what autoprune can build."""

from __future__ import annotations

import typer

from autoprune.cli.common import out_console, print_json
from autoprune.models import available_models


def models(json_output: bool = typer.Option(False, "--json", help="print the names as a JSON list.")) -> None:
    """List the torchvision classification models autoprune can build and prune."""
    names = available_models()
    if json_output:
        print_json(names)
        return
    for name in names:
        out_console.print(name)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
