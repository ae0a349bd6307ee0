"""One small real study shared by the report tests: a random search plus a few uniform-ratio trials."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
import pytest

from autoprune.search import SearchConfig, run_search

STUDY = "report-fixture"
# ResNet-18 at 16x16 on the digits spec: after 2 epochs the dense baseline is far better than chance, so per-class
# drops mean something. Seed 1 keeps its cache entry apart from tests/test_baseline.py's, which must train its own.
BASE = dict(model="resnet18", target="jetson", data="digits", input_shape=(1, 3, 16, 16), finetune_steps=3,
            baseline_epochs=2, seed=1, study=STUDY)


@dataclass(frozen=True)
class StudyRun:
    name: str
    storage: str
    out_dir: str

    def study(self) -> optuna.Study:
        from autoprune.report.study import load_study

        return load_study(self.name, self.storage)[0]


@pytest.fixture(scope="session")
def study_run(tmp_path_factory, _isolated_home) -> StudyRun:
    out = tmp_path_factory.mktemp("report-run")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    first = run_search(SearchConfig(**BASE, strategy="random", trials=6, out_dir=str(out)))
    run_search(SearchConfig(**BASE, strategy="uniform", trials=3, out_dir=str(out)))
    return StudyRun(STUDY, first.storage, str(out))
