"""Retention end to end on SeaweedFS, a store that enforces Object Lock: the CLI as a process
against the simulator, then every object's lock read back from the bucket."""

from __future__ import annotations

import signal
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from archiver.retention import Period
from archiver.simulator import SimRecording
from tests import seaweed
from tests.e2e.harness import Bucket, cli, events, spawn, write_config

pytestmark = pytest.mark.e2e


def locked_bucket(endpoint: str, *, object_lock: bool = True) -> Bucket:
    client = seaweed.client(endpoint)
    name = f"locked-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
    if not object_lock:
        client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return Bucket(name, endpoint, client)


def recordings_in(sim: Any, bucket: Bucket) -> dict[str, SimRecording]:
    """key -> simulator record, for every recording the simulator serves."""
    return {
        f"calls/{rec.started_at:%Y/%m/%d}/{rec.recording_id}.mp3": rec
        for rec in sim.recordings()
        if rec.poison is None and "url" in rec.entry
    }


def three_days_under_two(
    tmp_path: Path, simulator: Any, endpoint: str, per_hour: float, *, mode: str, expired: str
) -> tuple[Any, Bucket, Path, datetime]:
    """Calls over the last three days under a two-day period (the oldest already expired), an
    Object Lock bucket, and a config; and the end of the calls."""
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    sim = simulator(start=end - timedelta(days=3), end=end, per_hour=per_hour, bytes_per_second=200)
    bucket = locked_bucket(endpoint)
    config = write_config(
        tmp_path / "config.toml",
        sim,
        bucket,
        archive={"window": "1d", "settle_delay": "0s"},
        retention={"mode": mode, "period": "2d", "expired": expired},
    )
    return sim, bucket, config, end


def test_every_object_is_locked_until_its_call_plus_the_period_and_old_ones_follow_expired(
    tmp_path: Path, simulator: Any, seaweed_server: str
) -> None:
    sim, bucket, config, end = three_days_under_two(
        tmp_path, simulator, seaweed_server, 0.5, mode="compliance", expired="skip"
    )
    check = cli("check", config=config)
    assert check.returncode == 0, check.stderr[-2000:]
    assert "retention   ok" in check.stdout

    # A backfill of the whole period: the oldest calls are past their date already.
    since = (end - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = cli("backfill", "--from", since, config=config, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    now = datetime.now(UTC)
    wanted = recordings_in(sim, bucket)
    expired = {k for k, rec in wanted.items() if Period(days=2).after(rec.started_at) <= now}
    assert expired and len(expired) < len(wanted)
    keys = set(bucket.recording_keys())
    assert keys == set(wanted) - expired  # the expired ones were skipped, never downloaded
    for key in keys:
        head = bucket.client.head_object(Bucket=bucket.name, Key=key)
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"] == Period(days=2).after(wanted[key].started_at)
    skipped = [e for e in events(result.stderr) if e.get("event") == "recording.expired"]
    assert len(skipped) == len(expired)

    # A locked version cannot be deleted, not even by its writer.
    key = sorted(keys)[0]
    version = bucket.client.head_object(Bucket=bucket.name, Key=key)["VersionId"]
    with pytest.raises(ClientError):
        bucket.client.delete_object(Bucket=bucket.name, Key=key, VersionId=version)
    assert bucket.client.head_object(Bucket=bucket.name, Key=key, VersionId=version)

    status = cli("status", "--json", config=config)
    assert '"expired": ' + str(len(expired)) in status.stdout
    verify = cli("verify", config=config)
    assert verify.returncode == 0, verify.stdout + verify.stderr[-1000:]


def test_with_expired_archive_old_calls_are_kept_unlocked(
    tmp_path: Path, simulator: Any, seaweed_server: str
) -> None:
    sim, bucket, config, end = three_days_under_two(
        tmp_path, simulator, seaweed_server, 0.3, mode="governance", expired="archive"
    )
    since = (end - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = cli("backfill", "--from", since, config=config, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    now = datetime.now(UTC)
    wanted = recordings_in(sim, bucket)
    assert set(bucket.recording_keys()) == set(wanted)
    modes = {
        key: bucket.client.head_object(Bucket=bucket.name, Key=key).get("ObjectLockMode")
        for key in wanted
    }
    for key, rec in wanted.items():
        due = Period(days=2).after(rec.started_at) > now
        assert modes[key] == ("GOVERNANCE" if due else None), key


def test_check_names_a_bucket_without_object_lock(
    tmp_path: Path, simulator: Any, seaweed_server: str
) -> None:
    sim = simulator(per_hour=2)
    bucket = locked_bucket(seaweed_server, object_lock=False)
    config = write_config(
        tmp_path / "config.toml", sim, bucket, retention={"mode": "compliance", "period": "5y"}
    )
    check = cli("check", config=config)
    assert check.returncode == 1
    assert "Object Lock is not enabled" in check.stderr and bucket.name in check.stderr


def test_retention_extend_moves_every_date_on_resumes_after_a_kill_and_leaves_a_record(
    tmp_path: Path, simulator: Any, seaweed_server: str
) -> None:
    sim = simulator(per_hour=12)
    bucket = locked_bucket(seaweed_server)
    config = write_config(
        tmp_path / "config.toml",
        sim,
        bucket,
        retention={"mode": "governance", "period": "5y"},
        schedule={"shutdown_timeout": "10s"},
    )
    assert cli("run", "--once", config=config).returncode == 0
    wanted = {k: rec for k, rec in recordings_in(sim, bucket).items()}
    assert len(wanted) >= 20

    plan = cli("retention", "extend", "--period", "7y", "--dry-run", config=config)
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert f"dry run: {len(wanted)} of {len(wanted)}" in plan.stdout

    # Killed after a few: the second run goes on from there and redoes nothing.
    process = spawn("retention", "extend", "--period", "7y", config=config)
    assert process.stderr is not None
    for line in process.stderr:
        if '"retention.extended"' in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=30)
    again = cli("retention", "extend", "--period", "7y", config=config)
    assert again.returncode == 0, again.stderr[-2000:]
    extended = int(again.stdout.split(" extended")[0])
    # The event is logged once S3 and the checkpoint have the new date: at least that one (and
    # however many more the first run did before the kill landed) is not redone.
    assert extended < len(wanted)
    assert f"{len(wanted) - extended} already locked as long or longer" in again.stdout
    for key, rec in wanted.items():
        head = bucket.client.head_object(Bucket=bucket.name, Key=key)
        assert head["ObjectLockRetainUntilDate"] == Period(years=7).after(rec.started_at)

    # Never shortened: back to 5 years changes nothing.
    back = cli("retention", "extend", "--period", "5y", config=config)
    assert back.returncode == 0 and back.stdout.startswith("0 extended")
    trails = [k for k in bucket.object_keys() if k.startswith("calls/audit/")]
    assert len(trails) == 2 and all(k.endswith("-retention-extend.json") for k in trails)
    verify = cli("verify", config=config)
    assert verify.returncode == 0, verify.stdout


def a_number_called_on_both_sides(records: Iterable[SimRecording], middle: datetime) -> str:
    """The commonest Cradle number with calls both before `middle` and from it on."""
    ordered = list(records)
    numbers = Counter(rec.entry.get("cradleNumber") for rec in ordered)
    return next(
        n
        for n, _ in numbers.most_common()
        if n
        and any(r.entry.get("cradleNumber") == n and r.started_at < middle for r in ordered)
        and any(r.entry.get("cradleNumber") == n and r.started_at >= middle for r in ordered)
    )


def legally_held(bucket: Bucket, key: str) -> bool:
    try:
        answer = bucket.client.get_object_legal_hold(Bucket=bucket.name, Key=key)
    except ClientError as exc:  # never held: S3 says there is no configuration
        assert exc.response["Error"]["Code"] == "NoSuchObjectLegalHold"
        return False
    return bool(answer["LegalHold"]["Status"] == "ON")


def test_a_hold_by_number_holds_exactly_the_matching_objects_now_and_when_archived_later(
    tmp_path: Path, simulator: Any, seaweed_server: str
) -> None:
    sim = simulator(per_hour=16)
    bucket = locked_bucket(seaweed_server)
    config = write_config(
        tmp_path / "config.toml", sim, bucket, retention={"mode": "governance", "period": "5y"}
    )
    records = recordings_in(sim, bucket)
    ordered = sorted(records.values(), key=lambda rec: rec.started_at)
    middle = ordered[len(ordered) // 2].started_at
    number = a_number_called_on_both_sides(ordered, middle)
    first_half = cli(
        "backfill",
        "--from",
        ordered[0].started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "--until",
        middle.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        config=config,
    )
    assert first_half.returncode == 0, first_half.stderr[-2000:]
    archived_first = set(bucket.recording_keys())
    hold = cli("hold", "add", "--number", number, "--reason", "case 42", config=config)
    assert hold.returncode == 0, hold.stderr[-2000:]
    rest = cli("run", "--once", config=config)
    assert rest.returncode == 0, rest.stderr[-2000:]

    matching = {
        key
        for key, rec in records.items()
        if number in (rec.entry.get("cradleNumber"), rec.entry.get("thirdPartyNumber"))
    }
    objects = [k for k in bucket.recording_keys() if not k.startswith("calls/audit/")]
    assert set(objects) == set(records)
    assert {key for key in objects if legally_held(bucket, key)} == matching
    assert matching & archived_first and matching - archived_first  # both paths were used
    listed = cli("hold", "list", config=config)
    assert f"number {number}" in listed.stdout and "case 42" in listed.stdout

    lifted = cli("hold", "remove", "--number", number, "--reason", "case closed", config=config)
    assert lifted.returncode == 0, lifted.stderr[-2000:]
    assert not any(legally_held(bucket, key) for key in objects)
    trails = sorted(k for k in bucket.object_keys() if k.startswith("calls/audit/"))
    assert [k.rsplit("-", 2)[-2:] for k in trails] == [
        ["hold", "add.json"],
        ["hold", "remove.json"],
    ]
