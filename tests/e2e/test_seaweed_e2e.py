"""The guarantee tests that matter most for the store, run on SeaweedFS as well as moto: a real
S3 server that checks checksums and conditional writes, and whose outage is a process that ends
and starts again on the same data directory.

The scenarios of their moto twins in test_faults_e2e.py (a mixed storm, SIGKILL during a
backfill, with one kill aimed at a multipart upload here, and an S3 outage); the other fault
tests stay on moto alone, to keep `make test` within a few minutes. Buckets are versioned, so the audit counts a second write as a duplicate.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests import seaweed
from tests.chaos import crash, outage, storm
from tests.chaos.lab import Lab
from tests.chaos.report import Report

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[seaweed.SeaweedFS]:
    with seaweed.running(tmp_path_factory.mktemp("seaweed-e2e")) as server:
        yield server


@pytest.fixture
def lab(tmp_path: Path, s3: seaweed.SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    # The lab's clients come from boto3's default session, which keeps the credentials it first
    # resolved: an earlier test's session token (tests/conftest.py) that SeaweedFS refuses.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    with Lab.open(tmp_path, s3) as opened:
        yield opened


def passed(report: Report) -> None:
    assert not report.problems, report.explain()


def test_a_mixed_storm_on_seaweedfs_archives_every_recording_once(lab: Lab) -> None:
    params = storm.Storm(hours=1, per_hour=12, fault_malformed_list=0.15)
    passed(storm.storm(lab, params, name="storm on seaweedfs"))


def test_sigkill_during_a_backfill_on_seaweedfs_loses_and_duplicates_nothing(lab: Lab) -> None:
    """Two kills at random moments and one aimed at an open multipart upload (a quarter of the
    recordings are 20 MB, above the 16 MiB threshold): SeaweedFS keeps the parts of an upload
    a killed process left, until the next run aborts them."""
    params = crash.Crash(hours=1, kills=2, multipart_kills=1, large_fraction=0.25)
    report = crash.crash(lab, params, name="sigkill on seaweedfs")
    passed(report)
    assert report.figures["kills"] == 3, report.explain()


def test_a_seaweedfs_outage_fails_the_pass_cleanly_and_the_next_pass_completes(
    lab: Lab, tmp_path: Path
) -> None:
    """SeaweedFS's process ends mid-pass (SIGTERM) and starts again on the same data."""
    with seaweed.running(tmp_path / "outage-s3") as server:
        report = outage.outage(
            lab,
            outage.Outage(hours=1, per_hour=10, bandwidth=2_000_000, large_fraction=0.0),
            s3=server,
        )
    passed(report)
