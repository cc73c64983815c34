"""The docs in the code: the config's docstring lists every field it adds (as TRL's configs do)."""

import inspect
import re
from dataclasses import fields

import actprm
from actprm.training_options import ActivePRMOptions


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
