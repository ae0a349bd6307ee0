"""Training, brief fine-tuning, evaluation and BatchNorm recalibration. CPU-friendly, seeded."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or infinite loss; the candidate is unusable."""


@dataclass(frozen=True)
class TrainRecipe:
    """How a baseline is trained. Part of the baseline cache key: change it and the baseline retrains."""

    epochs: int = 3
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EvalResult:
    """Top-1 accuracy in [0, 1], and per-class correct/total counts (index = class id)."""

    accuracy: float
    correct_per_class: tuple[int, ...]
    total_per_class: tuple[int, ...]

    @property
    def per_class_accuracy(self) -> tuple[float, ...]:
        return tuple(c / t if t else float("nan") for c, t in zip(self.correct_per_class, self.total_per_class))


def _sgd(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def _step(model, optimizer, images, labels, loss_fn) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, images, labels)
    if not torch.isfinite(loss):
        raise NonFiniteLoss(f"loss became {loss.item()} during training")
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def cross_entropy_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(images), labels)


def train_epochs(
    model: nn.Module,
    loader: DataLoader,
    recipe: TrainRecipe,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
) -> float:
    """Train ``model`` for ``recipe.epochs`` epochs with SGD and a cosine schedule; return the last epoch's mean loss.

    ``on_epoch(epoch, mean_loss)`` is called after each epoch (epochs count from 1).
    """
    torch.manual_seed(seed)
    optimizer = _sgd(model, recipe.lr, recipe.momentum, recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, recipe.epochs * len(loader)))
    model.train()
    mean_loss = math.nan
    for epoch in range(1, recipe.epochs + 1):
        total, batches = 0.0, 0
        for images, labels in loader:
            total += _step(model, optimizer, images, labels, cross_entropy_loss)
            scheduler.step()
            batches += 1
        mean_loss = total / max(1, batches)
        if on_epoch is not None:
            on_epoch(epoch, mean_loss)
    model.eval()
    return mean_loss


def cycle(loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches from ``loader`` forever (a new shuffled pass each time it runs out)."""
    while True:
        yield from loader


def finetune_steps(
    model: nn.Module,
    loader: DataLoader,
    steps: int,
    lr: float = 0.01,
    seed: int = 0,
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy_loss,
) -> float:
    """Fine-tune ``model`` for ``steps`` SGD steps; return the mean loss of the last steps (NaN if ``steps == 0``).

    Raises :class:`NonFiniteLoss` as soon as the loss is NaN or infinite.
    """
    if steps <= 0:
        return math.nan
    torch.manual_seed(seed)
    optimizer = _sgd(model, lr, 0.9, 5e-4)
    model.train()
    losses = []
    for _, (images, labels) in zip(range(steps), cycle(loader)):
        losses.append(_step(model, optimizer, images, labels, loss_fn))
    model.eval()
    tail = losses[-min(10, len(losses)) :]
    return sum(tail) / len(tail)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, num_classes: int) -> EvalResult:
    """Top-1 accuracy of ``model`` over ``loader``, overall and per class."""
    model.eval()
    correct = torch.zeros(num_classes, dtype=torch.long)
    total = torch.zeros(num_classes, dtype=torch.long)
    for images, labels in loader:
        predictions = model(images).argmax(dim=1)
        total += torch.bincount(labels, minlength=num_classes)
        correct += torch.bincount(labels[predictions == labels], minlength=num_classes)
    overall = int(correct.sum()) / max(1, int(total.sum()))
    return EvalResult(overall, tuple(correct.tolist()), tuple(total.tolist()))


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: DataLoader, batches: int) -> None:
    """Re-estimate BatchNorm running statistics on ``batches`` training batches (no weight update).

    Pruning changes the activation statistics each BN layer sees; recomputing them is the cheap proxy that
    recovers most of the accuracy a pruned candidate will have after fine-tuning.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or batches <= 0:
        return
    saved = [(m, m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    for _, (images, _labels) in zip(range(batches), cycle(loader)):
        model(images)
    for m, momentum in saved:
        m.momentum = momentum
    model.eval()
