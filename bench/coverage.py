"""Coverage: which of `autoprune models` prune (width), run, and export to ONNX with outputs equal to PyTorch.

For every listed model (random init, no download) at the smallest input it runs on (``min_input`` of
:func:`autoprune.pruning.capabilities.model_capabilities`, which this run verifies): build
it, generate its search space, prune every width group by --ratio (uniform), check that every pruned layer has
the shape the space predicts (the cost model's contract), run it, export ONNX and compare onnxruntime with
PyTorch, then zero 2:4 N:M on top and check the pattern holds. Each model runs in its own process under
--timeout, so a slow or crashing model is recorded as such and cannot stall the run. The results are written
after every model; ``--resume`` keeps the models an earlier run of the same --name recorded.

    .venv/bin/python bench/coverage.py [--models resnet18 swin_t] [--timeout 600] [--ratio 0.3] [--resume]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

NUM_CLASSES = 10
RTOL = 1e-3  # onnxruntime vs PyTorch, relative; absolute tolerance is ATOL_SCALE times the largest |logit|
ATOL_SCALE = 1e-4
STAGES = ("build", "space", "prune", "shapes", "forward", "onnx", "nm")


def check_model(name: str, ratio: float, size: int | None) -> dict:
    """Every stage for one model; returns the record (stage reached, timings in s, the failure if any)."""
    import numpy as np
    import torch
    from torch import nn

    from autoprune.errors import UserError
    from autoprune.models import classifier, create_model
    from autoprune.onnx_export import onnx_bytes, ort_predict, ort_session
    from autoprune.plan import PruningPlan
    from autoprune.pruning import apply_plan, apply_sparsity, generate_space
    from autoprune.pruning.attention import HeadAttention
    from autoprune.pruning.capabilities import model_capabilities

    record: dict = {"model": name, "seconds": {}}
    clock = time.perf_counter()

    def stage(label: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        record["seconds"][label] = round(now - clock, 2)
        record["passed"] = label
        clock = now

    try:
        torch.manual_seed(0)
        model = create_model(name, NUM_CLASSES).eval()
        head = classifier(model)
        nn.init.normal_(head.weight, std=0.05)  # some heads start at zero: a constant output would prove nothing
        size = size or model_capabilities(name).min_input
        shape = (1, 3, size, size)
        record.update(input_size=size, dense_params=sum(p.numel() for p in model.parameters()))
        stage("build")
        space = generate_space(model, name, shape)
        record["groups"] = len(space.groups)
        record["head_groups"] = sum(1 for g in space.groups if g.unit > 1)
        stage("space")
        plan = PruningPlan.uniform(space.group_names, 1.0 - ratio)
        apply_plan(model, plan, torch.zeros(shape))
        record["pruned_params"] = sum(p.numel() for p in model.parameters())
        record["attention_blocks"] = sum(1 for m in model.modules() if isinstance(m, HeadAttention))
        stage("prune")
        modules = dict(model.named_modules())
        channels = space.group_channels()
        wrong = [layer.name for layer in space.layers
                 if layer.pruned_shape(plan, channels) != _layer_shape(modules[layer.name])]
        if wrong:
            raise AssertionError(f"{len(wrong)} layers differ from the space's predicted shape, first {wrong[0]!r}")
        stage("shapes")
        x = torch.randn(2, *shape[1:], generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected = model(x).numpy()
        if expected.shape != (2, NUM_CLASSES) or not np.isfinite(expected).all():
            raise AssertionError(f"pruned output has shape {expected.shape} or is not finite")
        stage("forward")
        got = ort_predict(ort_session(onnx_bytes(model, shape)), x.numpy())
        scale = float(np.abs(expected).max())
        record["onnx_max_abs_diff"] = float(np.abs(got - expected).max())
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL_SCALE * scale)
        stage("onnx")
        _, report = apply_sparsity(model, PruningPlan(nm={"*": "2:4"}))
        record["nm_layers"] = sum(1 for layer in report.layers if layer.nm)
        stage("nm")
        record["ok"] = True
    except UserError as err:
        record.update(ok=False, error=f"error: {err}")
    except Exception as err:  # noqa: BLE001 - the record says which stage failed and how
        record.update(ok=False, error=f"{err.__class__.__name__}: {(str(err).splitlines() or [''])[0]}")
    return record


def _layer_shape(module) -> tuple[int, int, int]:
    from torch import nn

    if isinstance(module, nn.Conv2d):
        return module.in_channels, module.out_channels, module.groups
    return module.in_features, module.out_features, 1


def run_one(name: str, args) -> dict:
    """``check_model`` in a child process under ``args.timeout`` seconds."""
    command = [sys.executable, __file__, "--one", name, "--ratio", str(args.ratio)]
    if args.size:
        command += ["--size", str(args.size)]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "ok": False, "error": f"timeout: not done after {args.timeout} s",
                "wall_seconds": args.timeout}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        record = {"model": name, "ok": False, "error": f"crashed: {tail}"}
    else:
        record = json.loads(lines[-1])
    record["wall_seconds"] = round(time.perf_counter() - started, 1)
    return record


def markdown(records: list[dict], args, load: dict, runs: dict) -> str:
    ok = [r for r in records if r.get("ok")]
    load_text = (f"Load: {_common.load_sentence(load['mean'])}." if not runs else
                 "The list was split over runs in parallel processes, each with its own load (1-minute load "
                 f"average, {os.cpu_count()} cores shared with other jobs: timings are pessimistic):")
    lines = [
        f"{len(ok)} of {len(records)} listed models prune every width group by {args.ratio} (uniform), run, "
        f"and export to ONNX with onnxruntime equal to PyTorch (rtol {RTOL}, atol {ATOL_SCALE} x max |logit|), "
        "then take 2:4 N:M; each at the smallest input size it runs on (`autoprune models`, min input; random "
        f"init, {NUM_CLASSES} classes), one process per model, timeout {args.timeout} s. " + load_text,
        "",
        *(f"- run `{name}` ({run['models']} models, started {run['started_utc']} UTC, mean load "
          f"{run['load_average']['mean']}): `{run['command']}`." for name, run in runs.items()),
        "",
        "| model | input | groups | heads | params dense -> pruned (M) | passed | seconds (space / prune / onnx) "
        "| result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        s = r.get("seconds", {})
        params = (f"{r['dense_params'] / 1e6:.1f} -> {r['pruned_params'] / 1e6:.1f}" if "pruned_params" in r
                  else "")
        result = "ok" if r.get("ok") else r.get("error", "").replace("|", "/")[:200]
        lines.append(
            f"| {r['model']} | {r.get('input_size', '')} | {r.get('groups', '')} | {r.get('head_groups', '')} "
            f"| {params} | {r.get('passed', '-')} | {s.get('space', '')} / {s.get('prune', '')} / "
            f"{s.get('onnx', '')} | {result} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", help="a subset of `autoprune models` (default: all)")
    parser.add_argument("--ratio", type=float, default=0.3, help="pruning ratio of every width group")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per model")
    parser.add_argument("--size", type=int, help="input size for every model (default: the smallest that runs)")
    parser.add_argument("--name", default="coverage", help="results file name under bench/results/")
    parser.add_argument("--resume", action="store_true", help="keep the models already in the results file")
    parser.add_argument("--merge", nargs="+", default=[], help="also keep the models recorded under these names "
                        "(runs split over several processes)")
    parser.add_argument("--merge-only", action="store_true", help="run nothing: a model no run recorded is "
                        "listed as not run")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process: one model, JSON on stdout
    args = parser.parse_args()
    if args.one:
        print(json.dumps(check_model(args.one, args.ratio, args.size)))
        return
    from autoprune.models import available_models

    started = time.time()
    env = _common.environment()
    load = _common.LoadSampler()
    previous = _previous(args.name) if args.resume else {}
    runs = {}  # the load and command of each run merged in
    for other in args.merge:
        previous.update(_previous(other))
        data = json.loads((_common.RESULTS / f"{other}.json").read_text())
        runs[other] = {"command": data["environment"]["command"], "load_average": data["load_average"],
                       "started_utc": data["environment"]["started_utc"], "models": data["total"]}
    records = []
    for name in args.models or available_models():
        if name in previous:
            records.append(previous[name])
            continue
        if args.merge_only:
            records.append({"model": name, "ok": False, "error": "not run: the runs ran out of time"})
            continue
        records.append(run_one(name, args))
        r = records[-1]
        print(f"{name}: {'ok' if r.get('ok') else r.get('error')} ({r['wall_seconds']} s)", flush=True)
        _save(args, env, load, started, records, runs)
    _save(args, env, load, started, records, runs)


def _previous(name: str) -> dict[str, dict]:
    path = _common.RESULTS / f"{name}.json"
    return {r["model"]: r for r in json.loads(path.read_text())["models"]} if path.is_file() else {}


def _save(args, env: dict, load, started: float, records: list[dict], runs: dict) -> None:
    """Write the results so far (the load summary covers the run up to now)."""
    samples = list(load.samples)  # not load.summary(): that stops the sampler, and the run goes on
    summary = {"min": round(min(samples), 2), "mean": round(sum(samples) / len(samples), 2),
               "max": round(max(samples), 2), "samples": len(samples), "end_loadavg_1_5_15": _common.loadavg()}
    data = {
        "environment": env, "load_average": summary, "wall_seconds": round(time.time() - started, 1),
        "ratio": args.ratio, "timeout_s": args.timeout,
        "passed": sum(1 for r in records if r.get("ok")), "total": len(records), "models": records,
        "merged_runs": runs,
    }
    _common.write(args.name, data, markdown(records, args, summary, runs))


if __name__ == "__main__":
    main()
