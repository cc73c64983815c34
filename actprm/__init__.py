"""actprm: train Process Reward Models with active learning on the Hugging Face stack."""

__version__ = "0.1.0"

from .data import (
    StepDataError,
    from_trl_stepwise,
    load_steps,
    make_arithmetic_dataset,
    to_trl_stepwise,
)
from .default_backbone import default_backbone
from .evaluation import evaluate_prmbench, evaluate_processbench
from .filtering import TrajectoryPool, filter_pool
from .metrics import load_metric
from .judges import (
    AnnotationStore,
    ArithmeticJudge,
    JudgeUnavailableError,
    OpenAIJudge,
    OracleJudge,
    TransformersJudge,
)
from .modeling import EnsemblePRMConfig, EnsemblePRMModel
from .scoring import StepScorer
from .trainer import ActivePRMTrainer
from .training_args import ActivePRMConfig

__all__ = [
    "ActivePRMConfig",
    "ActivePRMTrainer",
    "AnnotationStore",
    "ArithmeticJudge",
    "EnsemblePRMConfig",
    "EnsemblePRMModel",
    "JudgeUnavailableError",
    "OpenAIJudge",
    "OracleJudge",
    "StepDataError",
    "StepScorer",
    "TrajectoryPool",
    "TransformersJudge",
    "default_backbone",
    "evaluate_prmbench",
    "evaluate_processbench",
    "filter_pool",
    "from_trl_stepwise",
    "load_metric",
    "load_steps",
    "make_arithmetic_dataset",
    "to_trl_stepwise",
]
