"""The dense baseline: loaded from a checkpoint, or trained once and cached.

Cache entries live under ``$AUTOPRUNE_HOME/baselines`` keyed by everything that determines the weights
(model, data spec, input shape, classes, seed, recipe, starting weights), plus: the data's own signature when
it has one (its train-time augmentation, its preprocessing), a local weights file's content digest, and the
device's numerics when it is not the CPU. CUDA-trained weights (other kernels, mixed precision) differ from
CPU-trained ones, so neither is passed off as the other; which CPU or which GPU does not enter the key.
The weights are written first and the metadata last, both atomically, so a half-written entry is never
taken as valid.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from autoprune.data import DataBundle
from autoprune.devices import numerics_key
from autoprune.models import create_model, load_checkpoint, weights_identity
from autoprune.paths import atomic_write_bytes, atomic_write_json, autoprune_home
from autoprune.training import TrainRecipe, evaluate, train_epochs


@dataclass(frozen=True)
class BaselineSpec:
    """Everything that determines a baseline's weights."""

    model: str
    data: str
    input_shape: tuple[int, int, int, int]
    num_classes: int
    seed: int
    recipe: TrainRecipe
    weights: str | None = None

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "data": self.data,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "seed": self.seed,
            "recipe": self.recipe.to_dict(),
            "weights": self.weights,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "BaselineSpec":
        return cls(
            model=data["model"], data=data["data"], input_shape=tuple(data["input_shape"]),
            num_classes=int(data["num_classes"]), seed=int(data["seed"]), recipe=TrainRecipe(**data["recipe"]),
            weights=data.get("weights"),
        )

    def cache_key(self, extra: str = "") -> str:
        """A file-name-safe key; ``extra`` (data signature, device numerics) joins the digest when not empty."""
        content = self.to_dict() if not extra else {**self.to_dict(), "extra": extra}
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
        return f"{self.model}-{digest}"


@dataclass(frozen=True)
class Baseline:
    """A trained dense model and where it came from (``source``: checkpoint path, cache file, or "trained")."""

    model: nn.Module
    accuracy: float
    source: str
    cached: bool


def baseline_dir() -> Path:
    return autoprune_home() / "baselines"


def get_baseline(
    spec: BaselineSpec,
    data: DataBundle,
    checkpoint: Path | None = None,
    trust_checkpoint: bool = False,
    on_epoch: Callable[[int, int, float], None] | None = None,
    device: torch.device | str = "cpu",
) -> Baseline:
    """Return the dense model for ``spec``: from ``checkpoint``, from the cache, or trained now (on ``device``)
    and cached. The model is returned on the CPU in eval mode.

    ``on_epoch(epoch, epochs, loss)`` reports training progress.
    """
    device = torch.device(device)
    # The initial weights come from the global generator: seed it, or they would depend on whatever drew
    # random numbers earlier in the process and the same spec could train to a different model.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = create_model(spec.model, spec.num_classes, spec.weights)
    if checkpoint is not None:
        model = load_checkpoint(model, checkpoint, trust=trust_checkpoint)
        accuracy = _accuracy(model, data, spec, device)
        return Baseline(_on_cpu(model), accuracy, f"checkpoint {checkpoint}", cached=False)

    extra = (data.signature, numerics_key(device), weights_identity(spec.weights))
    key = spec.cache_key(";".join(part for part in extra if part))
    weights_path = baseline_dir() / f"{key}.pt"
    meta_path = baseline_dir() / f"{key}.json"
    cached = _load_cached(model, weights_path, meta_path)
    if cached is not None:
        return Baseline(model.eval(), cached, f"cache {weights_path}", cached=True)

    loader = data.loader("train", spec.recipe.batch_size, spec.seed, device=device)
    train_epochs(
        model, loader, spec.recipe, spec.seed,
        on_epoch=(lambda e, loss: on_epoch(e, spec.recipe.epochs, loss)) if on_epoch else None, device=device,
    )
    accuracy = _accuracy(model, data, spec, device)
    model = _on_cpu(model)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    atomic_write_bytes(weights_path, buffer.getvalue())
    atomic_write_json(meta_path, {"key": key, "accuracy": accuracy, "spec": spec.to_dict()})
    return Baseline(model.eval(), accuracy, f"trained, cached at {weights_path}", cached=False)


def _accuracy(model: nn.Module, data: DataBundle, spec: BaselineSpec, device: torch.device) -> float:
    return evaluate(model, data.loader("val", 256, spec.seed, device=device), data.num_classes, device).accuracy


def _on_cpu(model: nn.Module) -> nn.Module:
    """The model back on the CPU in the default layout: pruning, export and latency models work there."""
    return model.to("cpu", memory_format=torch.contiguous_format).eval()


def _load_cached(model: nn.Module, weights_path: Path, meta_path: Path) -> float | None:
    """Accuracy of a valid cache entry loaded into ``model``; None when absent or unreadable."""
    if not (weights_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
        return float(meta["accuracy"])
    except (OSError, ValueError, KeyError, RuntimeError):
        return None  # a damaged entry is retrained and overwritten

