"""SPEC.md's guarantees under faults, crashes and bad input: the light versions of the chaos
scenarios (`make chaos` runs the heavy ones). Each is the real CLI as processes against the
simulator and moto's S3 server (in a process of its own, so it can be stopped and restarted).

Several tests pin one edge each (a cut list body, a kill mid-pipeline, a slow body at SIGTERM,
network jitter, library log lines, AWS credentials in debug logs, a credential of the wrong
type): each found a bug, since fixed.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos import crash, credentials, environment, limits, outage, soak, storm
from tests.chaos.lab import Lab
from tests.chaos.report import Report
from tests.chaos.s3server import S3Process

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Process]:
    server = S3Process()
    yield server
    server.close()


@pytest.fixture
def lab(tmp_path: Path, s3: S3Process) -> Iterator[Lab]:
    with Lab.open(tmp_path, s3) as opened:
        yield opened


def passed(report: Report) -> None:
    assert not report.problems, report.explain()


# -- 1. the mixed storm ------------------------------------------------------------------------


def test_a_mixed_storm_archives_every_recording_once_and_dead_letters_the_poison(
    lab: Lab,
) -> None:
    params = storm.Storm(hours=1, per_hour=12, fault_malformed_list=0.15)
    passed(storm.storm(lab, params))


def test_a_cut_list_response_is_retried_like_any_transient_failure(lab: Lab) -> None:
    passed(storm.cut_lists(lab))


# -- 2. crash safety ---------------------------------------------------------------------------


def test_sigkill_at_random_moments_during_a_backfill_loses_and_duplicates_nothing(
    lab: Lab,
) -> None:
    passed(crash.crash(lab, crash.Crash(hours=1, kills=3)))


def test_sigterm_stops_a_backfill_cleanly_within_shutdown_timeout_every_time(lab: Lab) -> None:
    passed(crash.crash(lab, crash.Crash(hours=0.8, kills=3, signum=signal.SIGTERM)))


def test_a_kill_during_a_multipart_upload_leaves_no_incomplete_upload(lab: Lab) -> None:
    params = crash.Crash(hours=1, per_hour=12, large_fraction=0.5, kills=0, multipart_kills=1)
    report = crash.crash(lab, params)
    passed(report)
    assert report.figures["kills"] == 1, report.explain()
    assert report.figures["stale_uploads"] == 0, report.explain()


def test_a_kill_costs_at_most_one_download_even_mid_pipeline(lab: Lab) -> None:
    params = crash.Crash(hours=1, per_hour=16, large_fraction=0.5, kills=0, pipeline_kills=1)
    report = crash.crash(lab, params)
    assert report.figures["kills"] == 1, report.explain()
    passed(report)


def test_sigterm_during_a_slow_download_stops_within_shutdown_timeout(lab: Lab) -> None:
    passed(limits.slow_stop(lab))


# -- 3. S3 outage ------------------------------------------------------------------------------


def test_an_s3_outage_fails_the_pass_cleanly_and_the_next_pass_completes(lab: Lab) -> None:
    passed(
        outage.outage(
            lab, outage.Outage(hours=1, per_hour=10, bandwidth=2_000_000, large_fraction=0.0)
        )
    )


# -- 4. credentials ----------------------------------------------------------------------------


def test_credentials_go_to_the_api_host_only_and_the_key_is_shown_nowhere(lab: Lab) -> None:
    passed(credentials.credentials(lab, hours=1, per_hour=5))


def test_debug_logs_never_show_the_aws_credentials(lab: Lab) -> None:
    passed(credentials.aws_secrets(lab))


# -- 5. bad config and environment -------------------------------------------------------------


def test_each_bad_config_exits_2_with_one_line_naming_the_file_and_key(lab: Lab) -> None:
    passed(environment.bad_configs(lab))


def test_a_credential_of_the_wrong_type_is_reported_once(lab: Lab) -> None:
    passed(environment.bad_configs(lab, environment.BAD_CREDENTIAL_TYPES, "bad credential type"))


def test_a_second_instance_exits_1_naming_the_holder(lab: Lab) -> None:
    passed(environment.second_instance(lab))


def test_refused_credentials_stop_the_pass_and_the_daemon_retries_without_spinning(
    lab: Lab,
) -> None:
    passed(environment.refused_credentials(lab, watch=4.0))


def test_a_bucket_that_denies_writes_fails_cleanly_and_loses_nothing(lab: Lab) -> None:
    passed(environment.denied_bucket(lab))


def test_a_spool_that_cannot_be_created_fails_cleanly_and_loses_nothing(lab: Lab) -> None:
    passed(environment.unwritable_spool(lab))


def test_a_spool_disk_that_fills_up_fails_cleanly_and_loses_nothing(lab: Lab) -> None:
    report = environment.full_spool(lab)
    if report is None:
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    passed(report)


# -- 6. the long run ---------------------------------------------------------------------------


def test_the_daemon_stays_up_through_faults_and_its_memory_does_not_grow(lab: Lab) -> None:
    passed(soak.soak(lab, soak.Soak(seconds=18, backlog=2)))


def test_json_logs_are_json_lines_only(lab: Lab) -> None:
    passed(limits.json_log_lines(lab))


# -- politeness --------------------------------------------------------------------------------


def test_the_rate_rule_holds_under_network_jitter(lab: Lab) -> None:
    passed(limits.jitter(lab, hours=1, per_hour=40))
