"""Hardware profiles, latency measurement, and the latency cost model.

``profile`` answers "what is the target and what do its layers cost", ``cost_model`` "how fast is this plan
there", ``measure`` "how fast is this model here", ``profiling`` "fill, calibrate and validate a profile".
"""

from autoprune.hardware.cost_model import CostModel, LatencyEstimate
from autoprune.hardware.latency_models import LATENCY_MODELS, LatencyModel, latency_model_for, staircase
from autoprune.hardware.local import prepare_cost_model
from autoprune.hardware.measure import LatencyMeasurement, measure_model_latency
from autoprune.hardware.profile import (
    ALIASES,
    HardwareProfile,
    TargetInfo,
    available_targets,
    load_profile,
    save_profile,
    unmeasured_warning,
    warn_once_text,
)
from autoprune.hardware.schema import ProfileSchemaError
from autoprune.hardware.signature import LayerSignature, model_key

__all__ = [
    "ALIASES",
    "LATENCY_MODELS",
    "LatencyModel",
    "latency_model_for",
    "CostModel",
    "HardwareProfile",
    "LatencyEstimate",
    "LatencyMeasurement",
    "LayerSignature",
    "ProfileSchemaError",
    "TargetInfo",
    "available_targets",
    "load_profile",
    "measure_model_latency",
    "model_key",
    "prepare_cost_model",
    "save_profile",
    "staircase",
    "unmeasured_warning",
    "warn_once_text",
]
