"""Helpers shared by command modules: parsing CLI values, console output."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

from autoprune.errors import UserError

# Progress and tables go to stderr so that ``--json`` output on stdout stays machine-readable.
err_console = Console(stderr=True)
out_console = Console()


def parse_input_shape(text: str) -> tuple[int, int, int, int]:
    """``"1x3x224x224"`` → ``(1, 3, 224, 224)``; a UserError says what is wrong otherwise."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 4 or any(d <= 0 for d in shape):
        raise UserError(f"--input-shape {text!r} is malformed; expected NxCxHxW with positive integers, e.g. 1x3x32x32")
    if shape[1] != 3:
        raise UserError(f"--input-shape {text!r} has {shape[1]} channels; torchvision models take 3 (e.g. 1x3x32x32)")
    if shape[0] != 1:
        raise UserError(f"--input-shape {text!r}: latency is predicted at batch 1; use 1x{shape[1]}x{shape[2]}x{shape[3]}")
    if min(shape[2:]) < 16:
        raise UserError(f"--input-shape {text!r} is too small: H and W must be at least 16")
    return shape  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
