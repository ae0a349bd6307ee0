"""Evaluation, BatchNorm recalibration, and the two common uses of :class:`autoprune.trainer.Trainer`.

The training loop itself lives in :mod:`autoprune.trainer`; its public names are re-exported here because
the rest of the package (and older code) imports them from this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from autoprune.devices import to_device
from autoprune.trainer import (  # noqa: F401 - re-exported
    LossFn, NonFiniteLoss, StepHook, Trainer, TrainRecipe, cross_entropy_loss, cycle,
)

FINETUNE_MOMENTUM = 0.9
FINETUNE_WEIGHT_DECAY = 5e-4


@dataclass(frozen=True)
class EvalResult:
    """Top-1 accuracy in [0, 1], and per-class correct/total counts (index = class id)."""

    accuracy: float
    correct_per_class: tuple[int, ...]
    total_per_class: tuple[int, ...]

    @property
    def per_class_accuracy(self) -> tuple[float, ...]:
        return tuple(c / t if t else float("nan") for c, t in zip(self.correct_per_class, self.total_per_class))


def finetune_recipe(lr: float, batch_size: int = 64, lr_schedule: str = "cosine") -> TrainRecipe:
    """The brief fine-tune's recipe: SGD momentum 0.9, weight decay 5e-4, cosine to zero from ``lr`` (or constant)."""
    return TrainRecipe(epochs=0, batch_size=batch_size, lr=lr, momentum=FINETUNE_MOMENTUM,
                       weight_decay=FINETUNE_WEIGHT_DECAY, lr_schedule=lr_schedule)


def train_epochs(
    model: nn.Module,
    loader: DataLoader,
    recipe: TrainRecipe,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
    device: torch.device | str = "cpu",
) -> float:
    """Train ``model`` for ``recipe.epochs`` epochs on ``device``; return the last epoch's mean loss.

    ``on_epoch(epoch, mean_loss)`` is called after each epoch (epochs count from 1). The model is left on
    ``device`` in eval mode.
    """
    trainer = Trainer(model, recipe, recipe.epochs * len(loader), device=device, seed=seed)
    return trainer.fit_epochs(loader, recipe.epochs, on_epoch)


def finetune_steps(
    model: nn.Module,
    loader: DataLoader,
    steps: int,
    lr: float = 0.01,
    seed: int = 0,
    loss_fn: LossFn = cross_entropy_loss,
    after_step: StepHook | None = None,
    device: torch.device | str = "cpu",
    lr_schedule: str = "cosine",
) -> float:
    """Fine-tune ``model`` for ``steps`` SGD steps (:func:`finetune_recipe`); return the mean loss of the last
    (up to) 10 steps, NaN if ``steps == 0``. Raises :class:`NonFiniteLoss` when the loss is NaN or infinite."""
    if steps <= 0:
        return math.nan
    trainer = Trainer(model, finetune_recipe(lr, lr_schedule=lr_schedule), steps, device=device, loss_fn=loss_fn,
                      after_step=after_step, seed=seed)
    batches = cycle(loader)
    head = steps - min(10, steps)
    if head:
        trainer.run(batches, head)
    return trainer.run(batches, steps - head)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, num_classes: int, device: torch.device | str = "cpu") -> EvalResult:
    """Top-1 accuracy of ``model`` over ``loader`` on ``device`` (FP32), overall and per class."""
    device = torch.device(device)
    model.to(device).eval()
    correct = torch.zeros(num_classes, dtype=torch.long, device=device)
    total = torch.zeros(num_classes, dtype=torch.long, device=device)
    for images, labels in loader:
        labels = labels.to(device, non_blocking=True)
        predictions = model(to_device(images, device, torch.contiguous_format)).argmax(dim=1)
        total += torch.bincount(labels, minlength=num_classes)
        correct += torch.bincount(labels[predictions == labels], minlength=num_classes)
    overall = int(correct.sum()) / max(1, int(total.sum()))
    return EvalResult(overall, tuple(correct.tolist()), tuple(total.tolist()))


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: DataLoader, batches: int, device: torch.device | str = "cpu") -> None:
    """Re-estimate BatchNorm running statistics on ``batches`` training batches (no weight update), on ``device``.

    Pruning changes the activation statistics each BN layer sees; recomputing them is the cheap proxy that
    recovers most of the accuracy a pruned candidate will have after fine-tuning.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or batches <= 0:
        return
    device = torch.device(device)
    model.to(device)
    saved = [(m, m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    for _, (images, _labels) in zip(range(batches), cycle(loader)):
        model(to_device(images, device, torch.contiguous_format))
    for m, momentum in saved:
        m.momentum = momentum
    model.eval()
