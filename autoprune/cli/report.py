"""``autoprune report`` / ``select`` / ``export``: read a finished (or running) search and act on its front."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from autoprune.cli.common import err_console, out_console, print_json
from autoprune.errors import UserError, unknown_choice

FORMATS = ("html", "json", "md")


def _default_out(study: str, storage: Optional[str], fmt: str) -> Path:
    from autoprune.paths import slug
    from autoprune.report.study import RUNS_DIR

    folder = RUNS_DIR / slug(study)
    if storage is None and folder.is_dir():
        return folder / f"report.{fmt}"
    return Path(f"{slug(study)}-report.{fmt}")


def report(
    study: str = typer.Option(..., "--study", help="study name (as `autoprune search` printed it)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL. Default: sqlite:///autoprune-runs/STUDY/study.db."),
    out: Optional[str] = typer.Option(None, "--out", help="file to write ('-' for stdout). Default: autoprune-runs/STUDY/report.FORMAT when that folder exists, else STUDY-report.FORMAT."),
    fmt: str = typer.Option("html", "--format", help="html (self-contained page, works offline) | json | md."),
    class_drop: float = typer.Option(5.0, "--class-drop-threshold", help="flag classes whose accuracy drops more than this many points beyond the candidate's average drop."),
    measure: bool = typer.Option(False, "--measure", help="first re-measure the dense model and every Pareto-optimal candidate on this host (onnxruntime) and record the figures on the study."),
    threads: int = typer.Option(1, "--threads", help="onnxruntime threads for --measure."),
    repeats: int = typer.Option(100, "--repeats", help="timed runs per model for --measure."),
) -> None:
    """Write the Pareto report of a study: plots, candidate table, per-class accuracy, cost-model validation."""
    from autoprune.report.host import measure_trials
    from autoprune.report.record import build_report
    from autoprune.report.render_html import render_html
    from autoprune.report.render_md import render_md
    from autoprune.report.study import load_study

    if fmt not in FORMATS:
        raise unknown_choice("report format", fmt, FORMATS)
    if not (0.0 <= class_drop <= 100.0):
        raise UserError(f"--class-drop-threshold {class_drop} must be in [0, 100] percentage points, e.g. 5")
    if threads < 1 or repeats < 1:
        raise UserError("--threads and --repeats must be at least 1")
    loaded, url = load_study(study, storage)
    record = build_report(loaded, url, class_drop / 100.0)
    if measure and record.pareto:
        err_console.print(f"[dim]measuring the dense model and {len(record.pareto)} candidates on this host[/dim]")
        measure_trials(loaded, [c.trial for c in record.pareto], threads=threads, repeats=repeats)
        record = build_report(loaded, url, class_drop / 100.0)
    if fmt == "json":
        import json

        text = json.dumps(record.to_dict(), indent=2, allow_nan=False) + "\n"
    else:
        text = render_html(record) if fmt == "html" else render_md(record)
    if out == "-":
        sys.stdout.write(text)
        return
    from autoprune.paths import atomic_write_text

    path = Path(out) if out else _default_out(study, storage, fmt)
    atomic_write_text(path, text)
    flagged = sum(len(c.flagged_classes) for c in record.pareto)
    out_console.print(
        f"report of {record.completed_trials} trials ({len(record.pareto)} Pareto-optimal, {flagged} flagged "
        f"class drops) written to {path}"
    )


def _selection_table(selection, dense) -> Table:
    r = selection.record
    table = Table(title=f"selected trial {r.number} ({selection.rule})", title_justify="left")
    for column in ("", "accuracy", f"latency ms ({r.latency_provenance})", "speedup", "params", "MFLOPs"):
        table.add_column(column, justify="right")
    table.add_row("dense", f"{dense.accuracy:.2%}", f"{dense.latency_ms:.4g}", "1.00×", f"{dense.stats.params:,}",
                  f"{dense.stats.mflops:.1f}", style="dim")
    table.add_row(f"trial {r.number}", f"{r.accuracy:.2%}", f"{r.latency_ms:.4g}", f"{r.speedup:.2f}×",
                  f"{r.params:,}", f"{r.mflops:.1f}")
    return table


def select(
    study: str = typer.Option(..., "--study", help="study name."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL. Default: sqlite:///autoprune-runs/STUDY/study.db."),
    max_latency_ms: Optional[float] = typer.Option(None, "--max-latency-ms", help="best accuracy among Pareto-optimal trials at or under this predicted latency."),
    min_accuracy: Optional[str] = typer.Option(None, "--min-accuracy", help="lowest latency among Pareto-optimal trials at or above this accuracy (0.92 or 92%)."),
    knee: bool = typer.Option(False, "--knee", help="the knee of the front: the best accuracy/latency trade-off."),
    trial: Optional[int] = typer.Option(None, "--trial", help="a trial by number (says whether it is Pareto-optimal)."),
    json_output: bool = typer.Option(False, "--json", help="print the selection as JSON on stdout."),
) -> None:
    """Choose one trial of a study's Pareto front by a latency budget, an accuracy floor, the knee, or number."""
    from autoprune.report.select import parse_accuracy, select_trial
    from autoprune.report.study import load_study
    from autoprune.search.records import completed_records
    from autoprune.search.store import read_study_record

    floor = parse_accuracy(min_accuracy) if min_accuracy is not None else None
    loaded, url = load_study(study, storage)
    info = read_study_record(loaded)
    selection = select_trial(
        completed_records(loaded), max_latency_ms=max_latency_ms, min_accuracy=floor, knee=knee, trial=trial,
        latency_label=f"predicted on {info.identity.target}",
    )
    if json_output:
        print_json({"study": study, "storage": url, **selection.to_dict()})
        return
    out_console.print(_selection_table(selection, info.dense))
    out_console.print(selection.reason)
    out_console.print(f"export it: autoprune export --study {shlex.quote(study)}"
                      + (f" --storage {shlex.quote(url)}" if storage else "")
                      + f" --trial {selection.record.number} --out DIR")


def export(
    study: str = typer.Option(..., "--study", help="study name."),
    trial: int = typer.Option(..., "--trial", help="trial number to export (see `autoprune select`)."),
    out: Path = typer.Option(..., "--out", help="folder for model.pt, model.onnx, model_card.json and model_card.md."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL. Default: sqlite:///autoprune-runs/STUDY/study.db."),
    finetune_epochs: int = typer.Option(3, "--finetune-epochs", help="epochs of fine-tuning on the training split."),
    distill: bool = typer.Option(False, "--distill", help="fine-tune with knowledge distillation from the dense model (temperature-scaled KL + label loss)."),
    temperature: float = typer.Option(4.0, "--temperature", help="distillation temperature."),
    distill_weight: float = typer.Option(0.9, "--distill-weight", help="share of the distillation term in the loss, in [0, 1]."),
    lr: float = typer.Option(0.01, "--lr", help="initial learning rate (cosine schedule to 0)."),
    batch_size: int = typer.Option(64, "--batch-size", help="fine-tuning batch size."),
    no_measure: bool = typer.Option(False, "--no-measure", help="skip timing the exported and dense model on this host."),
    threads: int = typer.Option(1, "--threads", help="onnxruntime threads when measuring latency."),
    repeats: int = typer.Option(200, "--repeats", help="timed runs when measuring latency."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="allow the study's --checkpoint to be a fully pickled model; unpickling runs code from the file, so only for files you trust (a search's --trust-checkpoint does not carry over)."),
    device: str = typer.Option("auto", "--device", help="where the fine-tune runs: auto (CUDA when present), cpu, cuda or cuda:N."),
    json_output: bool = typer.Option(False, "--json", help="print the model card as JSON on stdout."),
) -> None:
    """Rebuild a trial's pruned model, fine-tune it, and write TorchScript, ONNX and a model card."""
    from autoprune.report.export import ExportSettings, check_out_dir, export_trial
    from autoprune.report.study import load_study

    settings = ExportSettings(
        finetune_epochs=finetune_epochs, lr=lr, batch_size=batch_size, distill=distill, temperature=temperature,
        distill_weight=distill_weight, measure=not no_measure, threads=threads, repeats=repeats,
        device=device,
    )
    check_out_dir(out)
    loaded, url = load_study(study, storage)
    command = None
    if Path(sys.argv[0]).name == "autoprune":
        from autoprune.search.storage import redact

        command = shlex.join(["autoprune", *(redact(a, storage) if storage else a for a in sys.argv[1:])])
    result = export_trial(
        loaded, trial, out, settings, storage=url, command=command, trust_checkpoint=trust_checkpoint,
        on_stage=lambda text: err_console.print(f"[dim]{text}[/dim]") if not json_output else None,
        on_epoch=(lambda e, n, loss: err_console.print(f"[dim]epoch {e}/{n}: loss {loss:.4f}[/dim]"))
        if not json_output else None,
    )
    card = result.card
    if json_output:
        print_json(card.to_dict())
        return
    p = card.predicted_latency
    host = f"{card.host_latency.mean_ms:.4g} ms measured here" if card.host_latency else "not measured"
    out_console.print(
        f"trial {trial}: accuracy {card.accuracy:.2%} (dense {card.dense_accuracy:.2%}, search {card.search_accuracy:.2%})"
        f" · {p.latency_ms:.4g} ms predicted on {p.target} ({p.provenance}) · {host}"
    )
    out_console.print(f"ONNX vs PyTorch: same top-1 on {card.onnx_check.top1_agreement:.1%} of {card.onnx_check.samples} "
                      f"images, max |Δ logit| {card.onnx_check.max_abs_diff:.2e}")
    for role, path in result.files.items():
        out_console.print(f"{role:12s} {path}")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("select")(select)
    app.command("export")(export)
