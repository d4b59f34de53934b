"""The `glocal` command: one entry point whose subcommands live next to the code they drive.

Each subcommand is imported only when it is used, so `glocal --help` stays instant and a broken
optional dependency of one subcommand cannot break the others. Every entry point (this one and the
`python -m glocal_lib...` ones) runs through :func:`run_entry_point`: a bad input ends in one short
message and a non-zero exit code; the traceback is shown only with `--debug` or `GLOCAL_DEBUG=1`.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence

from glocal_lib.errors import GlocalError

DEBUG_FLAG = "--debug"
DEBUG_ENV = "GLOCAL_DEBUG"

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
    lines += ["", "Run `glocal <command> --help` for the options of a command.",
              f"Add {DEBUG_FLAG} (or set {DEBUG_ENV}=1) to see the traceback of an error."]
    return "\n".join(lines)


def debug_requested(args: list[str]) -> bool:
    """Remove ``--debug`` from ``args`` (anywhere, in place); True if it or GLOCAL_DEBUG=1 asks for tracebacks."""
    flag = DEBUG_FLAG in args
    while DEBUG_FLAG in args:
        args.remove(DEBUG_FLAG)
    return flag or os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def run_entry_point(prog: str, func: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``func(argv)`` as a command named ``prog``: the one place user-facing errors become messages.

    GlocalError (a bad input, explained by its message) -> ``prog: error: ...``, exit 1; Ctrl-C -> exit
    130; any other exception -> its type and message with a hint to rerun with --debug, exit 1. With
    --debug / GLOCAL_DEBUG=1 the exception propagates with its traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args)
    try:
        return int(func(args) or 0)
    except SystemExit:  # argparse usage errors and --help: already explained
        raise
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except GlocalError as err:
        if debug:
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # the environment, not a bug: name the path
        if debug:
            raise
        where = f" at {err.filename}" if err.filename else ""
        print(f"{prog}: error: {err.strerror or err}{where} ({type(err).__name__}); check the path, its "
              f"permissions and the free space (rerun with {DEBUG_FLAG} for the traceback)", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - the safety net: never a raw traceback for the user
        if debug:
            raise
        print(f"{prog}: error: {type(err).__name__}: {err}\n(unexpected error: rerun with {DEBUG_FLAG} or "
              f"{DEBUG_ENV}=1 for the traceback, and please report it)", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args  # `glocal --debug train ...` and `glocal train ... --debug` both work
    args = [a for a in args if a != DEBUG_FLAG]
    if not args or args[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"glocal: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func, _ = SUBCOMMANDS[name]

    def run(argv_: list[str]) -> int | None:
        return getattr(importlib.import_module(module), func)(argv_)

    return run_entry_point(f"glocal {name}", run, rest + ([DEBUG_FLAG] if debug else []))


if __name__ == "__main__":
    sys.exit(main())
