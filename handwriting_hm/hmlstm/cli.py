"""Command-line plumbing shared by `handwriting-hm` and `hm-lm`: one subcommand per module.

Each subcommand lives in its own module, which defines `add_arguments(parser)` and
`run(args) -> int`. Modules are imported only when their subcommand runs, so that `--help`
stays instant.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings


def first_line(error: BaseException) -> str:
    """An exception as one line for a message: its text's first line, or its type's name if it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def run_cli(prog: str, commands: dict[str, tuple[str, str]], argv: list[str] | None = None) -> int:
    """Parse `argv`, run the chosen subcommand, and turn user errors into one line.

    Errors a user can cause (bad files, bad parameters, wrong checkpoints) are raised as
    `ValueError` or `OSError`; they are printed as `prog: error: ...` with exit code 2. A warning
    (the C kernels rebuilt or unavailable, say) is one line, `prog: warning: ...`.
    """
    parser = argparse.ArgumentParser(prog=prog)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in commands.items():
        # argparse %-formats a subcommand's help but prints its description as it is
        sub = subparsers.add_parser(name, help=help_text.replace("%", "%%"), description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(sub)
            sub.set_defaults(module=module)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    shown = warnings.formatwarning
    warnings.formatwarning = lambda message, *rest, **keywords: f"{prog}: warning: {first_line(message)}\n"
    try:
        return int(args.module.run(args) or 0)
    except (ValueError, OSError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = shown
