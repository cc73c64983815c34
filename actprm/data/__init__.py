"""Step data: the canonical schema, loaders for every common format, and the synthetic generator."""

from .formats import PROCESSBENCH_SUBSETS, from_trl_stepwise, to_trl_stepwise
from .loaders import FORMATS, SAMPLES_DIR, infer_format, load_steps
from .records import SkippedRecordsWarning
from .schema import FEATURES, StepDataError, first_error_from_step_labels, step_labels_from_label, validate_record
from .synthetic import make_arithmetic_dataset

__all__ = [
    "FEATURES",
    "FORMATS",
    "PROCESSBENCH_SUBSETS",
    "SAMPLES_DIR",
    "SkippedRecordsWarning",
    "StepDataError",
    "first_error_from_step_labels",
    "from_trl_stepwise",
    "infer_format",
    "load_steps",
    "make_arithmetic_dataset",
    "step_labels_from_label",
    "to_trl_stepwise",
    "validate_record",
]
