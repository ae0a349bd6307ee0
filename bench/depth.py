"""Width-only vs width+depth: the same strategy and trial budget searched with and without block dropping
(`autoprune search --depth`), per model and target, on one cached dense baseline.

Per model x target x mode: hypervolume of the feasible front (reference: accuracy 0, dense latency; latency in ms as
predicted by the target's cost model: the measured host table for `cpu`, the fitted rooflines for the Jetsons) and
the best accuracy at <= 50% of the dense predicted latency. Candidates are scored by the BN-recalibration proxy
(`--finetune-steps 0`, the default here) to keep the run cheap; on the `cpu` target, layer shapes its table lacks
are measured on this machine first (as `autoprune search` does); accuracy is target-independent, so a plan scored for
one target is reused (not re-evaluated) for another.

    .venv/bin/python bench/depth.py [--models resnet18 mobilenet_v2] [--targets cpu jetson-nano xavier]
                                    [--trials 24] [--finetune-steps 0] [--data "fashion-mnist?n=2000"]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

MODES = ("width", "width+depth")


def best_under(points, limit_ms: float) -> float | None:
    feasible = [a for a, l in points if l <= limit_ms]
    return max(feasible) if feasible else None


class SharedAccuracy:
    """An evaluator for one target whose accuracy figures come from a cache shared by every target (keyed by the
    plan), so only the latency is target-specific. The pruned model is not kept (memory)."""

    def __init__(self, evaluator, cache: dict) -> None:
        self.evaluator = evaluator
        self.cache = cache
        self.evaluated = 0

    def evaluate(self, plan, guidance=None):
        key = plan.to_json()
        if key not in self.cache:
            self.cache[key] = replace(self.evaluator.evaluate(plan, guidance), model=None)
            self.evaluated += 1
        estimate = self.evaluator.cost_model.predict(self.evaluator.space, plan)
        return replace(self.cache[key], latency_ms=estimate.latency_ms, latency_provenance=estimate.provenance,
                       latency_source=estimate.source)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"],
                        help="add resnet50 for the larger figure (slower)")
    parser.add_argument("--targets", nargs="+", default=["cpu", "jetson-nano", "xavier"])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--strategy", default="tpe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--finetune-steps", type=int, default=0)
    parser.add_argument("--baseline-epochs", type=int, default=3)
    parser.add_argument("--data", default="fashion-mnist?n=2000")
    parser.add_argument("--name", default="depth", help="results file name under bench/results/")
    args = parser.parse_args()
    started = time.time()
    env = _common.environment()
    load = _common.LoadSampler()

    import optuna

    from autoprune.hardware import load_profile, prepare_cost_model
    from autoprune.plan import PruningPlan
    from autoprune.pruning.space import generate_space
    from autoprune.search.backends import LocalExecutor
    from autoprune.search.evaluator import Evaluator, EvaluatorSettings
    from autoprune.search.pareto import hypervolume, pareto_front
    from autoprune.search.runner import optimize
    from autoprune.search.strategies import Constraints, SpaceCosts, create_strategy

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs: list[dict] = []
    dense: dict[str, dict] = {}

    def save(final: bool) -> None:
        out = {
            "environment": env, "models": args.models, "targets": args.targets, "data": args.data,
            "input_shape": [1, 3, 32, 32], "strategy": args.strategy, "trials": args.trials, "seed": args.seed,
            "finetune_steps": args.finetune_steps, "baseline_epochs": args.baseline_epochs,
            "accuracy": "BN-recalibration proxy (no fine-tuning)" if args.finetune_steps == 0
            else f"after {args.finetune_steps} fine-tune steps",
            "hypervolume_reference": "accuracy 0, dense predicted latency of the target", "dense": dense,
            "runs": runs, "complete": final,
            "load_average": load.summary() if final else _common.loadavg(),
            "wall_seconds": round(time.time() - started, 1),
        }
        _common.write(args.name, out, _markdown(args, runs, dense, final, out["load_average"]))

    for model_name in args.models:
        # the roofline target only prices the setup's throw-away space; each target's own cost model is built below
        model, data, _, _, _, dense_acc, _ = _common.setup(model_name, args.data, "jetson-nano", args.seed,
                                                           args.baseline_epochs)
        cache: dict = {}
        for target in args.targets:
            profile = load_profile(target)
            space = generate_space(model, model_name, (1, 3, 32, 32), alignment=profile.alignment)
            # as `autoprune search` does: on this machine's own target, table families it lacks are measured here
            # (cached); the shipped calibration is kept (no re-fit, to keep the run short)
            cost_model = prepare_cost_model(profile, space, calibrate=False)
            dense_ms = cost_model.predict(space, PruningPlan(alignment=space.alignment)).latency_ms
            dense[f"{model_name}@{profile.name}"] = {"accuracy": dense_acc, "latency_ms": dense_ms,
                                                     "provenance": profile.provenance,
                                                     "droppable_blocks": space.block_names}
            evaluator = Evaluator(model, data, space, cost_model,
                                  EvaluatorSettings(finetune_steps=args.finetune_steps, seed=args.seed))
            costs = SpaceCosts(space, cost_model)
            for mode in MODES:
                t0 = time.time()
                shared = SharedAccuracy(evaluator, cache)
                strategy = create_strategy(args.strategy, space, "l1", args.seed, args.trials, Constraints(), costs)
                strategy.depth = mode == "width+depth"
                study = optuna.create_study(directions=["maximize", "minimize"], sampler=strategy.sampler())
                optimize(study, strategy, LocalExecutor(shared), args.trials, Constraints(), multi_fidelity=True)
                done = [t for t in study.trials if t.values is not None]
                points = [(float(t.values[0]), float(t.values[1])) for t in done if t.user_attrs.get("feasible", True)]
                front = sorted(points[i] for i in pareto_front(points))
                drops = [len(t.user_attrs["plan"].get("drop_blocks", ())) for t in done]
                runs.append({
                    "model": model_name, "target": profile.name, "mode": mode, "completed": len(done),
                    "evaluated_here": shared.evaluated, "seconds": round(time.time() - t0, 1),
                    "loadavg_at_end": _common.loadavg(), "dense_latency_ms": dense_ms,
                    "hypervolume": hypervolume(points, (0.0, dense_ms)),
                    "acc_at_50pct": best_under(points, 0.5 * dense_ms),
                    "fastest_ms": min(l for _, l in points) if points else None,
                    "trials_with_drops": sum(1 for d in drops if d), "mean_blocks_dropped": sum(drops) / max(1, len(drops)),
                    "front": front, "front_plans": _front_plans(done, front),
                })
                r = runs[-1]
                print(f"{model_name} {profile.name} {mode}: hv {r['hypervolume']:.4f} acc@50 {r['acc_at_50pct']} "
                      f"fastest {r['fastest_ms']:.4g}/{dense_ms:.4g} ms in {r['seconds']:.0f}s "
                      f"(load {r['loadavg_at_end']})", flush=True)
                save(final=False)
    save(final=True)


def _front_plans(done, front) -> list[dict]:
    wanted = set(front)
    return [t.user_attrs["plan"] for t in done
            if t.user_attrs.get("feasible", True) and (float(t.values[0]), float(t.values[1])) in wanted]


def _markdown(args, runs, dense, final, load) -> str:
    fmt = lambda v, k=1, d=2: "–" if v is None else f"{v * k:.{d}f}"  # noqa: E731
    lines = ["| model | target | dense ms | mode | hypervolume (acc × ms) | acc ≤50% dense (%) | fastest ms | trials with drops "
             "(mean blocks) | plans scored here |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['model']} | {r['target']} | {r['dense_latency_ms']:.4g} | {r['mode']} | "
                     f"{r['hypervolume']:.4f} | {fmt(r['acc_at_50pct'], 100)} | {r['fastest_ms']:.4g} | "
                     f"{r['trials_with_drops']}/{r['completed']} ({r['mean_blocks_dropped']:.1f}) | "
                     f"{r['evaluated_here']} |")
    verdicts = []
    for model in args.models:
        for target in {r["target"]: None for r in runs if r["model"] == model}:
            pair = {r["mode"]: r for r in runs if r["model"] == model and r["target"] == target}
            if len(pair) == 2:
                w, d = pair["width"], pair["width+depth"]
                verdicts.append(f"- {model} on {target}: hypervolume {w['hypervolume']:.4f} -> {d['hypervolume']:.4f} "
                                f"({'+' if d['hypervolume'] >= w['hypervolume'] else ''}"
                                f"{(d['hypervolume'] - w['hypervolume']) / max(w['hypervolume'], 1e-12) * 100:.1f}%); "
                                f"best at ≤50% dense latency {fmt(w['acc_at_50pct'], 100)} -> "
                                f"{fmt(d['acc_at_50pct'], 100)} %")
    dense_lines = [f"- {k}: {v['accuracy'] * 100:.2f}% at {v['latency_ms']:.4g} ms ({v['provenance']}); droppable "
                   f"blocks: {len(v['droppable_blocks'])}" for k, v in dense.items()]
    return f"""
{args.strategy} with {args.trials} trials per run (seed {args.seed}), with and without `--depth`, on {args.data}
(1x3x32x32). Accuracy: {'BN-recalibration proxy (no fine-tuning)' if args.finetune_steps == 0 else
f'{args.finetune_steps} fine-tune steps'}; latency: predicted by each target's cost model. Hypervolume reference:
accuracy 0, the target's dense latency (so hypervolumes compare within a target, not across). One run per cell (one seed): small differences are within noise.
"–": no candidate at or below half the dense latency. "plans scored here": plans not already scored for an earlier
target (accuracy does not depend on the target, so a plan is scored once per model).
Load: {load}.
{'' if final else '**Partial results: the run has not finished.**'}

Dense models:

{chr(10).join(dense_lines)}

{chr(10).join(lines)}

{chr(10).join(verdicts)}
"""


if __name__ == "__main__":
    main()
