"""The model card of an exported candidate: a plain record, written as JSON and as Markdown."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoprune.paths import atomic_write_json, atomic_write_text
from autoprune.report.host import HostLatency
from autoprune.report.record import plain

CARD_SCHEMA = 1


@dataclass(frozen=True)
class PredictedLatency:
    """The cost model's latency on the study's target, as recorded by the search."""

    target: str
    latency_ms: float
    provenance: str  # measured | calibrated | estimated
    source: str
    dense_latency_ms: float

    @property
    def speedup(self) -> float:
        return self.dense_latency_ms / self.latency_ms if self.latency_ms > 0 else float("nan")


@dataclass(frozen=True)
class OnnxCheck:
    """The exported ONNX model against the PyTorch model on ``samples`` validation images."""

    samples: int
    max_abs_diff: float
    top1_agreement: float  # fraction of samples where both predict the same class


@dataclass(frozen=True)
class Finetune:
    epochs: int
    steps: int
    lr: float
    batch_size: int
    distill: bool
    temperature: float | None
    distill_weight: float | None
    final_loss: float
    seconds: float


@dataclass(frozen=True)
class ModelCard:
    """Everything about one exported candidate; ``files`` maps a role to {path, bytes, sha256}."""

    schema: int
    study: str
    storage: str
    trial: int
    strategy: str
    model: str
    data: str
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    plan: Mapping[str, Any]
    accuracy: float  # after the export's fine-tuning, on the validation split
    per_class_accuracy: tuple[float, ...]
    search_accuracy: float  # the trial's accuracy after the search's brief fine-tune
    dense_accuracy: float
    finetune: Finetune
    predicted_latency: PredictedLatency
    host_latency: HostLatency | None
    dense_host_latency: HostLatency | None
    params: int
    nonzero_params: int
    dense_params: int
    macs: int
    mflops: float
    size_mb: float
    sparsity: float  # 1 - nonzero params / dense params
    weight_sparsity: float  # fraction of the pruned model's conv/linear weights that are exactly zero
    onnx_check: OnnxCheck
    files: Mapping[str, Mapping[str, Any]]
    command: str  # the command as invoked
    reproduce: str  # the equivalent command with every setting spelled out
    created_at: str
    software: Mapping[str, str]
    # On the data's official test split (Fashion-MNIST, CIFAR), the figure a paper reports; None where it has none.
    test_accuracy: float | None = None
    dense_test_accuracy: float | None = None

    @property
    def host_speedup(self) -> float | None:
        if self.host_latency is None or self.dense_host_latency is None:
            return None
        return self.dense_host_latency.mean_ms / self.host_latency.mean_ms

    def to_dict(self) -> dict[str, Any]:
        data = plain(self)
        data["predicted_latency"]["speedup"] = plain(self.predicted_latency.speedup)
        data["host_speedup"] = plain(self.host_speedup)
        return data


def card_markdown(card: ModelCard) -> str:
    c = card
    p = c.predicted_latency
    shape = "x".join(str(d) for d in c.input_shape)
    host = (f"{c.host_latency.mean_ms:.4g} ± {c.host_latency.std_ms:.2g} ms over {c.host_latency.n} runs "
            f"({c.host_latency.provenance})" if c.host_latency else "not measured (export ran with --no-measure)")
    dense_host = (f"{c.dense_host_latency.mean_ms:.4g} ms" if c.dense_host_latency else "–")
    speed = f"{c.host_speedup:.2f}×" if c.host_speedup else "–"
    f = c.finetune
    tuning = (f"{f.epochs} epoch(s), {f.steps} SGD steps, lr {f.lr:g} (cosine), batch {f.batch_size}"
              + (f", knowledge distillation from the dense model (T={f.temperature:g}, KD weight "
                 f"{f.distill_weight:g})" if f.distill else ", cross-entropy"))
    files = "\n".join(f"| {role} | `{Path(v['path']).name}` | {v['bytes']:,} | `{v['sha256'][:16]}…` |"
                      for role, v in c.files.items())
    per_class = "\n".join(f"| {name} | {acc * 100:.1f}% |" if acc == acc else f"| {name} | – |"
                          for name, acc in zip(c.class_names, c.per_class_accuracy))
    test = (f"{c.test_accuracy * 100:.2f}% / {c.dense_test_accuracy * 100:.2f}%" if c.test_accuracy is not None
            else "– (the data has no official test split)")
    return f"""# Model card: {c.model}, trial {c.trial} of study {c.study}

Pruned {c.model} ({c.strategy} search) for input {shape}, data `{c.data}`.

| | |
|---|---|
| accuracy (validation split, after export fine-tuning) | {c.accuracy * 100:.2f}% |
| accuracy in the search (brief fine-tune) | {c.search_accuracy * 100:.2f}% |
| dense model accuracy | {c.dense_accuracy * 100:.2f}% |
| accuracy on the official test split (pruned / dense) | {test} |
| predicted latency on {p.target} | {p.latency_ms:.4g} ms ({p.provenance}: {p.source}) |
| predicted dense latency / speedup | {p.dense_latency_ms:.4g} ms / {p.speedup:.2f}× |
| latency measured on this host | {host} |
| dense latency on this host / speedup | {dense_host} / {speed} |
| params (nonzero) | {c.params:,} ({c.nonzero_params:,}) of {c.dense_params:,} dense |
| MACs / MFLOPs | {c.macs:,} / {c.mflops:.2f} |
| size (FP32 parameters) | {c.size_mb:.2f} MB |
| sparsity (dense weights removed or zeroed) | {c.sparsity * 100:.1f}% |
| zero weights within the pruned model | {c.weight_sparsity * 100:.1f}% |
| fine-tuning | {tuning} |
| ONNX vs PyTorch | max abs Δ logit {c.onnx_check.max_abs_diff:.2e}, same top-1 on {c.onnx_check.top1_agreement * 100:.1f}% of {c.onnx_check.samples} images |
| created | {c.created_at} |

## Command

```
{c.command}
```

Equivalent command with every setting:

```
{c.reproduce}
```

## Files

| role | file | bytes | sha256 |
|---|---|---|---|
{files}

`model.pt` is a TorchScript archive: `torch.jit.load("model.pt")` needs only PyTorch, not autoprune.

## Per-class accuracy

| class | accuracy |
|---|---|
{per_class}

## Plan

```json
{json.dumps(dict(c.plan), indent=2, sort_keys=True)}
```
"""


def write_card(card: ModelCard, out_dir: Path) -> tuple[Path, Path]:
    json_path, md_path = Path(out_dir) / "model_card.json", Path(out_dir) / "model_card.md"
    atomic_write_json(json_path, card.to_dict())
    atomic_write_text(md_path, card_markdown(card))
    return json_path, md_path
