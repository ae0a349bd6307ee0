"""``autoprune search``: run or resume a pruning search and print its Pareto front."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from autoprune.cli.common import err_console, out_console, parse_input_shape, print_json
from autoprune.search import SearchConfig, SearchResult, TrialRecord, run_search


class RichReporter:
    """Renders search progress on stderr: baseline epochs, then trial k/N with the best so far and an ETA."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        # A live bar only redraws on a terminal; in a log file (nohup, CI, a cluster job) one plain line per
        # epoch and per trial is printed instead, so progress shows while the run goes on.
        self.plain = not quiet and not err_console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), console=err_console, transient=False,
            disable=quiet or self.plain,
        )
        self._task = None
        self._baseline_task = None
        self._started = time.perf_counter()
        self._first_done: int | None = None  # trials done, and when, at the first report (the ETA's origin)
        self._first_time = 0.0

    def __enter__(self) -> "RichReporter":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def stage(self, text: str) -> None:
        if not self.quiet:
            self.progress.console.print(f"[dim]{text}[/dim]")

    def warn(self, text: str) -> None:
        self.progress.console.print(f"[yellow]warning:[/yellow] {text}")

    def baseline_epoch(self, epoch: int, epochs: int, loss: float) -> None:
        if self.plain:
            err_console.print(f"dense baseline epoch {epoch}/{epochs}: loss {loss:.3f} "
                              f"({time.perf_counter() - self._started:.0f} s)", highlight=False)
            return
        if self._baseline_task is None:
            self._baseline_task = self.progress.add_task("training dense baseline", total=epochs)
        self.progress.update(
            self._baseline_task, completed=epoch, description=f"training dense baseline (loss {loss:.3f})"
        )

    def trial_done(self, done: int, total: int, front: list[TrialRecord], failed: str | None) -> None:
        if self._task is None:
            self._task = self.progress.add_task("trials", total=total, completed=done)
        if failed:
            self.progress.console.print(f"[yellow]trial failed:[/yellow] {escape(failed)}")
        best = max(front, key=lambda r: r.accuracy, default=None)
        fastest = min(front, key=lambda r: r.latency_ms, default=None)
        text = "trials"
        if best and fastest:
            text = (
                f"trials · front {len(front)} · best acc {best.accuracy:.1%} @ {best.latency_ms:.3g} ms"
                f" · fastest {fastest.latency_ms:.3g} ms @ {fastest.accuracy:.1%}"
            )
        if self.plain:
            front_text = f" · {text.removeprefix('trials · ')}" if best and fastest else ""
            err_console.print(f"trial {done}/{total}{front_text}{self._eta(done, total)}", highlight=False,
                              soft_wrap=True)
            return
        self.progress.update(self._task, completed=done, description=text)

    def _eta(self, done: int, total: int) -> str:
        """Remaining time from the pace of the trials run in this process (resumed ones do not count)."""
        now = time.perf_counter()
        if self._first_done is None:
            self._first_done, self._first_time = done, now
            return ""
        ran = done - self._first_done
        if ran <= 0 or done >= total:
            return ""
        per_trial = (now - self._first_time) / ran
        return f" · eta {per_trial * (total - done):.0f} s"


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f} M"


def pareto_table(result: SearchResult) -> Table:
    base = result.baseline
    provenance = base.latency_provenance
    # The table must fit an 80-column terminal or log without rich truncating cells: provenance goes in the
    # caption, not a header, and adjacent padding collapses. Precision shows only when a candidate is not fp32.
    with_precision = any(r.precision != "fp32" for r in result.pareto)
    table = Table(title=f"Pareto-optimal candidates — study {result.study_name}", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                  caption=f"latency ms: {provenance}" + (f" — {base.latency_source}" if base.latency_source else ""),
                  caption_justify="left")
    rows = [{"trial": "dense", "accuracy": f"{base.accuracy:.2%}", "latency ms": f"{base.latency_ms:.4g}",
             "speedup": "1.00×", "params": _millions(base.stats.params), "MFLOPs": f"{base.stats.mflops:.1f}",
             "precision": "fp32", "strategy": "baseline"}]
    rows += [{"trial": str(r.number), "accuracy": f"{r.accuracy:.2%}", "latency ms": f"{r.latency_ms:.4g}",
              "speedup": f"{r.speedup:.2f}×", "params": _millions(r.params), "MFLOPs": f"{r.mflops:.1f}",
              "precision": r.precision, "strategy": r.strategy} for r in result.pareto]
    columns = [c for c in rows[0] if c != "precision" or with_precision]
    for column in columns:
        table.add_column(column, justify="right" if column != "strategy" else "left", no_wrap=True,
                         min_width=len(column))
    for k, row in enumerate(rows):
        table.add_row(*(row[c] for c in columns), style="dim" if k == 0 else None)
    return table


def search(
    model: str = typer.Option(..., "--model", help="torchvision classification model (see `autoprune models`)."),
    target: str = typer.Option(..., "--target", help="hardware profile name, alias (jetson, cpu) or YAML path (see `autoprune targets`)."),
    data: str = typer.Option("mnist5k", "--data", help="data spec: mnist5k | digits | fashion-mnist[:DIR] | cifar10[:DIR] | cifar100[:DIR] | imagefolder:PATH, optionally ?n=N (a subset)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="state dict of the trained dense model (loaded with weights_only=True); without it a baseline is trained and cached."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="allow a fully pickled model as --checkpoint; unpickling runs code from the file, so only for files you trust."),
    weights: Optional[str] = typer.Option(None, "--weights", help="torchvision weights to start from, e.g. DEFAULT (needs network access once)."),
    strategy: str = typer.Option("tpe", "--strategy", help="search strategy: tpe | nsga2 (evolution) | rl | random | uniform | tp-global (Torch-Pruning global pruning, swept)."),
    trials: int = typer.Option(24, "--trials", help="number of candidates to evaluate (completed trials of a resumed study count)."),
    finetune_steps: int = typer.Option(50, "--finetune-steps", help="SGD steps of fine-tuning per candidate before measuring accuracy."),
    baseline_epochs: int = typer.Option(5, "--baseline-epochs", help="epochs when training the dense baseline."),
    importance: str = typer.Option("l1", "--importance", help="which channels go: l1 | l2 | bn_scale | fpgm | taylor | obd | snip | grasp | random (taylor, obd, snip and grasp use a few gradient batches)."),
    study: Optional[str] = typer.Option(None, "--study", help="study name; an existing study is resumed. Default: MODEL-TARGET-DATA."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL. Default: sqlite:///OUT/study.db. Shown and stored with its password masked; the password may instead come from AUTOPRUNE_STORAGE_PASSWORD (or PGPASSWORD)."),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for the run's files. Default: autoprune-runs/STUDY."),
    input_shape: str = typer.Option("1x3x32x32", "--input-shape", help="model input NxCxHxW; latency is predicted at this shape."),
    seed: int = typer.Option(0, "--seed", help="seed for data split, baseline, sampler and fine-tuning."),
    space: Optional[Path] = typer.Option(None, "--space", help="YAML search space with per-group keep ranges (see `autoprune space`)."),
    max_latency_ms: Optional[float] = typer.Option(None, "--max-latency-ms", help="latency limit (ms, predicted on TARGET); slower candidates are infeasible."),
    min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy", help="accuracy limit as a fraction (0.9 = 90%); less accurate candidates are infeasible."),
    max_params: Optional[int] = typer.Option(None, "--max-params", help="parameter-count limit; larger candidates are infeasible."),
    size_objective: bool = typer.Option(False, "--size-objective", help="minimise model size (MB) as a third objective (tpe, nsga2)."),
    multi_fidelity: bool = typer.Option(True, "--multi-fidelity/--no-multi-fidelity", help="skip or cut short fine-tuning of candidates that cannot reach the Pareto front."),
    backend: str = typer.Option("local", "--backend", help="where candidates are evaluated: local | ray."),
    workers: int = typer.Option(1, "--workers", help="parallel trials (--backend ray)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster: auto | HOST:PORT | ray://HOST:PORT. Default: start a local runtime on 127.0.0.1."),
    cpus_per_trial: float = typer.Option(1.0, "--cpus-per-trial", help="CPUs reserved per Ray worker."),
    gpus_per_trial: float = typer.Option(0.0, "--gpus-per-trial", help="GPUs reserved per Ray worker."),
    worker_retries: int = typer.Option(1, "--worker-retries", help="re-runs of a trial whose worker or driver died mid-trial, before it is failed for good."),
    trial_timeout: Optional[float] = typer.Option(None, "--trial-timeout", help="seconds one candidate's evaluation may take; a slower one fails its trial. Default: no limit."),
    device: str = typer.Option("auto", "--device", help="where the baseline and the candidates train: auto (CUDA when present), cpu, cuda or cuda:N. Latency figures come from the target's profile whatever trains."),
    calibrate: bool = typer.Option(True, "--calibrate/--no-calibrate", help="when the target is this machine, re-fit its profile's calibration on whole-model timings here first (tens of seconds, cached under AUTOPRUNE_HOME)."),
    heartbeat_interval: int = typer.Option(10, "--heartbeat-interval", help="seconds between renewals of the lease on the trials in flight; a trial whose lease is 3 intervals old is taken for dead and re-run by any driver on the study."),
    precision: str = typer.Option("fp32", "--precision", help="precisions to search, comma-separated: fp32 | int8 | fp32,int8 (INT8: static quantization, accuracy measured in onnxruntime)."),
    depth: bool = typer.Option(False, "--depth/--no-depth", help="also search which residual blocks to drop (a drop/keep choice per block `autoprune space` lists; the uniform strategy stays width-only)."),
    distill: bool = typer.Option(False, "--distill", help="fine-tune candidates with knowledge distillation from the dense model."),
    distill_alpha: float = typer.Option(0.9, "--distill-alpha", help="share of the distillation loss in [0, 1] (the rest is cross-entropy)."),
    distill_temperature: float = typer.Option(4.0, "--distill-temperature", help="distillation temperature (> 0; typically 2 to 8)."),
    json_output: bool = typer.Option(False, "--json", help="print the result as JSON on stdout."),
) -> None:
    """Search per-group keep ratios for MODEL on TARGET; print the accuracy-vs-latency Pareto front."""
    config = SearchConfig(
        model=model, target=target, data=data, checkpoint=str(checkpoint) if checkpoint else None,
        trust_checkpoint=trust_checkpoint, weights=weights, strategy=strategy, trials=trials,
        finetune_steps=finetune_steps, baseline_epochs=baseline_epochs, importance=importance, study=study,
        storage=storage, out_dir=str(out) if out else None, input_shape=parse_input_shape(input_shape), seed=seed,
        space_file=str(space) if space else None, max_latency_ms=max_latency_ms, min_accuracy=min_accuracy,
        max_params=max_params, size_objective=size_objective, multi_fidelity=multi_fidelity, backend=backend,
        workers=workers, ray_address=ray_address, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
        worker_retries=worker_retries, precision=precision, distill=distill, distill_alpha=distill_alpha,
        distill_temperature=distill_temperature, trial_timeout=trial_timeout, heartbeat_interval=heartbeat_interval,
        device=device, calibrate=calibrate, depth=depth,
    )
    started = time.perf_counter()
    with RichReporter(quiet=json_output) as reporter:
        result = run_search(config, reporter)
    if json_output:
        print_json(result.to_dict())
        return
    out_console.print(pareto_table(result))
    noise = result.baseline.accuracy_noise_points()
    if noise is not None:
        from autoprune.report.tables import noise_sentence

        out_console.print(noise_sentence(result.baseline.val_size, noise))
    out_console.print(
        f"{result.completed} completed, {result.failed} failed trials in {time.perf_counter() - started:.0f} s"
        + (" (stopped by Ctrl-C; run the same command to resume)" if result.interrupted else "")
    )
    out_console.print(f"study  {result.study_name} in {result.storage}")
    out_console.print(f"files  {result.out_dir}/ (results.json, config.json)")


def register(app: typer.Typer) -> None:
    app.command("search")(search)
