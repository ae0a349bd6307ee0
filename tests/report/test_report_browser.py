"""The HTML report in a real browser: every plot renders, no JavaScript error, nothing fetched from the network."""

from __future__ import annotations

import re
import os
import shutil
import tempfile

import pytest

from autoprune.cli import main
from autoprune.report import PLOT_IDS, build_report

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
# Installed before any test runs, so these errors go to window.__errors even when they happen during load.
ERROR_TRAP = """
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e)));
window.addEventListener('unhandledrejection', e => window.__errors.push(String(e.reason)));
"""


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        message = "headless Chromium not installed: apt-get install -y chromium chromium-driver"
        if os.environ.get("CI"):  # .ci/run installs it; in CI a missing browser is a failure, not a skip
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="autoprune-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": ERROR_TRAP})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_report_page_renders_offline_without_errors(study_run, browser, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", "--study", study_run.name, "--storage", study_run.storage, "--out", str(out)]) == 0
    page = out.read_text()
    # Self-contained: no script or stylesheet is loaded from anywhere.
    assert not re.search(r"<script[^>]+src=", page) and not re.search(r"<link[^>]+href=", page)
    record = build_report(study_run.study(), study_run.storage)

    browser.get(out.as_uri())
    assert browser.execute_script("return window.__errors") == []
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0

    plots = browser.execute_script(
        "return Array.from(document.querySelectorAll('.js-plotly-plot')).map(e => "
        "[e.id, e.querySelectorAll('svg.main-svg').length, (e._fullData || []).length])")
    assert [p[0] for p in plots] == list(PLOT_IDS)
    assert all(svgs > 0 for _, svgs, _ in plots)

    # Pareto plot: one trace per strategy, the uniform curve, the front, the dense model; every marker drawn.
    traces = 1 + len(record.strategies) + 1 + 1
    assert dict((p[0], p[2]) for p in plots)["pareto-plot"] == traces
    markers = browser.execute_script("return document.querySelectorAll('#pareto-plot .scatterlayer .point').length")
    assert markers == len(record.trials) + len(record.pareto) + 1
    title = browser.execute_script("return document.querySelector('#pareto-plot .xtitle').textContent")
    assert record.latency_provenance in title and record.target in title

    # Hovering a front point shows its trial details.
    front_trace = len(record.strategies) + 1
    browser.execute_script(
        f"Plotly.Fx.hover('pareto-plot', [{{curveNumber: {front_trace}, pointNumber: 0}}]);")
    hover = browser.execute_script(
        "return Array.from(document.querySelectorAll('#pareto-plot .hoverlayer .hovertext')).map(e => e.textContent)")
    assert any(f"trial {record.pareto[0].trial}" in text for text in hover), hover

    # Heatmaps: one row per Pareto-optimal candidate, one column per group / class.
    shapes = browser.execute_script(
        "return ['keep-ratio-heatmap', 'per-class-plot'].map(id => {"
        "const z = document.getElementById(id)._fullData[0].z; return [z.length, z[0].length]; })")
    assert shapes == [[len(record.pareto), len(record.group_names)], [len(record.pareto), len(record.class_names)]]
    assert browser.execute_script("return window.__errors") == []
