"""The ``actprm`` command line: ``actprm <command> [--config file.yaml] [--flags]``.

Each command lives in ``actprm.cli.<command>`` and exposes ``HELP`` (one line) and
``main(argv) -> int``; commands parse their flags and YAML configs with `trl.TrlParser`.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = ("quickstart", "train", "label", "filter", "score", "eval", "push", "space")


def _user_errors() -> tuple[type[Exception], ...]:
    """Bad input: reported as one line and exit code 2 (StepDataError is a ValueError). Imported only on an error,
    so that ``--help`` does not load the judges."""
    from ..judges import JudgeUnavailableError

    return ValueError, FileNotFoundError, JudgeUnavailableError


def _usage() -> str:
    lines = ["usage: actprm <command> [options]   (actprm <command> --help for its options)", "", "commands:"]
    for name in COMMANDS:
        try:
            summary = importlib.import_module(f"actprm.cli.{name}").HELP
        except ModuleNotFoundError:
            continue
        lines.append(f"  {name:<11} {summary}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one ``actprm`` command; returns its exit code (0 success, 2 bad input, 1 failure)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"actprm: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    command = importlib.import_module(f"actprm.cli.{name}")
    try:
        return int(command.main(rest) or 0)
    except Exception as error:
        if not isinstance(error, _user_errors()):
            raise
        print(f"actprm {name}: error: {error}", file=sys.stderr)
        return 2
    finally:
        if "torch" in sys.modules:  # without torch there is no process group to end
            from ..distributed import end_process_group

            end_process_group()  # under accelerate launch or torchrun
