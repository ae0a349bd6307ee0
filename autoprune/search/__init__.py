"""The search engine: strategies propose plans, the evaluator scores them, the runner records them in Optuna
through the study store."""

from autoprune.search.evaluator import CandidateResult, Evaluator, EvaluatorSettings
from autoprune.search.pareto import dominates, hypervolume, pareto_front
from autoprune.search.records import TrialRecord, completed_records, pareto_records
from autoprune.search.runner import SearchConfig, SearchResult, run_search
from autoprune.search.store import (
    DenseBaseline, Measurement, StudyIdentity, StudyRecord, StudyStore, TrialOutcome, decode_trials,
    declare_strategy_attrs, read_study_record,
)
from autoprune.search.strategies import STRATEGIES, Strategy, create_strategy, register_strategy

__all__ = [
    "STRATEGIES", "CandidateResult", "DenseBaseline", "Evaluator", "EvaluatorSettings", "Measurement", "SearchConfig",
    "SearchResult", "Strategy", "StudyIdentity", "StudyRecord", "StudyStore", "TrialOutcome", "TrialRecord",
    "completed_records", "create_strategy", "declare_strategy_attrs", "decode_trials", "dominates", "hypervolume",
    "pareto_front", "pareto_records", "read_study_record", "register_strategy", "run_search",
]
