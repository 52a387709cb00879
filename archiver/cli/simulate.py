"""`simulate`: serves the local Cradle API simulator until Ctrl-C. Its options are defined beside
the simulator (archiver/simulator), so that one package owns what a simulated API can be told."""

from __future__ import annotations

import argparse

from archiver.errors import EXIT_OK, UsageError


def simulate_arguments(simulate: argparse.ArgumentParser) -> None:
    from archiver.simulator import add_arguments

    add_arguments(simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    from archiver.simulator import OptionError, Simulator, options_from_args

    try:
        options = options_from_args(args)
    except (argparse.ArgumentTypeError, OptionError) as exc:
        raise UsageError(f"simulate {exc}") from exc
    simulator = Simulator(options).start()
    print(
        f"simulator serving {simulator.base_url} (canary {simulator.canary_url}); Ctrl-C stops it",
        flush=True,
    )
    simulator.serve_forever()
    return EXIT_OK
