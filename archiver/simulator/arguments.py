"""The `simulate` subcommand's flags, one per declared SimulatorOptions field."""

from __future__ import annotations

import argparse
from dataclasses import fields

from archiver.simulator.kinds import declared
from archiver.simulator.options import OptionError, SimulatorOptions

# Declaration order is the order of `--help`.
_DECLARED = [(f, d) for f in fields(SimulatorOptions) if (d := declared(f))]
_FLAG_OF = {f.name: d.flag or "--" + f.name.replace("_", "-") for f, d in _DECLARED}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every simulator option to `parser` (the `simulate` subcommand)."""
    for f, d in _DECLARED:
        default = f.default if d.flag_default is None else d.flag_default
        # An on/off switch needs no "(default False)"; an unset one says in its help what it means.
        shown = "" if default is None or isinstance(default, bool) else f" (default {default})"
        parser.add_argument(
            _FLAG_OF[f.name], dest=f.name, default=default, help=d.help + shown, **d.kind.flag()
        )


def options_from_args(ns: argparse.Namespace) -> SimulatorOptions:
    """SimulatorOptions from parsed flags; ArgumentTypeError names the flag that is wrong."""
    values = {f.name: getattr(ns, f.name) for f, _ in _DECLARED if hasattr(ns, f.name)}
    try:
        return SimulatorOptions(**values)
    except OptionError as exc:
        raise argparse.ArgumentTypeError(f"{_FLAG_OF[exc.option]}: {exc.message}") from exc
