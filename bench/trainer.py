"""Benchmark the one trainer: (a) its throughput against a plain PyTorch loop, (b) dense baselines on Fashion-MNIST.

(a) ``throughput``: the same model, batch and optimiser (SGD momentum 0.9, weight decay 5e-4, cosine schedule)
trained by :class:`autoprune.trainer.Trainer` and by a hand-written loop, in interleaved rounds of ``--steps``
steps (so drifting machine load hits both alike; each round builds its trainer or optimiser anew, so the
trainer's per-run set-up counts against it); images/s per round, the ratio of the medians. Goal >= 0.95.

(b) ``baselines``: ResNet-18 and MobileNetV2 trained from scratch with the default recipe
(:class:`~autoprune.trainer.TrainRecipe`, ``--epochs`` of them) on Fashion-MNIST resized 28 -> 32 px, on the
full 60,000-image train split (``--train-split full``) or the search's 80 % split (``search``), and scored on
the official 10,000-image test split after every epoch. Goal: >= 92 % test accuracy. Records wall and CPU
time, the load average, and rewrites the results after every epoch, so a long run leaves figures behind.

    python bench/trainer.py throughput [--model resnet18] [--steps 3] [--rounds 12] [--batch 64] [--device cpu]
    python bench/trainer.py baselines [--models resnet18,mobilenet_v2] [--epochs 5] [--lr 0.05] [--device cpu]

Writes ``bench/results/trainer_throughput.{json,md}`` or ``bench/results/trainer_baselines.{json,md}``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import LoadSampler, environment, load_sentence, write  # noqa: E402

from autoprune.devices import resolve_device  # noqa: E402
from autoprune.models import create_model  # noqa: E402
from autoprune.trainer import Trainer, TrainRecipe  # noqa: E402


def plain_loop(model: nn.Module, batches, steps: int, recipe: TrainRecipe, device) -> None:
    """The loop a PyTorch user writes by hand (the reference the trainer must not be slower than)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    model.train()
    for _ in range(steps):
        images, labels = next(batches)
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        scheduler.step()
        float(loss.detach())  # a plain loop logs its loss too
    if device.type == "cuda":
        torch.cuda.synchronize()


def throughput(args) -> None:
    device = resolve_device(args.device)
    recipe = TrainRecipe(batch_size=args.batch)
    torch.manual_seed(0)
    images = torch.randn(args.batch, *args.shape)
    labels = torch.randint(0, 10, (args.batch,))
    batches = iter(lambda: (images, labels), None)
    env, sampler, started = environment(), LoadSampler(), time.perf_counter()
    rates: dict[str, list[float]] = {"trainer": [], "plain": []}
    models = {arm: create_model(args.model, 10).to(device) for arm in rates}
    for round_ in range(args.rounds + 1):  # round 0 warms both up and is not counted
        for arm in (("trainer", "plain") if round_ % 2 == 0 else ("plain", "trainer")):
            t0 = time.perf_counter()
            if arm == "trainer":
                Trainer(models[arm], recipe, args.steps, device=device, mixed_precision=args.amp).run(batches, args.steps)
                if device.type == "cuda":
                    torch.cuda.synchronize()
            else:
                plain_loop(models[arm], batches, args.steps, recipe, device)
            if round_:
                rates[arm].append(args.steps * args.batch / (time.perf_counter() - t0))
    load = sampler.summary()
    med = {arm: statistics.median(r) for arm, r in rates.items()}
    ratio = med["trainer"] / med["plain"]
    data = {"environment": env, "load_average": load, "wall_seconds": round(time.perf_counter() - started, 1),
            "model": args.model, "batch": args.batch, "input": list(args.shape), "steps_per_round": args.steps,
            "rounds": args.rounds, "device": str(device), "mixed_precision": args.amp and device.type == "cuda",
            "images_per_second": {arm: [round(x, 1) for x in r] for arm, r in rates.items()},
            "median_images_per_second": {arm: round(x, 1) for arm, x in med.items()},
            "ratio_trainer_to_plain": round(ratio, 3), "goal": ">= 0.95"}
    md = (f"Training throughput, {args.model}, batch {args.batch}, input {'x'.join(map(str, args.shape))}, "
          f"{device}; {args.rounds} interleaved rounds of {args.steps} steps each (after a warm-up round).\n\n"
          "| loop | median images/s | rounds |\n|---|---|---|\n"
          + "".join(f"| {arm} | {med[arm]:.1f} | {', '.join(f'{x:.1f}' for x in rates[arm])} |\n" for arm in rates)
          + f"\nRatio trainer / plain: **{ratio:.3f}** (goal >= 0.95). Load: {load_sentence(load['mean'])}.\n")
    write(args.name or "trainer_throughput", data, md)


def baselines(args) -> None:
    from torch.utils.data import ConcatDataset

    from autoprune.data import load_data
    from autoprune.training import evaluate

    device = resolve_device(args.device)
    recipe = TrainRecipe(epochs=args.epochs, batch_size=args.batch, lr=args.lr, warmup_steps=args.warmup)
    data = load_data(args.data, (32, 32), args.seed)
    train = ConcatDataset([data.train, data.val]) if args.train_split == "full" else data.train
    from autoprune.data import AugmentedLoader
    from torch.utils.data import DataLoader

    loader = DataLoader(train, batch_size=recipe.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(args.seed))
    if data.augmentation is not None:
        loader = AugmentedLoader(loader, data.augmentation, args.seed)
    test = data.loader("test", 256, args.seed, shuffle=False)
    env, sampler, started = environment(), LoadSampler(), time.perf_counter()
    results = {}
    for name in args.models.split(","):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            model = create_model(name, data.num_classes)
        trainer = Trainer(model, recipe, recipe.epochs * len(loader), device=device, seed=args.seed)
        row = results[name] = {"epochs": []}
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for epoch in range(1, recipe.epochs + 1):
            batches, losses = iter(loader), []
            for start in range(0, len(loader), 100):  # chunks of 100 steps: progress in the log
                losses.append(trainer.run(batches, min(100, len(loader) - start)))
                print(f"{name} epoch {epoch}: {trainer.steps_done} steps, loss {losses[-1]:.4f}, "
                      f"{time.perf_counter() - wall0:.0f} s", flush=True)
            loss = statistics.mean(losses)
            test_acc = evaluate(model, test, data.num_classes, device).accuracy
            row["epochs"].append({"epoch": epoch, "train_loss": round(loss, 4), "test_accuracy": round(test_acc, 4),
                                  "wall_seconds": round(time.perf_counter() - wall0, 1),
                                  "cpu_seconds": round(time.process_time() - cpu0, 1),
                                  "loadavg_1_5_15": [round(x, 2) for x in __import__("os").getloadavg()]})
            print(f"{name} epoch {epoch}/{recipe.epochs}: loss {loss:.4f}, test {test_acc:.4f}", flush=True)
            _write_baselines(env, args, recipe, data, train, device, results, sampler, started)
    _write_baselines(env, args, recipe, data, train, device, results, sampler, started, final=True)


def _write_baselines(env, args, recipe, data, train, device, results, sampler, started, final=False) -> None:
    import os

    load = sampler.summary() if final else {"so_far_loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
                                           "mean_so_far": round(statistics.mean(sampler.samples), 2)}
    data_out = {"environment": env, "load_average": load,
                "wall_seconds": round(time.perf_counter() - started, 1), "complete": final,
                "data": args.data, "train_images": len(train), "test_images": len(data.test), "input": [3, 32, 32],
                "recipe": recipe.to_dict() | {"warmup_steps": recipe.warmup_steps, "lr_schedule": recipe.lr_schedule},
                "augmentation": data.augmentation.describe() if data.augmentation else "none",
                "device": str(device), "torch_threads": torch.get_num_threads(), "results": results, "goal": ">= 0.92"}
    rows = "".join(
        f"| {name} | {e['epoch']} | {e['train_loss']} | {100 * e['test_accuracy']:.2f} % | {e['wall_seconds']} | "
        f"{e['cpu_seconds']} | {e['loadavg_1_5_15'][0]} |\n" for name, r in results.items() for e in r["epochs"])
    mean = load.get("mean", load.get("mean_so_far"))
    md = (f"Dense baselines on {args.data} ({len(train):,} train images, 28 -> 32 px, augmentation "
          f"{data_out['augmentation']}), scored on the official {len(data.test):,}-image test split. Recipe: "
          f"SGD lr {recipe.lr}, momentum {recipe.momentum}, weight decay {recipe.weight_decay}, batch "
          f"{recipe.batch_size}, {recipe.epochs} epochs, warm-up {recipe.warmup_steps} steps, {recipe.lr_schedule} "
          f"to zero; {device}, {torch.get_num_threads()} torch thread(s).{'' if final else ' (run in progress)'}\n\n"
          "| model | epoch | train loss | test accuracy | wall s | CPU s | load (1 min) |\n|---|---|---|---|---|---|---|\n"
          + rows + f"\nGoal >= 92 % test accuracy. Load: {load_sentence(mean)}.\n")
    write(args.name or "trainer_baselines", data_out, md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    a = sub.add_parser("throughput")
    a.add_argument("--model", default="resnet18")
    a.add_argument("--steps", type=int, default=3, help="steps per round (short rounds: load bursts hit both arms)")
    a.add_argument("--rounds", type=int, default=12)
    a.add_argument("--batch", type=int, default=64)
    a.add_argument("--shape", type=lambda s: tuple(int(x) for x in s.split("x")), default=(3, 32, 32))
    a.add_argument("--device", default="cpu")
    a.add_argument("--no-amp", dest="amp", action="store_false", help="CUDA: train in FP32")
    a.add_argument("--name", default="")
    b = sub.add_parser("baselines")
    b.add_argument("--models", default="resnet18,mobilenet_v2")
    b.add_argument("--data", default="fashion-mnist")
    b.add_argument("--epochs", type=int, default=TrainRecipe().epochs)
    b.add_argument("--lr", type=float, default=TrainRecipe().lr)
    b.add_argument("--batch", type=int, default=TrainRecipe().batch_size)
    b.add_argument("--warmup", type=int, default=0, help="warm-up steps")
    b.add_argument("--train-split", choices=("full", "search"), default="full")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--device", default="cpu")
    b.add_argument("--name", default="")
    args = parser.parse_args()
    throughput(args) if args.part == "throughput" else baselines(args)


if __name__ == "__main__":
    main()
