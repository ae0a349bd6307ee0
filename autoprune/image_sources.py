"""Readers behind the data specs: each returns raw images as one tensor (N×C×H×W, uint8 or float in [0, 1])
with int64 labels, decoded once. :mod:`autoprune.data` resizes, splits and normalises them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from autoprune.errors import UserError
from autoprune.paths import atomic_write_bytes, autoprune_home

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


@dataclass(frozen=True)
class RawImages:
    """Decoded images (N×C×H×W, uint8 0..255 or float32 0..1) and their labels (N, int64)."""

    images: torch.Tensor
    labels: torch.Tensor


def read_idx(path: Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format, gzip-compressed or not) as a numpy array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserError(f"{str(path)!r} is not an unsigned-byte idx file (bad magic number)")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise UserError(f"idx file {str(path)!r} is truncated: {body.size} bytes for shape {shape}")
    return body.reshape(shape)


def _idx_path(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def fashion_mnist_dir(arg: str) -> Path:
    """The folder holding the Fashion-MNIST idx files: ``arg``, else Debian's, else torchvision's layout under
    ``$AUTOPRUNE_HOME/data/fashion-mnist`` (downloaded there when online)."""
    if arg:
        return Path(arg)
    if _idx_path(FASHION_MNIST_SYSTEM_DIR, IDX_FILES["train"][0]):
        return FASHION_MNIST_SYSTEM_DIR
    root = autoprune_home() / "data" / "fashion-mnist"
    raw = root / "FashionMNIST" / "raw"
    if not _idx_path(raw, IDX_FILES["train"][0]):
        from torchvision.datasets import FashionMNIST

        try:
            FashionMNIST(root=str(root), train=True, download=True)
        except (OSError, RuntimeError) as err:
            raise UserError(
                f"Fashion-MNIST is not installed ({FASHION_MNIST_SYSTEM_DIR} is empty) and could not be downloaded "
                f"({err}); install Debian's dataset-fashion-mnist, pass fashion-mnist:DIR, or go online"
            ) from err
    return raw


def fashion_mnist(folder: Path, split: str) -> RawImages:
    """Fashion-MNIST's ``split`` ("train": 60,000, "test": 10,000) as 1×28×28 uint8 images."""
    stems = IDX_FILES[split]
    paths = [_idx_path(folder, stem) for stem in stems]
    if None in paths:
        missing = stems[paths.index(None)]
        raise UserError(f"Fashion-MNIST file {missing}[.gz] is not in {str(folder)!r}; pass fashion-mnist:DIR "
                        "with the four idx files")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"Fashion-MNIST files in {str(folder)!r} do not match: images {images.shape}, "
                        f"labels {labels.shape}")
    return RawImages(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


def cifar(kind: str, root: Path, split: str) -> tuple[RawImages, tuple[str, ...]]:
    """CIFAR-10/100 (torchvision's python batches under ``root``, downloaded when absent and online)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls, folder = (CIFAR10, "cifar-10-batches-py") if kind == "cifar10" else (CIFAR100, "cifar-100-python")
    present = (root / folder).is_dir()
    try:
        dataset = cls(root=str(root), train=split == "train", download=not present)
    except (OSError, RuntimeError) as err:
        raise UserError(
            f"{kind.upper()} is not in {str(root)!r} and could not be downloaded ({err}); "
            f"put the extracted {folder!r} folder there, or go online"
        ) from err
    images = torch.from_numpy(np.ascontiguousarray(dataset.data.transpose(0, 3, 1, 2)))  # N×H×W×C -> N×C×H×W
    return RawImages(images, torch.as_tensor(dataset.targets, dtype=torch.int64)), tuple(dataset.classes)


def image_folder(root: Path, image_size: tuple[int, int]) -> tuple[RawImages, tuple[str, ...]]:
    """Every image of a class-per-folder tree decoded once to RGB uint8 at ``image_size`` (H, W).

    The decoded tensor is cached under ``$AUTOPRUNE_HOME/data/decoded`` keyed by the files' paths, sizes and
    modification times and the size, so later runs (and exports) on the same folder do not decode JPEGs again.
    """
    from torchvision.datasets import ImageFolder

    if not root.is_dir():
        raise UserError(f"image folder {str(root)!r} does not exist; pass --data imagefolder:PATH to a class-per-folder tree")
    try:
        listing = ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as err:
        raise UserError(f"image folder {str(root)!r} holds no images in class sub-folders: {err}") from err
    if len(listing.classes) < 2:
        raise UserError(
            f"image folder {str(root)!r} has {len(listing.classes)} class folder(s); classification needs at least 2"
        )
    cache = _decoded_cache_path(listing.samples, image_size)
    raw = _load_decoded(cache)
    if raw is None:
        raw = _decode(listing, image_size)
        buffer = io.BytesIO()
        torch.save({"images": raw.images, "labels": raw.labels}, buffer)
        atomic_write_bytes(cache, buffer.getvalue())
    return raw, tuple(listing.classes)


def _decoded_cache_path(samples: list[tuple[str, int]], image_size: tuple[int, int]) -> Path:
    entries = []
    for path, label in samples:
        stat = Path(path).stat()
        entries.append([str(Path(path).resolve()), label, stat.st_size, stat.st_mtime_ns])
    digest = hashlib.sha256(json.dumps([list(image_size), entries]).encode()).hexdigest()[:20]
    return autoprune_home() / "data" / "decoded" / f"imagefolder-{digest}.pt"


def _load_decoded(path: Path) -> RawImages | None:
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        return RawImages(data["images"], data["labels"])
    except (OSError, RuntimeError, KeyError, ValueError):
        return None  # damaged: decoded again and overwritten


def _decode(listing, image_size: tuple[int, int]) -> RawImages:
    from PIL import Image

    height, width = image_size
    images = torch.empty((len(listing.samples), 3, height, width), dtype=torch.uint8)
    for i, (path, _) in enumerate(listing.samples):
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((width, height), Image.BILINEAR)
        images[i] = torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)
    return RawImages(images, torch.as_tensor([label for _, label in listing.samples], dtype=torch.int64))
