import torch

from autoprune import baseline as baseline_module
from autoprune.baseline import BaselineSpec, get_baseline
from autoprune.data import load_data
from autoprune.training import TrainRecipe

SPEC = BaselineSpec("resnet18", "digits", (1, 3, 16, 16), 10, 0, TrainRecipe(epochs=2, batch_size=64))


def test_baseline_is_trained_once_then_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTOPRUNE_HOME", str(tmp_path))  # an empty cache: other tests may have trained SPEC
    data = load_data("digits", (16, 16), seed=0)
    epochs = []
    first = get_baseline(SPEC, data, on_epoch=lambda e, n, loss: epochs.append(e))
    assert epochs == [1, 2]
    assert not first.cached
    assert first.accuracy > 0.3  # learned something real on 10 classes (chance is 0.1)

    def fail(*args, **kwargs):
        raise AssertionError("the cached baseline was retrained")

    monkeypatch.setattr(baseline_module, "train_epochs", fail)
    second = get_baseline(SPEC, data)
    assert second.cached
    assert second.accuracy == first.accuracy
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)


def test_half_written_cache_entry_is_retrained():
    data = load_data("digits", (16, 16), seed=0)
    spec = BaselineSpec("resnet18", "digits", (1, 3, 16, 16), 10, 1, TrainRecipe(epochs=1))
    get_baseline(spec, data)
    weights = baseline_module.baseline_dir() / f"{spec.cache_key()}.pt"
    weights.write_bytes(weights.read_bytes()[:100])  # as if a crash had cut it short
    again = get_baseline(spec, data)
    assert not again.cached


def test_cache_key_depends_on_recipe_and_seed():
    assert SPEC.cache_key() != BaselineSpec(**{**SPEC.__dict__, "seed": 1}).cache_key()
    assert SPEC.cache_key() != BaselineSpec(**{**SPEC.__dict__, "recipe": TrainRecipe(epochs=3)}).cache_key()


def test_same_spec_trains_the_same_weights_whatever_ran_before(monkeypatch, tmp_path):
    data = load_data("digits", (16, 16), seed=0)
    spec = BaselineSpec("resnet18", "digits", (1, 3, 16, 16), 10, 3, TrainRecipe(epochs=1))
    models = []
    for k, draws in enumerate((0, 1000)):
        monkeypatch.setenv("AUTOPRUNE_HOME", str(tmp_path / str(k)))
        torch.rand(draws)  # other code consumed random numbers first
        models.append(get_baseline(spec, data))
    assert not models[1].cached and models[0].accuracy == models[1].accuracy
    for a, b in zip(models[0].model.state_dict().values(), models[1].model.state_dict().values()):
        assert torch.equal(a, b)
