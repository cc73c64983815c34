"""The docs in the code: the config's docstring lists every field it adds (as TRL's configs do), and every public
function and class shows a call in an ``Example:`` block (as huggingface_hub's do)."""

import doctest
import inspect
import re
from dataclasses import fields

import pytest

import actprm
import actprm.metrics
from actprm.training_options import ActivePRMOptions

PUBLIC = [(name, getattr(actprm, name)) for name in actprm.__all__] + [
    (f"metrics.{name}", getattr(actprm.metrics, name))
    for name in actprm.metrics.__all__
    if inspect.isfunction(getattr(actprm.metrics, name))
]
CALLABLE = [(name, value) for name, value in PUBLIC if not (inspect.isclass(value) and issubclass(value, Exception))]


def test_config_docstring_lists_every_field_it_adds_with_default_and_help():
    doc = inspect.getdoc(actprm.ActivePRMConfig)
    own = [*fields(ActivePRMOptions), actprm.ActivePRMConfig.__dataclass_fields__["remove_unused_columns"]]
    for item in own:
        heading = rf"^    {item.name} \(`[^`]+`, \*optional\*(, defaults to `([^`]*)`)?\):\n"
        entry = re.search(heading + r"((?:        .*\n?)+)", doc, re.M)
        assert entry, f"{item.name} is not listed in ActivePRMConfig's docstring"
        shown = f'"{item.default}"' if isinstance(item.default, str) else str(item.default)
        assert entry[2] == (None if item.default is None else shown)
        assert " ".join(entry[3].split()) == " ".join(item.metadata["help"].split())
    groups = [doc.index(text) for text in ("> Parameters that control the model", "num_ensemble (", "> Parameters that control the data")]
    assert groups == sorted(groups)


def example_of(value) -> str | None:
    """The code of the ``Example:`` block of ``value``'s docstring, between its ```py fences."""
    block = re.search(r"^Example:\n +```py\n(.*?)\n +```", inspect.getdoc(value) or "", re.M | re.S)
    return block and block[1]


@pytest.mark.parametrize(("name", "value"), CALLABLE, ids=[name for name, _ in CALLABLE])
def test_public_name_shows_a_call_in_an_example_block(name, value):
    block = example_of(value)
    assert block, f"{name} has no Example: block"
    code = "".join(example.source for example in doctest.DocTestParser().get_examples(block))
    compile(code, f"<{name} example>", "exec")
    assert f"{name.split('.')[-1]}(" in code or f"{name.split('.')[-1]}." in code, f"{name}'s example does not call it"


RUN_OFFLINE = [
    "ActivePRMConfig", "AnnotationStore", "ArithmeticJudge", "OracleJudge", "SelectionSettings", "load_metric",
    "default_backbone", "EnsemblePRMConfig", "EnsemblePRMModel", "StepFeatureCache", "compute_step_features",
    "make_arithmetic_dataset", "to_trl_stepwise", "metrics.average_over_subsets", "metrics.calibrate_threshold",
    "metrics.first_error_from_scores", "metrics.prmbench_scores", "metrics.processbench_scores",
    "metrics.validity_labels",
]  # fmt: skip
"""The examples that need neither the Hub nor a judge server (models: the embedded default backbone): they run,
and print what their docstring says."""


@pytest.mark.parametrize("name", RUN_OFFLINE)
def test_offline_example_gives_the_output_it_shows(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the examples write their files
    test = doctest.DocTestParser().get_doctest(example_of(dict(PUBLIC)[name]), {}, name, None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=lambda text: pytest.fail(text))
    assert runner.tries >= 2
