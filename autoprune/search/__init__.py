"""The search engine: strategies propose plans, the evaluator scores them, the runner records them in Optuna."""

from autoprune.search.evaluator import CandidateResult, Evaluator, EvaluatorSettings
from autoprune.search.pareto import dominates, hypervolume, pareto_front
from autoprune.search.records import TrialRecord, completed_records, pareto_records, study_info
from autoprune.search.runner import SearchConfig, SearchResult, run_search
from autoprune.search.strategies import STRATEGIES, Strategy, create_strategy, register_strategy

__all__ = [
    "STRATEGIES", "CandidateResult", "Evaluator", "EvaluatorSettings", "SearchConfig", "SearchResult", "Strategy",
    "TrialRecord", "completed_records", "create_strategy", "dominates", "hypervolume", "pareto_front",
    "pareto_records", "register_strategy", "run_search", "study_info",
]
