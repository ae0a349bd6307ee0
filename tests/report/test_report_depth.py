"""A real `search --depth` run (the report fixture's tiny ResNet-18 set-up and cached baseline): its trials drop
blocks, and the report marks the groups of the dropped blocks in the heatmap and lists the blocks."""

from __future__ import annotations

import optuna
import pytest

from autoprune.plan import PruningPlan
from autoprune.report import build_report, render_md
from autoprune.report.render_html import keep_ratio_figure
from autoprune.report.study import load_study
from autoprune.search import SearchConfig, run_search

# the report fixture's set-up (tests/report/conftest.py), so its cached baseline is reused in the same session
BASE = dict(model="resnet18", target="jetson", data="digits", input_shape=(1, 3, 16, 16), finetune_steps=3,
            baseline_epochs=2, seed=1)


@pytest.mark.timeout(600)
def test_depth_search_drops_blocks_and_the_report_shows_them(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # no fine-tuning (the BN-recalibrated proxy is scored): the test is about the plans and the report, not accuracy
    config = SearchConfig(**{**BASE, "finetune_steps": 0}, study="depth-report", strategy="random", trials=4,
                          depth=True, out_dir=str(tmp_path))
    result = run_search(config)
    study = load_study("depth-report", result.storage)[0]
    plans = [PruningPlan.from_dict(t.user_attrs["plan"]) for t in study.trials if "plan" in t.user_attrs]
    assert len(plans) == 4 and any(p.drop_blocks for p in plans)

    record = build_report(study)
    deep = [c for c in record.pareto if c.dropped_blocks]
    assert deep, "the fastest candidates of a depth search drop blocks"
    candidate = deep[0]
    for group, ratio, kept in zip(record.group_names, candidate.keep_ratios, candidate.kept_channels):
        dropped = any(group.startswith(b + ".") for b in candidate.dropped_blocks)
        assert (ratio == 0.0 and kept == 0) == dropped
    heat = keep_ratio_figure(record).data[0]
    row = [c.trial for c in record.pareto].index(candidate.trial)
    assert heat.text[row].count("dropped") == sum(r == 0.0 for r in candidate.keep_ratios) >= 1
    md = render_md(record)
    assert f"| {candidate.trial} | {', '.join(candidate.dropped_blocks)} |" in md
