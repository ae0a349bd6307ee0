"""Knowledge distillation from the dense model: the loss, and a ``loss_fn`` for :class:`autoprune.trainer.Trainer`.

The student (a pruned candidate) learns from the teacher's temperature-softened outputs as well as the labels
(Hinton et al., 2015): ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, labels)``. The
``T^2`` factor keeps the soft-target gradients on the same scale as the label gradients whatever ``T`` is.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from autoprune.errors import UserError

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class DistillSettings:
    """``alpha`` in [0, 1]: share of the distillation term; ``temperature`` > 0 softens both distributions."""

    alpha: float = 0.9
    temperature: float = 4.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise UserError(f"--distill-temperature must be positive (typically 2 to 8), got {self.temperature}")
        if not (0.0 <= self.alpha <= 1.0):
            raise UserError(f"--distill-alpha must be in [0, 1] (the share of the distillation loss), got {self.alpha}")


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean over the batch of KL(softmax(teacher/T) || softmax(student/T)), in nats (no T^2 factor)."""
    t = temperature
    return nn.functional.kl_div(
        nn.functional.log_softmax(student_logits / t, dim=1), nn.functional.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean", log_target=True,
    )


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float, weight: float) -> torch.Tensor:
    """``weight * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - weight) * CE(s, labels)`` (Hinton et al.)."""
    kd = soft_kl(student_logits, teacher_logits, temperature) * (temperature * temperature)
    return weight * kd + (1.0 - weight) * nn.functional.cross_entropy(student_logits, labels)


def kd_loss_fn(teacher: nn.Module, settings: DistillSettings = DistillSettings()) -> LossFn:
    """A ``loss_fn(model, images, labels)`` for the trainer that distils from ``teacher``. The teacher runs in
    eval mode under ``no_grad``; its parameters are left as they are (students are often deep copies of the
    teacher, and would inherit a frozen flag). When the batches are on another device than the teacher (a CPU
    baseline teaching a student on the GPU), a copy of the teacher is moved there once; the teacher itself stays
    where it is."""
    teacher.eval()
    copies: dict[torch.device, nn.Module] = {}

    def teacher_on(device: torch.device) -> nn.Module:
        first = next(teacher.parameters(), None)
        if first is None or first.device == device:
            return teacher
        if device not in copies:
            copies[device] = copy.deepcopy(teacher).to(device).eval()
        return copies[device]

    def loss_fn(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = teacher_on(images.device)(images)
        return distillation_loss(model(images), target, labels, settings.temperature, settings.alpha)

    return loss_fn


@torch.no_grad()
def mean_kl(student: nn.Module, teacher: nn.Module, batches, temperature: float = 1.0) -> float:
    """Mean student-teacher KL (nats per sample, at ``temperature``) over ``batches`` of (images, labels)."""
    student.eval()
    teacher.eval()
    total, count = 0.0, 0
    for images, _ in batches:
        total += float(soft_kl(student(images), teacher(images), temperature)) * len(images)
        count += len(images)
    return total / max(1, count)
