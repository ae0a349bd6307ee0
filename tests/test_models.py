import pytest
import torch

from autoprune.errors import UserError
from autoprune.models import available_models, classifier, create_model, load_checkpoint


def test_registry_lists_classification_models():
    names = available_models()
    for expected in ("resnet18", "mobilenet_v2", "vit_b_16", "efficientnet_b0"):
        assert expected in names
    assert "fasterrcnn_resnet50_fpn" not in names  # detection models are not classification models


def test_num_classes_sets_the_classifier():
    model = create_model("mobilenet_v3_small", num_classes=7)
    assert classifier(model).out_features == 7
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 7)


def test_unknown_model_suggests_close_match():
    with pytest.raises(UserError, match="did you mean 'resnet18'"):
        create_model("resnet81", 10)


def test_checkpoint_round_trip(tmp_path):
    model = create_model("resnet18", 10)
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    loaded = load_checkpoint(create_model("resnet18", 10), path)
    assert torch.equal(loaded.fc.weight, model.fc.weight)


def test_checkpoint_for_other_classes_names_the_tensor(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(create_model("resnet18", 100).state_dict(), path)
    with pytest.raises(UserError, match=r"'fc\.weight' has shape \(100, 512\)"):
        load_checkpoint(create_model("resnet18", 10), path)


def test_checkpoint_for_other_architecture(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(create_model("mobilenet_v2", 10).state_dict(), path)
    with pytest.raises(UserError, match="another architecture"):
        load_checkpoint(create_model("resnet18", 10), path)


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(create_model("resnet18", 10), tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="could not be read"):
        load_checkpoint(create_model("resnet18", 10), bad)


def test_pickled_model_needs_trust(tmp_path):
    model = create_model("resnet18", 10)
    path = tmp_path / "full.pt"
    torch.save(model, path)
    with pytest.raises(UserError, match="--trust-checkpoint"):
        load_checkpoint(create_model("resnet18", 10), path)
    loaded = load_checkpoint(create_model("resnet18", 10), path, trust=True)
    assert torch.equal(loaded.fc.weight, model.fc.weight)
