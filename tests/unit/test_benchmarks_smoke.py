"""The benchmark code imports, and its naive peer archives correctly (the numbers need `make bench`)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import boto3

import benchmarks.__main__ as bench_main
from benchmarks import audit_scale, checkpoint_scale, download_only, naive, rss, scenarios
from benchmarks.harness import API_KEY, CRADLE_ID, PREFIX, Period, RequestWatch, start_simulator
from benchmarks.report import Row, Section, render


def test_every_benchmark_module_imports() -> None:
    assert callable(bench_main.main)
    assert callable(scenarios.small_recordings)
    assert callable(checkpoint_scale.measure)
    assert callable(download_only.main)
    assert callable(rss.run_child)
    assert callable(audit_scale.main)


def test_naive_peer_archives_three_tiny_recordings(moto_server: str) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket="bench-smoke")
    period = Period.hours_back(1)
    sim = start_simulator(period, per_hour=3, size=2048)
    try:
        watch = RequestWatch(sim).start()
        count = naive.archive(
            sim.base_url, CRADLE_ID, API_KEY, period.start, period.end, s3, "bench-smoke"
        )
        traffic = watch.stop()
        expected = {
            f"{PREFIX}{r.started_at:%Y/%m/%d}/{r.recording_id}.mp3": sim.body_sha256(r.recording_id)
            for r in sim.recordings()
        }
    finally:
        sim.stop()
    found = {}
    for item in s3.list_objects_v2(Bucket="bench-smoke")["Contents"]:
        got = s3.get_object(Bucket="bench-smoke", Key=item["Key"])
        body = got["Body"].read()
        assert got["Metadata"]["sha256"] == hashlib.sha256(body).hexdigest()
        found[item["Key"]] = hashlib.sha256(body).hexdigest()
    assert count == 3
    assert found == expected
    assert traffic == {
        "requests": 4,
        "violations": 0,
        "by_kind": {"list": 1, "download": 3, "conversations": 0, "other": 0},
    }
    assert watch.first is not None and watch.last is not None and watch.last >= watch.first


def test_period_is_whole_hours_in_the_past() -> None:
    period = Period.hours_back(3)
    assert period.end - period.start == timedelta(hours=3)
    assert period.end <= datetime.now(UTC) - timedelta(hours=2)
    assert period.start.minute == period.start.second == 0


def test_table_marks_targets() -> None:
    table = render(
        [Section("1. demo", [Row("a figure", "1.00", target="< 2", met=True), Row("b", "3")])],
        ["preamble"],
        ["a note"],
    )
    assert "1. demo" in table
    assert "✓" in table
    assert table.splitlines()[-1] == "a note"
