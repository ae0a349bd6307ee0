"""Render a :class:`ReportRecord` as Markdown (the same content as the HTML page, tables instead of plots)."""

from __future__ import annotations

import json
from pathlib import Path

from autoprune.paths import atomic_write_text
from autoprune.report import tables
from autoprune.report.record import ReportRecord


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _pairs(rows: list[tuple[str, str]]) -> str:
    return md_table(["", ""], [[k, v] for k, v in rows])


def render_md(record: ReportRecord) -> str:
    r = record
    shape = "x".join(str(d) for d in r.input_shape)
    noise = tables.noise_note(r)
    out = [
        f"# Pruning report: {r.study}",
        "",
        f"{r.model} on {r.target} · data {r.data} · input {shape} · {r.completed_trials} completed, "
        f"{r.failed_trials} failed trials · strategies {', '.join(r.strategies) or '–'} · generated {r.generated_at}",
        "",
        f"Latencies are {r.latency_provenance} predictions of the cost model for {r.target} ({r.latency_source}); "
        "host latencies are measured on this machine where available.",
        "",
        "## Pareto-optimal candidates",
        "",
        md_table(*tables.candidate_table(r)),
        "",
        *([noise, ""] if noise else []),
        "## All trials",
        "",
        md_table(
            ["trial", "strategy", "accuracy", f"latency ms ({r.latency_provenance})", "speedup", "Pareto-optimal",
             "precision"],
            [[str(p.trial), p.strategy, tables.pct(p.accuracy), tables.ms(p.latency_ms), tables.times(p.speedup),
              "yes" if p.pareto_optimal else "", p.precision] for p in sorted(r.trials, key=lambda p: p.trial)],
        ),
        "",
    ]
    if r.uniform_curve:
        out += ["## Uniform-ratio baseline", "", md_table(
            ["point", "keep ratio", "accuracy", "latency ms"],
            [["dense" if c.trial is None else f"trial {c.trial}",
              "–" if c.keep_ratio is None else f"{c.keep_ratio:.2f}", tables.pct(c.accuracy), tables.ms(c.latency_ms)]
             for c in r.uniform_curve]), ""]
    out += [
        "## Hypervolume",
        "",
        f"{r.hypervolume_note}.",
        "",
        md_table(["strategy", "trials", "final hypervolume", "trajectory"],
                 [[c.strategy, str(len(c.trials)), f"{c.final:.4f}",
                   " ".join(f"{t}:{v:.3f}" for t, v in zip(c.trials, c.values))] for c in r.hypervolume]),
        "",
        "## Per-layer keep ratios",
        "",
        md_table(["trial", *r.group_names],
                 [[str(c.trial), *("dropped" if c.group_dropped(g) else f"{k:.2f} ({n})"
                                    for g, k, n in zip(r.group_names, c.keep_ratios, c.kept_channels))]
                  for c in r.pareto]),
        "",
        *([md_table(["trial", "dropped blocks"],
                    [[str(c.trial), ", ".join(c.dropped_blocks) or "-"] for c in r.pareto]), ""]
          if any(c.dropped_blocks for c in r.pareto) else []),
        "",
        "## Per-class accuracy",
        "",
        f"A class is flagged when it lost accuracy and its drop exceeds the candidate's average drop by more than "
        f"{r.class_drop_threshold * 100:.1f} points.",
        "",
    ]
    flag_header, flag_rows = tables.flagged_rows(r)
    out += [md_table(flag_header, flag_rows) if flag_rows else "No class is flagged.", ""]
    for c in r.pareto:
        out += [f"### Trial {c.trial}", "", md_table(*tables.per_class_table(c)), ""]
    out += [
        "## Cost model", "", _pairs(tables.validation_rows(r)), "",
        "## Run configuration", "", _pairs(tables.config_rows(r)), "",
        "## Plans of the Pareto-optimal candidates", "",
        *[f"- trial {c.trial}: `{json.dumps(dict(c.plan), sort_keys=True)}`" for c in r.pareto], "",
    ]
    return "\n".join(out)


def write_md(record: ReportRecord, path: Path) -> Path:
    atomic_write_text(Path(path), render_md(record))
    return Path(path)
