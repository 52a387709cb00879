"""The simulator's flags, option validation and serve_forever's ways out."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from datetime import UTC, datetime, timedelta

import pytest

from archiver.simulator import (
    OptionError,
    Simulator,
    SimulatorOptions,
    add_arguments,
    options_from_args,
)

START = datetime(2024, 1, 1, tzinfo=UTC)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cradle-archiver simulate")
    add_arguments(parser)
    return parser.parse_args(argv)


def test_no_flags_give_the_default_options_on_port_8080() -> None:
    options = options_from_args(parse())

    assert options == SimulatorOptions(listen="127.0.0.1:8080")


def test_every_flag_reaches_its_option() -> None:
    ns = parse(
        *("--listen", "0.0.0.0:9000", "--canary-listen", "127.0.0.1:9001", "--seed", "5"),
        *("--start", "2024-01-01T00:00:00Z", "--end", "2024-01-02T00:00:00Z"),
        *("--per-hour", "2.5", "--bytes-per-second", "8000", "--size", "4096"),
        *("--id", "me", "--api-key", "secret", "--rps", "5", "--bounds", "inclusive"),
        *("--processing-delay", "10", "--late-fraction", "0.1", "--late-delay", "30"),
        *("--boundary-fraction", "0.2", "--latency", "0.01", "--bandwidth", "1000000"),
        *("--list-cap", "50", "--fault-429", "0.1", "--retry-after", "mixed"),
        *("--fault-5xx", "0.2", "--fault-drop-headers", "0.3", "--fault-drop-body", "0.4"),
        *("--fault-truncate", "0.5", "--slow-body", "0.6", "--slow-bytes-per-second", "100"),
        *("--fault-malformed-list", "0.7", "--poison-html", "1", "--poison-offhost", "2"),
        *("--poison-redirect", "3", "--poison-404", "4", "--bad-entries", "5", "--forbid"),
        *("--conversation-updates", "0.2", "--conversation-update-delay", "45"),
        *("--webhook-url", "http://127.0.0.1:9109/webhook/t", "--webhook-delay", "3"),
        *("--webhook-drop", "0.25", "--webhook-repeat", "0.5"),
    )

    options = options_from_args(ns)

    assert options == SimulatorOptions(
        listen="0.0.0.0:9000",
        canary_listen="127.0.0.1:9001",
        seed=5,
        start=START,
        end=START + timedelta(days=1),
        per_hour=2.5,
        bytes_per_second=8000,
        size=4096,
        cradle_id="me",
        api_key="secret",
        rps=5,
        bounds="inclusive",
        processing_delay=10,
        late_fraction=0.1,
        late_delay=30,
        boundary_fraction=0.2,
        latency=0.01,
        bandwidth=1_000_000,
        list_cap=50,
        fault_429=0.1,
        retry_after="mixed",
        fault_5xx=0.2,
        fault_drop_headers=0.3,
        fault_drop_body=0.4,
        fault_truncate=0.5,
        slow_body=0.6,
        slow_bytes_per_second=100,
        fault_malformed_list=0.7,
        poison_html=1,
        poison_offhost=2,
        poison_redirect=3,
        poison_404=4,
        bad_entries=5,
        forbid=True,
        conversation_updates=0.2,
        conversation_update_delay=45,
        webhook_url="http://127.0.0.1:9109/webhook/t",
        webhook_delay=3,
        webhook_drop=0.25,
        webhook_repeat=0.5,
    )


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--fault-429", "1.5"], "--fault-429"),
        (["--listen", "nowhere"], "--listen"),
        (["--start", "2024-01-01T00:00:00"], "--start"),
        (["--bounds", "open"], "--bounds"),
        (["--size", "10"], "--size"),
        (["--per-hour", "many"], "--per-hour"),
        (["--webhook-url", "ftp://example.com/hook"], "--webhook-url"),
        (["--webhook-repeat", "2"], "--webhook-repeat"),
    ],
)
def test_a_bad_flag_value_is_a_usage_error_naming_the_flag(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(*argv)

    assert exited.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


def test_inconsistent_flags_raise_an_error_naming_the_flag() -> None:
    ns = parse("--start", "2024-01-02T00:00:00Z", "--end", "2024-01-01T00:00:00Z")

    with pytest.raises(argparse.ArgumentTypeError) as error:
        options_from_args(ns)

    assert str(error.value).startswith("--start:")


@pytest.mark.parametrize(
    ("field", "value"),
    [("fault_5xx", -0.1), ("rps", 0), ("bounds", "closed"), ("start", datetime(2024, 1, 1))],  # noqa: DTZ001  a naive time is the point
)
def test_options_reject_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(OptionError) as error:
        SimulatorOptions(**{field: value})  # type: ignore[arg-type]

    assert error.value.option == field


def test_serve_forever_returns_when_stopped_from_another_thread() -> None:
    sim = Simulator(SimulatorOptions(start=START, end=START + timedelta(hours=1)))
    threading.Timer(0.1, sim.stop).start()

    sim.serve_forever()

    assert sim.stopping.is_set()


def test_serve_forever_returns_on_sigterm() -> None:
    sim = Simulator(SimulatorOptions(start=START, end=START + timedelta(hours=1)))
    before = signal.getsignal(signal.SIGTERM)
    threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM)).start()

    sim.serve_forever()

    assert sim.stopping.is_set()
    assert signal.getsignal(signal.SIGTERM) == before
