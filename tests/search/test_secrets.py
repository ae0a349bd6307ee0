"""The storage password is never written or printed: a real search on a real PostgreSQL server with password
authentication, then report (HTML, JSON, Markdown), select and export of it, a resume with the password from
the environment and a refused wrong password; every file under the run's folder, every study and trial
attribute, and everything printed is searched for the password."""

from __future__ import annotations

import json

import optuna
import pytest

from autoprune.cli import main

pytestmark = pytest.mark.slow
SEARCH = ["search", "--model", "resnet18", "--target", "jetson", "--data", "digits", "--input-shape", "1x3x16x16",
          "--baseline-epochs", "1", "--finetune-steps", "0", "--trials", "2", "--strategy", "random",
          "--study", "sec ret"]


def test_the_password_never_reaches_a_file_or_the_terminal(postgres, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    url, printed = postgres.url, []
    PASSWORD = postgres.password  # noqa: N806

    def cli(*args: str) -> int:
        code = main(list(args))
        out, err = capfd.readouterr()
        printed.append(out + err)
        return code

    assert cli(*SEARCH, "--storage", url, "--out", "run") == 0, printed[-1]
    assert "postgres:***@127.0.0.1" in printed[-1]
    for fmt in ("html", "json", "md"):
        assert cli("report", "--study", "sec ret", "--storage", url, "--format", fmt, "--out", f"run/report.{fmt}") == 0
    assert cli("select", "--study", "sec ret", "--storage", url, "--knee") == 0, printed[-1]
    trial = json.loads((tmp_path / "run" / "results.json").read_text())["pareto"][0]["number"]
    assert cli("export", "--study", "sec ret", "--storage", url, "--trial", str(trial), "--out", "run/export",
               "--finetune-epochs", "0", "--no-measure") == 0, printed[-1]
    monkeypatch.setenv("AUTOPRUNE_STORAGE_PASSWORD", PASSWORD)  # the password from the environment instead
    assert cli(*SEARCH, "--storage", url.replace(f":{PASSWORD}@", "@"), "--out", "run") == 0, printed[-1]
    monkeypatch.delenv("AUTOPRUNE_STORAGE_PASSWORD")
    wrong = url.replace(PASSWORD, "Wrong-" + PASSWORD[:8])
    assert cli(*SEARCH, "--storage", wrong, "--out", "run2") == 2
    assert printed[-1].count("error:") == 1 and "Wrong-" not in printed[-1]

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"config.json", "results.json", "report.html", "report.json", "report.md", "model_card.json",
            "model_card.md"} <= {p.name for p in written}
    for path in written:
        assert PASSWORD.encode() not in path.read_bytes(), path
    assert not any(PASSWORD in text for text in printed)
    study = optuna.load_study(study_name="sec ret", storage=url)
    assert PASSWORD not in json.dumps([study.user_attrs, [(t.user_attrs, t.system_attrs) for t in study.trials]],
                                      default=str)
