"""Reading a finished search: the Pareto report, candidate selection, and export of one candidate.

``record`` computes a plain :class:`ReportRecord` from a study; ``render_html`` / ``render_md`` render it
(JSON is ``record.to_dict()``); ``select`` picks a trial by rule; ``export`` rebuilds, fine-tunes and writes a
candidate with its model card (``card``); ``host`` keeps latencies re-measured on this host on the study.
"""

from autoprune.report.card import ModelCard, card_markdown, write_card
from autoprune.report.export import ExportResult, ExportSettings, distillation_loss, export_trial
from autoprune.report.host import HostLatency, measure_trials, read_host_latencies, record_host_latency
from autoprune.report.record import (
    DEFAULT_CLASS_DROP_THRESHOLD,
    Candidate,
    ClassAccuracy,
    CostModelInfo,
    CurvePoint,
    DenseRecord,
    HypervolumeCurve,
    ReportRecord,
    TrialPoint,
    build_report,
    per_class_drops,
)
from autoprune.report.render_html import PLOT_IDS, figures, render_html, write_html
from autoprune.report.render_md import render_md, write_md
from autoprune.report.select import Selection, knee_index, parse_accuracy, select_trial
from autoprune.report.study import default_storage, load_study, resolve_storage

__all__ = [
    "DEFAULT_CLASS_DROP_THRESHOLD", "PLOT_IDS", "Candidate", "ClassAccuracy", "CostModelInfo", "CurvePoint",
    "DenseRecord", "ExportResult", "ExportSettings", "HostLatency", "HypervolumeCurve", "ModelCard", "ReportRecord",
    "Selection", "TrialPoint", "build_report", "card_markdown", "default_storage", "distillation_loss",
    "export_trial", "figures", "knee_index", "load_study", "measure_trials", "parse_accuracy", "per_class_drops",
    "read_host_latencies", "record_host_latency", "render_html", "render_md", "resolve_storage", "select_trial",
    "write_card", "write_html", "write_md",
]
