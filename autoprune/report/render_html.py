"""Render a :class:`ReportRecord` as one self-contained HTML page (plotly.js inlined: works offline, no CDN)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from autoprune.paths import atomic_write_text
from autoprune.report import tables
from autoprune.report.record import ALL_STRATEGIES, ReportRecord, TrialPoint

# Plot element ids, in page order (the browser test looks them up).
PLOT_IDS = ("pareto-plot", "hypervolume-plot", "keep-ratio-heatmap", "per-class-plot")
_PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
_PLOT_CONFIG = {"displaylogo": False, "responsive": True}


def _hover(p: TrialPoint) -> str:
    notes = [n for n, on in (("Pareto-optimal", p.pareto_optimal), ("infeasible: outside the search's limits",
                                                                   not p.feasible)) if on]
    fidelity = {"proxy": " (not fine-tuned: proxy accuracy)", "cut_short": " (fine-tuning cut short)"}.get(p.fidelity, "")
    return (f"trial {p.trial} ({p.strategy}, {p.precision.upper()}){''.join(' · ' + n for n in notes)}<br>"
            f"accuracy {tables.pct(p.accuracy)}{fidelity} (before fine-tune {tables.pct(p.proxy_accuracy)})<br>"
            f"latency {tables.ms(p.latency_ms)} ms ({p.latency_provenance}) · speedup {tables.times(p.speedup)}<br>"
            f"params {p.params:,} · {tables.number(p.mflops)} MFLOPs · {tables.number(p.size_mb, 2)} MB")


# FP32 and INT8 candidates share the front; the marker shape tells them apart (colour is the strategy).
SYMBOLS = {("fp32", True): "circle", ("int8", True): "square", ("fp32", False): "x", ("int8", False): "square-x"}


def _symbol(p: TrialPoint) -> str:
    return SYMBOLS.get((p.precision, p.feasible), "circle" if p.feasible else "x")


def pareto_figure(record: ReportRecord) -> go.Figure:
    """All trials by strategy, the front highlighted, the dense model and the uniform-ratio curve."""
    fig = go.Figure()
    for i, strategy in enumerate(record.strategies):
        points = [p for p in record.trials if p.strategy == strategy]
        fig.add_trace(go.Scatter(
            x=[p.latency_ms for p in points], y=[p.accuracy for p in points], mode="markers",
            name=f"trials: {strategy}",
            marker={"size": 8, "color": _PALETTE[i % len(_PALETTE)], "opacity": 0.65,
                    "symbol": [_symbol(p) for p in points]},
            hovertext=[_hover(p) for p in points], hoverinfo="text",
        ))
    if record.uniform_curve:
        fig.add_trace(go.Scatter(
            x=[c.latency_ms for c in record.uniform_curve], y=[c.accuracy for c in record.uniform_curve],
            mode="lines", name="uniform-ratio baseline", line={"dash": "dash", "color": "#7f7f7f"},
            hovertext=[("dense" if c.trial is None else f"trial {c.trial}")
                       + (f", keep ratio {c.keep_ratio:.2f}" if c.keep_ratio is not None else "")
                       for c in record.uniform_curve], hoverinfo="text",
        ))
    by_trial = {p.trial: p for p in record.trials}
    front = [by_trial[c.trial] for c in record.pareto]
    fig.add_trace(go.Scatter(
        x=[p.latency_ms for p in front], y=[p.accuracy for p in front], mode="lines+markers", name="Pareto front",
        line={"shape": "hv", "color": "#d62728"},
        marker={"size": 12, "color": "#d62728", "line": {"width": 1, "color": "black"},
                "symbol": ["diamond" if p.precision == "fp32" else "square" for p in front]},
        hovertext=[_hover(p) for p in front], hoverinfo="text",
    ))
    d = record.dense
    fig.add_trace(go.Scatter(
        x=[d.latency_ms], y=[d.accuracy], mode="markers", name="dense baseline",
        marker={"size": 16, "symbol": "star", "color": "black"},
        hovertext=[f"dense baseline<br>accuracy {tables.pct(d.accuracy)}<br>latency {tables.ms(d.latency_ms)} ms "
                   f"({d.latency_provenance})<br>params {d.params:,} · {tables.number(d.mflops)} MFLOPs"],
        hoverinfo="text",
    ))
    fig.update_layout(
        title=f"Accuracy vs latency on {record.target}", xaxis_title=record.latency_axis_title,
        yaxis_title="top-1 accuracy (validation split)", yaxis_tickformat=".0%", hovermode="closest",
        template="plotly_white", height=520,
    )
    return fig


def hypervolume_figure(record: ReportRecord) -> go.Figure:
    fig = go.Figure()
    for i, curve in enumerate(record.hypervolume):
        combined = curve.strategy == ALL_STRATEGIES  # dashed, so the strategy it coincides with stays visible
        fig.add_trace(go.Scatter(
            x=list(curve.trials), y=list(curve.values), mode="lines" if combined else "lines+markers",
            name=curve.strategy,
            line={"shape": "hv", "color": "#444" if combined else _PALETTE[i % len(_PALETTE)],
                  "dash": "dot" if combined else "solid", "width": 1.5 if combined else 2},
        ))
    fig.update_layout(
        title="Hypervolume vs trial number", xaxis_title="trial number", yaxis_title="normalised hypervolume",
        template="plotly_white", height=380,
    )
    return fig


def keep_ratio_figure(record: ReportRecord) -> go.Figure:
    rows = [f"trial {c.trial}" for c in record.pareto]
    fig = go.Figure(go.Heatmap(
        z=[list(c.keep_ratios) for c in record.pareto], x=list(record.group_names), y=rows, zmin=0.0, zmax=1.0,
        colorscale="Viridis", colorbar={"title": "keep ratio"},
        text=[[_cell(c, g, k) for g, k in zip(record.group_names, c.kept_channels)] for c in record.pareto],
        texttemplate="%{text}",
        hovertemplate="%{y} · %{x}<br>keep ratio %{z:.2f} (%{text})<extra></extra>",
    ))
    dropped = any(c.dropped_blocks for c in record.pareto)
    fig.update_layout(
        title=f"Per-layer keep ratio of the Pareto-optimal candidates (channels after alignment to "
              f"{record.alignment}{'; 0 = inside a dropped block' if dropped else ''})",
        xaxis_title="channel group", template="plotly_white", height=160 + 40 * max(1, len(rows)),
    )
    return fig


def _cell(candidate, group: str, kept: int) -> str:
    """A heatmap cell's label: the channels kept, or the block the group was dropped with."""
    if candidate.group_dropped(group):
        return "dropped"
    return f"{kept} ch"


def per_class_figure(record: ReportRecord) -> go.Figure:
    """Per-class accuracy change (candidate - dense, points); flagged cells marked with ⚠."""
    z, text = [], []
    for c in record.pareto:
        z.append([-k.drop * 100 for k in c.per_class])
        text.append([f"{-k.drop * 100:+.1f}{' ⚠' if k.flagged else ''}" for k in c.per_class])
    fig = go.Figure(go.Heatmap(
        z=z, x=list(record.class_names), y=[f"trial {c.trial}" for c in record.pareto], text=text,
        texttemplate="%{text}", colorscale="RdBu", zmid=0.0, colorbar={"title": "Δ points"},
        hovertemplate="%{y} · class %{x}<br>Δ accuracy vs dense %{text} points<extra></extra>",
    ))
    fig.update_layout(
        title=(f"Per-class accuracy change vs dense (points); ⚠ = drop more than "
               f"{record.class_drop_threshold * 100:.0f} points beyond the candidate's average drop"),
        xaxis_title="class", xaxis_type="category", template="plotly_white",
        height=160 + 40 * max(1, len(record.pareto)),
    )
    return fig


def figures(record: ReportRecord) -> dict[str, go.Figure]:
    """The report's plots by element id (``PLOT_IDS``)."""
    return dict(zip(PLOT_IDS, (pareto_figure(record), hypervolume_figure(record), keep_ratio_figure(record),
                               per_class_figure(record))))


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _pairs(rows: list[tuple[str, str]]) -> str:
    return "<table class=\"kv\"><tbody>" + "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows) + "</tbody></table>"


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5rem 0 1.5rem;font-size:0.9rem}
th,td{border:1px solid #ccc;padding:0.25rem 0.5rem;text-align:right}
table.kv th{text-align:left;background:#f6f6f6} table.kv td{text-align:left}
thead th{background:#f0f0f0} .note{color:#555;font-size:0.9rem} .warn{color:#a15c00}
"""


def render_html(record: ReportRecord) -> str:
    """The report page: plotly.js, the plots, and the tables, in one file."""
    r = record
    plots = {
        pid: fig.to_html(full_html=False, include_plotlyjs=False, div_id=pid, config=_PLOT_CONFIG)
        for pid, fig in figures(r).items()
    }
    header, rows = tables.candidate_table(r)
    flag_header, flag_rows = tables.flagged_rows(r)
    flagged = (_table(flag_header, flag_rows, "flagged") if flag_rows else
               f'<p class="note">No class of any Pareto-optimal candidate drops more than '
               f'{r.class_drop_threshold * 100:.0f} points beyond that candidate\'s average drop.</p>')
    noise = tables.noise_note(r)
    noise_note = f'<p class="note">{html.escape(noise)}</p>' if noise else ""
    shape = "x".join(str(d) for d in r.input_shape)
    hv_finals = ", ".join(f"{c.strategy} {c.final:.4f}" for c in r.hypervolume) or "–"
    provenance_note = (
        f"Predicted latencies are {html.escape(r.latency_provenance)} figures of the cost model for "
        f"{html.escape(r.target)} ({html.escape(r.latency_source)}). Host latencies are measured on this machine "
        f"(see each figure's provenance in the JSON report) and are shown only for trials measured with "
        f"<code>autoprune report --measure</code> or exported with <code>autoprune export</code>."
    )
    data_json = json.dumps(r.to_dict(), allow_nan=False).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>autoprune report: {html.escape(r.study)}</title>
<style>{_STYLE}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>Pruning report: {html.escape(r.study)}</h1>
<p>{html.escape(r.model)} on {html.escape(r.target)} · data {html.escape(r.data)} · input {shape} ·
{r.completed_trials} completed, {r.failed_trials} failed trials · strategies {html.escape(', '.join(r.strategies)) or '–'} ·
generated {html.escape(r.generated_at)}</p>
<p class="note">{provenance_note}</p>
<h2>Pareto front</h2>
{plots['pareto-plot']}
<h2>Pareto-optimal candidates</h2>
{_table(header, rows, "candidates")}
{noise_note}
<h2>Search progress</h2>
<p class="note">Hypervolume: {html.escape(r.hypervolume_note)}. Final: {html.escape(hv_finals)}.</p>
{plots['hypervolume-plot']}
<h2>Per-layer keep ratios</h2>
{plots['keep-ratio-heatmap']}
<h2>Per-class accuracy</h2>
<p class="note">Pruning can hurt some classes far more than the average shows. A class is flagged when it lost
accuracy and its drop exceeds the candidate's average drop by more than {r.class_drop_threshold * 100:.1f} points.</p>
{plots['per-class-plot']}
{flagged}
<h2>Cost model</h2>
{_pairs(tables.validation_rows(r))}
<h2>Run configuration</h2>
{_pairs(tables.config_rows(r))}
<script type="application/json" id="report-data">{data_json}</script>
</body></html>
"""


def write_html(record: ReportRecord, path: Path) -> Path:
    atomic_write_text(Path(path), render_html(record))
    return Path(path)
