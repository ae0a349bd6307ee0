"""Knowledge distillation: the loss has the textbook limits, and a few KD steps pull the student to the teacher."""

from __future__ import annotations

import copy

import pytest
import torch

from autoprune.distill import DistillSettings, distillation_loss, kd_loss_fn, mean_kl
from autoprune.errors import UserError
from autoprune.plan import PruningPlan
from autoprune.pruning import generate_space, prune
from autoprune.training import finetune_steps, recalibrate_bn



def test_distillation_loss_limits():
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 10), torch.randn(8, 10)
    labels = torch.randint(0, 10, (8,))
    ce = torch.nn.functional.cross_entropy(student, labels)
    assert torch.isclose(distillation_loss(student, teacher, labels, 4.0, 0.0), ce)
    assert float(distillation_loss(teacher, teacher, labels, 4.0, 1.0)) == pytest.approx(0.0, abs=1e-6)
    kl = torch.nn.functional.kl_div(torch.log_softmax(student / 2, 1), torch.softmax(teacher / 2, 1),
                                    reduction="batchmean")
    assert float(distillation_loss(student, teacher, labels, 2.0, 1.0)) == pytest.approx(4 * float(kl), rel=1e-5)


def test_distill_settings_reject_bad_values():
    with pytest.raises(UserError, match="--distill-alpha"):
        DistillSettings(alpha=1.5)
    with pytest.raises(UserError, match="--distill-temperature"):
        DistillSettings(temperature=0.0)


def _pruned_student(teacher, shape, seed, batches):
    space = generate_space(teacher, "resnet18", shape, alignment=8)
    student = copy.deepcopy(teacher)
    prune(student, PruningPlan.uniform(space.group_names, 0.5, alignment=8), torch.zeros(shape), seed=seed)
    recalibrate_bn(student, batches, len(batches))
    return student


def test_kd_steps_lower_student_teacher_kl(dense):
    teacher = dense.model
    # Two fixed training batches, cycled: the KL is measured on exactly the data the steps saw.
    batches = [b for _, b in zip(range(2), dense.data.loader("train", 64, dense.seed))]
    student = _pruned_student(teacher, dense.shape, dense.seed, batches)
    before = mean_kl(student, teacher, batches)
    # A small step: at 0.01 with momentum the first steps on a freshly pruned model move it away from any target.
    kd = kd_loss_fn(teacher, DistillSettings(alpha=1.0, temperature=1.0))
    loss = finetune_steps(student, batches, 10, lr=0.001, seed=dense.seed, loss_fn=kd)
    after = mean_kl(student, teacher, batches)
    assert torch.isfinite(torch.tensor(loss))
    assert after < 0.7 * before, (before, after)
    # Equal steps on labels alone bring the student less close to the teacher.
    plain = _pruned_student(teacher, dense.shape, dense.seed, batches)
    finetune_steps(plain, batches, 10, lr=0.001, seed=dense.seed)
    assert after < mean_kl(plain, teacher, batches)
    # The teacher was only read: its parameters still train (students are copies of it).
    assert all(p.requires_grad for p in teacher.parameters())
