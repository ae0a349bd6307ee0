"""Fill, calibrate and validate a latency profile on this machine (or via an exported bundle on a device).

- :func:`signature_grid`: every layer family a search space can produce, each on a grid of channel counts at
  the target's alignment step (subsampled to at most ``max_points`` per axis; the cost model interpolates).
- :func:`measure_table`: times one micro-model (conv+ReLU or linear) per signature.
- :func:`calibrate`: fits ``latency = a * sum(layers) + b`` on a few whole-model measurements.
- :func:`validate`: measures random plans end to end and scores the predictions (MAPE, ±5/±10%, Kendall tau).
- :func:`export_bundle` / :func:`import_results`: the same measurement split between a host with torch and a
  device with only onnxruntime + numpy (or TensorRT's ``trtexec``).
"""

from __future__ import annotations

import json
import math
import random
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autoprune.errors import UserError
from autoprune.hardware import device_runner as runner
from autoprune.hardware.cost_model import CostModel
from autoprune.hardware.measure import RUNTIME_OF_BACKEND, Timing, backend, pinned
from autoprune.hardware.profile import Calibration, HardwareProfile, LatencyEntry, Validation, today
from autoprune.hardware.signature import LayerSignature, model_key, pruned_signature
from autoprune.onnx_export import export_onnx
from autoprune.plan import PruningPlan
from autoprune.pruning.space import SearchSpace

Progress = Callable[[int, int], None]


# --- what to measure ---------------------------------------------------------------------------------------------
def ratio_grid(min_keep: float, step: float) -> list[float]:
    """Keep ratios a search may pick for a group: ``min_keep`` to 1 by ``step`` (1 included)."""
    count = int(math.floor((1.0 - min_keep) / step + 1e-9))
    return sorted({round(min_keep + i * step, 6) for i in range(count + 1)} | {1.0})


def _subsample(values: Iterable[int], max_points: int) -> list[int]:
    values = sorted(set(values))
    if len(values) <= max_points:
        return values
    picks = np.linspace(0, len(values) - 1, max_points).round().astype(int)
    return sorted({values[i] for i in picks})


def signature_grid(space: SearchSpace, alignment: int, dtype: str = "fp32", max_points: int = 13) -> list[LayerSignature]:
    """Signatures to measure so that every plan over ``space`` (at ``alignment``) is covered by interpolation."""
    ratios = {g.name: ratio_grid(g.min_keep, g.step) for g in space.groups}
    channels = space.group_channels()
    axes: dict = {}  # family -> (cin values, cout values, template signature)
    for layer in space.cost_layers:
        in_r = ratios.get(layer.in_group, [1.0]) if layer.in_group else [1.0]
        out_r = ratios.get(layer.out_group, [1.0]) if layer.out_group else [1.0]
        same = layer.in_group is not None and layer.in_group == layer.out_group
        for ri in in_r:
            for ro in ([ri] if same else out_r):
                keep = {}
                if layer.in_group:
                    keep[layer.in_group] = ri
                if layer.out_group:
                    keep[layer.out_group] = ro
                sig = pruned_signature(layer, PruningPlan(keep_ratios=keep, alignment=alignment), channels, dtype)
                cins, couts, _ = axes.setdefault(sig.family, (set(), set(), sig))
                cins.add(sig.cin)
                couts.add(sig.cout)
    signatures = []
    for family, (cins, couts, template) in axes.items():
        couts = _subsample(couts, max_points)
        if family.groups == "dw":
            signatures += [template.with_channels(c, c) for c in couts]
            continue
        for cin in _subsample(cins, max_points):
            signatures += [template.with_channels(cin, cout) for cout in couts]
    return signatures


def micro_model(sig: LayerSignature) -> tuple[nn.Module, tuple[int, ...]]:
    """The one-layer model whose latency stands for ``sig``, and its input shape (batch 1).

    A conv carries a bias and a ReLU because at inference BatchNorm folds into the bias and the runtime fuses
    the activation into the convolution, as it does in the whole model.
    """
    torch.manual_seed(0)
    if sig.op in ("maxpool", "avgpool"):
        pool = nn.MaxPool2d if sig.op == "maxpool" else nn.AvgPool2d
        return pool(sig.kernel, sig.stride, sig.padding).eval(), (1, sig.cin, sig.in_h, sig.in_w)
    if sig.op == "linear":
        layer = nn.Linear(sig.cin, sig.cout)
        shape = (1, sig.cin) if sig.in_h * sig.in_w == 1 else (1, sig.in_h * sig.in_w, sig.cin)
        return layer.eval(), shape
    conv = nn.Conv2d(sig.cin, sig.cout, sig.kernel, sig.stride, sig.padding, groups=sig.groups, bias=True)
    return nn.Sequential(conv, nn.ReLU()).eval(), (1, sig.cin, sig.in_h, sig.in_w)


def _overhead_model() -> tuple[nn.Module, tuple[int, ...]]:
    # The cheapest graph there is: what one runtime call costs regardless of the layer in it.
    return nn.Sequential(nn.ReLU()).eval(), (1, 1, 1, 1)


# --- measuring a table on this machine ---------------------------------------------------------------------------
def measure_table(signatures: list[LayerSignature], backend_name: str = "onnxruntime", threads: int = 1,
                  timing: Timing = Timing(20, 100), progress: Progress | None = None,
                  pin_cpu: int | None = None, checkpoint: runner.Checkpoint | None = None,
                  ) -> tuple[list[LatencyEntry], float]:
    """Time each signature's micro-model; return entries (ms, call overhead subtracted) and that overhead (ms).

    The per-call overhead of the runtime (measured on a one-op graph) is subtracted from every entry so the
    table holds what a layer adds inside a whole model, where there is one call for all layers. With a
    ``checkpoint`` each signature's timings are stored as they are taken, and a re-run resumes from them.
    """
    run = backend(backend_name)
    with pinned(pin_cpu):
        if backend_name == "onnxruntime":
            stats, overhead = _time_ort_with_overhead([_onnx_item(sig) for sig in signatures],
                                                      [layer_key(sig, threads, timing) for sig in signatures],
                                                      len(signatures), threads, timing, progress, checkpoint)
        else:
            model, shape = _overhead_model()
            overhead = run(model, shape, threads, timing)["median_ms"] if backend_name != "tensorrt" else 0.0
            stats = []
            for i, sig in enumerate(signatures):
                key = f"{backend_name} {layer_key(sig, threads, timing)}"
                done = checkpoint.get(key) if checkpoint is not None else None
                stats.append(done or run(*micro_model(sig), threads, timing))
                if checkpoint is not None and done is None:
                    checkpoint.put(key, stats[-1])
                if progress is not None:
                    progress(i + 1, len(signatures))
            overhead = min([overhead, *(st["median_ms"] for st in stats)])
    entries = [LatencyEntry(sig, max(st["mean_ms"] - overhead, 0.0), st["std_ms"], st["n"])
               for sig, st in zip(signatures, stats)]
    return entries, overhead


def overhead_probes(layers: int) -> int:
    """How often the one-op graph is timed among ``layers`` layer measurements: once per 32, at least 3."""
    return max(3, -(-layers // 32))


def _time_ort_with_overhead(items: list, keys: list, layers: int, threads: int, timing: Timing,
                            progress: Progress | None, checkpoint: runner.Checkpoint | None) -> tuple[list[dict], float]:
    """Time ``items`` (the first ``layers`` of them layer micro-models) in interleaved onnxruntime passes, with the
    runtime's per-call overhead timed among them; return the items' stats and that overhead (ms).

    The overhead is subtracted from every layer, so an inflated figure zeroes the cheap layers: timed once before
    the layers, at a busy moment, it read 0.030 ms where it takes 0.013 ms, and 223 of MobileNetV2's 273 layer
    shapes at 32x32 cost nothing, every plan under 40 % kept priced alike. So the one-op graph is timed
    :func:`overhead_probes` times, spread over the passes beside the layers (never from a checkpoint: it is cheap),
    its figure is the median of those, and it is capped at the cheapest layer's median: a layer's graph is one
    call too, and cannot cost less than a call.
    """
    from autoprune.onnx_export import onnx_bytes

    probes = overhead_probes(layers)
    probe = (onnx_bytes(*_overhead_model()), _overhead_model()[1])
    chunks = np.array_split(np.arange(len(items)), probes)
    order: list[int | None] = []
    for chunk in chunks:
        order += [None, *chunk.tolist()]
    timed = runner.time_ort_many([probe if i is None else items[i] for i in order], threads, timing.warmup,
                                 timing.repeats, timing.rounds, _scaled(progress, len(order)),
                                 [None if i is None else keys[i] for i in order], checkpoint)
    stats: list[dict] = [{}] * len(items)
    overheads = []
    for i, st in zip(order, timed):
        if i is None:
            overheads.append(st["median_ms"])
        else:
            stats[i] = st
    overhead = float(np.median(overheads))
    return stats, min([overhead, *(st["median_ms"] for st in stats[:layers])])


def layer_key(sig: LayerSignature, threads: int, timing: Timing) -> str:
    """Checkpoint key of one layer measurement: what is timed and how."""
    return f"layer {sig.key()} threads={threads} warmup={timing.warmup} repeats={timing.repeats}/{timing.rounds}"


def plan_key(space: SearchSpace, plan: PruningPlan, threads: int, timing: Timing) -> str:
    """Checkpoint key of one whole-model measurement."""
    return (f"model {model_key(space.model, space.input_shape)} {json.dumps(plan.to_dict(), sort_keys=True)} "
            f"threads={threads} warmup={timing.warmup} repeats={timing.repeats}/{timing.rounds}")


def checkpoint_path(out: Path) -> Path:
    """Where ``profile measure --out OUT`` keeps the timings of a run in progress: next to OUT."""
    out = Path(out)
    return out.with_name(out.name + ".partial.jsonl")


def _onnx_item(sig: LayerSignature):
    """A lazy ONNX micro-model for ``sig`` (built only if it still needs timing) and its input shape."""
    from autoprune.onnx_export import onnx_bytes

    def build() -> bytes:
        return onnx_bytes(*micro_model(sig))

    return build, micro_model_shape(sig)


def micro_model_shape(sig: LayerSignature) -> tuple[int, ...]:
    """The input shape of ``sig``'s micro-model (batch 1), without building it."""
    if sig.op == "linear":
        return (1, sig.cin) if sig.in_h * sig.in_w == 1 else (1, sig.in_h * sig.in_w, sig.cin)
    return 1, sig.cin, sig.in_h, sig.in_w


def _scaled(progress: Progress | None, total: int) -> Progress | None:
    """Turn a progress over passes into one over items (every pass times every item)."""
    if progress is None:
        return None
    return lambda done, passes: progress(round(done / passes * total), total)


def default_alignment(backend_name: str, precision: str) -> int:
    """Channel padding of the runtime: onnxruntime CPU blocks channels by 16 (AVX-512) or 8 (AVX2) in its
    NCHWc kernels; TensorRT pads to 8 for FP16 and 32 for INT8 tensor-core tiles; eager PyTorch does not pad."""
    if backend_name == "tensorrt":
        return 32 if precision == "int8" else 8
    if backend_name == "torch":
        return 1
    return 16 if runner.cpu_isa() == "avx512f" else 8


def merge_entries(old: Iterable[LatencyEntry], new: Iterable[LatencyEntry]) -> tuple[LatencyEntry, ...]:
    """Entries of ``old`` and ``new``; a signature in both takes the new measurement."""
    merged = {e.signature: e for e in old}
    merged.update({e.signature: e for e in new})
    return tuple(merged.values())


def host_profile(name: str, entries, overhead_ms: float, backend_name: str, threads: int, alignment: int,
                 timing: Timing, base: HardwareProfile | None = None, device: str | None = None,
                 software: dict | None = None, date: str | None = None, source: str | None = None) -> HardwareProfile:
    """A measured table profile, or ``base`` with the new entries merged in."""
    date = date or today()
    device = device or runner.machine_description()
    software = software or {**runner.software_versions("onnxruntime" if backend_name == "onnxruntime" else backend_name),
                            "torch": str(torch.__version__)}
    method = (f"{backend_name}, {threads} thread(s), batch 1, {timing.warmup} warm-up + {timing.repeats} timed runs "
              f"per signature, outliers beyond median ± 3 MAD rejected; entries = mean per-call latency minus "
              f"call_overhead_ms (one-op graph)")
    source = source or f"measured with `autoprune profile measure` on {device}, {date}"
    caveats = ("measured on a machine shared with other processes: figures carry load noise; medians and MAD "
               "outlier rejection limit it, the per-model calibration and validation block quantify it",)
    if base is not None:
        return replace(base, entries=merge_entries(base.entries, entries), date=date, call_overhead_ms=overhead_ms,
                       measure_method=method, provenance="measured", provenance_source=source,
                       software={**base.software, **software})
    return HardwareProfile(
        name=name, device=device, runtime=RUNTIME_OF_BACKEND[backend_name], precision="fp32", batch=1,
        threads=threads, date=date, provenance="measured", provenance_source=source, alignment=alignment,
        latency_model="table", entries=tuple(entries), call_overhead_ms=overhead_ms, measure_method=method,
        execution_provider="CPUExecutionProvider" if backend_name == "onnxruntime" else "",
        software=software, caveats=caveats,
    )


# --- whole models: calibration and validation ---------------------------------------------------------------------
def random_plans(space: SearchSpace, count: int, seed: int, alignment: int) -> list[PruningPlan]:
    """``count`` random plans spread over the whole latency range, as a search visits it.

    Each plan draws an overall keep level, uniform in [min_keep, 1], and each group's ratio scatters around it
    (± 0.15); independent uniform ratios alone would all land near the middle of the range.
    """
    rng = random.Random(seed)
    plans = []
    for _ in range(count):
        level = rng.uniform(min(g.min_keep for g in space.groups), 1.0)
        keep = {}
        for g in space.groups:
            grid = ratio_grid(g.min_keep, g.step)
            wanted = min(1.0, max(g.min_keep, level + rng.uniform(-0.15, 0.15)))
            keep[g.name] = min(grid, key=lambda r: abs(r - wanted))
        plans.append(PruningPlan(keep_ratios=keep, alignment=alignment))
    return plans


def build_pruned(space: SearchSpace, plan: PruningPlan) -> nn.Module:
    """The model of ``space`` (random weights) pruned by ``plan``: what a measurement of the plan runs."""
    from autoprune.models import create_model
    from autoprune.pruning.structured import apply_plan

    classes = space.layers[-1].out_channels if space.layers and space.layers[-1].op == "linear" else 1000
    model = create_model(space.model, classes).eval()
    return apply_plan(model, plan, torch.zeros(space.input_shape))


@dataclass(frozen=True)
class PlanPoint:
    """One plan: the uncalibrated layer sum, the prediction and the measurement (ms), its weights (MB).

    A plan timed next to the dense model also carries both latency ratios plan / dense, predicted and measured:
    a slower machine moves both absolute times and neither ratio.
    """

    plan: PruningPlan
    layer_sum_ms: float
    predicted_ms: float
    measured_ms: float
    weight_mb: float = 0.0
    predicted_ratio: float | None = None
    measured_ratio: float | None = None


def plan_point(model: CostModel, space: SearchSpace, plan: PruningPlan, measured_ms: float) -> PlanPoint:
    """``plan`` measured at ``measured_ms``, with what ``model`` predicts for it and its weight size."""
    estimate = model.predict(space, plan)
    return PlanPoint(plan, model.layer_sum_ms(space, plan), estimate.latency_ms, measured_ms, estimate.stored_mb)


def plan_items(space: SearchSpace, plans: list[PruningPlan]) -> list[tuple[bytes, tuple[int, ...]]]:
    """Each plan's pruned model as ONNX bytes with its input shape: what a whole-model measurement runs.

    The dense model is exported once and each plan's graph is sliced from it (milliseconds, see
    :mod:`autoprune.hardware.onnx_prune`); a model whose graph cannot be sliced is pruned and exported per plan.
    """
    from autoprune.hardware.onnx_prune import Unsliceable, slice_onnx
    from autoprune.models import create_model
    from autoprune.onnx_export import onnx_bytes

    classes = space.layers[-1].out_channels if space.layers and space.layers[-1].op == "linear" else 1000
    dense = onnx_bytes(create_model(space.model, classes).eval(), space.input_shape)
    try:
        return [(slice_onnx(dense, space, plan), space.input_shape) for plan in plans]
    except Unsliceable:
        return [(onnx_bytes(build_pruned(space, plan), space.input_shape), space.input_shape) for plan in plans]


def measure_plans(profile: HardwareProfile, space: SearchSpace, plans: list[PruningPlan],
                  timing: Timing = Timing(30, 300, 10), progress: Progress | None = None,
                  pin_cpu: int | None = None, items: list | None = None) -> list[PlanPoint]:
    """Predict and measure (onnxruntime, the profile's thread count) each plan; ``items`` are the plans' ONNX
    models from :func:`plan_items` when the caller measures the same plans again."""
    model = CostModel(profile)
    items = items if items is not None else plan_items(space, plans)
    with pinned(pin_cpu):
        stats = runner.time_ort_many(items, max(profile.threads, 1), timing.warmup, timing.repeats, timing.rounds,
                                     _scaled(progress, len(plans)))
    # The median resists the bursts of a shared machine better than any mean.
    return [plan_point(model, space, plan, st["median_ms"]) for plan, st in zip(plans, stats)]


def measure_plans_paired(profile: HardwareProfile, space: SearchSpace, plans: list[PruningPlan], items: list,
                         dense_item, timing: Timing = Timing(10, 200, 10), progress: Progress | None = None,
                         pin_cpu: int | None = None) -> list[PlanPoint]:
    """Predict and measure each plan, each timed right after the dense model (``dense_item``, from
    :func:`plan_items`): absolute medians (ms) and the ratios plan / dense, predicted and measured."""
    model = CostModel(profile)
    dense_ms = model.predict(space, PruningPlan(alignment=profile.alignment)).latency_ms
    with pinned(pin_cpu):
        stats, _ = runner.time_ort_paired(items, dense_item, max(profile.threads, 1), timing.warmup, timing.repeats,
                                          timing.rounds, _scaled(progress, len(plans)))
    points = []
    for plan, st in zip(plans, stats):
        point = plan_point(model, space, plan, st["median_ms"])
        points.append(replace(point, predicted_ratio=point.predicted_ms / dense_ms, measured_ratio=st["ratio"]))
    return points


# Calibration forms: (a, b, spill) = coefficients of (layer sum, 1, MB of weights beyond the cache).
_FORMS = {"identity": (), "scale": (0,), "affine": (0, 1), "scale+spill": (0, 2), "affine+spill": (0, 1, 2)}


def _fit(features: np.ndarray, y: np.ndarray, form: str) -> np.ndarray:
    """Least-squares coefficients (a, b, spill) of ``form``; the terms a form leaves out are (1, 0, 0)-fixed."""
    coef = np.array([1.0, 0.0, 0.0])
    used = list(_FORMS[form])
    if used:
        coef[0] = 0.0
        # Relative least squares (rows scaled by 1/y): the error that matters is a share of each plan's time,
        # and a plain fit would let the largest models decide the line.
        scale = 1.0 / y
        coef[used] = np.linalg.lstsq(features[:, used] * scale[:, None], y * scale, rcond=None)[0]
    return coef


def _loo_mape(features: np.ndarray, y: np.ndarray, form: str) -> float:
    """Leave-one-out mean absolute percentage error of a calibration form: how it predicts plans it never saw."""
    errors = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        coef = _fit(features[keep], y[keep], form)
        errors.append(abs(features[i] @ coef - y[i]) / y[i])
    return float(np.mean(errors))


# Shares of the last-level cache tried as the size beyond which weights spill to memory. The whole cache is rarely
# the answer on a VM: it is shared with other tenants (and on AMD EPYC split between core complexes), and on one
# 2-core AVX2 VM with a 32 MiB L3 ResNet-18 plans slowed down from about 10 MB of weights on.
CACHE_SHARES = tuple(k / 16 for k in range(1, 17))


def fit_calibration(points: list[PlanPoint], source: str, cache_mb: float | None = None,
                    scaled: bool = False) -> Calibration:
    """``measured = a * layer_sum + b [+ spill * MB of weights beyond an effective cache]`` over whole-model
    measurements, in the form that generalises best.

    On a shared machine the whole-model timings carry load the table did not see, and a least-squares line
    through a dozen of them can fit that noise and predict new plans worse than the plain layer sum. So the
    identity (a=1, b=0), a pure scale, the affine fit and — when ``cache_mb`` (the last-level cache) is known and
    some measured models outgrow a share of it (:data:`CACHE_SHARES`) — the scale or affine fit plus a memory
    term compete on leave-one-out error; the winner is kept, with the effective cache size it was fitted at. The
    memory term is why a model whose weights outgrow the cache is slower than the sum of its layers, each of which
    was timed with its own weights in cache. With ``scaled`` the identity is not a candidate: a table measured on
    another machine needs at least a scale, however noisy the points.
    """
    x = np.array([p.layer_sum_ms for p in points])
    y = np.array([p.measured_ms for p in points])
    mb = np.array([p.weight_mb for p in points])
    base = [] if scaled and len(points) >= 3 else ["identity"]
    if len(points) >= 3:
        base.append("scale")
    if len(points) >= 4 and np.ptp(x) > 0:
        base.append("affine")
    candidates = [(form, None) for form in base]
    for share in CACHE_SHARES if cache_mb else ():
        beyond = np.maximum(0.0, mb - cache_mb * share)
        if len(points) >= 5 and (beyond > 0).sum() >= 2 and (beyond == 0).sum() >= 2:
            candidates.append(("scale+spill", round(cache_mb * share, 3)))
            if len(points) >= 6 and np.ptp(x) > 0:
                candidates.append(("affine+spill", round(cache_mb * share, 3)))

    def features(cache: float | None) -> np.ndarray:
        return np.c_[x, np.ones_like(x), np.maximum(0.0, mb - cache) if cache else np.zeros_like(x)]

    scores = ({c: _loo_mape(features(c[1]), y, c[0]) for c in candidates} if len(points) >= 2
              else {("identity", None): 0.0})
    for cand in [c for c in scores if c[1] is not None]:
        a, _, spill = _fit(features(cand[1]), y, cand[0])
        if spill < 0 or a <= 0:  # memory that makes models faster, or a term that ate the slope: noise, not a cache
            del scores[cand]
    # The simplest form within a hair of the best: an extra term that only ties (a "spill" fitted to models that
    # never outgrow the cache, at zero cost) is not evidence of it. Candidates are listed simplest first.
    best_score = min(scores.values())
    form, cache = next(c for c in scores if scores[c] <= best_score + 1e-6)
    a, b, spill = _fit(features(cache), y, form)
    if a <= 0:
        raise UserError("calibration failed: measured latency does not grow with the table's layer sum; "
                        "re-measure on a quieter machine")
    residual = float(np.sqrt(np.mean((features(cache) @ np.array([a, b, spill]) - y) ** 2)))
    best: dict[str, float] = {}
    for (f, c), e in scores.items():  # the best cache size of each form, for the record
        best[f] = min(best.get(f, e), e)
    chosen = ", ".join(f"{f} {100 * e:.1f}%" for f, e in best.items())
    at = f" beyond {cache:g} MB" if cache else ""
    return Calibration(round(float(a), 6), round(float(b), 6), len(points),
                       f"{source}; form {form}{at} (leave-one-out MAPE: {chosen})", today(), round(residual, 6),
                       spill_ms_per_mb=round(float(spill), 6), cache_mb=cache if spill else None)


def calibrate(profile: HardwareProfile, space: SearchSpace, points: int = 12, seed: int = 0,
              progress: Progress | None = None, pin_cpu: int | None = None) -> HardwareProfile:
    """``profile`` with a per-model calibration fitted on the dense model and ``points - 1`` random plans."""
    plans = [PruningPlan(alignment=profile.alignment)] + random_plans(space, points - 1, seed, profile.alignment)
    measured = measure_plans(replace(profile, calibration={}), space, plans, progress=progress, pin_cpu=pin_cpu)
    source = f"fitted on {len(plans)} whole-model onnxruntime measurements (dense + random plans, seed {seed})"
    key = model_key(space.model, space.input_shape)
    calibration = fit_calibration(measured, source, runner.last_level_cache_mb())
    return replace(profile, calibration={**profile.calibration, key: calibration})


def measure_with_calibration(space: SearchSpace, signatures: list[LayerSignature], threads: int = 1,
                             timing: Timing = Timing(20, 200, 5), calibration_points: int = 12,
                             progress: Progress | None = None, pin_cpu: int | None = None,
                             checkpoint: runner.Checkpoint | None = None):
    """Layer entries and whole-model calibration points timed in the same interleaved onnxruntime passes.

    Timing them together matters on a shared machine: calibration measured minutes after the table sees other
    load, and would fit that drift instead of the model's real overheads (pooling, additions, graph I/O).
    With a ``checkpoint``, every piece is stored as it is taken and a re-run resumes from it.
    Returns (entries, call overhead ms, calibration plans, their median latencies in ms).
    """
    from autoprune.onnx_export import onnx_bytes

    plans = [PruningPlan(alignment=space.alignment)] + random_plans(space, calibration_points - 1, 0, space.alignment)
    models = [(lambda plan=plan: onnx_bytes(build_pruned(space, plan), space.input_shape), space.input_shape)
              for plan in plans]
    keys = [layer_key(s, threads, timing) for s in signatures] + [plan_key(space, p, threads, timing) for p in plans]
    with pinned(pin_cpu):
        items = [_onnx_item(sig) for sig in signatures] + models
        stats, overhead = _time_ort_with_overhead(items, keys, len(signatures), threads, timing, progress, checkpoint)
    entries = [LatencyEntry(sig, max(st["mean_ms"] - overhead, 0.0), st["std_ms"], st["n"])
               for sig, st in zip(signatures, stats)]
    return entries, overhead, plans, [st["median_ms"] for st in stats[len(signatures):]]


def calibration_from(profile: HardwareProfile, space: SearchSpace, plans, measured_ms, source: str,
                     cache_mb: float | None = None) -> HardwareProfile:
    """``profile`` with the per-model calibration fitted on ``plans`` measured at ``measured_ms`` on a machine
    whose last-level cache holds ``cache_mb`` MB."""
    model = CostModel(replace(profile, calibration={}))
    points = [plan_point(model, space, plan, ms) for plan, ms in zip(plans, measured_ms)]
    key = model_key(space.model, space.input_shape)
    return replace(profile, calibration={**profile.calibration, key: fit_calibration(points, source, cache_mb)})


def kendall_tau(a, b) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def score(points: list[PlanPoint], command: str = "", note: str = "") -> Validation:
    """Prediction error over measured plans: MAPE (%), share within ±5% / ±10% (%), Kendall tau."""
    pred = np.array([p.predicted_ms for p in points])
    meas = np.array([p.measured_ms for p in points])
    err = np.abs(pred - meas) / meas
    return Validation(
        samples=len(points), mape_pct=round(float(err.mean() * 100), 3),
        within_5_pct=round(float((err <= 0.05).mean() * 100), 2),
        within_10_pct=round(float((err <= 0.10).mean() * 100), 2),
        kendall_tau=round(kendall_tau(pred, meas), 4), date=today(), machine=runner.machine_description(),
        command=command, note=note, measured_range_ms=(round(float(meas.min()), 5), round(float(meas.max()), 5)),
    )


def validate(profile: HardwareProfile, space: SearchSpace, samples: int = 50, seed: int = 1000,
             progress: Progress | None = None, command: str = "", pin_cpu: int | None = None,
             rounds: int = 1) -> tuple[HardwareProfile, Validation, list[PlanPoint]]:
    """Measure ``samples`` random plans (seed distinct from calibration's) and store the score in the profile.

    Each plan is timed right after the dense model (10 passes of 20 runs each, both), and scored twice: on its
    absolute median (ms) and on its ratio to the dense runs beside it (predicted plan/dense against measured).
    A machine that is slower today than when the profile was measured, or that slows down halfway, fails the
    first and not the second: the ratio says whether the model ranks and scales plans right, the absolute figure
    whether it also knows this machine's speed. With ``rounds`` > 1 the whole measurement is repeated that many
    times, one after the other; each plan is scored on the median of its rounds, and from three rounds on the
    validation records how repeatable the measurement itself was: the share of plans whose rounds all lie within
    ±10% of their median. On a machine whose cache or cores are shared with other tenants, that share bounds what
    any cost model can score.
    """
    if profile.runtime != "onnxruntime":
        raise UserError(f"target {profile.name!r} runs on {profile.runtime}; `profile validate` measures with "
                        "onnxruntime on this machine, so it can only validate onnxruntime CPU profiles here")
    if rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {rounds}")
    plans = random_plans(space, samples, seed, profile.alignment)
    dense_item, *items = plan_items(space, [PruningPlan(alignment=profile.alignment), *plans])
    measured = []
    for r in range(rounds):
        shifted = None if progress is None else (lambda done, total, r=r: progress(r * total + done, rounds * total))
        measured.append(measure_plans_paired(profile, space, plans, items, dense_item, progress=shifted,
                                             pin_cpu=pin_cpu))
    per_plan = np.array([[p.measured_ms for p in round_points] for round_points in measured])  # rounds x plans
    ratios = np.median(np.array([[p.measured_ratio for p in round_points] for round_points in measured]), axis=0)
    median = np.median(per_plan, axis=0)
    points = [replace(p, measured_ms=float(m), measured_ratio=float(q)) for p, m, q in zip(measured[0], median, ratios)]
    key = model_key(space.model, space.input_shape)
    how = ("measured = median of 200 onnxruntime runs in 10 passes, each pass right after as many runs of the "
           "dense model; ratio = that median over the median of the dense runs beside it")
    if rounds > 1:
        how += f"; then the median of {rounds} such rounds run one after the other"
    result = replace(score(points, command, f"random plans: per-plan keep level ~ U[min_keep, 1], groups ± 0.15; "
                                            f"{how}"), calibrated=key in profile.calibration, rounds=rounds)
    result = replace(result, **ratio_score(points))
    if rounds >= 3:  # with two rounds the median is their mean and "within ±10% of it" allows 20% between them
        spread = np.abs(per_plan - median).max(axis=0) / median
        result = replace(result, repeatable_10_pct=round(float((spread <= 0.10).mean() * 100), 2))
    return replace(profile, validation={**profile.validation, key: result}), result, points


def ratio_score(points: list[PlanPoint]) -> dict:
    """The drift-free part of a validation: error (%) of the predicted plan/dense ratio against the measured one."""
    pred = np.array([p.predicted_ratio for p in points])
    meas = np.array([p.measured_ratio for p in points])
    err = np.abs(pred - meas) / meas
    return {"ratio_mape_pct": round(float(err.mean() * 100), 3),
            "ratio_within_5_pct": round(float((err <= 0.05).mean() * 100), 2),
            "ratio_within_10_pct": round(float((err <= 0.10).mean() * 100), 2)}


# --- the host/device split ---------------------------------------------------------------------------------------
def export_bundle(space: SearchSpace, folder: Path, alignment: int, precision: str = "fp32", threads: int = 1,
                  timing: Timing = Timing(20, 100), max_points: int = 13, calibration_plans: int = 8,
                  progress: Progress | None = None) -> Path:
    """Write layer micro-models, whole-model calibration plans, ``manifest.json`` and ``run_profile.py``."""
    folder = Path(folder)
    (folder / "layers").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    sigs = signature_grid(space, alignment, precision, max_points)
    plans = [PruningPlan(alignment=alignment)] + random_plans(space, calibration_plans - 1, 0, alignment)
    total = len(sigs) + len(plans) + 1
    entries = []
    for i, sig in enumerate(sigs):
        model, shape = micro_model(sig)
        path = f"layers/l{i:05d}.onnx"
        export_onnx(model, shape, folder / path)
        entries.append({"file": path, "signature": sig.to_dict(), "input_shape": list(shape)})
        if progress:
            progress(i + 1, total)
    models = []
    for j, plan in enumerate(plans):
        path = f"models/plan{j:03d}.onnx"
        export_onnx(build_pruned(space, plan), space.input_shape, folder / path)
        models.append({"file": path, "plan": plan.to_dict(), "input_shape": list(space.input_shape)})
        if progress:
            progress(len(sigs) + j + 1, total)
    overhead, shape = _overhead_model()
    export_onnx(overhead, shape, folder / "overhead.onnx")
    manifest = {
        "schema": 1, "model": space.model, "input_shape": list(space.input_shape), "alignment": alignment,
        "precision": precision, "threads": threads, "warmup": timing.warmup, "repeats": timing.repeats,
        "overhead_model": "overhead.onnx", "overhead_input_shape": list(shape), "entries": entries,
        "models": models, "space": space.to_dict(),
    }
    from autoprune.paths import atomic_write_json

    atomic_write_json(folder / runner.MANIFEST, manifest)
    shutil.copyfile(Path(runner.__file__), folder / "run_profile.py")
    if progress:
        progress(total, total)
    return folder / runner.MANIFEST


def import_results(results_path: Path, name: str, base: HardwareProfile | None = None,
                   space: SearchSpace | None = None) -> HardwareProfile:
    """A measured profile from a device's ``results.json`` (next to its ``manifest.json``), calibration included."""
    results_path = Path(results_path)
    if results_path.is_dir():
        results_path = results_path / runner.RESULTS
    if not results_path.is_file():
        raise UserError(f"results file {str(results_path)!r} does not exist; run `autoprune profile run DIR` "
                        "(or `python3 run_profile.py DIR`) on the device first")
    try:
        results = json.loads(results_path.read_text())
        manifest = json.loads((results_path.parent / runner.MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {results_path} and its manifest.json: {err}") from err
    entries = []
    for r in results["results"]:
        sig = LayerSignature(**{**r["signature"], "dtype": manifest["precision"]})
        entries.append(LatencyEntry(sig, max(r["mean_ms"] - results.get("call_overhead_ms", 0.0), 0.0),
                                    r["std_ms"], r["n"]))
    backend_name = results["backend"]
    timing = Timing(results.get("warmup", 20), results.get("repeats", 100))
    profile = host_profile(
        name, entries, results.get("call_overhead_ms", 0.0), backend_name, results["threads"],
        manifest["alignment"], timing, base=base, device=results["device"], software=results["software"],
        date=results["date"],
        source=f"measured on {results['device']} with `autoprune profile run` ({backend_name}), {results['date']}",
    )
    profile = replace(profile, precision=manifest["precision"])
    if results.get("models") and space is not None:
        model = CostModel(replace(profile, calibration={}))
        points = [plan_point(model, space, PruningPlan.from_dict(m["plan"]), m["median_ms"])
                  for m in results["models"]]
        calibration = fit_calibration(points, f"fitted on {len(points)} whole-model measurements on the device",
                                      results.get("cache_mb"))
        profile = replace(profile, calibration={**profile.calibration,
                                                model_key(space.model, space.input_shape): calibration})
    return profile
