"""The `glocal` command: one entry point whose subcommands live next to the code they drive.

Each subcommand is imported only when it is used, so `glocal --help` stays instant and a broken
optional dependency of one subcommand cannot break the others.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from glocal_lib.errors import GlocalError

# subcommand -> (module, function taking argv, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "data": ("glocal_lib.data.cli", "data_cli", "index or check a dataset in its native layout"),
    "train": ("glocal_lib.engine.cli", "train_cli", "train prompts (a resumable run)"),
    "eval": ("glocal_lib.engine.cli", "eval_cli", "evaluate a trained or zero-shot model on datasets"),
    "verify": ("glocal_lib.experiments.verify", "verify_cli",
               "check your setup: the released AnomalyCLIP checkpoints vs its logs"),
    "reproduce": (
        "glocal_lib.experiments.reproduce",
        "reproduce_cli",
        "run the notebooks with papermill and regenerate every table and figure",
    ),
}


def _usage() -> str:
    lines = ["usage: glocal <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, _, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run `glocal <command> --help` for the options of a command."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"glocal: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func, _ = SUBCOMMANDS[name]
    try:
        result = getattr(importlib.import_module(module), func)(rest)
    except GlocalError as err:  # user-facing problems: a clear message, no traceback
        print(f"glocal {name}: error: {err}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
