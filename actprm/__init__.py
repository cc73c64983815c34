"""actprm: train Process Reward Models with active learning on the Hugging Face stack."""

__version__ = "0.1.0"

from .data import StepDataError, make_arithmetic_dataset
from .default_backbone import default_backbone
