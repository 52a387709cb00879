"""A local Cradle API: generated recordings and call history, the API's rate rules, injectable
faults, and end-of-call webhooks.

    with Simulator(SimulatorOptions(seed=1, per_hour=20)) as sim:
        ...  # point cradle.base_url at sim.base_url; read sim.stats()

Standard library only (plus structlog), so it runs anywhere the archiver does. Modules:
`kinds` and `options` (settings, each declared once), `data` and `body` (the generated
account), `conversations` (its call history), `listing` (list bodies), `faults` (fault
decisions), `stats` (counters and the rate gate), `state` (what handlers share), `transport`,
`server`, `admin` and `canary` (the HTTP side), `webhooks` (the end-of-call POSTs), `simulator`
(the object that ties them), `arguments` (CLI flags).
"""

from archiver.simulator.arguments import add_arguments, options_from_args
from archiver.simulator.conversations import SimConversation
from archiver.simulator.data import BadEntry, SimRecording
from archiver.simulator.options import OptionError, SimulatorOptions
from archiver.simulator.simulator import Simulator

__all__ = [
    "BadEntry",
    "OptionError",
    "SimConversation",
    "SimRecording",
    "Simulator",
    "SimulatorOptions",
    "add_arguments",
    "options_from_args",
]
