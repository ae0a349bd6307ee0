"""Pruning on Torch-Pruning's dependency graph, plus unstructured and N:M sparsity.

``space`` answers "which channel groups are coupled and what does each layer depend on", ``importance``
"which channels go", ``structured`` / ``unstructured`` "how to cut a model by a plan", ``schedules`` "how
much and when" (``lottery`` and ``regularization`` are two of its schedules), ``sensitivity`` "how much each
group can lose", ``metrics`` "how big is the result".
"""

from autoprune.pruning.engine import PruneResult, prune
from autoprune.pruning.lottery import lottery
from autoprune.pruning.regularization import REGULARIZERS, regularize
from autoprune.pruning.schedules import SCHEDULES, run_schedule
from autoprune.pruning.sensitivity import SensitivityPoint, SensitivityTable, analyze_sensitivity, sensitivity_space
from autoprune.pruning.importance import GRADIENT_CRITERIA, IMPORTANCE_CRITERIA
from autoprune.pruning.metrics import DiskSize, ModelStats, disk_size, model_stats, pruned_metrics
from autoprune.pruning.space import GroupSpec, LayerSpec, SearchSpace, generate_space
from autoprune.pruning.structured import apply_plan
from autoprune.pruning.unstructured import LayerSparsity, Masks, SparsityReport, apply_sparsity, nm_holds

__all__ = [
    "GRADIENT_CRITERIA", "IMPORTANCE_CRITERIA", "REGULARIZERS", "SCHEDULES", "DiskSize", "GroupSpec",
    "LayerSparsity", "LayerSpec", "Masks", "ModelStats", "PruneResult", "SearchSpace", "SensitivityPoint",
    "SensitivityTable", "SparsityReport", "analyze_sensitivity", "apply_plan", "apply_sparsity", "disk_size",
    "generate_space", "lottery", "model_stats", "nm_holds", "prune", "pruned_metrics", "regularize",
    "run_schedule", "sensitivity_space",
]
