"""ProcessBench as an `evaluate` metric: a thin wrapper over `actprm.metrics.processbench`."""

import datasets
import evaluate

from actprm.metrics.evaluate_info import metric_info
from actprm.metrics.processbench import processbench_scores

_CITATION = """\
@article{zheng2024processbench,
  title={ProcessBench: Identifying Process Errors in Mathematical Reasoning},
  author={Chujie Zheng and Zhenru Zhang and Beichen Zhang and Runji Lin and Keming Lu and Bowen Yu and
          Dayiheng Liu and Jingren Zhou and Junyang Lin},
  journal={arXiv preprint arXiv:2412.06559},
  year={2024}
}
"""

_DESCRIPTION = """\
ProcessBench scores how well a model finds the earliest erroneous step of a math solution. Each
solution is judged by one index: its first wrong step (0-based), or -1 when every step is correct.
`error_acc` is the accuracy on the solutions with an error, `correct_acc` the accuracy on the
all-correct ones, and `f1` their harmonic mean, as in the official scripts of QwenLM/ProcessBench.
An accuracy over no solutions is NaN, and so is F1 when both accuracies are 0 (as in the official
NumPy code). The benchmark reports the plain mean of the F1 of its four subsets.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted first-error index per solution, -1 for "no error".
    references (`list` of `int`): the benchmark's `label` per solution (-1 when all steps are correct).
Returns:
    error_acc (`float`): accuracy on the solutions with an error, in [0, 1].
    correct_acc (`float`): accuracy on the all-correct solutions, in [0, 1].
    f1 (`float`): harmonic mean of the two accuracies, in [0, 1].
Examples:
    >>> from actprm.metrics import load_metric
    >>> processbench = load_metric("processbench")
    >>> processbench.compute(predictions=[2, -1, -1, 0], references=[2, 1, -1, -1])
    {'error_acc': 0.5, 'correct_acc': 0.5, 'f1': 0.5}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Processbench(evaluate.Metric):
    """ProcessBench first-error accuracies and F1."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(
            _DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION,
            {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")},
            paper="https://arxiv.org/abs/2412.06559", code="https://github.com/QwenLM/ProcessBench",
        )  # fmt: skip

    def _compute(self, predictions, references) -> dict[str, float]:
        return processbench_scores(predictions, references)
