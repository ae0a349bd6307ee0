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


DEVICE_HELP = "where training and scoring run: auto (CUDA when present) | cpu | cuda | cuda:N"
WEIGHTS_HELP = "starting weights: torchvision's (DEFAULT, needs network access once) or a local weights file (state dict)"


def _model(name: str, num_classes: int, checkpoint: Optional[Path], weights: Optional[str] = None):
    model = create_model(name, num_classes, weights)
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
        err_console.print(f"wrote {len(result.groups)} groups and {len(result.blocks)} droppable blocks to {out}")


def prune(
    model: str = typer.Option(..., "--model", help="torchvision model name"),
    out: Path = typer.Option(..., "--out", help="output folder for model.pt, model.onnx, metrics.json, plan.json"),
    ratio: Optional[float] = typer.Option(None, "--ratio", help="uniform pruning ratio in [0, 1) for every group"),
    plan_file: Optional[Path] = typer.Option(None, "--plan", help="plan file (JSON/YAML)"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="state dict to start from"),
    data: Optional[str] = typer.Option(None, "--data", help="data spec for accuracy, calibration, fine-tuning"),
    importance: Optional[str] = typer.Option(None, "--importance", help="l1|l2|bn_scale|fpgm|taylor|obd|snip|grasp|random"),
    schedule: str = typer.Option("one-shot", "--schedule", help="one-shot|iterative|agp|lottery|slimming|group-lasso"),
    drop_blocks: Optional[str] = typer.Option(None, "--drop-blocks", help="comma-separated residual blocks to remove whole (e.g. layer1.1,layer3.1), before --ratio/--plan cut channels; `autoprune space` lists them"),
    sparsity: Optional[float] = typer.Option(None, "--sparsity", help="global magnitude sparsity in [0, 1) on top of --ratio/--plan (the fraction of weights zeroed)"),
    rounds: int = typer.Option(3, "--rounds", help="rounds of the iterative, agp and lottery schedules"),
    reg_strength: float = typer.Option(1e-3, "--reg-strength", help="weight of the slimming / group-lasso penalty"),
    finetune_steps: int = typer.Option(0, "--finetune-steps", help="fine-tuning steps (needs --data)"),
    alignment: Optional[int] = typer.Option(None, "--alignment", help="round kept channels to this multiple"),
    input_shape: str = typer.Option("1x3x32x32", "--input-shape"),
    num_classes: int = typer.Option(10, "--num-classes", help="classes when no --data is given"),
    seed: int = typer.Option(0, "--seed"),
    weights: Optional[str] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON on stdout"),
) -> None:
    """Apply a plan (or one uniform ratio) once and write the pruned model, its ONNX export and metrics."""
    from autoprune.onnx_export import export_onnx
    from autoprune.pruning import generate_space, pruned_metrics
    from autoprune.pruning.importance import needs_calibration
    from autoprune.pruning.schedules import run_schedule

    if (ratio is not None and plan_file is not None) or (
            ratio is None and plan_file is None and sparsity is None and drop_blocks is None):
        raise UserError("give exactly one of --ratio R (uniform pruning ratio) or --plan FILE, or only --sparsity S "
                        "and/or --drop-blocks B1,B2")
    if rounds < 1 or reg_strength < 0:
        raise UserError(f"--rounds {rounds} must be at least 1 and --reg-strength {reg_strength} non-negative")
    if ratio is not None and not (0.0 <= ratio < 1.0):
        raise UserError(f"--ratio {ratio} is outside [0, 1); it is the fraction of channels removed")
    if finetune_steps > 0 and data is None:
        raise UserError("--finetune-steps needs --data to fine-tune on")
    from autoprune.devices import resolve_device
    from autoprune.models import preprocessing

    dev = resolve_device(device)
    shape = parse_input_shape(input_shape)
    bundle = None
    if data is not None:
        from autoprune.data import load_data

        bundle = load_data(data, (shape[2], shape[3]), seed, preprocessing(weights))
        num_classes = bundle.num_classes
    net = _model(model, num_classes, checkpoint, weights)
    if ratio is not None:
        groups = generate_space(net, model, shape).group_names
        plan = PruningPlan.uniform(groups, 1.0 - ratio, importance=importance or "l1", alignment=alignment or 1)
    elif plan_file is not None:
        plan = _read_plan(plan_file)
        overrides = {k: v for k, v in (("importance", importance), ("alignment", alignment)) if v is not None}
        plan = PruningPlan.from_dict({**plan.to_dict(), **overrides})
    else:
        plan = PruningPlan(importance=importance or "l1", alignment=alignment or 1)
    plan = _schedule_plan(plan, schedule, sparsity, importance)
    if drop_blocks is not None or plan.drop_blocks:
        plan = _with_drops(plan, drop_blocks, generate_space(net, model, shape))
    loader = bundle.loader("train", 32, seed, device=dev) if bundle is not None else None
    calibration = None
    if needs_calibration(plan.importance):
        if loader is None:
            raise UserError(f"importance {plan.importance!r} needs calibration batches: pass --data")
        calibration = [batch for _, batch in zip(range(2), loader)]
    before = _accuracy(net, bundle, dev)
    result = run_schedule(net, plan, schedule, torch.zeros(shape), loader, finetune_steps, rounds, seed=seed,
                          calibration=calibration, reg_strength=reg_strength, device=dev)
    metrics = {
        "model": model, "schedule": schedule, "plan": plan.to_dict(), **pruned_metrics(net, shape),
        "achieved_sparsity": result.sparsity.to_dict(),
    }
    if bundle is not None:
        metrics["accuracy_before"] = before
        metrics["accuracy"] = _accuracy(net, bundle, dev)
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


def sensitivity(
    model: str = typer.Option(..., "--model", help="torchvision model name"),
    data: str = typer.Option("mnist5k", "--data", help="data spec: mnist5k | digits | fashion-mnist[:DIR] | cifar10[:DIR] | cifar100[:DIR] | imagefolder:PATH, optionally ?n=N (a subset)"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="state dict of the trained dense model; without it the cached baseline is used (trained once if missing)"),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="allow a fully pickled model as --checkpoint (runs code from the file)"),
    input_shape: str = typer.Option("1x3x32x32", "--input-shape", help="NxCxHxW"),
    ratios: str = typer.Option("0.9,0.75,0.5,0.25", "--ratios", help="comma-separated keep ratios in (0, 1) to try per group"),
    importance: str = typer.Option("l1", "--importance", help="criterion that picks the channels removed: l1|l2|bn_scale|fpgm|taylor|obd|snip|grasp|random"),
    groups: Optional[str] = typer.Option(None, "--groups", help="comma-separated groups to analyse (default: all)"),
    bn_batches: int = typer.Option(8, "--bn-batches", help="training batches for BatchNorm recalibration"),
    baseline_epochs: int = typer.Option(5, "--baseline-epochs", help="epochs of the baseline (matches `search` to reuse its cache)"),
    seed: int = typer.Option(0, "--seed"),
    weights: Optional[str] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for sensitivity.json and sensitivity.html (default autoprune-runs/sensitivity-MODEL)"),
    space_out: Optional[Path] = typer.Option(None, "--space-out", help="also write a reviewed search space (YAML for `search --space`) with per-group min_keep from the table"),
    max_drop: float = typer.Option(0.02, "--max-drop", help="accuracy drop a group may cost for --space-out (absolute, 0.02 = 2 points)"),
    plain: bool = typer.Option(False, "--no-recalibration", help="bound --space-out by the drops without BN recalibration"),
    as_json: bool = typer.Option(False, "--json", help="print the table as JSON on stdout"),
) -> None:
    """Prune one group at a time over a keep-ratio grid; record the accuracy drop with and without BN recalibration."""
    from autoprune.baseline import BaselineSpec, get_baseline
    from autoprune.data import load_data
    from autoprune.pruning import generate_space
    from autoprune.pruning.importance import needs_calibration
    from autoprune.pruning.sensitivity import (
        analyze_sensitivity, parse_ratios, select_groups, sensitivity_html, sensitivity_space, space_yaml,
    )
    from autoprune.devices import resolve_device
    from autoprune.models import preprocessing
    from autoprune.pruning.importance import make_importance
    from autoprune.training import TrainRecipe

    grid = parse_ratios(ratios)
    make_importance(importance)  # an unknown criterion fails now, not after training a baseline
    if not (0.0 <= max_drop < 1.0):
        raise UserError(f"--max-drop {max_drop} must lie in [0, 1) (absolute accuracy, 0.02 = two points)")
    if bn_batches < 0 or baseline_epochs < 1:
        raise UserError("--bn-batches must be >= 0 and --baseline-epochs >= 1")
    dev = resolve_device(device)
    shape = parse_input_shape(input_shape)
    bundle = load_data(data, (shape[2], shape[3]), seed, preprocessing(weights))
    selected = [g.strip() for g in groups.split(",") if g.strip()] if groups else None
    # check the group names on an untrained copy: a typo should not cost a baseline training first
    select_groups(generate_space(create_model(model, bundle.num_classes), model, shape), selected)
    spec = BaselineSpec(model, data, shape, bundle.num_classes, seed, TrainRecipe(epochs=baseline_epochs), weights)
    err_console.print(f"preparing the dense baseline of {model} on {data} ({dev})")
    baseline = get_baseline(spec, bundle, checkpoint, trust_checkpoint, device=dev)
    train_loader = bundle.loader("train", 32, seed, device=dev)
    calibration = [b for _, b in zip(range(2), train_loader)] if needs_calibration(importance) else None
    table = analyze_sensitivity(
        baseline.model, model, shape, bundle.loader("val", 256, seed, shuffle=False), train_loader,
        bundle.num_classes, grid, importance, selected, bn_batches, data, calibration,
        on_point=lambda p: err_console.print(
            f"  {p.group:<40} keep {p.keep_ratio:.2f}: drop {100 * p.drop:+6.2f} pts, "
            f"recalibrated {100 * p.drop_recalibrated:+6.2f} pts", markup=False, highlight=False),
        device=dev,
    )
    folder = out if out is not None else Path("autoprune-runs") / f"sensitivity-{model}"
    atomic_write_json(folder / "sensitivity.json", table.to_dict())
    atomic_write_text(folder / "sensitivity.html", sensitivity_html(table))
    err_console.print(f"wrote {folder / 'sensitivity.json'} and {folder / 'sensitivity.html'}")
    if space_out is not None:
        bounded = sensitivity_space(table, generate_space(baseline.model, model, shape), max_drop, not plain)
        atomic_write_text(space_out, space_yaml(bounded, table, max_drop, not plain))
        err_console.print(f"wrote a search space bounded at {max_drop:.3f} drop to {space_out}")
    if as_json:
        print_json(table.to_dict())


def _schedule_plan(plan: PruningPlan, schedule: str, sparsity: float | None, importance: str | None) -> PruningPlan:
    """``plan`` with ``--sparsity`` added, and the criterion a regularized schedule cuts by (recorded as used)."""
    from autoprune.pruning.regularization import REGULARIZERS

    data = plan.to_dict()
    if sparsity is not None:
        data["global_sparsity"] = sparsity
    if schedule in REGULARIZERS:
        wanted = REGULARIZERS[schedule]
        if importance is not None and importance != wanted:
            raise UserError(
                f"--schedule {schedule} cuts by {wanted} (the quantity its penalty shrinks); "
                f"drop --importance {importance} or pass --importance {wanted}"
            )
        data["importance"] = wanted
    return PruningPlan.from_dict(data)


def _with_drops(plan: PruningPlan, drop_blocks: str | None, space) -> PruningPlan:
    """``plan`` also dropping the ``--drop-blocks`` list, checked against the model's droppable blocks."""
    names = [b.strip() for b in (drop_blocks or "").split(",") if b.strip()]
    if drop_blocks is not None and not names:
        raise UserError("--drop-blocks needs block names, e.g. --drop-blocks layer1.1,layer3.1")
    plan = PruningPlan.from_dict({**plan.to_dict(), "drop_blocks": [*plan.drop_blocks, *names]})
    space.validate_plan(plan)
    return plan


def _accuracy(net, bundle, device) -> float | None:
    """Validation accuracy scored on ``device``; ``net`` is back on the CPU afterwards (export works there)."""
    if bundle is None:
        return None
    from autoprune.training import evaluate

    accuracy = evaluate(net, bundle.loader("val", 64, 0, device=device), bundle.num_classes, device).accuracy
    net.to("cpu", memory_format=torch.contiguous_format)
    return accuracy


def register(app: typer.Typer) -> None:
    app.command("space")(space)
    app.command("prune")(prune)
    app.command("sensitivity")(sensitivity)
