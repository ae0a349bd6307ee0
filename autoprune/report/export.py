"""Export one trial: rebuild the pruned model from the dense baseline and the trial's plan, fine-tune it
properly (optionally distilling from the dense model), and write model.pt (TorchScript), model.onnx and a
model card (JSON + Markdown). An INT8 trial also gets model_int8.onnx: the fine-tuned model statically quantized
(QDQ, calibrated on training images), its accuracy measured in onnxruntime and recorded with the file entry.

The dense baseline is the study's: same checkpoint, or the same cached (or retrained, bit-for-bit the same
recipe) weights. The plan is applied whole (channels, then unstructured / N:M zeroing, whose masks are re-applied
after every fine-tuning step so the zeros stay zeros).
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import io
import math
import os
import shlex
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import TrialState
from torch import nn

from autoprune.distill import distillation_loss  # noqa: F401 - re-exported: its home is autoprune.distill
from autoprune.errors import UserError
from autoprune.paths import atomic_write_bytes
from autoprune.report.card import Finetune, ModelCard, OnnxCheck, PredictedLatency, write_card
from autoprune.report.host import HostLatency, record_host_latency
from autoprune.search.store import TrialOutcome, decode_trials, read_study_record, sha256_file

SAMPLES_FOR_ONNX_CHECK = 256


@dataclass(frozen=True)
class ExportSettings:
    """How the exported model is fine-tuned and measured.

    ``finetune_epochs`` passes over the training split with SGD (momentum 0.9, weight decay 5e-4) and a cosine
    schedule from ``lr``; with ``distill`` the loss is ``distill_weight * T^2 * KL(teacher_T || student_T) +
    (1 - distill_weight) * cross-entropy``, the dense model the teacher, ``T`` = ``temperature``. ``measure``
    times the exported and the dense model on this host (onnxruntime, ``threads``) and records both on the study.
    """

    finetune_epochs: int = 3
    lr: float = 0.01
    batch_size: int = 64
    distill: bool = False
    temperature: float = 4.0
    distill_weight: float = 0.9
    measure: bool = True
    threads: int = 1
    warmup: int = 20
    repeats: int = 200
    bn_recalibration_batches: int = 8
    record_on_study: bool = True
    device: str = "auto"  # where the fine-tune runs: auto|cpu|cuda|cuda:N (the exported files are the same)

    def __post_init__(self) -> None:
        if self.finetune_epochs < 0:
            raise UserError(f"--finetune-epochs must be 0 or more, got {self.finetune_epochs}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"--lr must be a positive learning rate, got {self.lr}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise UserError(f"--temperature must be positive (typically 2 to 8), got {self.temperature}")
        if not (0.0 <= self.distill_weight <= 1.0):
            raise UserError(f"--distill-weight must be in [0, 1] (the share of the distillation loss), got "
                            f"{self.distill_weight}")
        if self.threads < 1 or self.repeats < 1 or self.warmup < 0:
            raise UserError("--threads and --repeats must be at least 1 (warm-up runs 0 or more)")
        from autoprune.devices import resolve_device

        resolve_device(self.device)  # an unavailable GPU fails with the other settings, before the study is read


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    card: ModelCard
    files: dict[str, Path]


def finetune_epochs(model: nn.Module, loader, settings: ExportSettings, seed: int, masks=None,
                    teacher: nn.Module | None = None, on_epoch: Callable[[int, int, float], None] | None = None,
                    device: torch.device | str = "cpu") -> tuple[int, float]:
    """Fine-tune ``model`` in place with the trainer (on ``device``; the model ends on the CPU); return (steps,
    mean loss of the last epoch)."""
    from autoprune.distill import DistillSettings, kd_loss_fn
    from autoprune.trainer import NonFiniteLoss, Trainer, TrainRecipe, cross_entropy_loss, mask_hook

    epochs = settings.finetune_epochs
    if epochs == 0:
        return 0, math.nan
    recipe = TrainRecipe(epochs=epochs, batch_size=settings.batch_size, lr=settings.lr, momentum=0.9,
                         weight_decay=5e-4)
    loss_fn = (kd_loss_fn(teacher, DistillSettings(settings.distill_weight, settings.temperature))
               if teacher is not None else cross_entropy_loss)
    trainer = Trainer(model, recipe, epochs * len(loader), device=device, loss_fn=loss_fn,
                      after_step=mask_hook(masks, device) if masks else None, seed=seed)
    try:
        mean = trainer.fit_epochs(loader, epochs, (lambda e, loss: on_epoch(e, epochs, loss)) if on_epoch else None)
    except NonFiniteLoss as err:
        raise UserError(f"fine-tuning diverged ({err}); lower --lr (now {settings.lr:g})") from err
    finally:
        model.to("cpu", memory_format=torch.contiguous_format).eval()
    return trainer.steps_done, mean


def torchscript_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """A traced TorchScript archive of ``model`` (loads with ``torch.jit.load``, no autoprune code needed)."""
    model.eval()
    example = torch.zeros(input_shape)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


def _file_entry(path: Path, data: bytes) -> dict:
    return {"path": str(path), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _val_images(data, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for x, y in data.loader("val", 256, 0, shuffle=False):
        images.append(x)
        labels.append(y)
        if sum(len(b) for b in images) >= limit:
            break
    return torch.cat(images)[:limit], torch.cat(labels)[:limit]


def onnx_check(model: nn.Module, onnx_model: bytes | Path, images: torch.Tensor) -> OnnxCheck:
    from autoprune.onnx_export import ort_predict, ort_session

    with torch.no_grad():
        expected = torch.cat([model(images[i:i + 1]) for i in range(len(images))]).numpy()
    got = ort_predict(ort_session(onnx_model), images.numpy().astype(np.float32))
    agreement = float(np.mean(expected.argmax(1) == got.argmax(1))) if len(images) else math.nan
    return OnnxCheck(len(images), float(np.max(np.abs(expected - got))) if len(images) else math.nan, agreement)


def reproduce_command(study: str, storage: str, trial: int, out_dir: Path, s: ExportSettings) -> str:
    args = ["autoprune", "export", "--study", study, "--storage", storage, "--trial", str(trial),
            "--out", str(out_dir), "--finetune-epochs", str(s.finetune_epochs), "--lr", f"{s.lr:g}",
            "--batch-size", str(s.batch_size)]
    if s.distill:
        args += ["--distill", "--temperature", f"{s.temperature:g}", "--distill-weight", f"{s.distill_weight:g}"]
    if s.measure:
        args += ["--threads", str(s.threads), "--repeats", str(s.repeats)]
    else:
        args += ["--no-measure"]
    return shlex.join(args)


def check_out_dir(out_dir: Path) -> None:
    """Refuse an ``--out`` that cannot receive the export, before any work: a file, or a folder not writable."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {str(out_dir)!r} is a file; pass a folder (it is created if missing)")
    existing = next(p for p in [out_dir, *out_dir.absolute().parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {str(out_dir)!r}: {str(existing)!r} is not a writable folder; pass another --out")


def _completed_trial(study: optuna.Study, number: int) -> TrialOutcome:
    trials = {t.number: t for t in decode_trials(study)}
    completed = sorted(n for n, t in trials.items() if t.state == TrialState.COMPLETE)
    if number in trials and number in completed:
        return trials[number]
    shown = ", ".join(map(str, completed[:20])) + (", ..." if len(completed) > 20 else "")
    state = f" (it is {trials[number].state.name})" if number in trials else ""
    raise UserError(f"trial {number} of study {study.study_name!r} is not a completed trial{state}; "
                    f"completed trials: {shown or 'none'} (see `autoprune report` or `autoprune select`)")


def export_trial(
    study: optuna.Study,
    trial: int,
    out_dir: Path,
    settings: ExportSettings = ExportSettings(),
    storage: str = "",
    command: str | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_epoch: Callable[[int, int, float], None] | None = None,
    trust_checkpoint: bool = False,
) -> ExportResult:
    """Rebuild, fine-tune and export trial ``trial`` of ``study`` into ``out_dir`` (see the module docstring).

    ``storage`` is shown in the model card as given: pass it with its password masked. ``trust_checkpoint``
    allows a fully pickled checkpoint (the study's own record of how the search loaded it is not trusted)."""
    from autoprune.baseline import BaselineSpec, get_baseline
    from autoprune.data import load_data
    from autoprune.devices import resolve_device
    from autoprune.models import preprocessing
    from autoprune.onnx_export import onnx_bytes
    from autoprune.plan import PruningPlan
    from autoprune.pruning import model_stats, prune
    from autoprune.pruning.importance import needs_calibration
    from autoprune.training import evaluate, recalibrate_bn

    stage = on_stage or (lambda text: None)
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    outcome = _completed_trial(study, trial)
    info = read_study_record(study)
    identity = info.identity
    spec = BaselineSpec.from_dict(info.baseline_spec)
    input_shape = tuple(identity.input_shape)
    checkpoint = identity.checkpoint
    if checkpoint and (not Path(checkpoint).is_file() or sha256_file(checkpoint) != identity.checkpoint_sha256):
        raise UserError(f"checkpoint {checkpoint!r} is missing or differs from the one the search used (sha256 "
                        f"{identity.checkpoint_sha256}); restore that file to export from this study")

    stage(f"loading data {identity.data}")
    data = load_data(identity.data, input_shape[2:], spec.seed, preprocessing(spec.weights))
    stage("loading the dense baseline")
    device = resolve_device(settings.device)
    baseline = get_baseline(spec, data, Path(checkpoint) if checkpoint else None, trust_checkpoint, device=device)
    dense = baseline.model.eval()

    m = outcome.measurement
    plan = PruningPlan.from_dict(m.plan)
    stage(f"pruning by trial {trial}'s plan")
    model = copy.deepcopy(dense)
    train = data.loader("train", settings.batch_size, spec.seed)
    calibration = None
    if needs_calibration(plan.importance):
        calibration = [batch for _, batch in zip(range(2), data.loader("train", 64, spec.seed))]
    pruned = prune(model, plan, torch.zeros(input_shape), calibration=calibration, seed=spec.seed)
    recalibrate_bn(model, train, settings.bn_recalibration_batches)
    pruned.masks.apply(model)

    started = time.perf_counter()
    stage(f"fine-tuning for {settings.finetune_epochs} epoch(s)" + (" with distillation" if settings.distill else ""))
    steps, last_loss = finetune_epochs(model, train, settings, spec.seed, pruned.masks,
                                       teacher=dense if settings.distill else None, on_epoch=on_epoch, device=device)
    tune_seconds = time.perf_counter() - started
    result = evaluate(model, data.loader("val", 256, spec.seed, shuffle=False), data.num_classes)
    test_accuracy = dense_test_accuracy = None
    if data.test is not None:  # the number a paper would report, beside the validation figure
        test = data.loader("test", 256, spec.seed, shuffle=False)
        test_accuracy = evaluate(model, test, data.num_classes).accuracy
        dense_test_accuracy = evaluate(dense, test, data.num_classes).accuracy
    stats = model_stats(model, input_shape)
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    zero = sum(int((w == 0).sum()) for w in weights)
    numel = sum(w.numel() for w in weights)

    # Every artifact is built in memory first and written only once all of them succeeded, so a failure
    # (an op ONNX cannot export, a quantization error) leaves no half-exported folder behind.
    stage("serializing TorchScript and ONNX")
    pt_path, onnx_path = out_dir / "model.pt", out_dir / "model.onnx"
    artifacts = {pt_path: torchscript_bytes(model, input_shape), onnx_path: onnx_bytes(model, input_shape)}
    images, _ = _val_images(data, SAMPLES_FOR_ONNX_CHECK)
    check = onnx_check(model, artifacts[onnx_path], images)
    files = {"torchscript": _file_entry(pt_path, artifacts[pt_path]),
             "onnx": _file_entry(onnx_path, artifacts[onnx_path])}
    int8_path = None
    if plan.precision == "int8":
        from autoprune.quantize import quantize_and_evaluate

        stage("quantizing to INT8 (static, QDQ) and measuring its accuracy in onnxruntime")
        quantized = quantize_and_evaluate(model, input_shape, train, data.loader("val", 256, spec.seed, shuffle=False),
                                          data.num_classes)
        int8_path = out_dir / "model_int8.onnx"
        artifacts[int8_path] = quantized.onnx
        files["onnx_int8"] = {**_file_entry(int8_path, quantized.onnx), "accuracy": quantized.eval.accuracy,
                              "calibration_samples": quantized.calibration_samples,
                              "quantization": "onnxruntime static QDQ, u8 activations (min/max), s8 per-channel weights"}

    host = dense_host = None
    if settings.measure:
        from autoprune.hardware import measure_model_latency

        stage("measuring latency on this host (exported and dense model)")
        kwargs = {"threads": settings.threads, "warmup": settings.warmup, "repeats": settings.repeats}
        host = HostLatency.from_measurement(measure_model_latency(model, input_shape, **kwargs),
                                            "exported model (fine-tuned), onnxruntime")
        dense_host = HostLatency.from_measurement(measure_model_latency(dense, input_shape, **kwargs),
                                                  "dense model")
        if settings.record_on_study:
            record_host_latency(study, trial, host)
            record_host_latency(study, None, dense_host)

    base = info.dense
    dense_params = base.stats.params
    reproduce = reproduce_command(study.study_name, storage, trial, out_dir, settings)
    import onnxruntime
    import torchvision

    card = ModelCard(
        schema=1, study=study.study_name, storage=storage, trial=trial, strategy=str(outcome.strategy),
        model=identity.model, data=identity.data, input_shape=input_shape,
        class_names=tuple(str(c) for c in data.class_names), plan=plan.to_dict(), accuracy=result.accuracy,
        per_class_accuracy=tuple(result.per_class_accuracy), search_accuracy=m.accuracy,
        dense_accuracy=base.accuracy,
        finetune=Finetune(settings.finetune_epochs, steps, settings.lr, settings.batch_size, settings.distill,
                          settings.temperature if settings.distill else None,
                          settings.distill_weight if settings.distill else None, last_loss, round(tune_seconds, 2)),
        predicted_latency=PredictedLatency(
            identity.target, m.latency_ms, m.latency_provenance, m.latency_source, base.latency_ms,
        ),
        host_latency=host, dense_host_latency=dense_host, params=stats.params, nonzero_params=stats.nonzero_params,
        dense_params=dense_params, macs=stats.macs, mflops=round(stats.mflops, 3), size_mb=round(stats.size_mb, 3),
        sparsity=1.0 - stats.nonzero_params / dense_params, weight_sparsity=zero / numel if numel else 0.0,
        onnx_check=check, files=files,
        command=command or reproduce, reproduce=reproduce,
        created_at=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        software={"torch": torch.__version__, "torchvision": torchvision.__version__,
                  "onnxruntime": onnxruntime.__version__},
        test_accuracy=test_accuracy, dense_test_accuracy=dense_test_accuracy,
    )
    stage(f"writing {', '.join(p.name for p in artifacts)} and the model card")
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, payload in artifacts.items():
        atomic_write_bytes(path, payload)
    json_path, md_path = write_card(card, out_dir)
    written = {"torchscript": pt_path, "onnx": onnx_path, "card_json": json_path, "card_md": md_path}
    if int8_path is not None:
        written["onnx_int8"] = int8_path
    return ExportResult(out_dir, card, written)
