import pytest
import torch

from autoprune.errors import UserError
from autoprune.models import available_models, classifier, create_model, load_checkpoint, num_outputs


def test_registry_lists_classification_models():
    names = available_models()
    for expected in ("resnet18", "mobilenet_v2", "vit_b_16", "efficientnet_b0"):
        assert expected in names
    assert "fasterrcnn_resnet50_fpn" not in names  # detection models are not classification models


def test_num_classes_sets_the_classifier():
    model = create_model("mobilenet_v3_small", num_classes=7)
    assert classifier(model).out_features == 7
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 7)


def test_squeezenet_conv_classifier_is_resized_from_a_weights_file(tmp_path):
    torch.save(create_model("squeezenet1_1", 1000).state_dict(), tmp_path / "sq.pth")
    model = create_model("squeezenet1_1", 10, weights=str(tmp_path / "sq.pth"))
    head = classifier(model)
    assert isinstance(head, torch.nn.Conv2d) and head is model.classifier[1]  # its 1x1 conv, not the last fire conv
    assert num_outputs(head) == 10 and head.in_channels == 512
    assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 10)


def test_weights_file_with_auxiliary_heads_loads_without_them(tmp_path):
    from torchvision.models import googlenet

    torch.save(googlenet(aux_logits=True, init_weights=False).state_dict(), tmp_path / "g.pth")  # as torchvision ships
    model = create_model("googlenet", 10, weights=str(tmp_path / "g.pth"))
    assert model.aux1 is None and model.aux2 is None
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


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


def test_local_weights_file_loads_and_resizes_the_classifier(tmp_path):
    from autoprune.models import preprocessing, weights_identity

    torch.manual_seed(1)
    source = create_model("resnet18", 1000)  # a stand-in for torchvision's ImageNet file: same layout
    path = tmp_path / "resnet18-test.pth"
    torch.save(source.state_dict(), path)
    model = create_model("resnet18", 10, str(path))
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_mean, source.layer4[1].bn2.running_mean)
    assert classifier(model).out_features == 10  # a fresh head for the user's classes
    same = create_model("resnet18", 1000, str(path))
    assert torch.equal(same.fc.weight, source.fc.weight)  # same class count: the pretrained head is kept
    assert preprocessing(str(path)) == "imagenet" and preprocessing(None) == "dataset"
    assert weights_identity(str(path)).startswith("weights-sha256:") and weights_identity("DEFAULT") == ""


def test_bad_weights_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        create_model("resnet18", 10, str(tmp_path / "missing.pth"))
    other = tmp_path / "mnv2.pth"
    torch.save(create_model("mobilenet_v2", 1000).state_dict(), other)
    with pytest.raises(UserError, match="fc.weight"):
        create_model("resnet18", 10, str(other))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    with pytest.raises(UserError, match="could not be read"):
        create_model("resnet18", 10, str(bad))


def test_pretrained_baseline_uses_imagenet_preprocessing_and_keys_the_file(tmp_path):
    from autoprune.baseline import BaselineSpec, get_baseline
    from autoprune.data import load_data
    from autoprune.models import preprocessing
    from autoprune.training import TrainRecipe

    torch.manual_seed(2)
    path = tmp_path / "w.pth"
    torch.save(create_model("resnet18", 1000).state_dict(), path)
    data = load_data("digits?n=64", (16, 16), 0, preprocessing(str(path)))
    spec = BaselineSpec("resnet18", "digits?n=64", (1, 3, 16, 16), 10, 0, TrainRecipe(epochs=1, batch_size=32),
                        str(path))
    first = get_baseline(spec, data)
    assert get_baseline(spec, data).cached
    torch.save(create_model("resnet18", 1000).state_dict(), path)  # same path, other weights: retrained
    assert not get_baseline(spec, data).cached
    assert not torch.equal(first.model.conv1.weight, get_baseline(spec, data).model.conv1.weight)
