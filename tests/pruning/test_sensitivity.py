"""Sensitivity analysis on a tiny real run: a ResNet-18 trained two epochs on scikit-learn's digits (8x8 images,
so 16x16 inputs lose nothing and cost a quarter of 32x32)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from autoprune.baseline import BaselineSpec, get_baseline
from autoprune.cli import main
from autoprune.data import load_data
from autoprune.errors import UserError
from autoprune.pruning import generate_space
from autoprune.pruning.sensitivity import (
    SensitivityTable,
    analyze_sensitivity,
    parse_ratios,
    sensitivity_html,
    sensitivity_space,
)
from autoprune.training import TrainRecipe

SHAPE = (1, 3, 16, 16)
EPOCHS = 2
DEAD = "layer4.1.conv1"  # made insensitive below: 3/4 of its channels contribute exactly nothing
STEM = "conv1"  # the stem + layer1 residual channels: every block reads them
RATIOS = (0.75, 0.5, 0.25)


@pytest.fixture(scope="module")
def data():
    return load_data("digits", SHAPE[2:], 0)


@pytest.fixture(scope="module")
def baseline(data):
    spec = BaselineSpec("resnet18", "digits", SHAPE, data.num_classes, 0, TrainRecipe(epochs=EPOCHS))
    return get_baseline(spec, data)  # the CLI test below finds this in the (session) cache


@pytest.fixture(scope="module")
def table(baseline, data):
    model = baseline.model
    block = model.layer4[1]
    dead = torch.arange(block.conv1.out_channels // 4, block.conv1.out_channels)
    with torch.no_grad():  # dead channels: zero filter, zero BN affine, zero reader -> exactly no contribution
        block.conv1.weight[dead] = 0
        block.bn1.weight[dead] = 0
        block.bn1.bias[dead] = 0
        block.conv2.weight[:, dead] = 0
    return analyze_sensitivity(
        model, "resnet18", SHAPE, data.loader("val", 256, 0, shuffle=False), data.loader("train", 32, 0),
        data.num_classes, RATIOS, "l1", [DEAD, STEM], bn_batches=4, data_name="digits",
    )


def test_table_covers_every_group_and_ratio_with_finite_drops(table):
    assert table.groups == (STEM, DEAD)  # model order
    assert {(p.group, p.keep_ratio) for p in table.points} == {(g, r) for g in (STEM, DEAD) for r in RATIOS}
    for p in table.points:
        assert math.isfinite(p.drop) and math.isfinite(p.drop_recalibrated)
        assert p.drop == pytest.approx(table.dense_accuracy - p.accuracy)
        assert p.drop_recalibrated == pytest.approx(table.dense_accuracy_recalibrated - p.accuracy_recalibrated)
    assert table.point(STEM, 0.25).kept == 16 and table.point(DEAD, 0.5).kept == 256
    assert table.dense_accuracy > 0.5  # a trained model: drops are meaningful


def test_dead_group_is_insensitive_and_stem_is_not(table):
    for ratio in RATIOS:  # l1 ranks the dead channels last, so they go first: nothing changes
        assert table.point(DEAD, ratio).drop == 0.0
        assert table.point(DEAD, ratio).drop_recalibrated == 0.0
    assert table.point(STEM, 0.25).drop > 0.05
    assert table.min_keep(DEAD, 0.02) == table.min_keep(DEAD, 0.02, recalibrated=False) == 0.25
    assert table.min_keep(STEM, 0.02, recalibrated=False) > 0.25


def test_min_keep_needs_every_larger_ratio_within_tolerance(table):
    drops = {r: table.point(STEM, r).drop for r in RATIOS}
    expected = 1.0
    for r in sorted(RATIOS, reverse=True):
        if drops[r] > 0.02:
            break
        expected = r
    assert table.min_keep(STEM, 0.02, recalibrated=False) == expected
    assert table.min_keep(STEM, 1.0, recalibrated=False) == 0.25  # any drop tolerated: the whole grid


def test_sensitivity_space_bounds_the_search_space(table, baseline, tmp_path):
    space = generate_space(baseline.model, "resnet18", SHAPE)
    bounded = sensitivity_space(table, space, 0.02, recalibrated=False)
    by_name = {g.name: g for g in bounded.groups}
    assert by_name[STEM].min_keep == table.min_keep(STEM, 0.02, recalibrated=False) > by_name[DEAD].min_keep
    assert by_name["layer2.0.conv1"] == {g.name: g for g in space.groups}["layer2.0.conv1"]  # not analysed
    path = tmp_path / "space.yaml"
    path.write_text(bounded.to_yaml())
    reread = space.with_overrides(path)  # what `search --space FILE` does
    assert {g.name: g.min_keep for g in reread.groups} == {g.name: g.min_keep for g in bounded.groups}
    with pytest.raises(UserError, match="max-drop"):
        sensitivity_space(table, space, 1.5)


def test_table_round_trips_and_plots_offline(table):
    again = SensitivityTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert again == table
    html = sensitivity_html(table)
    assert "<script src=\"http" not in html and "Plotly" in html and STEM in html


def test_parse_ratios():
    assert parse_ratios("0.5, 0.9,0.5") == (0.9, 0.5)
    for bad in ("", "0.5,1.0", "x", "0"):
        with pytest.raises(UserError, match="--ratios"):
            parse_ratios(bad)


def test_sensitivity_command_writes_table_plot_and_space(baseline, tmp_path, capsys):
    out, space = tmp_path / "sens", tmp_path / "space.yaml"
    code = main([
        "sensitivity", "--model", "resnet18", "--data", "digits", "--baseline-epochs", str(EPOCHS),
        "--input-shape", "1x3x16x16", "--ratios", "0.5,0.25", "--groups", "layer4.1.conv1,conv1", "--bn-batches", "2", "--out", str(out),
        "--space-out", str(space), "--max-drop", "0.5", "--json",
    ])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads((out / "sensitivity.json").read_text()) == printed
    assert printed["dense_accuracy"] == pytest.approx(baseline.accuracy)  # the cached baseline, not a new one
    assert len(printed["points"]) == 4 and (out / "sensitivity.html").stat().st_size > 100_000
    table = SensitivityTable.from_dict(printed)
    written = yaml.safe_load(space.read_text())
    assert "alignment" not in written  # the target profile's alignment must win in `search --space`
    groups = {g["name"]: g for g in written["groups"]}
    assert groups[STEM]["min_keep"] == table.min_keep(STEM, 0.5)
    assert groups["layer1.0.conv1"]["min_keep"] == 0.25  # the generated default, not analysed


@pytest.mark.parametrize("argv, needle", [
    (["--groups", "layer9.conv1"], "unknown group 'layer9.conv1'"),
    (["--ratios", "0.5,2"], "--ratios"),
    (["--max-drop", "-0.1"], "--max-drop"),
    (["--importance", "l3"], "unknown importance"),
])
def test_sensitivity_command_bad_input_exits_2(argv, needle, tmp_path, capsys):
    code = main(["sensitivity", "--model", "resnet18", "--data", "digits", "--baseline-epochs", str(EPOCHS),
                 "--input-shape", "1x3x16x16", "--out", str(tmp_path), *argv])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert needle in err[-1]
