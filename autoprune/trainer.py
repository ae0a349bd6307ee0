"""The one training loop: every caller (baseline, the evaluator's brief fine-tune, the pruning schedules,
distillation, export) trains through :class:`Trainer`.

Contract:

1. ``Trainer(model, recipe, total_steps, device=...)`` seeds the global generator with ``seed`` (dropout and
   the like draw from it), moves the model to the device (channels_last for convnets on CUDA) and builds SGD
   with momentum and weight decay, and the learning-rate schedule spanning ``total_steps`` optimiser steps:
   linear warm-up over ``recipe.warmup_steps``, then cosine decay to zero (or constant).
2. ``run(batches, steps)`` takes ``steps`` optimiser steps from the iterator ``batches`` and may be called
   again and again (chunks, with evaluation between them); the schedule continues where it stopped, and a
   caller may stop before ``total_steps`` (a candidate cut short). ``fit_epochs(loader, epochs)`` is the
   epoch-budgeted use.
3. After every optimiser step ``after_step(model)`` runs (sparsity masks re-applied, so pruned weights stay
   exactly zero). A NaN or infinite loss raises :class:`NonFiniteLoss`, the one error a diverging run gives.
4. The model stays on the device afterwards; callers that need it on the CPU move it back.

On CUDA the forward and loss run under autocast: bf16 where supported, fp16 with a gradient scaler otherwise.
The loss is pluggable: ``loss_fn(model, images, labels) -> scalar`` (cross-entropy, distillation, a penalty).

Example::

    trainer = Trainer(model, TrainRecipe(lr=0.01), total_steps=30, after_step=masks.apply)
    for chunk in (10, 10, 10):
        trainer.run(batches, chunk)
        ...evaluate, maybe stop...
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn

from autoprune.devices import autocast_dtype, memory_format, to_device
from autoprune.errors import UserError

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
StepHook = Callable[[nn.Module], None]
Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]
LR_SCHEDULES = ("cosine", "constant")


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or infinite loss; the candidate is unusable."""


@dataclass(frozen=True)
class TrainRecipe:
    """How a model is trained: SGD (``momentum``, ``weight_decay``) from learning rate ``lr``, batches of
    ``batch_size``, ``epochs`` passes (epoch-budgeted uses), ``warmup_steps`` of linear warm-up, then
    ``lr_schedule`` ("cosine" to zero over the budget, or "constant").

    Part of the baseline cache key: change it and the baseline retrains. ``to_dict`` leaves out the fields
    added later while they hold their defaults, so keys (and studies) written before them stay valid.
    """

    epochs: int = 3
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int = 0
    lr_schedule: str = "cosine"

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.warmup_steps < 0:
            raise UserError(f"training recipe needs epochs >= 0, batch size >= 1, warm-up >= 0: {self}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"learning rate must be positive, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise UserError(f"learning-rate schedule {self.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")

    def to_dict(self) -> dict:
        data = asdict(self)
        for name, default in (("warmup_steps", 0), ("lr_schedule", "cosine")):
            if data[name] == default:
                del data[name]
        return data


def cross_entropy_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(images), labels)


def cycle(loader: Iterable) -> Batches:
    """Batches from ``loader`` forever (a new shuffled pass each time it runs out)."""
    while True:
        yield from loader


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base learning rate before optimiser step ``step`` (0-based) of ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, span) / span))


class Trainer:
    """Trains one model on one device under one recipe; see the module docstring for the contract."""

    def __init__(
        self,
        model: nn.Module,
        recipe: TrainRecipe,
        total_steps: int,
        *,
        device: torch.device | str = "cpu",
        loss_fn: LossFn = cross_entropy_loss,
        after_step: StepHook | None = None,
        seed: int = 0,
        mixed_precision: bool = True,
    ) -> None:
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.layout = memory_format(model, self.device)
        self.model = model.to(self.device, memory_format=self.layout)
        self.recipe = recipe
        self.total_steps = max(1, total_steps)
        self.loss_fn = loss_fn
        self.after_step = after_step
        self.steps_done = 0
        self.dtype = autocast_dtype(self.device) if mixed_precision else None
        self.optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                         weight_decay=recipe.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.total_steps, recipe.warmup_steps, recipe.lr_schedule)
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None
        # A finiteness check reads the loss back from the device: every step on the CPU (free), every few
        # steps on a GPU, where a read-back per step would stall the queue of kernels.
        self._check_every = 1 if self.device.type == "cpu" else 16

    def run(self, batches: Batches, steps: int) -> float:
        """Take ``steps`` optimiser steps from ``batches``; return their mean loss (NaN when ``steps`` is 0).

        The model is (back) on the trainer's device first, so a caller may move it away between chunks (to
        prune on the CPU, say) without breaking the optimiser's state.
        """
        self.model.to(self.device, memory_format=self.layout)
        self.model.train()
        pending: list[torch.Tensor] = []
        total, count = 0.0, 0
        for _ in range(steps):
            images, labels = next(batches)
            pending.append(self._step(images, labels))
            if len(pending) >= self._check_every:
                total, count = self._drain(pending, total, count)
        total, count = self._drain(pending, total, count)
        self.optimizer.zero_grad(set_to_none=True)  # gradients are not part of the trained model
        self.model.eval()
        return total / count if count else math.nan

    def fit_epochs(self, loader: Iterable, epochs: int, on_epoch: Callable[[int, float], None] | None = None) -> float:
        """``epochs`` passes over ``loader``; ``on_epoch(epoch, mean_loss)`` after each (from 1). Returns the
        last epoch's mean loss (NaN for no epochs)."""
        mean = math.nan
        for epoch in range(1, epochs + 1):
            mean = self.run(iter(loader), len(loader))
            if on_epoch is not None:
                on_epoch(epoch, mean)
        return mean

    def _step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = to_device(images, self.device, self.layout)
        labels = labels.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        if self.dtype is None:
            loss = self.loss_fn(self.model, images, labels)
        else:
            with torch.autocast(self.device.type, dtype=self.dtype):
                loss = self.loss_fn(self.model, images, labels)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.scheduler.step()
        if self.after_step is not None:
            self.after_step(self.model)
        self.steps_done += 1
        return loss.detach()

    def _drain(self, pending: list[torch.Tensor], total: float, count: int) -> tuple[float, int]:
        if not pending:
            return total, count
        values = torch.stack(pending).float().cpu().tolist() if len(pending) > 1 else [float(pending[0])]
        first = self.steps_done - len(pending) + 1
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                raise NonFiniteLoss(f"training loss became {value} at step {first + offset}")
        pending.clear()
        return total + sum(values), count + len(values)


def masks_on(masks, device: torch.device | str):
    """``masks`` (an :class:`~autoprune.pruning.unstructured.Masks`) with its tensors on ``device``."""
    device = torch.device(device)
    if not masks or all(m.device == device for m in masks.masks.values()):
        return masks
    return type(masks)({n: m.to(device) for n, m in masks.masks.items()}, dict(masks.patterns))


def mask_hook(masks, device: torch.device | str = "cpu") -> StepHook | None:
    """The ``after_step`` hook that re-applies ``masks`` (None when there are none)."""
    return masks_on(masks, device).apply if masks else None
