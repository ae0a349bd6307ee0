"""Cost-model accuracy on the host: `profile validate` (programmatically, the profile file is not rewritten) on the
shipped host profile with N held-out random ResNet-18 plans, plus the prediction time per plan.

    .venv/bin/python bench/cost_model.py [--samples 50] [--seed 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def result_key(space) -> str:
    from autoprune.hardware.signature import model_key

    return model_key(space.model, space.input_shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1000, help="distinct from the calibration seed (0)")
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--timing-plans", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3,
                        help="measure the plans this many times one after the other (median scored; the spread of "
                             "the rounds is the noise ceiling of this machine)")
    args = parser.parse_args()
    started = time.time()
    env = _common.environment()
    load = _common.LoadSampler()

    from autoprune.hardware import load_profile
    from autoprune.hardware.cost_model import CostModel
    from autoprune.hardware.profiling import random_plans, validate
    from autoprune.models import create_model
    from autoprune.pruning.space import generate_space

    profile = load_profile(args.target)
    space = generate_space(create_model(args.model, 10), args.model, (1, 3, 32, 32), profile.alignment)
    print(f"validating {profile.name} on {args.samples} random plans (seed {args.seed}) ...", flush=True)
    t0 = time.time()
    _, result, points = validate(profile, space, args.samples, args.seed, command=env["command"], rounds=args.rounds)
    validate_s = time.time() - t0
    load_validate = _common.loadavg()

    # prediction time per plan: CostModel.predict on fresh random plans (first call warms any caches)
    model = CostModel(profile)
    plans = random_plans(space, args.timing_plans, args.seed + 1, profile.alignment)
    model.predict(space, plans[0])
    per_plan = []
    for _ in range(3):
        t = time.perf_counter()
        for plan in plans:
            model.predict(space, plan)
        per_plan.append((time.perf_counter() - t) / len(plans) * 1e6)
    load_predict = _common.loadavg()

    errors = [abs(p.predicted_ms - p.measured_ms) / p.measured_ms * 100 for p in points]
    calibration = profile.calibration.get(result_key(space))
    data = {
        "environment": env,
        "profile": profile.name, "profile_provenance": profile.provenance, "model": args.model,
        "input_shape": [1, 3, 32, 32], "samples": args.samples, "seed": args.seed,
        "mape_pct": result.mape_pct, "within_5_pct": result.within_5_pct, "within_10_pct": result.within_10_pct,
        "kendall_tau": result.kendall_tau, "max_abs_error_pct": round(max(errors), 2),
        "measured_range_ms": result.measured_range_ms, "calibrated": result.calibrated,
        "rounds": result.rounds, "repeatable_10_pct": result.repeatable_10_pct,
        "calibration": vars(calibration) if calibration else None,
        "validate_seconds": round(validate_s, 1), "loadavg_after_validate": load_validate,
        "predict_us_per_plan": {"runs": [round(x, 1) for x in per_plan], "min": round(min(per_plan), 1),
                                "median": round(statistics.median(per_plan), 1), "plans": len(plans),
                                "loadavg": load_predict},
        "points": [{"predicted_ms": p.predicted_ms, "measured_ms": p.measured_ms} for p in points],
        "load_average": load.summary(), "wall_seconds": round(time.time() - started, 1),
        "latency_provenance": "measured: onnxruntime 1 thread on this host, median of 300 runs in 10 interleaved "
                              f"passes, median of {result.rounds} rounds",
    }
    md = f"""
Host profile `{profile.name}` ({profile.provenance}), {args.model} at 1x3x32x32, {args.samples} held-out random plans
(seed {args.seed}), each measured here with onnxruntime (1 thread, median of 300 runs in 10 interleaved passes;
median of {result.rounds} such rounds run one after the other).

| metric | value |
|---|---|
| MAPE | {result.mape_pct:.2f} % |
| within ±5 % | {result.within_5_pct:.0f} % of plans |
| within ±10 % | {result.within_10_pct:.0f} % of plans |
| Kendall tau (predicted vs measured) | {result.kendall_tau:.3f} |
| noise ceiling: plans whose {result.rounds} rounds all lie within ±10 % of their median | {result.repeatable_10_pct if result.repeatable_10_pct is not None else "n/a (fewer than 3 rounds)"} % |
| worst error | {max(errors):.1f} % |
| measured range | {result.measured_range_ms[0]:.3f}–{result.measured_range_ms[1]:.3f} ms |
| prediction time per plan | {min(per_plan):.0f} µs (best of 3 passes over {len(plans)} plans; median {statistics.median(per_plan):.0f} µs) |

The profile's calibration for this model: {calibration.source if calibration else "none (the sum of isolated layers)"}.

Load average (1 min) while measuring: {data['load_average']}; after validation {load_validate}, during the
prediction timing {load_predict}: {_common.load_sentence(data['load_average']['mean'])}.
"""
    _common.write("cost_model", data, md)


if __name__ == "__main__":
    main()
