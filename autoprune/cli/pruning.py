"""``autoprune space`` and ``autoprune prune``: inspect a model's search space; prune once without a search."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Optional

import torch
import typer
import yaml

from autoprune.cli.common import err_console, out_console, parse_input_shape, print_json
from autoprune.errors import UserError
from autoprune.models import create_model, load_checkpoint
from autoprune.paths import atomic_write_bytes, atomic_write_json, atomic_write_text
from autoprune.plan import PruningPlan


def _model(name: str, num_classes: int, checkpoint: Optional[Path]):
    model = create_model(name, num_classes)
    if checkpoint is not None:
        model = load_checkpoint(model, checkpoint)
    return model.eval()


def _read_plan(path: Path) -> PruningPlan:
    if not path.is_file():
        raise UserError(f"plan file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())  # JSON is YAML too
    except yaml.YAMLError as err:
        raise UserError(f"plan file {str(path)!r} is not valid JSON/YAML: {str(err).splitlines()[0]}") from err
    return PruningPlan.from_dict(data if data is not None else {})


def space(
    model: str = typer.Option(..., "--model", help="torchvision model name"),
    input_shape: str = typer.Option("1x3x32x32", "--input-shape", help="NxCxHxW the space is traced at"),
    alignment: int = typer.Option(1, "--alignment", help="round kept channels to this multiple"),
    min_keep: float = typer.Option(0.25, "--min-keep", help="smallest keep ratio a group may get, in (0, 1]"),
    step: float = typer.Option(0.05, "--step", help="keep-ratio step"),
    num_classes: int = typer.Option(10, "--num-classes"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the YAML here instead of stdout"),
) -> None:
    """Write the model's generated search space (groups, sizes, ratio range/step, alignment) as YAML."""
    from autoprune.pruning import generate_space

    if not (0.0 < min_keep <= 1.0) or step <= 0:
        raise UserError(f"--min-keep {min_keep} must lie in (0, 1] and --step {step} must be positive")
    shape = parse_input_shape(input_shape)
    result = generate_space(_model(model, num_classes, None), model, shape, alignment, min_keep, step)
    text = result.to_yaml()
    if out is None:
        out_console.print(text, end="", markup=False, highlight=False)
    else:
        atomic_write_text(out, text)
        err_console.print(f"wrote {len(result.groups)} groups to {out}")


def prune(
    model: str = typer.Option(..., "--model", help="torchvision model name"),
    out: Path = typer.Option(..., "--out", help="output folder for model.pt, model.onnx, metrics.json, plan.json"),
    ratio: Optional[float] = typer.Option(None, "--ratio", help="uniform pruning ratio in [0, 1) for every group"),
    plan_file: Optional[Path] = typer.Option(None, "--plan", help="plan file (JSON/YAML)"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="state dict to start from"),
    data: Optional[str] = typer.Option(None, "--data", help="data spec for accuracy, calibration, fine-tuning"),
    importance: Optional[str] = typer.Option(None, "--importance", help="l1|l2|bn_scale|fpgm|taylor|obd|snip|grasp|random"),
    schedule: str = typer.Option("one-shot", "--schedule", help="one-shot|iterative|agp"),
    finetune_steps: int = typer.Option(0, "--finetune-steps", help="fine-tuning steps (needs --data)"),
    alignment: Optional[int] = typer.Option(None, "--alignment", help="round kept channels to this multiple"),
    input_shape: str = typer.Option("1x3x32x32", "--input-shape"),
    num_classes: int = typer.Option(10, "--num-classes", help="classes when no --data is given"),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON on stdout"),
) -> None:
    """Apply a plan (or one uniform ratio) once and write the pruned model, its ONNX export and metrics."""
    from autoprune.onnx_export import export_onnx
    from autoprune.pruning import generate_space, pruned_metrics
    from autoprune.pruning.importance import needs_calibration
    from autoprune.pruning.schedules import run_schedule

    if (ratio is None) == (plan_file is None):
        raise UserError("give exactly one of --ratio R (uniform pruning ratio) or --plan FILE")
    if ratio is not None and not (0.0 <= ratio < 1.0):
        raise UserError(f"--ratio {ratio} is outside [0, 1); it is the fraction of channels removed")
    if finetune_steps > 0 and data is None:
        raise UserError("--finetune-steps needs --data to fine-tune on")
    shape = parse_input_shape(input_shape)
    bundle = None
    if data is not None:
        from autoprune.data import load_data

        bundle = load_data(data, (shape[2], shape[3]), seed)
        num_classes = bundle.num_classes
    net = _model(model, num_classes, checkpoint)
    if ratio is not None:
        groups = generate_space(net, model, shape).group_names
        plan = PruningPlan.uniform(groups, 1.0 - ratio, importance=importance or "l1", alignment=alignment or 1)
    else:
        plan = _read_plan(plan_file)
        overrides = {k: v for k, v in (("importance", importance), ("alignment", alignment)) if v is not None}
        plan = PruningPlan.from_dict({**plan.to_dict(), **overrides})
    loader = bundle.loader("train", 32, seed) if bundle is not None else None
    calibration = None
    if needs_calibration(plan.importance):
        if loader is None:
            raise UserError(f"importance {plan.importance!r} needs calibration batches: pass --data")
        calibration = [batch for _, batch in zip(range(2), loader)]
    before = _accuracy(net, bundle)
    result = run_schedule(net, plan, schedule, torch.zeros(shape), loader, finetune_steps, seed=seed,
                          calibration=calibration)
    metrics = {
        "model": model, "schedule": schedule, "plan": plan.to_dict(), **pruned_metrics(net, shape),
        "achieved_sparsity": result.sparsity.to_dict(),
    }
    if bundle is not None:
        metrics["accuracy_before"] = before
        metrics["accuracy"] = _accuracy(net, bundle)
    buffer = io.BytesIO()
    torch.save(net, buffer)  # the whole module: a pruned model no longer fits the torchvision class's shapes
    atomic_write_bytes(out / "model.pt", buffer.getvalue())
    export_onnx(net, shape, out / "model.onnx")
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "plan.json", json.dumps(plan.to_dict(), indent=2, sort_keys=True) + "\n")
    if as_json:
        print_json(metrics)
    else:
        acc = f", accuracy {metrics['accuracy']:.3f}" if "accuracy" in metrics else ""
        out_console.print(
            f"pruned {model}: {metrics['params']:,} params ({metrics['nonzero_params']:,} nonzero), "
            f"{metrics['mflops']:.1f} MFLOPs, sparsity {metrics['sparsity']:.3f}{acc} -> {out}"
        )


def _accuracy(net, bundle) -> float | None:
    if bundle is None:
        return None
    from autoprune.training import evaluate

    return evaluate(net, bundle.loader("val", 64, 0), bundle.num_classes).accuracy


def register(app: typer.Typer) -> None:
    app.command("space")(space)
    app.command("prune")(prune)
