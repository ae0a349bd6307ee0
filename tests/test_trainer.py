"""The one trainer's recipe, hook, guard and devices, tested once on a tiny real model."""

import math

import pytest
import torch
from torch import nn

from autoprune.devices import autocast_dtype, memory_format, numerics_key, resolve_device
from autoprune.errors import UserError
from autoprune.trainer import NonFiniteLoss, Trainer, TrainRecipe, cycle, lr_factor

pytestmark = pytest.mark.timeout(60)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3))


def _batches(n: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(8, 3, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)]
    return data


def test_lr_factor_warms_up_linearly_then_decays_by_cosine_to_zero():
    assert [lr_factor(s, 10, 2, "cosine") for s in (0, 1)] == [0.5, 1.0]
    assert lr_factor(2, 10, 2, "cosine") == 1.0
    assert lr_factor(6, 10, 2, "cosine") == pytest.approx(0.5)
    assert lr_factor(10, 10, 2, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(7, 10, 0, "constant") == 1.0


def test_trainer_follows_the_recipe_step_by_step_and_calls_the_hook():
    model, lrs = _net(), []
    recipe = TrainRecipe(lr=0.1, momentum=0.5, weight_decay=1e-3, warmup_steps=2)
    trainer = Trainer(model, recipe, total_steps=8, after_step=lambda m: lrs.append(trainer.optimizer.param_groups[0]["lr"]))
    group = trainer.optimizer.param_groups[0]
    assert (group["momentum"], group["weight_decay"]) == (0.5, 1e-3)
    assert group["lr"] == pytest.approx(0.05)  # first warm-up step: half the base rate
    batches = cycle(_batches())
    first = trainer.run(batches, 4)
    trainer.run(batches, 4)
    # the hook sees the rate of the next step (the scheduler has stepped): warm-up, then cosine to zero
    expected = [0.1 * lr_factor(s + 1, 8, 2, "cosine") for s in range(8)]
    assert lrs == pytest.approx(expected)
    assert trainer.steps_done == 8 and not model.training and math.isfinite(first)


def test_chunks_train_exactly_like_one_run_and_the_seed_decides():
    def train(chunks, seed=0):
        model = _net()
        trainer = Trainer(model, TrainRecipe(lr=0.05), total_steps=6, seed=seed)
        batches = cycle(_batches())
        for c in chunks:
            trainer.run(batches, c)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    whole = train([6])
    assert torch.equal(whole, train([2, 1, 3]))
    assert not torch.equal(whole, _net_params())


def _net_params():
    return torch.cat([p.detach().flatten() for p in _net().parameters()])


def test_fit_epochs_reports_each_epoch_and_lowers_the_loss():
    seen = []
    model = _net()
    data = _batches(4)
    trainer = Trainer(model, TrainRecipe(lr=0.1), total_steps=4 * 8)
    last = trainer.fit_epochs(data, 8, on_epoch=lambda e, loss: seen.append((e, loss)))
    assert [e for e, _ in seen] == list(range(1, 9))
    assert last == seen[-1][1] < seen[0][1]


def test_non_finite_loss_raises_the_one_error_with_the_step():
    calls = {"n": 0}

    def loss_fn(model, images, labels):
        calls["n"] += 1
        loss = nn.functional.cross_entropy(model(images), labels)
        return loss * float("nan") if calls["n"] == 3 else loss

    trainer = Trainer(_net(), TrainRecipe(lr=0.01), total_steps=5, loss_fn=loss_fn)
    with pytest.raises(NonFiniteLoss, match="step 3"):
        trainer.run(cycle(_batches()), 5)


def test_recipe_validates_and_keeps_old_cache_keys():
    assert TrainRecipe().to_dict() == {"epochs": 3, "batch_size": 64, "lr": 0.05, "momentum": 0.9,
                                       "weight_decay": 5e-4}
    assert TrainRecipe(warmup_steps=5).to_dict()["warmup_steps"] == 5
    for bad in ({"lr": 0.0}, {"lr": float("nan")}, {"batch_size": 0}, {"lr_schedule": "step"}):
        with pytest.raises(UserError):
            TrainRecipe(**bad)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError, match="not one of"):
        resolve_device("gpu")
    with pytest.raises(UserError, match="not one of"):
        resolve_device("cuda:x")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(UserError, match="CUDA GPU"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_cpu_trains_in_fp32_in_the_default_layout():
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu) is None and numerics_key(cpu) == ""
    assert memory_format(_net(), cpu) == torch.contiguous_format
    assert Trainer(_net(), TrainRecipe(), 1).scaler is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_trains_with_mixed_precision_and_channels_last():
    device = torch.device("cuda")
    model = _net()
    trainer = Trainer(model, TrainRecipe(lr=0.1), total_steps=4 * 8, device=device)
    assert trainer.dtype in (torch.bfloat16, torch.float16)
    assert (trainer.scaler is not None) == (trainer.dtype == torch.float16)
    conv = model[0].weight
    assert conv.is_cuda and conv.is_contiguous(memory_format=torch.channels_last)
    seen = []
    trainer.fit_epochs(_batches(4), 8, on_epoch=lambda e, loss: seen.append(loss))
    assert seen[-1] < seen[0]
    assert numerics_key(device).startswith("cuda/")
    with pytest.raises(NonFiniteLoss):
        Trainer(_net(), TrainRecipe(lr=1e30), total_steps=40, device=device).run(cycle(_batches()), 40)
