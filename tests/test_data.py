import pytest
import torch

from autoprune.data import load_data
from autoprune.errors import UserError


def test_mnist5k_is_real_split_and_resized():
    bundle = load_data("mnist5k", (32, 32), seed=0)
    assert len(bundle.train) + len(bundle.val) == 5000
    assert len(bundle.val) == 1000
    images, labels = next(iter(bundle.loader("train", 16, seed=0)))
    assert images.shape == (16, 3, 32, 32)
    assert bundle.num_classes == 10
    assert set(labels.tolist()) <= set(range(10))
    # Real digits: grayscale repeated to 3 channels, not noise.
    assert torch.equal(images[:, 0], images[:, 1])


def test_split_is_deterministic_and_disjoint():
    a = load_data("digits", (16, 16), seed=3)
    b = load_data("digits", (16, 16), seed=3)
    c = load_data("digits", (16, 16), seed=4)
    xa, _ = a.val.tensors
    xb, _ = b.val.tensors
    xc, _ = c.val.tensors
    assert torch.equal(xa, xb)
    assert not torch.equal(xa, xc)
    train = {tuple(x.flatten()[:64].tolist()) for x in a.train.tensors[0]}
    overlap = sum(tuple(x.flatten()[:64].tolist()) in train for x in xa)
    # sklearn's digits has a few exact duplicate images; the split itself never shares an index.
    assert overlap < 0.05 * len(xa)


def test_imagefolder_reads_classes(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.new("RGB", (20, 20), color=(i * 40, 10, 200 if cls == "cat" else 0)).save(tmp_path / cls / f"{i}.png")
    bundle = load_data(f"imagefolder:{tmp_path}", (16, 16), seed=0)
    assert bundle.class_names == ("cat", "dog")
    assert len(bundle.train) + len(bundle.val) == 10
    image, _ = bundle.train[0]
    assert image.shape == (3, 16, 16)


def test_cifar10_reads_local_copy_in_torchvision_format(tmp_path, monkeypatch):
    import hashlib
    import pickle

    import numpy as np

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": names}, fh)
    from torchvision.datasets import CIFAR10

    def md5(name):
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    # torchvision verifies the files against the official archive's checksums; ours are a tiny stand-in.
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5(f"data_batch_{i}")] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5("test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": md5("batches.meta")})
    bundle = load_data(f"cifar10:{tmp_path}", (32, 32), seed=0)
    assert bundle.num_classes == 10
    assert len(bundle.train) + len(bundle.val) == 20


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("mnist", "did you mean 'mnist5k'"),
        ("imagefolder", "needs a path"),
        ("imagefolder:/does/not/exist", "does not exist"),
    ],
)
def test_bad_specs_are_user_errors(spec, fragment):
    with pytest.raises(UserError, match=fragment):
        load_data(spec, (32, 32))


def test_imagefolder_with_one_class_is_rejected(tmp_path):
    from PIL import Image

    (tmp_path / "only").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "only" / "a.png")
    with pytest.raises(UserError, match="at least 2"):
        load_data(f"imagefolder:{tmp_path}", (16, 16))
