"""actprm: train Process Reward Models with active learning on the Hugging Face stack.

The public names below load their modules on first use, so that ``import actprm`` (and the ``actprm``
command's ``--help``) does not pay for torch and transformers. ``import actprm.modeling`` registers the
``actprm_ensemble`` model type with `transformers`' ``AutoConfig`` and ``AutoModel``.
"""

from __future__ import annotations

import importlib
import importlib.util

from .default_backbone import default_backbone

__version__ = "0.1.0"

_MODULES = {
    ".data": ("StepDataError", "from_trl_stepwise", "load_steps", "make_arithmetic_dataset", "to_trl_stepwise"),
    ".evaluation": ("evaluate_prmbench", "evaluate_processbench"),
    ".features": ("StepFeatureCache", "compute_step_features"),
    ".gguf_loading": ("load_gguf_backbone",),
    ".judge_evaluation": ("evaluate_judge_processbench",),
    ".filtering": ("TrajectoryPool", "filter_pool"),
    ".metrics": ("load_metric",),
    ".judges": (
        "AnnotationStore", "ArithmeticJudge", "JudgeUnavailableError", "OpenAIJudge", "OracleJudge", "TransformersJudge",
    ),  # fmt: skip
    ".modeling": ("EnsemblePRMConfig", "EnsemblePRMModel"),
    ".scoring": ("StepScorer", "StepTagFormat"),
    ".selection": ("SelectionSettings",),
    ".trainer": ("ActivePRMTrainer",),
    ".training_args": ("ActivePRMConfig",),
}
_MODULE_OF = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted([*_MODULE_OF, "default_backbone"])


def __getattr__(name: str):
    """Import the module of a public name (or a submodule) the first time it is asked for."""
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(_MODULE_OF[name], __name__), name)
    elif importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
