"""Prove the search (issue 17): every method in one run, same baseline, same evaluator, same trial budget, on a task
where pruning costs accuracy (Fashion-MNIST), scored on measured latency and on the official test split.

Methods: ``uniform`` (one keep ratio swept), ``random``, ``tp-global`` (Torch-Pruning global pruning swept over its
ratio), the learned strategies (``tpe``, ``nsga2``, ``rl``) and ``tpe-macs`` (the same TPE with MACs as its cost
objective, FLOPs-guided, its candidates then priced on the target). The target is the host CPU profile, prepared
as `autoprune search` prepares it (re-measured and calibrated on this machine when the profile does not carry
over; cached).

Every candidate of every method is timed on this machine with onnxruntime, each right after the dense model so that
drift cancels in the ratio. Per method and seed: the best candidate by validation accuracy at <= B x the dense
model's measured latency (--pick-by measured; or predicted) for each budget B is pruned again from the dense model,
fine-tuned with the final recipe (`autoprune export`'s, --final-epochs) and scored on the test split. Uniform and
tp-global do not depend on the seed (their sweeps are fixed), so they search once and pair with every seed; with
--final-seeding paired (the default) seed k's picks, theirs included, get their final fine-tune with seed k, so the
paired differences and their spread hold the final fine-tune's own noise too.

    .venv/bin/python bench/search_proof.py [--model resnet18] [--data 'fashion-mnist?n=10000'] [--trials 16]
        [--seeds 0 1 2] [--methods uniform tp-global tpe tpe-macs nsga2 rl random] [--budgets 0.35 0.5]
        [--final-epochs 1] [--finetune-steps 30] [--device cpu]

On a GPU machine: `--data cifar10:DIR --device cuda` (the latency figures stay the host CPU's).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

SEED_FREE = ("uniform", "tp-global")


class MacsCost:
    """The FLOPs-guided baseline's cost model: latency read as MACs, scaled so that the dense model matches the
    target's dense latency (so the same limits and reference points apply). Provenance: estimated."""

    def __init__(self, cost_model, space) -> None:
        from autoprune.plan import PruningPlan

        self.inner = cost_model
        dense = cost_model.predict(space, PruningPlan(alignment=space.alignment))
        self.ms_per_mac = dense.latency_ms / max(1, dense.macs)

    def predict(self, space, plan):
        est = self.inner.predict(space, plan)
        return replace(est, latency_ms=est.macs * self.ms_per_mac, provenance="estimated",
                       source="MACs x (dense latency / dense MACs): FLOPs-guided baseline", per_layer=())


def run_method(name, seed, args, space, evaluator, flops_evaluator, costs, macs_costs, baseline_model,
               limit_ms=None):
    import optuna

    from autoprune.search.backends import LocalExecutor
    from autoprune.search.runner import optimize
    from autoprune.search.strategies import Constraints, create_strategy
    from autoprune.search.store import decode_trials

    flops = name == "tpe-macs"
    limits = Constraints(max_latency_ms=limit_ms)
    strategy = create_strategy("tpe" if flops else name, space, "l1", seed, args.trials, limits,
                               macs_costs if flops else costs)
    strategy.attach_baseline(baseline_model, evaluator.data)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=strategy.sampler())
    t0 = time.time()
    optimize(study, strategy, LocalExecutor(flops_evaluator if flops else evaluator), args.trials, limits,
             multi_fidelity=True)
    seconds = time.time() - t0
    from autoprune.plan import PruningPlan

    cands = []
    for t in decode_trials(study):
        if t.measurement is None:
            continue
        plan = PruningPlan.from_dict(t.measurement.plan)
        cands.append({"trial": t.number, "plan": plan, "val_accuracy": t.measurement.accuracy,
                      "predicted_ms": costs.latency_ms(plan), "fidelity": t.measurement.fidelity,
                      # a plan the study had measured before is recorded again, not fine-tuned again
                      "finetune_steps": t.measurement.finetune_steps if t.reused_from is None else 0})
    return {"method": name, "seed": seed, "budget_ms": limit_ms, "seconds": round(seconds, 1), "candidates": cands,
            "finetune_steps": sum(c["finetune_steps"] for c in cands), "loadavg_at_end": _common.loadavg()}


SHAPE = (1, 3, 32, 32)


def prepare_target(model: str, data_spec: str, baseline_epochs: int, device: str = "cpu", target: str = "cpu"):
    """What every search of a run shares, as `autoprune search` builds it: the data, the cached baseline, its
    search space and the target's cost model prepared on this machine (notes say what was measured or calibrated).
    Returns (data, baseline model, seconds the baseline took, space, cost model, notes)."""
    from autoprune.baseline import BaselineSpec, get_baseline
    from autoprune.data import load_data
    from autoprune.hardware import load_profile, prepare_cost_model
    from autoprune.pruning import generate_space
    from autoprune.training import TrainRecipe

    profile = load_profile(target)
    data = load_data(data_spec, SHAPE[2:], 0)
    spec = BaselineSpec(model, data_spec, SHAPE, data.num_classes, 0, TrainRecipe(epochs=baseline_epochs), None)
    t0 = time.time()
    baseline = get_baseline(spec, data, device=device).model
    baseline_s = time.time() - t0
    space = generate_space(baseline, model, SHAPE, alignment=profile.alignment)
    notes: list[str] = []
    cost_model = prepare_cost_model(profile, space, on_note=notes.append)
    return data, baseline, baseline_s, space, cost_model, notes


def time_passes(items, dense_item, passes: int, repeats: int) -> list[tuple[list[dict], dict]]:
    """``passes`` timings of every item, one pass after the other, each item right after the dense model (3
    rounds of ``repeats`` runs): device_runner.time_ort_paired's (per-item stats, dense stats) per pass."""
    from autoprune.hardware import device_runner

    return [device_runner.time_ort_paired(items, dense_item, 1, warmup=5, repeats=repeats, rounds=3)
            for _ in range(passes)]


def save_runs(path, runs) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{**r, "candidates": [{**c, "plan": c["plan"].to_dict()} for c in r["candidates"]]} for r in runs]
    path.write_text(json.dumps(rows, indent=1) + "\n")


def load_runs(path):
    import json

    from autoprune.plan import PruningPlan

    runs = json.loads(path.read_text())
    for r in runs:
        for c in r["candidates"]:
            c["plan"] = PruningPlan.from_dict(c["plan"])
    return runs


def front_of(cands):
    from autoprune.search.pareto import pareto_front

    points = [(c["val_accuracy"], c["predicted_ms"]) for c in cands]
    return [cands[i] for i in pareto_front(points)]


def pick(cands, budget, by, dense_ms):
    """The best candidate by validation accuracy whose latency — measured (ratio to the dense model timed beside
    it) or predicted — is at most ``budget`` of the dense model's."""
    ratio = (lambda c: c["measured_ratio"]) if by == "measured" else (lambda c: c["predicted_ms"] / dense_ms)
    feasible = [c for c in cands if ratio(c) <= budget]
    return max(feasible, key=lambda c: (c["val_accuracy"], -ratio(c))) if feasible else None


def plan_key(plan) -> str:
    import json

    return json.dumps(plan.to_dict(), sort_keys=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--data", default="fashion-mnist?n=10000")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["uniform", "tp-global", "tpe", "tpe-macs", "nsga2", "rl",
                                                          "random"])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.35, 0.5])
    parser.add_argument("--final-epochs", type=int, default=1)
    parser.add_argument("--finetune-steps", type=int, default=30)
    parser.add_argument("--final-distill", action="store_true",
                        help="the final fine-tune distils from the dense model (export --distill)")
    parser.add_argument("--baseline-epochs", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=60, help="onnxruntime runs per plan (and per dense) per round")
    parser.add_argument("--passes", type=int, default=1,
                        help="time every candidate in this many passes (each beside the dense model) and pick on "
                             "the median ratio: a pick near a budget then lands on its side by less luck")
    parser.add_argument("--pick-by", choices=("measured", "predicted"), default="measured",
                        help="make each budget's pick on the measured latency ratio (default; every candidate is "
                             "timed) or on the cost model's prediction")
    parser.add_argument("--name", default="search_proof")
    parser.add_argument("--budgeted", action="store_true",
                        help="one search per budget with --max-latency-ms at that budget (as a user with a latency "
                             "budget runs it), instead of one unconstrained search per method and seed")
    parser.add_argument("--reuse", metavar="NAME",
                        help="take the seed-free baselines' searches (uniform, tp-global) from results/NAME.runs.json "
                             "instead of running them again (their sweeps depend neither on the seed nor on the "
                             "learned strategies' code; same model, data, baseline, trials and fine-tune steps). "
                             "Scoring still re-measures and fine-tunes every pick side by side in this run")
    parser.add_argument("--final-seeding", choices=("paired", "fixed"), default="paired",
                        help="paired: seed k's picks get their final fine-tune with seed k, the seed-free baselines' "
                             "picks once per seed, and seed k pairs with seed k (the spread holds the fine-tune's "
                             "own noise); fixed: every pick fine-tuned once, with seed 0 (before 2026-12-04)")
    parser.add_argument("--phase", choices=("all", "search", "score"), default="all",
                        help="search: run the searches and keep them in results/NAME.runs.json; score: measure, "
                             "fine-tune and score those (e.g. on a quieter machine); all: both")
    args = parser.parse_args()
    started = time.time()
    env = _common.environment()
    load = _common.LoadSampler()

    import optuna
    import torch

    from autoprune.hardware.profiling import plan_items
    from autoprune.plan import PruningPlan
    from autoprune.pruning.engine import prune
    from autoprune.report.export import ExportSettings, finetune_epochs
    from autoprune.search.evaluator import Evaluator, EvaluatorSettings
    from autoprune.search.pareto import hypervolume
    from autoprune.search.strategies import SpaceCosts
    from autoprune.training import evaluate, recalibrate_bn

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shape = SHAPE
    data, baseline, baseline_s, space, cost_model, notes = prepare_target(args.model, args.data,
                                                                         args.baseline_epochs, args.device)
    costs = SpaceCosts(space, cost_model)
    macs_model = MacsCost(cost_model, space)
    macs_costs = SpaceCosts(space, macs_model)
    dense_plan = PruningPlan(alignment=space.alignment)
    dense_ms = costs.latency_ms(dense_plan)
    test = data.loader("test", 256, 0, shuffle=False)
    dense_val = evaluate(baseline, data.loader("val", 256, 0, shuffle=False), data.num_classes).accuracy
    dense_test = evaluate(baseline, test, data.num_classes).accuracy
    settings = EvaluatorSettings(finetune_steps=args.finetune_steps, seed=0, device=args.device)
    evaluator = Evaluator(baseline, data, space, cost_model, settings)
    flops_evaluator = Evaluator(baseline, data, space, macs_model, settings)
    print(f"dense: val {dense_val:.4f} test {dense_test:.4f} predicted {dense_ms:.4f} ms; notes: {notes}", flush=True)

    state = _common.RESULTS / f"{args.name}.runs.json"
    runs = load_runs(state) if args.phase == "score" else []
    if args.phase != "score" and args.reuse:
        reused = [r for r in load_runs(_common.RESULTS / f"{args.reuse}.runs.json")
                  if r["method"] in SEED_FREE and r["method"] in args.methods]
        for r in reused:
            if len(r["candidates"]) != args.trials:
                sys.exit(f"error: {args.reuse}'s {r['method']} run has {len(r['candidates'])} candidates, not "
                         f"--trials {args.trials}; reuse a run made with the same arguments")
            r["reused_from"] = args.reuse
        runs.extend(reused)
        save_runs(state, runs)
    if args.phase != "score":
        limits = [b * dense_ms for b in args.budgets] if args.budgeted else [None]
        for seed in args.seeds:  # methods interleaved within each seed, so machine drift hits them alike
            for name in args.methods:
                if name in SEED_FREE and (seed != args.seeds[0] or any(r["method"] == name for r in runs)):
                    continue
                for limit in limits:
                    run = run_method(name, seed, args, space, evaluator, flops_evaluator, costs, macs_costs,
                                     baseline, limit)
                    runs.append(run)
                    save_runs(state, runs)  # the search phase's work survives a failure in scoring
                    print(f"{name} seed {seed} limit {limit}: {len(run['candidates'])} candidates in {run['seconds']} s, "
                          f"load {run['loadavg_at_end']}", flush=True)
        if args.phase == "search":
            print(f"search phase done: {state}; score with --phase score (same arguments)")
            return

    # Re-measure every candidate, each right after the dense model; the picks are then made on what was measured
    # (--pick-by measured, the goal's "at 50% of dense measured latency") or on the cost model's prediction.
    to_measure = {}
    for run in runs:
        run["front"] = front_of(run["candidates"])
        for c in run["candidates"]:
            to_measure.setdefault(plan_key(c["plan"]), c["plan"])
    keys = list(to_measure)
    t1 = time.time()
    dense_item, *items = plan_items(space, [dense_plan, *[to_measure[k] for k in keys]])
    # --passes N: every candidate timed in N passes, one after the other, and its ratio the median over them (a
    # plan's ratio moves 1-4 % between passes here: bench/latency_vs_macs.py --repeat-passes)
    passes = time_passes(items, dense_item, args.passes, args.repeats)
    measured = {k: {"ratio": statistics.median(p[0][i]["ratio"] for p in passes),
                    "pass_ratios": [round(p[0][i]["ratio"], 4) for p in passes]} for i, k in enumerate(keys)}
    reference = {"median_ms": statistics.median(p[1]["median_ms"] for p in passes)}
    measure_s = time.time() - t1
    for run in runs:
        for c in run["candidates"]:
            c["measured_ratio"] = measured[plan_key(c["plan"])]["ratio"]
            c["measured_pass_ratios"] = measured[plan_key(c["plan"])]["pass_ratios"]
    picks = {}
    for run in runs:
        for b in args.budgets:
            if run.get("budget_ms") is not None and abs(run["budget_ms"] - b * dense_ms) > 1e-9:
                continue  # a budgeted run answers for its own budget only
            c = pick(run["candidates"], b, args.pick_by, dense_ms)
            # paired: a seed-free baseline's pick is fine-tuned once per seed, as every learned run's pick is with
            # its own seed, so the paired spread holds the final fine-tune's noise as well as the search's
            per_seed = run["method"] in SEED_FREE and args.final_seeding == "paired"
            for seed in args.seeds if per_seed else [run["seed"]]:
                picks[(run["method"], seed, b)] = c

    # Final fine-tune of the picks (each unique plan once per final seed), scored on the test split.
    def final_key(c, seed):
        return plan_key(c["plan"]), seed if args.final_seeding == "paired" else 0

    final: dict[tuple, dict] = {}
    export = ExportSettings(finetune_epochs=args.final_epochs, measure=False, device=args.device,
                            distill=args.final_distill)
    t2 = time.time()
    for (method, seed, b), c in picks.items():
        if c is None or final_key(c, seed) in final:
            continue
        key = final_key(c, seed)
        fseed = key[1]
        # prune() works in place: each pick starts from its own copy of the dense baseline.
        pruned = prune(copy.deepcopy(baseline), c["plan"], torch.zeros(shape), seed=0)
        train = data.loader("train", export.batch_size, fseed)
        recalibrate_bn(pruned.model, train, export.bn_recalibration_batches)
        steps, _ = finetune_epochs(pruned.model, train, export, fseed, pruned.masks,
                                   teacher=baseline if args.final_distill else None, device=args.device)
        final[key] = {"test_accuracy": evaluate(pruned.model, test, data.num_classes).accuracy, "steps": steps}
        print(f"final {method} seed {seed} @{b} (fine-tune seed {fseed}): test {final[key]['test_accuracy']:.4f}",
              flush=True)
    final_s = time.time() - t2

    # Scores.
    def ratio(c):
        return measured[plan_key(c["plan"])]["ratio"]

    for run in runs:
        pts = [(c["val_accuracy"], ratio(c)) for c in run["front"]]
        run["hv_measured"] = hypervolume(pts, (0.0, 1.0))
        run["front_measured"] = [{"val_accuracy": round(a, 4), "measured_ratio": round(r, 4)} for a, r in pts]
    uni_small = min((c for r in runs if r["method"] == "uniform" for c in r["candidates"]),
                    key=lambda c: c["predicted_ms"], default=None)
    ref_acc = uni_small["val_accuracy"] if uni_small else 0.0
    for run in runs:
        pts = [(c["val_accuracy"], ratio(c)) for c in run["front"]]
        run["hv_measured_tight"] = hypervolume(pts, (ref_acc, 1.0))

    table = {}
    for (method, seed, b), c in picks.items():
        if c is None:
            continue
        f = final[final_key(c, seed)]
        table.setdefault(method, {}).setdefault(b, []).append({
            "seed": seed, "trial": c["trial"], "val_accuracy": round(c["val_accuracy"], 4),
            "predicted_ratio": round(c["predicted_ms"] / dense_ms, 4), "measured_ratio": round(ratio(c), 4),
            "test_accuracy": round(f["test_accuracy"], 4), "plan": c["plan"].to_dict()})

    def paired(method, other, b):
        mine = {r["seed"]: r["test_accuracy"] for r in table.get(method, {}).get(b, [])}
        theirs = table.get(other, {}).get(b, [])
        if not mine or not theirs:
            return None
        if other in SEED_FREE and args.final_seeding == "fixed":
            diffs = [(a - theirs[0]["test_accuracy"]) * 100 for a in mine.values()]
        else:
            t = {r["seed"]: r["test_accuracy"] for r in theirs}
            diffs = [(mine[s] - t[s]) * 100 for s in mine if s in t]
        return _common.point_differences(diffs)

    learned = [m for m in args.methods if m not in SEED_FREE and m not in ("random", "tpe-macs")]
    verdicts = {}
    for b in args.budgets:
        for m in learned:
            verdicts[f"{m}@{b}"] = _common.search_goals(paired(m, "uniform", b), paired(m, "tp-global", b))

    def hv_stats(method, key):
        vals = [r[key] for r in runs if r["method"] == method]
        return _common.mean_spread(vals) if vals else None

    hv = {m: {"hv_measured": hv_stats(m, "hv_measured"), "hv_measured_tight": hv_stats(m, "hv_measured_tight"),
              "search_seconds": hv_stats(m, "seconds"), "finetune_steps": hv_stats(m, "finetune_steps")}
          for m in args.methods}
    if "tpe" in hv and "tpe-macs" in hv and hv["tpe"]["hv_measured_tight"] and hv["tpe-macs"]["hv_measured_tight"]:
        a, f = hv["tpe"]["hv_measured_tight"], hv["tpe-macs"]["hv_measured_tight"]
        verdicts["latency_vs_flops_guided"] = {"tpe": a, "tpe-macs": f,
                                               "beyond_spread": a["mean"] - a["std"] > f["mean"] + f["std"]}
    # What the +1 pt goal over uniform can reach at all: the uniform pick's distance to the dense model (a pick can
    # only beat uniform by more than that by beating the dense model).
    verdicts["headroom_vs_dense"] = {
        str(b): round((dense_test - statistics.mean(r["test_accuracy"] for r in table["uniform"][b])) * 100, 2)
        for b in args.budgets if table.get("uniform", {}).get(b)}
    cands = [(r2["test_accuracy"], 1 / r2["measured_ratio"], m, r2["seed"]) for m, by in table.items()
             for rows in by.values() for r2 in rows]
    ok = [c for c in cands if c[1] >= 2.0 and (dense_test - c[0]) * 100 <= 1.0]
    headline = {"dense_test_accuracy": round(dense_test, 4), "met": bool(ok),
                "best_2x": max(ok) if ok else None,
                "fastest_within_1pt": max(((s, a, m, sd) for a, s, m, sd in cands if (dense_test - a) * 100 <= 1.0),
                                          default=None)}
    summary = load.summary()
    out = {"environment": env, "args": vars(args), "model": args.model, "data": args.data,
           "target": cost_model.profile.name,
           "cost_model_notes": notes, "dense": {"val_accuracy": dense_val, "test_accuracy": dense_test,
                                                "predicted_ms": dense_ms, "measured_ms": reference["median_ms"]},
           "latency_provenance": "predicted: the host profile prepared on this machine; measured: onnxruntime 1 "
                                 "thread on this machine, each plan right after the dense model (ratio of medians)",
           "baseline_seconds": round(baseline_s, 1), "measure_seconds": round(measure_s, 1),
           "final_finetune_seconds": round(final_s, 1), "picks": table, "verdicts": verdicts, "hypervolume": hv,
           "headline": headline, "hv_tight_reference": [ref_acc, 1.0], "load_average": summary,
           "load_sentence": _common.load_sentence(summary["mean"]), "wall_seconds": round(time.time() - started, 1),
           "runs": [{k: v for k, v in r.items() if k not in ("candidates", "front")} |
                    {"candidates": [{**{k: v for k, v in c.items() if k != "plan"}, "plan": c["plan"].to_dict()}
                                    for c in r["candidates"]]} for r in runs]}
    _common.write(args.name, out, markdown(out, args))


def markdown(out, args) -> str:
    d = out["dense"]
    lines = [f"{args.model} on `{args.data}` (1x3x32x32), target `{out['target']}`; dense: val {d['val_accuracy'] * 100:.2f}%, "
             f"test {d['test_accuracy'] * 100:.2f}%, {d['predicted_ms']:.3f} ms predicted, {d['measured_ms']:.3f} ms "
             f"measured. {args.trials} trials per method and seed, seeds {args.seeds}, {args.finetune_steps} fine-tune "
             f"steps per candidate (multi-fidelity), final fine-tune {args.final_epochs} epoch(s) (export's recipe"
             f"{', distilled from the dense model' if args.final_distill else ''}). "
             f"Machine: {out['load_sentence']}.", "",
             f"Best candidate (by validation accuracy) at ≤ B × dense {args.pick_by} latency, re-pruned, fine-tuned with the "
             "final recipe, on the **test split**; measured = this machine, ratio to the dense model timed beside it"
             + (f", median of {args.passes} passes" if args.passes > 1 else "") + ".", "",
             "| method | budget | test acc % (mean ± std, n) | measured latency ratio (mean) | predicted ratio (mean) |",
             "|---|---|---|---|---|"]
    for m, by in out["picks"].items():
        for b, rows in sorted(by.items()):
            accs = [r["test_accuracy"] * 100 for r in rows]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            lines.append(f"| {m} | {b} | {statistics.mean(accs):.2f} ± {sd:.2f} ({len(accs)}) | "
                         f"{statistics.mean(r['measured_ratio'] for r in rows):.3f} | "
                         f"{statistics.mean(r['predicted_ratio'] for r in rows):.3f} |")
    lines += ["", "Paired differences on the test split (points; learned seed k minus the seed-free baseline"
              + (", both fine-tuned with seed k" if args.final_seeding == "paired" else "") + "):", ""]
    for k, v in out["verdicts"].items():
        if "@" in k:
            lines.append(_common.goal_line(k, v))
    if "latency_vs_flops_guided" in out["verdicts"]:
        v = out["verdicts"]["latency_vs_flops_guided"]
        lines.append(f"- hardware-aware vs FLOPs-guided (hypervolume on measured latency, tight reference): tpe "
                     f"{v['tpe']['mean']:.4g} ± {v['tpe']['std']:.2g}, tpe-macs {v['tpe-macs']['mean']:.4g} ± "
                     f"{v['tpe-macs']['std']:.2g}; beyond spread: **{v['beyond_spread']}**")
    if out["verdicts"].get("headroom_vs_dense"):
        lines.append(f"- headroom: dense minus the uniform pick, test points, per budget "
                     f"{out['verdicts']['headroom_vs_dense']} (a learned pick beats uniform by more only by beating "
                     f"the dense model)")
    h = out["headline"]
    lines.append(f"- headline (≥ 2× measured at ≤ 1 pt test loss vs dense {h['dense_test_accuracy'] * 100:.2f}%): "
                 f"**{h['met']}**; fastest pick within 1 pt: {h['fastest_within_1pt']}")
    lines += ["", "| method | hypervolume, measured (ref 0, dense) | tight (ref: smallest uniform's acc) | search s | "
              "fine-tune steps |", "|---|---|---|---|---|"]
    fmt = lambda s: "–" if not s else f"{s['mean']:.4g} ± {s['std']:.2g}"  # noqa: E731
    for m, s in out["hypervolume"].items():
        lines.append(f"| {m} | {fmt(s['hv_measured'])} | {fmt(s['hv_measured_tight'])} | {fmt(s['search_seconds'])} | "
                     f"{fmt(s['finetune_steps'])} |")
    lines += ["", "Cost model: " + " / ".join(out["cost_model_notes"])]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
