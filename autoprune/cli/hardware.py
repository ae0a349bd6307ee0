"""``autoprune targets``, ``autoprune latency`` and ``autoprune profile measure|export|run|import|validate``."""

from __future__ import annotations

import contextlib
import json
import shlex
from pathlib import Path

import typer
from rich.markup import escape

from autoprune.cli.common import err_console, out_console, parse_input_shape, print_json
from autoprune.errors import UserError

profile_app = typer.Typer(help="Measure, split-measure (export/run/import) and validate latency profiles.",
                          no_args_is_help=True)


@contextlib.contextmanager
def _progress(label: str):
    """A rich progress bar on stderr; yields the ``(done, total)`` callback the library takes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=False) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _space(model: str, input_shape: str, alignment: int, space_file: Path | None, num_classes: int):
    from autoprune.models import create_model
    from autoprune.pruning.space import generate_space

    space = generate_space(create_model(model, num_classes), model, parse_input_shape(input_shape), alignment)
    return space.with_overrides(space_file) if space_file else space


# --- targets / latency ---------------------------------------------------------------------------------------------
def targets(json_output: bool = typer.Option(False, "--json", help="print the targets as JSON.")) -> None:
    """List hardware targets (shipped and your own profiles) with how their latencies were obtained."""
    from autoprune.hardware import available_targets

    found = available_targets()
    if json_output:
        print_json([vars(t) for t in found])
        return
    from rich.table import Table

    table = Table("target", "aliases", "runtime", "provenance", "device / source / validation")
    for t in found:
        detail = f"{t.device}\n[dim]{t.source}[/dim]" + (f"\n{t.validation}" if t.validation else "")
        table.add_row(t.name, ", ".join(t.aliases), f"{t.runtime} {t.precision}", t.provenance, detail)
    out_console.print(table)


def _plan_from_checkpoint(path: Path, space):
    """Plan whose shapes match a pruned checkpoint: each group's kept channels read off its layers' weights."""
    import torch

    from autoprune.plan import PruningPlan

    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist; pass the path of a saved state dict")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means an unreadable file
        raise UserError(f"checkpoint {str(path)!r} could not be read as a state dict: {err}") from err
    if isinstance(obj, dict) and isinstance(obj.get("plan"), dict):
        return PruningPlan.from_dict(obj["plan"])
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {str(path)!r} holds no state dict")
    # a droppable block none of whose tensors the checkpoint holds was dropped (it is an identity now)
    dropped = tuple(b.name for b in space.blocks if not any(k.startswith(b.name + ".") for k in state))
    gone = space.dropped_groups(PruningPlan(drop_blocks=dropped))
    keep = {}
    for group in space.groups:
        if group.name in gone:
            continue
        weight = state.get(f"{group.name}.weight")
        if weight is None:
            raise UserError(f"checkpoint {str(path)!r} has no tensor {group.name + '.weight'!r}: "
                            f"is it a {space.model}?")
        keep[group.name] = min(1.0, weight.shape[0] / group.channels)
    return PruningPlan(keep_ratios=keep, alignment=1, drop_blocks=dropped)


def latency(
    model: str = typer.Option(..., "--model", help="torchvision model name."),
    target: str = typer.Option("cpu", "--target", help="profile alias, name or path (see `autoprune targets`)."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="pruned state dict: shapes are read from it."),
    plan_file: Path = typer.Option(None, "--plan", help="plan JSON/YAML file (keep_ratios, alignment, ...)."),
    input_shape: str = typer.Option("1x3x32x32", "--input-shape", help="NxCxHxW, batch 1."),
    num_classes: int = typer.Option(10, "--num-classes", help="classifier outputs."),
    measure: bool = typer.Option(False, "--measure", help="also measure on this machine (onnxruntime CPU)."),
    calibrate: bool = typer.Option(True, "--calibrate/--no-calibrate", help="when the target is this machine, "
                                   "re-fit the calibration here first (seconds, cached); missing layer shapes are "
                                   "measured here either way."),
    json_output: bool = typer.Option(False, "--json", help="print JSON."),
) -> None:
    """Predict a (pruned) model's latency on a target, with provenance and a per-layer breakdown."""
    from autoprune.hardware import load_profile, measure_model_latency, prepare_cost_model
    from autoprune.hardware.profiling import build_pruned
    from autoprune.plan import PruningPlan

    if checkpoint and plan_file:
        raise UserError("pass either --checkpoint or --plan, not both")
    profile = load_profile(target)
    space = _space(model, input_shape, profile.alignment, None, num_classes)
    if plan_file:
        plan = PruningPlan.from_dict(_read_plan(plan_file))
        space.validate_plan(plan)
    elif checkpoint:
        plan = _plan_from_checkpoint(checkpoint, space)
    else:
        plan = PruningPlan()
    with _progress("measuring on this machine") as progress:
        model_ = prepare_cost_model(profile, space, progress, _note, calibrate=calibrate)
    estimate = model_.predict(space, plan)
    measured = None
    if measure:
        measured = measure_model_latency(build_pruned(space, plan), space.input_shape, max(profile.threads, 1))
    if json_output:
        print_json({**estimate.to_dict(), "measured": measured.to_dict() if measured else None})
        return
    from rich.table import Table

    table = Table("layer", "ms", title=f"{model} on {profile.name}")
    for name, ms in estimate.per_layer:
        table.add_row(name, f"{ms:.4f}")
    out_console.print(table)
    here = f", calibrated on this machine {estimate.calibration_date}" if estimate.calibrated_here else ""
    out_console.print(escape(f"predicted: {estimate.latency_ms:.4f} ms [{estimate.provenance}{here}] "
                             f"{estimate.source}"))
    out_console.print(f"size: {estimate.params:,} nonzero conv/linear params, {estimate.size_mb:.3f} MB at "
                      f"{profile.precision}; {estimate.macs / 1e6:.1f} MMACs")
    if estimate.validation:
        out_console.print(f"cost model {estimate.validation.summary()}")
    for note in estimate.notes:
        out_console.print(f"note: {note}")
    if measured:
        delta = (estimate.latency_ms - measured.median_ms) / measured.median_ms * 100
        out_console.print(f"measured here: {measured.median_ms:.4f} ms (prediction {delta:+.1f}%) - "
                          f"{measured.provenance}")
        if profile.runtime != "onnxruntime":
            out_console.print("note: the measurement is this machine's CPU, not the target device")


def _note(text: str) -> None:
    err_console.print(escape(f"note: {text}"))


def _read_plan(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise UserError(f"plan file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())  # JSON is YAML
    except yaml.YAMLError as err:
        raise UserError(f"plan file {str(path)!r} is not valid JSON/YAML: {str(err).splitlines()[0]}") from err
    return data.get("plan", data) if isinstance(data, dict) else data


# --- profile sub-commands ------------------------------------------------------------------------------------------
@profile_app.command("measure")
def profile_measure(
    model: str = typer.Option(..., "--model", help="torchvision model whose layer shapes to measure."),
    out: Path = typer.Option(..., "--out", help="profile file to write (merged into if it exists); timings taken so "
                             "far are kept next to it in OUT.partial.jsonl, and the same command resumes from them."),
    space_file: Path = typer.Option(None, "--space", help="search space file (per-group keep ranges)."),
    backend_name: str = typer.Option("onnxruntime", "--backend", help="onnxruntime | torch | tensorrt."),
    input_shape: str = typer.Option("1x3x32x32", "--input-shape", help="NxCxHxW, batch 1."),
    threads: int = typer.Option(1, "--threads", help="intra-op threads."),
    alignment: int = typer.Option(0, "--alignment", help="channel step (0: the runtime's padding, e.g. 16 for "
                                  "onnxruntime on AVX-512)."),
    max_points: int = typer.Option(13, "--max-points", help="most channel counts per axis (rest interpolated)."),
    warmup: int = typer.Option(20, "--warmup"),
    repeats: int = typer.Option(200, "--repeats"),
    calibration_points: int = typer.Option(30, "--calibration-points", help="whole-model measurements for the per-model calibration (0: none)."),
    num_classes: int = typer.Option(10, "--num-classes"),
    pin_cpu: int = typer.Option(None, "--pin-cpu", help="pin the measuring process to this CPU."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | int8. int8 adds INT8 (static QDQ) entries, "
                                  "calibration and validation to the onnxruntime profile already at --out."),
) -> None:
    """Measure every layer signature the search space can produce on this machine, then calibrate."""
    if precision not in ("fp32", "int8"):
        from autoprune.errors import unknown_choice

        raise unknown_choice("precision", precision, ("fp32", "int8"), "profile measure measures fp32 or int8")
    if precision == "int8":
        _measure_int8(model, out, input_shape, num_classes, max_points, calibration_points, repeats)
        return
    from autoprune.hardware import device_runner as runner
    from autoprune.hardware import save_profile
    from autoprune.hardware.measure import Timing
    from autoprune.hardware.profile import read_profile
    from autoprune.hardware.profiling import (
        calibration_from,
        checkpoint_path,
        default_alignment,
        host_profile,
        measure_table,
        measure_with_calibration,
        signature_grid,
    )

    base = read_profile(out) if out.is_file() else None
    align = alignment or (base.alignment if base else default_alignment(backend_name, "fp32"))
    space = _space(model, input_shape, align, space_file, num_classes)
    sigs = signature_grid(space, align, "fp32", max_points)
    timing = Timing(warmup, repeats)
    checkpoint = runner.Checkpoint(checkpoint_path(out))
    if len(checkpoint):
        err_console.print(f"resuming: {len(checkpoint)} timings already taken are read from {checkpoint.path}")
    if backend_name == "onnxruntime" and calibration_points > 1:
        label = f"measuring {len(sigs)} layer signatures + {calibration_points} whole models"
        with _progress(label) as progress:
            entries, overhead, plans, measured = measure_with_calibration(
                space, sigs, threads, timing, calibration_points, progress, pin_cpu, checkpoint)
        profile = host_profile(out.stem, entries, overhead, backend_name, threads, align, timing, base=base)
        profile = calibration_from(profile, space, plans, measured,
                                   f"fitted on {len(plans)} whole-model onnxruntime measurements (dense + random "
                                   "plans, seed 0) timed in the same interleaved passes as the table",
                                   runner.last_level_cache_mb())
    else:
        with _progress(f"measuring {len(sigs)} layer signatures") as progress:
            entries, overhead = measure_table(sigs, backend_name, threads, timing, progress, pin_cpu, checkpoint)
        profile = host_profile(out.stem, entries, overhead, backend_name, threads, align, timing, base=base)
    save_profile(profile, out)
    checkpoint.remove()
    err_console.print(f"wrote {out}: {len(profile.entries)} entries, alignment {align}, "
                      f"call overhead {overhead:.4f} ms")


def _measure_int8(model: str, out: Path, input_shape: str, num_classes: int, max_points: int,
                  calibration_points: int, repeats: int) -> None:
    from autoprune.errors import UserError
    from autoprune.hardware import save_profile
    from autoprune.hardware.profile import read_profile
    from autoprune.quantize import measure_int8

    if not out.is_file():
        raise UserError(f"--precision int8 adds INT8 entries to an existing onnxruntime profile, and {out} does not "
                        f"exist; measure the FP32 table first: autoprune profile measure --model {model} --out {out}")
    profile = read_profile(out)
    space = _space(model, input_shape, profile.alignment, None, num_classes)
    with _progress("measuring INT8 layer micro-models, calibration and validation plans") as progress:
        updated, validation = measure_int8(profile, space, min(max_points, 7), max(calibration_points, 2),
                                           repeats=repeats, progress=progress)
    save_profile(updated, out)
    count = sum(e.signature.dtype == "int8" for e in updated.entries)
    err_console.print(f"wrote {out}: {count} INT8 entries; {validation.summary()}")


@profile_app.command("export")
def profile_export(
    model: str = typer.Option(..., "--model"),
    out: Path = typer.Option(..., "--out", help="folder to write the bundle to (copy it to the device)."),
    space_file: Path = typer.Option(None, "--space"),
    input_shape: str = typer.Option("1x3x32x32", "--input-shape"),
    precision: str = typer.Option("fp16", "--precision", help="fp32 | fp16 | int8 (TensorRT builds at this)."),
    alignment: int = typer.Option(0, "--alignment", help="0: 8 for fp16, 32 for int8, else 8."),
    threads: int = typer.Option(1, "--threads"),
    max_points: int = typer.Option(13, "--max-points"),
    calibration_points: int = typer.Option(8, "--calibration-points"),
    num_classes: int = typer.Option(10, "--num-classes"),
) -> None:
    """Write ONNX layer micro-models, calibration models and a manifest for `profile run` on a device."""
    from autoprune.hardware.profiling import default_alignment, export_bundle

    align = alignment or default_alignment("tensorrt", precision)
    space = _space(model, input_shape, align, space_file, num_classes)
    with _progress("exporting micro-models") as progress:
        manifest = export_bundle(space, out, align, precision, threads, max_points=max_points,
                                 calibration_plans=max(calibration_points, 1), progress=progress)
    err_console.print(f"wrote {manifest}; on the device run `python3 {out}/run_profile.py {out} --backend "
                      f"tensorrt` (or onnxruntime), then `autoprune profile import {out} --out "
                      f"hardware_profiles/NAME.yaml`")


@profile_app.command("run")
def profile_run(
    folder: Path = typer.Argument(..., help="bundle written by `autoprune profile export`."),
    backend_name: str = typer.Option("onnxruntime", "--backend", help="onnxruntime | tensorrt (trtexec)."),
    threads: int = typer.Option(None, "--threads"),
) -> None:
    """Time an exported bundle on this device (needs only onnxruntime + numpy, or trtexec); an interrupted run
    resumes from DIR/results.partial.jsonl when started again."""
    from autoprune.hardware import device_runner

    if not (folder / device_runner.MANIFEST).is_file():
        raise UserError(f"{str(folder)!r} has no {device_runner.MANIFEST}; write it with `autoprune profile export`")
    if backend_name not in ("onnxruntime", "tensorrt"):
        raise UserError(f"--backend {backend_name!r}: a bundle runs on onnxruntime or tensorrt")
    with _progress("timing micro-models") as progress:
        try:
            path = device_runner.run_manifest(folder, backend_name, threads, progress)
        except RuntimeError as err:
            raise UserError(str(err)) from err
    err_console.print(f"wrote {path}")


@profile_app.command("import")
def profile_import(
    results: Path = typer.Argument(..., help="results.json (or its bundle folder) from `profile run`."),
    out: Path = typer.Option(..., "--out", help="profile file to write (merged into if it exists)."),
    num_classes: int = typer.Option(10, "--num-classes"),
) -> None:
    """Turn a device's timings into a profile (table + per-model calibration)."""
    from autoprune.hardware import save_profile
    from autoprune.hardware.profile import read_profile
    from autoprune.hardware.profiling import import_results

    folder = results if results.is_dir() else results.parent
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read the bundle's manifest.json next to {results}: {err}") from err
    space = _space(manifest["model"], "x".join(map(str, manifest["input_shape"])), manifest["alignment"], None,
                   num_classes)
    base = read_profile(out) if out.is_file() else None
    profile = import_results(results, out.stem, base, space)
    save_profile(profile, out)
    err_console.print(f"wrote {out}: {len(profile.entries)} entries ({profile.provenance_source})")


@profile_app.command("calibrate")
def profile_calibrate(
    target: str = typer.Option("cpu", "--target", help="a measured onnxruntime profile (this machine's target)."),
    model: str = typer.Option(..., "--model"),
    input_shape: str = typer.Option("1x3x32x32", "--input-shape"),
    num_classes: int = typer.Option(10, "--num-classes"),
    plans: int = typer.Option(10, "--plans", help="whole models to time: the dense one and PLANS-1 random plans."),
    budget: float = typer.Option(20.0, "--budget", help="seconds of timing to spend (fewer runs for slow models)."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Re-fit the target's per-model calibration on this machine now (a search does it by itself, once, cached)."""
    from autoprune.hardware import load_profile
    from autoprune.hardware.local import cache_dir, measure_missing, runs_here, self_calibrate
    from autoprune.hardware.signature import model_key

    if plans < 3:
        raise UserError(f"--plans must be at least 3 (a calibration fits a line and checks it), got {plans}")
    if budget <= 0:
        raise UserError(f"--budget must be a positive number of seconds, got {budget:g}")
    profile = load_profile(target)
    if not runs_here(profile):
        raise UserError(f"target {profile.name!r} is not this machine ({profile.runtime} on {profile.device}); "
                        "calibrate a device with `autoprune profile export/run/import`")
    space = _space(model, input_shape, profile.alignment, None, num_classes)
    with _progress("timing whole models on this machine") as progress:
        folder = cache_dir(profile)
        measured = measure_missing(profile, space, progress, _note)
        calibrated = self_calibrate(measured, space, progress, _note, force=True, plans=plans, budget_s=budget,
                                    folder=folder)
    record = calibrated.calibration[model_key(space.model, space.input_shape)]
    if json_output:
        print_json({k: v for k, v in vars(record).items() if v is not None})
        return
    out_console.print(f"{profile.name} for {model_key(space.model, space.input_shape)}: a={record.a:.4g}, "
                      f"b={record.b:.4g} ms, {record.points} points ({record.source})")


NOISY_BELOW_PCT = 90.0  # validate --rounds: below this share of repeatable plans, the machine is too noisy to judge


@profile_app.command("validate")
def profile_validate(
    target: str = typer.Option(..., "--target"),
    model: str = typer.Option(..., "--model"),
    samples: int = typer.Option(50, "--samples", help="random plans to measure end to end."),
    input_shape: str = typer.Option("1x3x32x32", "--input-shape"),
    seed: int = typer.Option(1000, "--seed"),
    num_classes: int = typer.Option(10, "--num-classes"),
    pin_cpu: int = typer.Option(None, "--pin-cpu"),
    rounds: int = typer.Option(1, "--rounds", help="repeat the measurement this many times and score the median; "
                               "from 3 on, also report how repeatable the measurement itself was (the noise "
                               "ceiling)."),
    out: Path = typer.Option(None, "--out", help="profile file to write the validated profile to (default: the "
                             "target's own file, or for a shipped profile a copy in $AUTOPRUNE_HOME/"
                             "hardware_profiles, which then overrides the shipped one by name)."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Measure N random plans here, each next to the dense model, and score the cost model on absolute times and
    on ratios to the dense model (MAPE, ±5/±10%, Kendall tau); store the score in the profile."""
    from autoprune.hardware import load_profile, save_profile
    from autoprune.hardware.profile import writable_path
    from autoprune.hardware.profiling import validate

    if samples < 2:
        raise UserError("--samples must be at least 2 (Kendall tau needs two plans)")
    if rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {rounds}")
    profile = load_profile(target)
    if profile.runtime != "onnxruntime":
        raise UserError(f"target {profile.name!r} runs on {profile.runtime}; `profile validate` measures with "
                        "onnxruntime on this machine, so it can only validate onnxruntime CPU profiles here")
    space = _space(model, input_shape, profile.alignment, None, num_classes)
    command = (f"autoprune profile validate --target {shlex.quote(target)} --model {model} --samples {samples} "
               f"--input-shape {input_shape} --seed {seed}" + (f" --rounds {rounds}" if rounds > 1 else ""))
    label = f"measuring {samples} random plans" + (f" × {rounds} rounds" if rounds > 1 else "")
    with _progress(label) as progress:
        profile, result, points = validate(profile, space, samples, seed, progress, command, pin_cpu, rounds)
    written = save_profile(profile, out if out is not None else writable_path(profile))
    err_console.print(f"wrote {written}")
    if json_output:
        print_json({**vars(result), "points": [{"predicted_ms": p.predicted_ms, "measured_ms": p.measured_ms,
                                                "predicted_ratio": p.predicted_ratio,
                                                "measured_ratio": p.measured_ratio} for p in points]})
        return
    out_console.print(f"{profile.name}: {result.summary()}")
    if result.repeatable_10_pct is not None and result.repeatable_10_pct < NOISY_BELOW_PCT:
        err_console.print(f"warning: this machine repeated its own measurements within ±10% for only "
                          f"{result.repeatable_10_pct:.0f}% of the plans, so the score above is bounded by its noise, "
                          "not by the cost model; stop other work on it (or re-validate at a quieter time)")


def register(app: typer.Typer) -> None:
    app.command("targets")(targets)
    app.command("latency")(latency)
    app.add_typer(profile_app, name="profile")
