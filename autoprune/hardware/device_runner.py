"""Time ONNX models on a device: needs only the standard library, numpy and onnxruntime (or ``trtexec``).

This module must not import torch or the rest of autoprune: ``autoprune profile export`` copies it next to the
exported layer micro-models as ``run_profile.py`` so that a device without torch (a Jetson) can run

    python3 run_profile.py DIR [--backend onnxruntime|tensorrt] [--threads 1]

and write ``DIR/results.json`` for ``autoprune profile import``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MANIFEST = "manifest.json"
RESULTS = "results.json"
PARTIAL = "results.partial.jsonl"  # timings of a run in progress, one line per micro-model


def robust_stats(samples_ms: list[float]) -> dict:
    """Mean, std and count of the samples left after rejecting outliers (median ± 3 scaled MADs), and the median.

    On a shared machine other processes preempt some runs; those land far above the median and are dropped
    rather than dragging the mean.
    """
    if not samples_ms:
        raise ValueError("no samples")
    med = statistics.median(samples_ms)
    mad = statistics.median(abs(s - med) for s in samples_ms) * 1.4826
    limit = 3.0 * mad if mad > 0 else 0.0
    kept = [s for s in samples_ms if abs(s - med) <= limit] if limit > 0 else list(samples_ms)
    kept = kept or [med]
    mean = statistics.fmean(kept)
    std = statistics.stdev(kept) if len(kept) > 1 else 0.0
    return {"mean_ms": mean, "std_ms": std, "n": len(kept), "median_ms": med,
            "rejected": len(samples_ms) - len(kept)}


def ort_session(path_or_bytes, threads: int = 1, provider: str = "CPUExecutionProvider"):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    source = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    return ort.InferenceSession(source, options, providers=[provider])


def time_ort(path_or_bytes, input_shape, threads: int = 1, warmup: int = 20, repeats: int = 100,
             provider: str = "CPUExecutionProvider") -> dict:
    """Per-call latency samples (ms) of one onnxruntime session run on a random input of ``input_shape``."""
    import numpy as np

    session = ort_session(path_or_bytes, threads, provider)
    name = session.get_inputs()[0].name
    feed = {name: np.random.default_rng(0).standard_normal(tuple(input_shape)).astype(np.float32)}
    for _ in range(warmup):
        session.run(None, feed)
    samples = []
    clock = time.perf_counter
    for _ in range(repeats):
        start = clock()
        session.run(None, feed)
        samples.append((clock() - start) * 1e3)
    return robust_stats(samples)


class Checkpoint:
    """An append-only JSONL file of finished measurement pieces, so that a long measurement can resume.

    Each line is one piece: ``{"key": ..., "pass": r, "samples": [ms, ...]}`` (the samples of one item in one
    interleaved pass) or ``{"key": ..., "result": {...}}`` (an item timed in one go). A line is written and
    flushed as soon as its piece is done, so an interrupted run loses at most the piece in progress; a torn
    last line (the process died mid-write) is ignored on reading. Items are keyed by what they measure and how,
    so a re-run of the same command picks up every piece it already has, and a different command reuses none
    it should not.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._pieces: dict = {}
        self._torn = False  # the file ends inside a line: the next record must start on a line of its own
        if self.path.is_file():
            text = self.path.read_text(encoding="utf-8")
            self._torn = bool(text) and not text.endswith("\n")
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                    self._pieces[(record["key"], record.get("pass"))] = record.get("samples", record.get("result"))
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    def __len__(self) -> int:
        return len(self._pieces)

    def get(self, key: str, pass_index: int | None = None):
        """The samples (or result) stored for ``key`` (in pass ``pass_index``), else None."""
        return self._pieces.get((key, pass_index))

    def put(self, key: str, value, pass_index: int | None = None) -> None:
        record = {"key": key, "pass": pass_index, "samples" if pass_index is not None else "result": value}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(("\n" if self._torn else "") + json.dumps(record) + "\n")
            fh.flush()
        self._torn = False
        self._pieces[(key, pass_index)] = value

    def remove(self) -> None:
        """Delete the file once what it checkpointed is safely written elsewhere."""
        self.path.unlink(missing_ok=True)


def time_ort_many(items, threads: int = 1, warmup: int = 20, repeats: int = 100, rounds: int = 5,
                  progress=None, keys=None, checkpoint: Checkpoint | None = None) -> list[dict]:
    """Like :func:`time_ort` for many ``(model, input_shape)`` items, interleaved in ``rounds`` passes.

    On a machine shared with other work, load drifts over seconds; timing every model a little in each pass
    spreads that drift evenly over all models instead of penalising whichever ran during a busy spell.

    With a ``checkpoint`` (and one key per item), each item's samples of each pass are stored as soon as they are
    taken, and pieces already stored are not timed again. A model may be given as a zero-argument callable
    returning it, so that items a resumed run already has are never even built.
    """
    import numpy as np

    keys = list(keys) if keys is not None else [None] * len(items)
    def stored(i: int, r: int):
        return None if checkpoint is None or keys[i] is None else checkpoint.get(keys[i], r)

    rng = np.random.default_rng(0)
    runs: dict[int, tuple] = {}
    for i, (source, shape) in enumerate(items):
        feed_data = rng.standard_normal(tuple(shape)).astype(np.float32)
        if all(stored(i, r) is not None for r in range(rounds)):
            continue
        session = ort_session(source() if callable(source) else source, threads)
        runs[i] = (session, {session.get_inputs()[0].name: feed_data})
    per_round = max(1, -(-repeats // rounds))
    samples: list[list[float]] = [[] for _ in items]
    warmed: set[int] = set()
    clock = time.perf_counter
    for r in range(rounds):
        for i in range(len(items)):
            done = stored(i, r)
            if done is not None:
                samples[i].extend(done)
                continue
            session, feed = runs[i]
            for _ in range(2 if i in warmed else warmup):  # a couple of untimed runs bring the model back into cache
                session.run(None, feed)
            warmed.add(i)
            taken = []
            for _ in range(per_round):
                start = clock()
                session.run(None, feed)
                taken.append((clock() - start) * 1e3)
            samples[i].extend(taken)
            if checkpoint is not None and keys[i] is not None:
                checkpoint.put(keys[i], taken, r)
        if progress is not None:
            progress(r + 1, rounds)
    return [robust_stats(s) for s in samples]


def time_ort_paired(items, reference, threads: int = 1, warmup: int = 10, repeats: int = 100, rounds: int = 5,
                    progress=None) -> tuple[list[dict], dict]:
    """Time each ``(model, input_shape)`` item right after the ``reference`` model, in ``rounds`` passes.

    Returns, per item, its stats plus ``ratio`` (its median over the median of the reference runs taken next to
    it) and ``reference_ms``, and the reference's stats over all its runs. Every run is also timed on this
    thread's CPU clock (``cpu_median_ms``, ``cpu_ratio``): with one intra-op thread onnxruntime computes on the
    calling thread, so that clock leaves out the time other processes held the core. On a machine whose speed drifts
    (other tenants, frequency scaling), the ratio of two models timed seconds apart barely moves while either
    absolute time does: a cost model can be judged and calibrated on ratios without fitting the drift.
    """
    import numpy as np

    rng = np.random.default_rng(0)

    def prepare(source, shape):
        session = ort_session(source() if callable(source) else source, threads)
        return session, {session.get_inputs()[0].name: rng.standard_normal(tuple(shape)).astype(np.float32)}

    ref = prepare(*reference)
    runs = [prepare(*item) for item in items]
    per_round = max(1, -(-repeats // rounds))
    mine: list[list[float]] = [[] for _ in runs]
    beside: list[list[float]] = [[] for _ in runs]
    clock = time.perf_counter

    cpu_clock = time.thread_time

    def block(run, count: int, first: bool) -> list[tuple[float, float]]:
        session, feed = run
        for _ in range(warmup if first else 2):
            session.run(None, feed)
        out = []
        for _ in range(count):
            start, cpu_start = clock(), cpu_clock()
            session.run(None, feed)
            out.append(((clock() - start) * 1e3, (cpu_clock() - cpu_start) * 1e3))
        return out

    for r in range(rounds):
        for i, run in enumerate(runs):
            beside[i] += block(ref, per_round, r == 0 and i == 0)
            mine[i] += block(run, per_round, r == 0)
        if progress is not None:
            progress(r + 1, rounds)
    out = []
    for own, near in zip(mine, beside):
        stats = robust_stats([w for w, _ in own])
        near_ms = statistics.median(w for w, _ in near)
        cpu_ms, near_cpu_ms = statistics.median(c for _, c in own), statistics.median(c for _, c in near)
        low, near_low = _quantile([w for w, _ in own], 0.1), _quantile([w for w, _ in near], 0.1)
        out.append({**stats, "ratio": stats["median_ms"] / near_ms, "reference_ms": near_ms,
                    "cpu_median_ms": cpu_ms, "cpu_ratio": cpu_ms / near_cpu_ms if near_cpu_ms > 0 else float("nan"),
                    "p10_ms": low, "p10_ratio": low / near_low})
    reference_stats = robust_stats([w for near in beside for w, _ in near])
    reference_stats["cpu_median_ms"] = statistics.median(c for near in beside for _, c in near)
    return out, reference_stats


def _quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (linear interpolation): on a busy machine the fast runs are the ones no
    other process interrupted, and a low quantile tracks them."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def time_trtexec(onnx_path: Path, precision: str = "fp16", warmup_ms: int = 200, iterations: int = 200,
                 trtexec: str | None = None) -> dict:
    """Latency of an ONNX model built and timed by TensorRT's ``trtexec`` (GPU compute time per inference, ms)."""
    exe = trtexec or shutil.which("trtexec") or _jetson_trtexec()
    if exe is None:
        raise RuntimeError("trtexec not found on PATH (on a Jetson it is /usr/src/tensorrt/bin/trtexec); "
                           "install TensorRT or use --backend onnxruntime")
    with tempfile.TemporaryDirectory() as tmp:
        times_path = Path(tmp) / "times.json"
        cmd = [exe, f"--onnx={onnx_path}", f"--warmUp={warmup_ms}", f"--iterations={iterations}", "--duration=0",
               "--avgRuns=1", f"--exportTimes={times_path}"]
        if precision == "fp16":
            cmd.append("--fp16")
        elif precision == "int8":
            cmd.append("--int8")
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not times_path.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"trtexec failed on {onnx_path}: {' | '.join(tail)}")
        records = json.loads(times_path.read_text())
    # Each record holds one inference's timings; "computeMs" is the GPU time without host transfers.
    samples = [float(r.get("computeMs", r.get("latencyMs"))) for r in records]
    return robust_stats(samples)


def _jetson_trtexec() -> str | None:
    candidate = Path("/usr/src/tensorrt/bin/trtexec")
    return str(candidate) if candidate.is_file() else None


def software_versions(backend: str) -> dict:
    versions = {"python": platform.python_version()}
    try:
        import numpy

        versions["numpy"] = numpy.__version__
    except ImportError:
        pass
    if backend == "onnxruntime":
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
        versions["cpu_isa"] = cpu_isa()
    elif backend == "tensorrt":
        exe = shutil.which("trtexec") or _jetson_trtexec()
        if exe:
            out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=False).stdout
            match = re.search(r"TensorRT\.trtexec \[TensorRT v(\d+)\]", out)
            versions["tensorrt"] = match.group(1) if match else "unknown"
    return versions


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_isa() -> str:
    """The widest x86 vector instruction set this CPU offers (``avx512f``, ``avx2``, ``avx``, ``sse``), or the
    machine's architecture elsewhere. onnxruntime's CPU kernels dispatch on it, so a layer table measured with
    AVX-512 does not carry over to an AVX2 machine even when both report the same CPU model name."""
    try:
        flags = set()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        flags = set()
    for isa in ("avx512f", "avx2", "avx"):
        if isa in flags:
            return isa
    return "sse" if "sse2" in flags else platform.machine()


def machine_description() -> str:
    return f"{cpu_name()} ({os.cpu_count()} logical CPUs, {platform.system()} {platform.machine()})"


def last_level_cache_mb() -> float | None:
    """Size (MB, 1e6 bytes) of this machine's last-level CPU cache, from Linux sysfs; None where unknown."""
    best = None
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((index / "level").read_text())
            if (index / "type").read_text().strip() == "Instruction":
                continue
            text = (index / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1:], 1)
        try:
            size = int(text.rstrip("KMG")) * scale
        except ValueError:
            continue
        if best is None or level > best[0]:
            best = (level, size)
    return None if best is None else round(best[1] / 1e6, 3)


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def run_manifest(folder: Path, backend: str = "onnxruntime", threads: int | None = None,
                 progress=None) -> Path:
    """Time every micro-model listed in ``folder/manifest.json``; write ``folder/results.json``; return its path.

    Each micro-model's timing goes to ``folder/results.partial.jsonl`` as soon as it is taken: a run that is
    interrupted (Ctrl-C, a crash, a reboot) continues where it stopped when it is started again.
    """
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    threads = int(threads if threads is not None else manifest.get("threads", 1))
    warmup, repeats = int(manifest.get("warmup", 20)), int(manifest.get("repeats", 100))
    precision = manifest.get("precision", "fp32")
    results = []
    baseline = None
    if backend == "onnxruntime" and manifest.get("overhead_model"):
        baseline = time_ort(folder / manifest["overhead_model"], manifest["overhead_input_shape"], threads,
                            warmup, repeats)
    if backend not in ("onnxruntime", "tensorrt"):
        raise ValueError(f"unknown backend {backend!r}; use onnxruntime or tensorrt")
    checkpoint = Checkpoint(folder / PARTIAL)
    how = f"{backend} threads={threads} warmup={warmup} repeats={repeats} precision={precision}"

    def timed(item, count: int) -> dict:
        key = f"{item['file']} {how} runs={count}"
        stats = checkpoint.get(key)
        if stats is None:
            path = folder / item["file"]
            stats = (time_ort(path, item["input_shape"], threads, warmup, count) if backend == "onnxruntime"
                     else time_trtexec(path, precision))
            checkpoint.put(key, stats)
        return stats

    for i, item in enumerate(manifest["entries"]):
        results.append({"signature": item["signature"], **timed(item, repeats)})
        if progress is not None:
            progress(i + 1, len(manifest["entries"]))
    models = [{"plan": item["plan"], **timed(item, max(repeats, 200))} for item in manifest.get("models", [])]
    out = {
        "backend": backend, "threads": threads, "precision": precision, "device": machine_description(),
        "software": software_versions(backend), "date": now(), "warmup": warmup, "repeats": repeats,
        "call_overhead_ms": baseline["median_ms"] if baseline else 0.0, "results": results,
        "models": models,
        # The CPU's last-level cache bounds what stays cached between runs on the CPU; a GPU's is another matter.
        "cache_mb": last_level_cache_mb() if backend == "onnxruntime" else None,
    }
    target = folder / RESULTS
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1))
    os.replace(tmp, target)  # a crash never leaves a half-written results file
    checkpoint.remove()
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Time exported layer micro-models on this device.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "tensorrt"))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    done = lambda i, n: print(f"\r{i}/{n}", end="", file=sys.stderr, flush=True)  # noqa: E731
    path = run_manifest(args.folder, args.backend, args.threads, done)
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
