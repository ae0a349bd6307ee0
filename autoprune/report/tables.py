"""Tables of a report record as rows of strings: shared by the HTML and Markdown renderers (formatting only)."""

from __future__ import annotations

import json
import math
from typing import Any

from autoprune.report.record import Candidate, ReportRecord


def pct(value: float | None, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value * 100:+.1f}" if signed else f"{value * 100:.1f}%"


def ms(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.4g}"


def times(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.2f}×"


def count(value: int) -> str:
    return f"{value:,}"


def number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def candidate_table(record: ReportRecord) -> tuple[list[str], list[list[str]]]:
    """Header and rows: the dense model, then each Pareto-optimal candidate, fastest first."""
    header = [
        "trial", "strategy", "accuracy", "Δ vs dense (points)", f"predicted latency ms ({record.latency_provenance})",
        "host latency ms (measured)", "speedup (predicted)", "speedup (host)", "params", "MFLOPs", "size MB",
        "sparsity", "flagged classes", "precision",
    ]
    d = record.dense
    rows = [[
        "dense", "baseline", pct(d.accuracy), "0.0", ms(d.latency_ms),
        _host(d.host_latency), "1.00×", "1.00×" if d.host_latency else "–", count(d.params), number(d.mflops),
        number(d.size_mb, 2), "0.0%", "", "fp32",
    ]]
    for c in record.pareto:
        rows.append([
            str(c.trial), c.strategy, pct(c.accuracy), pct(c.delta_accuracy, signed=True), ms(c.latency_ms),
            _host(c.host_latency), times(c.speedup), times(c.host_speedup), count(c.params), number(c.mflops),
            number(c.size_mb, 2), pct(c.sparsity), ", ".join(c.flagged_classes), c.precision,
        ])
    return header, rows


def _host(latency) -> str:
    if latency is None:
        return "–"
    return f"{latency.mean_ms:.4g} ± {latency.std_ms:.2g}"


def flagged_rows(record: ReportRecord) -> tuple[list[str], list[list[str]]]:
    """One row per flagged (candidate, class): the classes pruning hurt far more than the average."""
    header = ["trial", "class", "dense", "candidate", "drop (points)", "average drop (points)", "excess (points)"]
    rows = []
    for c in record.pareto:
        for k in c.per_class:
            if k.flagged:
                rows.append([str(c.trial), k.name, pct(k.dense), pct(k.candidate), pct(k.drop, True),
                             pct(c.average_drop, True), pct(k.excess_drop, True)])
    return header, rows


def per_class_table(candidate: Candidate) -> tuple[list[str], list[list[str]]]:
    header = ["class", "dense", f"trial {candidate.trial}", "drop (points)", "excess over average (points)", "flag"]
    rows = [[k.name, pct(k.dense), pct(k.candidate), pct(k.drop, True), pct(k.excess_drop, True),
             "⚠" if k.flagged else ""] for k in candidate.per_class]
    return header, rows


def validation_rows(record: ReportRecord) -> list[tuple[str, str]]:
    cm = record.cost_model
    rows = [
        ("target", cm.target), ("device", cm.device), ("runtime / precision", f"{cm.runtime} / {cm.precision}"),
        ("profile provenance", f"{cm.provenance}: {cm.source}"),
        (f"validation for {cm.validation_key}", cm.validation_summary or "none"),
    ]
    if cm.validation:
        for key in ("samples", "mape_pct", "within_5_pct", "within_10_pct", "kendall_tau", "machine", "command",
                    "note"):
            if cm.validation.get(key) not in (None, ""):
                rows.append((f"  {key}", str(cm.validation[key])))
    for key, summary in cm.other_validations.items():
        rows.append((f"validation for {key}", summary))
    for caveat in cm.caveats:
        rows.append(("caveat", caveat))
    if cm.note:
        rows.append(("note", cm.note))
    return rows


def config_rows(record: ReportRecord) -> list[tuple[str, str]]:
    rows = [(k, _value(v)) for k, v in sorted(record.config.items())]
    rows += [(f"baseline {k}", _value(v)) for k, v in sorted(record.baseline_spec.items())]
    rows.append(("dense model source", record.dense.source))
    return rows


def _value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "–" if value is None else str(value)


def noise_sentence(val_size: int, points: float) -> str:
    """How far apart two candidates' accuracies must be before the validation split tells them apart (the search
    summary and the report say it in these words)."""
    return (f"Accuracies are measured on {val_size:,} validation images: ±{points:.1f} points (95 %, binomial). "
            "Candidates closer than that are not told apart by the search; `autoprune export` fine-tunes the one you "
            "pick and scores it on the test split where the data has one.")


def noise_note(record) -> str:
    """:func:`noise_sentence` for a report record; empty for a study that did not record its validation size."""
    d = record.dense
    return "" if d.accuracy_noise_points is None else noise_sentence(d.val_size, d.accuracy_noise_points)

