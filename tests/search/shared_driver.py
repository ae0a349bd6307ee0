"""One search driver on the synthetic problem (a fake-but-real workload: ``sleep`` seconds per trial), run as
a separate process by the tests that put several drivers on one study:
``python shared_driver.py URL STUDY TRIALS SLEEP_S HEARTBEAT_S``."""

import sys

from autoprune.search.backends import LocalExecutor
from autoprune.search.driver import IsolatedEvaluator, optimize
from autoprune.search.store import StudyStore
from autoprune.search.strategies import Constraints, create_strategy
from autoprune.search.synthetic import SyntheticEvaluator, SyntheticProblem

PROBLEM = SyntheticProblem(groups=4, seed=0)


def main(url: str, study: str, trials: int, sleep: float, heartbeat: int) -> None:
    store = StudyStore.open(url, study, ["maximize", "minimize"], ["accuracy", "latency_ms"], heartbeat, 1,
                            lambda text: print(f"warning: {text}", file=sys.stderr, flush=True))
    strategy = create_strategy("random", PROBLEM.space, "l1", 0, trials, Constraints(), PROBLEM)
    store.study.sampler = strategy.sampler()
    evaluator = IsolatedEvaluator(SyntheticEvaluator(PROBLEM, sleep=sleep))
    try:
        optimize(store, strategy, LocalExecutor(evaluator), trials, multi_fidelity=False)
    finally:
        store.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
