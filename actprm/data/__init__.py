"""Step data: the canonical schema, loaders for every common format, and the synthetic generator."""

from .schema import FEATURES, StepDataError, first_error_from_step_labels, step_labels_from_label, validate_record
from .synthetic import make_arithmetic_dataset
