"""Structured pruning on Torch-Pruning's dependency graph.

``space`` answers "which channel groups are coupled and what does each layer depend on", ``structured``
"how to cut a model by a plan", ``metrics`` "how big is the result".
"""

from autoprune.pruning.metrics import ModelStats, model_stats
from autoprune.pruning.space import GroupSpec, LayerSpec, SearchSpace, generate_space
from autoprune.pruning.structured import apply_plan

__all__ = ["GroupSpec", "LayerSpec", "ModelStats", "SearchSpace", "apply_plan", "generate_space", "model_stats"]
