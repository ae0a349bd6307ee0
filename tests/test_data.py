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
    assert len(bundle.test) == 4 and bundle.augmentation is not None  # natural images: crop + flip
    image, label = bundle.test[1]
    assert image.shape == (3, 32, 32) and int(label) == 1


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


def _write_idx(path, array, gz):
    import gzip

    import numpy as np

    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as fh:
        fh.write(header + array.tobytes())


def _fashion_dir(tmp_path, n_train=50, n_test=20, gz=True):
    import numpy as np

    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, (n, 28, 28))
        images[:, :, :] += (labels * 20)[:, None, None]  # a learnable signal: brightness follows the class
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte{suffix}", images, gz)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte{suffix}", labels, gz)
    return tmp_path


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_idx_files_with_an_official_test_split(tmp_path, gz):
    folder = _fashion_dir(tmp_path, gz=gz)
    bundle = load_data(f"fashion-mnist:{folder}", (32, 32), seed=0)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (40, 10, 20)
    assert bundle.num_classes == 10 and bundle.class_names[0] == "T-shirt/top"
    assert bundle.augmentation is None  # grayscale product photos: no crop/flip by default
    images, labels = next(iter(bundle.loader("test", 20, 0, shuffle=False)))
    assert images.shape == (20, 3, 32, 32) and torch.equal(images[:, 0], images[:, 2])
    assert labels.tolist() == [i % 10 for i in range(20)]
    # normalised by Fashion-MNIST's statistics: the darkest pixel (0) maps to -0.286 / 0.353
    assert float(images.min()) == pytest.approx(-0.2860 / 0.3530, abs=1e-4)


def test_subset_option_is_seeded_and_validated(tmp_path):
    folder = _fashion_dir(tmp_path)
    a = load_data(f"fashion-mnist:{folder}?n=30", (28, 28), seed=1)
    b = load_data(f"fashion-mnist:{folder}?n=30", (28, 28), seed=1)
    assert len(a.train) + len(a.val) == 30 and len(a.test) == 20  # the test split stays whole
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert len(load_data("digits?n=100", (8, 8), seed=0).train) == 80
    for spec, fragment in (("digits?n=5000", "has 1797"), ("digits?n=x", "whole number"),
                           ("digits?size=3", "not one of"), ("digits?augment=yes", "0 or 1"),
                           (f"fashion-mnist:{tmp_path / 'none'}", "is not in")):
        with pytest.raises(UserError, match=fragment):
            load_data(spec, (8, 8))


def test_default_fashion_mnist_folder_is_debians_when_installed():
    from autoprune.image_sources import FASHION_MNIST_SYSTEM_DIR, fashion_mnist_dir

    if not (FASHION_MNIST_SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("dataset-fashion-mnist is not installed")
    assert fashion_mnist_dir("") == FASHION_MNIST_SYSTEM_DIR


def test_augmentation_is_deterministic_per_seed_and_only_in_training(tmp_path):
    folder = _fashion_dir(tmp_path)
    bundle = load_data(f"fashion-mnist:{folder}?augment=1", (16, 16), seed=0)
    assert bundle.augmentation.describe() == "crop-pad2+hflip" and "crop-pad2" in bundle.signature

    def first(seed):
        return next(iter(bundle.loader("train", 40, seed)))[0]

    assert torch.equal(first(3), first(3))
    plain = next(iter(load_data(f"fashion-mnist:{folder}", (16, 16), 0).loader("train", 40, 3)))[0]
    assert not torch.equal(first(3), plain)  # same order (same seed), other pixels
    assert first(3).shape == plain.shape
    val = next(iter(bundle.loader("val", 10, 0)))[0]
    assert torch.equal(val, next(iter(load_data(f"fashion-mnist:{folder}", (16, 16), 0).loader("val", 10, 0)))[0])


def test_augmentation_crops_and_flips():
    from autoprune.data import Augmentation

    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    out = Augmentation(pad=0, flip=True)(images, torch.Generator().manual_seed(0))
    for i in range(2):
        assert torch.equal(out[i], images[i]) or torch.equal(out[i], images[i].flip(2))
    shifted = Augmentation(pad=1, flip=False)(images, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    # each crop is a shifted window of the zero-padded image: its values are the image's or zero
    assert set(shifted.unique().tolist()) <= set(images.unique().tolist()) | {0.0}


def test_imagefolder_decodes_once_and_reuses_the_cache(tmp_path, monkeypatch):
    from PIL import Image

    from autoprune import image_sources

    monkeypatch.setenv("AUTOPRUNE_HOME", str(tmp_path / "home"))
    root = tmp_path / "images"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (12, 12), color=(i * 50, 0, 100 if cls == "a" else 0)).save(root / cls / f"{i}.jpg")
    first = load_data(f"imagefolder:{root}", (8, 8), seed=0)
    assert list((tmp_path / "home" / "data" / "decoded").glob("imagefolder-*.pt"))
    monkeypatch.setattr(image_sources, "_decode", lambda *a: pytest.fail("decoded again"))
    second = load_data(f"imagefolder:{root}", (8, 8), seed=0)
    assert torch.equal(first.train.tensors[0], second.train.tensors[0])
    assert first.augmentation is not None and first.test is None
    with pytest.raises(UserError, match="no 'test' split"):
        first.loader("test", 4, 0)


def test_imagenet_preprocessing_for_pretrained_weights(tmp_path):
    folder = _fashion_dir(tmp_path)
    bundle = load_data(f"fashion-mnist:{folder}", (28, 28), 0, preprocessing="imagenet")
    x, _ = bundle.train[0]
    darkest = float(bundle.train.tensors[0][0].min()) / 255.0  # the stored (uint8) image, before normalising
    assert "imagenet" in bundle.signature
    # grayscale repeated to 3 channels, each normalised by its ImageNet mean and std
    assert float(x[0].min()) == pytest.approx((darkest - 0.485) / 0.229, abs=1e-4)
    assert float(x[2].min()) == pytest.approx((darkest - 0.406) / 0.225, abs=1e-4)


def test_pinned_loader_on_cuda_only():
    bundle = load_data("digits", (8, 8), seed=0)
    assert not bundle.loader("train", 8, 0).pin_memory
    if torch.cuda.is_available():
        assert bundle.loader("train", 8, 0, device="cuda").pin_memory


def test_cifar100_reads_local_copy_with_its_test_split(tmp_path, monkeypatch):
    import hashlib
    import pickle

    import numpy as np
    from torchvision.datasets import CIFAR100

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("train", 10), ("test", 5)):
        batch = {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), "fine_labels": list(range(n))}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    with open(folder / "meta", "wb") as fh:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, fh)

    def md5(name):
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    monkeypatch.setattr(CIFAR100, "train_list", [["train", md5("train")]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", md5("test")]])
    monkeypatch.setattr(CIFAR100, "meta", {"filename": "meta", "key": "fine_label_names", "md5": md5("meta")})
    bundle = load_data(f"cifar100:{tmp_path}?augment=0", (16, 16), seed=0)
    assert bundle.num_classes == 100 and len(bundle.test) == 5 and bundle.augmentation is None
    assert len(bundle.train) + len(bundle.val) == 10
    assert bundle.train[0][0].shape == (3, 16, 16)
