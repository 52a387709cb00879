"""Logging: JSON lines off a terminal, and secrets scrubbed by a processor wherever they hide."""

from __future__ import annotations

import io
import json

import structlog

from archiver import logs


def capture(fmt: str | None, secret: str = "s3cr3t-key-value") -> io.StringIO:
    stream = io.StringIO()
    logs.REDACTOR.update([secret])
    logs.configure(fmt, "info", stream=stream)
    return stream


def test_json_lines_when_not_on_a_terminal() -> None:
    stream = capture(None)
    structlog.get_logger().info("recording.archived", recording_id="abc", bytes=10)
    line = json.loads(stream.getvalue())
    assert line["event"] == "recording.archived" and line["bytes"] == 10
    assert line["level"] == "info" and line["timestamp"].endswith("Z")


def test_the_key_is_scrubbed_from_values_nested_values_and_exceptions() -> None:
    stream = capture("json")
    log = structlog.get_logger()
    log.info("a", url="http://x/?k=s3cr3t-key-value", nested={"list": ["s3cr3t-key-value"]})
    log.error("b", error=RuntimeError("header was s3cr3t-key-value"))
    log.info("c", api_key="anything-at-all")
    text = stream.getvalue()
    assert "s3cr3t-key-value" not in text and "anything-at-all" not in text
    assert text.count(logs.REDACTED) == 4


def test_a_traceback_mentioning_the_key_is_scrubbed() -> None:
    stream = capture("json")
    try:
        raise ValueError("bad key s3cr3t-key-value")
    except ValueError:
        structlog.get_logger().exception("boom")
    assert "s3cr3t-key-value" not in stream.getvalue()


def test_levels_filter() -> None:
    stream = io.StringIO()
    logs.configure("json", "warning", stream=stream)
    structlog.get_logger().info("quiet")
    structlog.get_logger().warning("loud")
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["loud"]


def test_console_format_is_readable() -> None:
    stream = capture("console")
    structlog.get_logger().info("window.listed", listed=3)
    assert "window.listed" in stream.getvalue() and "listed=3" in stream.getvalue()


def test_standard_library_records_become_json_lines_too() -> None:
    import logging

    stream = capture("json")
    logging.getLogger("apscheduler.scheduler").warning("Execution of job skipped: maximum reached")
    logging.getLogger("botocore.endpoint").info("noise at info level is dropped")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["event"], e["logger"], e["level"]) for e in lines] == [
        ("Execution of job skipped: maximum reached", "apscheduler.scheduler", "warning")
    ]


def test_standard_library_records_are_scrubbed() -> None:
    import logging

    stream = capture("json")
    logging.getLogger("urllib3").warning("header s3cr3t-key-value sent")
    assert "s3cr3t-key-value" not in stream.getvalue() and logs.REDACTED in stream.getvalue()
