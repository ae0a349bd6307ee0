"""Does a longer fine-tune make better picks? (issue 17's lever: successive halving over the front before choosing)

Reads a `search_proof.py` result (results/NAME.json, which holds every candidate with its measured latency ratio)
and, for each method, seed and budget B, takes the ``--top`` candidates with the best validation accuracy (after
the search's short fine-tune) at <= B x the dense model's measured latency. Each is pruned again from the dense
model and fine-tuned for ``--refine-epochs`` of the final recipe (`autoprune export`'s); the one with the best
validation accuracy then is the refined pick. It gets the final recipe (``--final-epochs``) and is scored on the
test split, as `search_proof.py` scores its picks. Test accuracy is never used to choose.

Also the fair reference that `search_proof.py` lacks: the dense model given the same final epochs (the picks get
them on top of the baseline's, the dense model there gets none).

    .venv/bin/python bench/refine_picks.py --source search_proof_mnv2_equalstop [--top 3] [--refine-epochs 1]
        [--final-epochs 3] [--budgets 0.5] [--methods uniform tpe] [--name refine_picks]

It re-trains the source's baseline from the same spec (cached under AUTOPRUNE_HOME). Writes results/NAME.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def plan_key(plan: dict) -> str:
    return json.dumps(plan, sort_keys=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="search_proof_mnv2_equalstop", help="a search_proof result name")
    parser.add_argument("--top", type=int, default=3, help="candidates per method, seed and budget refined")
    parser.add_argument("--refine-epochs", type=int, default=1)
    parser.add_argument("--final-epochs", type=int, default=3)
    parser.add_argument("--budgets", type=float, nargs="+", help="a subset of the source's budgets (default: all)")
    parser.add_argument("--methods", nargs="+", help="a subset of the source's methods (default: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--replicate", type=int, default=1,
                        help="N > 1: no refinement; instead give the dense model and each search pick the final "
                             "recipe under N fine-tune seeds (how much of a pick's test figure is the fine-tune's "
                             "luck); writes NAME (default replicate_picks)")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    args.name = args.name or ("replicate_picks" if args.replicate > 1 else "refine_picks")
    started = time.time()
    env, load = _common.environment(), _common.LoadSampler()

    import copy

    import torch

    from autoprune.baseline import BaselineSpec, get_baseline
    from autoprune.data import load_data
    from autoprune.plan import PruningPlan
    from autoprune.pruning.engine import prune
    from autoprune.report.export import ExportSettings, finetune_epochs
    from autoprune.training import TrainRecipe, evaluate, recalibrate_bn

    source = json.loads((_common.RESULTS / f"{args.source}.json").read_text())
    sa = source["args"]
    if sa.get("final_seeding", "fixed") != "fixed" and args.replicate <= 1:
        raise SystemExit(f"error: {args.source} was scored with --final-seeding {sa['final_seeding']}; refining "
                         "compares picks all fine-tuned with seed 0: score the source with --final-seeding fixed")
    shape = (1, 3, 32, 32)
    data = load_data(sa["data"], shape[2:], 0)
    spec = BaselineSpec(sa["model"], sa["data"], shape, data.num_classes, 0,
                        TrainRecipe(epochs=sa["baseline_epochs"]), None)
    baseline = get_baseline(spec, data, device=args.device).model
    val = data.loader("val", 256, 0, shuffle=False)
    test = data.loader("test", 256, 0, shuffle=False)
    dense_test = evaluate(baseline, test, data.num_classes).accuracy
    if abs(dense_test - source["dense"]["test_accuracy"]) > 1e-6:
        raise SystemExit(f"error: the baseline trained here scores {dense_test:.4f} on the test split, the source's "
                         f"{source['dense']['test_accuracy']:.4f}: rerun {args.source} on this machine first")

    def tuned(plan: PruningPlan | None, epochs: int, seed: int = 0):
        """The plan (None: the dense model) fine-tuned ``epochs`` of the final recipe (its batch order and
        initialisation-free randomness from ``seed``): (val, test, seconds)."""
        t0 = time.time()
        if plan is None:
            model, masks = copy.deepcopy(baseline), None
        else:
            pruned = prune(copy.deepcopy(baseline), plan, torch.zeros(shape), seed=0)  # prune() works in place
            model, masks = pruned.model, pruned.masks
        train = data.loader("train", 64, seed)
        recalibrate_bn(model, train, ExportSettings().bn_recalibration_batches)
        finetune_epochs(model, train, ExportSettings(finetune_epochs=epochs, measure=False, device=args.device), seed,
                        masks, device=args.device)
        return (evaluate(model, val, data.num_classes).accuracy, evaluate(model, test, data.num_classes).accuracy,
                round(time.time() - t0, 1))

    if args.replicate > 1:
        return replicate(args, source, tuned, dense_test, env, load, started, len(data.val))

    # First the headroom: no pruned pick can be expected to beat the dense model given the same extra epochs.
    dense_val, dense_tuned, dense_s = tuned(None, args.final_epochs)
    print(f"dense + {args.final_epochs} epochs: test {dense_tuned:.4f} in {dense_s} s", flush=True)

    # The source's own picks (short-fine-tune validation) and their final test accuracy, to compare against.
    original = {(m, r["seed"], float(b)): r for m, by in source["picks"].items() for b, rows in by.items() for r in rows}
    refined_cache: dict[str, tuple] = {}
    final_cache: dict[str, float] = {plan_key(r["plan"]): r["test_accuracy"] for r in original.values()}
    rows = []
    budgets = args.budgets or sa["budgets"]
    for run in source["runs"]:
        if args.methods and run["method"] not in args.methods:
            continue
        for b in budgets:
            pool, seen = [], set()
            for c in sorted(run["candidates"], key=lambda c: -c["val_accuracy"]):
                k = plan_key(c["plan"])
                if c["measured_ratio"] <= b and k not in seen:
                    seen.add(k)
                    pool.append(c)
            pool = pool[:args.top]
            if not pool:
                continue
            scored = []
            for c in pool:
                k = plan_key(c["plan"])
                if k not in refined_cache:
                    refined_cache[k] = tuned(PruningPlan.from_dict(c["plan"]), args.refine_epochs)
                    print(f"refine {run['method']} seed {run['seed']} @{b} trial {c['trial']}: "
                          f"val {refined_cache[k][0]:.4f} in {refined_cache[k][2]} s", flush=True)
                scored.append((refined_cache[k][0], -c["measured_ratio"], c))
            _, _, best = max(scored, key=lambda s: (s[0], s[1]))
            k = plan_key(best["plan"])
            if k not in final_cache:
                final_cache[k] = tuned(PruningPlan.from_dict(best["plan"]), args.final_epochs)[1]
                print(f"final {run['method']} seed {run['seed']} @{b}: test {final_cache[k]:.4f}", flush=True)
            before = original.get((run["method"], run["seed"], float(b)))
            rows.append({"method": run["method"], "seed": run["seed"], "budget": b,
                         "pool": [{"trial": c["trial"], "search_val": c["val_accuracy"],
                                   "refined_val": round(refined_cache[plan_key(c["plan"])][0], 4),
                                   "measured_ratio": c["measured_ratio"]} for c in pool],
                         "refined_pick": {"trial": best["trial"], "measured_ratio": best["measured_ratio"],
                                          "test_accuracy": round(final_cache[k], 4)},
                         "search_pick": {"trial": before["trial"], "measured_ratio": before["measured_ratio"],
                                         "test_accuracy": before["test_accuracy"]} if before else None})
    def paired(method, other, b, key):
        mine = {r["seed"]: r[key]["test_accuracy"] for r in rows if r["method"] == method and r["budget"] == b}
        theirs = [r[key]["test_accuracy"] for r in rows if r["method"] == other and r["budget"] == b]
        if not mine or not theirs:
            return None
        return _common.point_differences((a - theirs[0]) * 100 for a in mine.values())

    verdicts = {}
    for b in budgets:
        for m in sorted({r["method"] for r in rows} - {"uniform", "tp-global"}):
            for key in ("search_pick", "refined_pick"):
                verdicts[f"{m}@{b} {key}"] = _common.search_goals(paired(m, "uniform", b, key),
                                                                  paired(m, "tp-global", b, key))
    summary = load.summary()
    out = {"environment": env, "args": vars(args), "source": args.source, "model": sa["model"], "data": sa["data"],
           "dense": {"test_accuracy": dense_test, f"test_accuracy_after_{args.final_epochs}_epochs": dense_tuned,
                     "val_accuracy_after_final_epochs": dense_val},
           "rows": rows, "verdicts": verdicts, "load_average": summary,
           "load_sentence": _common.load_sentence(summary["mean"]), "wall_seconds": round(time.time() - started, 1)}
    _common.write(args.name, out, markdown(out, args))


def replicate(args, source, tuned, dense_test, env, load, started, val_size) -> None:
    """The final recipe's own spread: the dense model and each search pick under ``args.replicate`` seeds."""
    from autoprune.plan import PruningPlan

    seeds = list(range(args.replicate))
    budgets = args.budgets or source["args"]["budgets"]
    dense = [tuned(None, args.final_epochs, k)[1] for k in seeds]
    print(f"dense + {args.final_epochs} epochs over seeds {seeds}: {[round(a, 4) for a in dense]}", flush=True)
    plans: dict[str, list[float]] = {}
    rows = []
    for method, by in source["picks"].items():
        if args.methods and method not in args.methods:
            continue
        for b, picks in by.items():
            if float(b) not in budgets:
                continue
            for r in picks:
                k = plan_key(r["plan"])
                if k not in plans:
                    plans[k] = [tuned(PruningPlan.from_dict(r["plan"]), args.final_epochs, s)[1] for s in seeds]
                    print(f"{method} seed {r['seed']} @{b} ({r['measured_ratio']:.3f}): "
                          f"{[round(a, 4) for a in plans[k]]} (source: {r['test_accuracy']})", flush=True)
                rows.append({"method": method, "search_seed": r["seed"], "budget": float(b),
                             "measured_ratio": r["measured_ratio"], "source_test_accuracy": r["test_accuracy"],
                             "test_accuracies": [round(a, 4) for a in plans[k]]})

    def stats(values):
        import statistics

        return {"mean": round(statistics.mean(values) * 100, 2),
                "std": round(statistics.stdev(values) * 100, 2) if len(values) > 1 else 0.0}

    verdicts = {}
    for b in budgets:
        base = {m: [x for r in rows if r["method"] == m and r["budget"] == b for x in r["test_accuracies"]]
                for m in ("uniform", "tp-global")}
        for m in sorted({r["method"] for r in rows} - {"uniform", "tp-global"}):
            # Each learned pick's mean over fine-tune seeds, minus the baseline pick's mean over the same seeds.
            mine = [sum(r["test_accuracies"]) / len(seeds) for r in rows if r["method"] == m and r["budget"] == b]

            def vs(other):
                theirs = base[other]
                if not mine or not theirs:
                    return None
                return _common.point_differences((a - sum(theirs) / len(theirs)) * 100 for a in mine)

            verdicts[f"{m}@{b}"] = _common.search_goals(vs("uniform"), vs("tp-global"))
    summary = load.summary()
    out = {"environment": env, "args": vars(args), "source": args.source, "model": source["args"]["model"],
           "data": source["args"]["data"], "val_size": val_size, "seeds": seeds,
           "dense": {"test_accuracy": dense_test, "after_final_epochs": [round(a, 4) for a in dense],
                     "after_final_epochs_stats": stats(dense)},
           "rows": [{**r, "stats": stats(r["test_accuracies"])} for r in rows], "verdicts": verdicts,
           "load_average": summary, "load_sentence": _common.load_sentence(summary["mean"]),
           "wall_seconds": round(time.time() - started, 1)}
    _common.write(args.name, out, replicate_markdown(out, args))


def replicate_markdown(out, args) -> str:
    d = out["dense"]
    lines = [f"{out['model']} on `{out['data']}` (validation split: {out['val_size']} images), the search picks of "
             f"`{out['source']}`, each pruned again and given the final recipe ({args.final_epochs} epochs of "
             f"export's) under fine-tune seeds {out['seeds']}, scored on the test split. Dense: "
             f"{d['test_accuracy'] * 100:.2f} % as trained; after the same {args.final_epochs} epochs "
             f"**{d['after_final_epochs_stats']['mean']:.2f} ± {d['after_final_epochs_stats']['std']:.2f} %** "
             f"({', '.join(f'{a * 100:.2f}' for a in d['after_final_epochs'])}). Machine: {out['load_sentence']}.",
             "", "| method | search seed | budget | measured ratio | test % per fine-tune seed | mean ± std | "
             "source's figure |", "|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        lines.append(f"| {r['method']} | {r['search_seed']} | {r['budget']} | {r['measured_ratio']:.3f} | "
                     f"{', '.join(f'{a * 100:.2f}' for a in r['test_accuracies'])} | "
                     f"{r['stats']['mean']:.2f} ± {r['stats']['std']:.2f} | {r['source_test_accuracy'] * 100:.2f} |")
    lines += ["", "Paired differences of the seed-mean test accuracy (points; learned search seed k minus the "
              "baseline's pick, both averaged over the fine-tune seeds):", ""]
    return "\n".join(lines + [_common.goal_line(k, v) for k, v in out["verdicts"].items()])


def markdown(out, args) -> str:
    d = out["dense"]
    lines = [f"{out['model']} on `{out['data']}`, candidates and measured latency ratios from `{out['source']}`. Per "
             f"method, seed and budget: the top {args.top} by the search's validation accuracy at ≤ B measured, each "
             f"fine-tuned {args.refine_epochs} epoch(s) of export's recipe; the best on validation then gets "
             f"{args.final_epochs} epochs and is scored on the test split. Dense: {d['test_accuracy'] * 100:.2f} % "
             f"test as trained, **{d[f'test_accuracy_after_{args.final_epochs}_epochs'] * 100:.2f} %** after the same "
             f"{args.final_epochs} final epochs. Machine: {out['load_sentence']}.", "",
             "| method | seed | budget | search pick: test % (measured ratio) | refined pick: test % (measured ratio) |",
             "|---|---|---|---|---|"]
    for r in out["rows"]:
        s, f = r["search_pick"], r["refined_pick"]
        lines.append(f"| {r['method']} | {r['seed']} | {r['budget']} | "
                     + (f"{s['test_accuracy'] * 100:.2f} ({s['measured_ratio']:.3f})" if s else "–")
                     + f" | {f['test_accuracy'] * 100:.2f} ({f['measured_ratio']:.3f}) |")
    lines += ["", "Paired differences on the test split (points; learned seed k minus the seed-free baseline):", ""]
    return "\n".join(lines + [_common.goal_line(k, v) for k, v in out["verdicts"].items()])


if __name__ == "__main__":
    main()
