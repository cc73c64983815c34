"""PRMBench as an `evaluate` metric: a thin wrapper over `actprm.metrics.prmbench`."""

import datasets
import evaluate

from actprm.metrics.evaluate_info import metric_info
from actprm.metrics.prmbench import prmbench_scores

_CITATION = """\
@article{song2025prmbench,
  title={PRMBench: A Fine-grained and Challenging Benchmark for Process-Level Reward Models},
  author={Mingyang Song and Zhaochen Su and Xiaoye Qu and Jiawei Zhou and Yu Cheng},
  journal={arXiv preprint arXiv:2501.03124},
  year={2025}
}
"""

_DESCRIPTION = """\
PRMBench scores a process reward model's per-step validity labels against the steps that hold an
error, counting steps over all samples: F1 of the "valid" class, F1 of the "invalid" class
(negative F1) and PRMScore, their mean (F1 alone where no step is erroneous, as for
multi_solutions). Numbers come overall and per classification; the all-correct control samples
(classification "correct") count only in their own classification. Equal to the official
evaluation of ssmisya/PRMBench, including its -1 for an undefined precision, recall or F1 and its
floor of PRMScore at 0.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `int`): per sample, one validity label per step (1 valid,
        0 invalid). A PRM's label is `score > 0.5` (`actprm.metrics.validity_labels`).
    references (`list` of `list` of `int`): per sample, its 1-based `error_steps`.
    classifications (`list` of `str`): per sample, its classification (`correct` for the
        all-correct controls built from the `redundency` records).
Returns:
    f1 (`float`): F1 of valid steps over all samples except the controls.
    negative_f1 (`float`): F1 of invalid steps over the same steps.
    prm_score (`float`): (f1 + negative_f1) / 2, floored at 0.
    per_classification (`dict`): classification -> {f1, negative_f1, prm_score}.
Examples:
    >>> from actprm.metrics import load_metric
    >>> prmbench = load_metric("prmbench")
    >>> result = prmbench.compute(
    ...     predictions=[[1, 0, 1], [1, 1]], references=[[2], []], classifications=["circular", "correct"]
    ... )
    >>> result["f1"], result["negative_f1"], result["prm_score"]
    (1.0, 1.0, 1.0)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Prmbench(evaluate.Metric):
    """PRMBench step-level F1, negative F1 and PRMScore."""

    def _info(self) -> evaluate.MetricInfo:
        features = {
            "predictions": datasets.List(datasets.Value("int64")),
            "references": datasets.List(datasets.Value("int64")),
            "classifications": datasets.Value("string"),
        }
        return metric_info(
            _DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION, features,
            paper="https://arxiv.org/abs/2501.03124", code="https://github.com/ssmisya/PRMBench",
        )  # fmt: skip

    def _compute(self, predictions, references, classifications) -> dict:
        return prmbench_scores(predictions, references, classifications)
