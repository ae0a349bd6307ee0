"""Benchmark: does knowledge distillation from the dense model help a pruned ResNet-18 at equal fine-tuning steps?

The same pruned model (ResNet-18 on mnist5k at 1x3x32x32, every channel group kept at ``--keep``, L1 importance,
BatchNorm recalibrated) is fine-tuned from the same state with the same seed, batches, optimiser (SGD, momentum 0.9,
weight decay 5e-4) and step count, once on labels only and once per distillation setting (loss of
:func:`autoprune.distill.distillation_loss`). After every ``--check`` steps the validation accuracy (FP32, PyTorch)
and the student-teacher KL (T=1, nats/sample, validation split) are recorded; at the end each student is also
statically quantized to INT8 (onnxruntime QDQ) and its accuracy measured in onnxruntime.

    python bench/distillation.py [--steps 60] [--check 20] [--keep 0.3] [--lr 0.01] [--out bench/results]

Writes ``distillation.json`` and ``distillation.md`` into ``--out``. The dense baseline is autoprune's cached one
(the README's default search trains it: 5 epochs, seed 0); without the cache it is trained first (minutes).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from autoprune.baseline import BaselineSpec, get_baseline
from autoprune.data import load_data
from autoprune.distill import DistillSettings, kd_loss_fn, mean_kl
from autoprune.hardware import device_runner
from autoprune.paths import atomic_write_text
from autoprune.plan import PruningPlan
from autoprune.pruning import generate_space, prune
from autoprune.quantize import quantize_and_evaluate
from autoprune.training import TrainRecipe, cross_entropy_loss, evaluate, finetune_steps, recalibrate_bn

SHAPE = (1, 3, 32, 32)
# (label, alpha, temperature); alpha 0 is plain cross-entropy.
ARMS = (("labels only (CE)", 0.0, 1.0), ("KD alpha 0.9, T 4", 0.9, 4.0), ("KD alpha 0.5, T 2", 0.5, 2.0))


def run_arm(student, teacher, data, alpha: float, temperature: float, args) -> dict:
    """Fine-tune ``student`` in chunks of ``args.check`` steps; accuracy and KL after each chunk."""
    loss_fn = cross_entropy_loss if alpha == 0 else kd_loss_fn(teacher, DistillSettings(alpha, temperature))
    val = data.loader("val", 256, args.seed, shuffle=False)
    curve, spent, started = [], 0, time.perf_counter()
    while spent < args.steps:
        chunk = min(args.check, args.steps - spent)
        # A fresh loader per chunk, seeded by the step count: every arm sees exactly the same batches.
        finetune_steps(student, data.loader("train", 64, args.seed + spent), chunk, lr=args.lr,
                       seed=args.seed + spent, loss_fn=loss_fn)
        spent += chunk
        curve.append({"steps": spent, "accuracy": evaluate(student, val, data.num_classes).accuracy,
                      "kl_to_teacher": mean_kl(student, teacher, val)})
    seconds = time.perf_counter() - started
    int8 = quantize_and_evaluate(student, SHAPE, data.loader("train", 64, args.seed), val, data.num_classes)
    return {"curve": curve, "final_accuracy": curve[-1]["accuracy"], "final_kl": curve[-1]["kl_to_teacher"],
            "int8_accuracy": int8.eval.accuracy, "finetune_seconds": round(seconds, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--check", type=int, default=20)
    parser.add_argument("--keep", type=float, default=0.3)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    data = load_data("mnist5k", SHAPE[2:], args.seed)
    spec = BaselineSpec("resnet18", "mnist5k", SHAPE, data.num_classes, args.seed, TrainRecipe(epochs=5), None)
    teacher = get_baseline(spec, data).model.eval()
    val = data.loader("val", 256, args.seed, shuffle=False)
    dense_accuracy = evaluate(teacher, val, data.num_classes).accuracy
    space = generate_space(teacher, "resnet18", SHAPE, alignment=8)
    pruned = copy.deepcopy(teacher)
    prune(pruned, PruningPlan.uniform(space.group_names, args.keep, alignment=8), torch.zeros(SHAPE), seed=args.seed)
    recalibrate_bn(pruned, data.loader("train", 64, args.seed), 8)
    start = {"accuracy": evaluate(pruned, val, data.num_classes).accuracy, "kl_to_teacher": mean_kl(pruned, teacher, val)}
    arms = {}
    for label, alpha, temperature in ARMS:
        print(f"{label} ...", file=sys.stderr, flush=True)
        arms[label] = {"alpha": alpha, "temperature": temperature,
                       **run_arm(copy.deepcopy(pruned), teacher, data, alpha, temperature, args)}
    import onnxruntime

    result = {
        "benchmark": "knowledge distillation at equal fine-tuning steps",
        "command": shlex.join([sys.executable.rsplit("/", 1)[-1], "bench/distillation.py", *(argv or sys.argv[1:])]),
        "machine": device_runner.machine_description(),
        "note": "2-core machine shared with other engineers' jobs at the time (load average ~8): timings are noisy; "
                "accuracies and KL are deterministic for the seed",
        "date": device_runner.now(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "onnxruntime": onnxruntime.__version__},
        "setup": {"model": "resnet18", "data": "mnist5k", "input_shape": list(SHAPE), "keep_ratio": args.keep,
                  "importance": "l1", "steps": args.steps, "lr": args.lr, "batch_size": 64, "seed": args.seed,
                  "validation_images": sum(len(y) for _, y in val), "teacher": "cached dense baseline, 5 epochs"},
        "dense_accuracy": dense_accuracy,
        "pruned_before_finetune": start,
        "arms": arms,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "distillation.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(args.out / "distillation.md", markdown(result))
    print(markdown(result))
    return 0


def markdown(r: dict) -> str:
    s = r["setup"]
    lines = [
        "# Knowledge distillation at equal fine-tuning steps",
        "",
        f"ResNet-18, {s['data']} at {'x'.join(map(str, s['input_shape']))}, every group kept at {s['keep_ratio']} "
        f"(L1), BN recalibrated, then {s['steps']} SGD steps at lr {s['lr']} (batch {s['batch_size']}, seed "
        f"{s['seed']}), same batches for every arm. Accuracy on {s['validation_images']} validation images; KL = "
        "student-teacher KL at T=1 (nats/sample). INT8 = the fine-tuned student statically quantized (onnxruntime "
        "QDQ), accuracy measured in onnxruntime.",
        "",
        f"Dense teacher: {r['dense_accuracy']:.2%}. Pruned, before fine-tuning: "
        f"{r['pruned_before_finetune']['accuracy']:.2%} (KL {r['pruned_before_finetune']['kl_to_teacher']:.3f}).",
        "",
        "| arm | " + " | ".join(f"acc @{p['steps']}" for p in next(iter(r["arms"].values()))["curve"])
        + " | final KL | INT8 acc |",
        "|---|" + "---|" * (len(next(iter(r["arms"].values()))["curve"]) + 2),
    ]
    for label, arm in r["arms"].items():
        lines.append(f"| {label} | " + " | ".join(f"{p['accuracy']:.2%}" for p in arm["curve"])
                     + f" | {arm['final_kl']:.3f} | {arm['int8_accuracy']:.2%} |")
    lines += ["", f"Machine: {r['machine']} ({r['note']}). Versions: "
              + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + f". {r['date']}, {r['seconds']} s.",
              "", f"Command: `{r['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
