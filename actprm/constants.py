"""Constants of actprm's step format that torch-free modules (configs, metrics, the CLI's help) need too.

`actprm.tokenization` re-exports them with the code that uses them.
"""

DEFAULT_SEPARATOR = "<extra_0>"
"""Step separator shared with Qwen2.5-Math-PRM and the ActPRM release."""

IGNORE_INDEX = -100
"""Label of a position (or step) that carries no label: every loss and metric skips it."""
