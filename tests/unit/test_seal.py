"""Sealing days into a chain of manifests: against the real checkpoint and an in-memory bucket."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from archiver import manifest
from archiver.checkpoint import Checkpoint
from archiver.errors import ObjectConflict, SinkUnavailable
from archiver.retention import Lock, LockMode, Period, RetentionPolicy
from archiver.seal import Sealer
from archiver.signing import Signer, Verifier, generate
from tests.builders import recording
from tests.fakes import FakeStore

PREFIX = "cradle/"
DAY1 = date(2026, 3, 1)
NOW = datetime(2026, 3, 10, tzinfo=UTC)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Iterator[Checkpoint]:
    with Checkpoint.open(tmp_path / "state.db") as opened:
        yield opened


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def archive(checkpoint: Checkpoint, n: int, started: datetime, *, lock: Lock | None = None) -> str:
    """Record recording number `n` as listed and archived; returns its id."""
    rid = f"{n:08d}-8f7d-4c2a-9e1b-5d4f3a2b1c0d"
    stamp = started.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    checkpoint.add_listed([recording(rid, startedAt=stamp)])
    checkpoint.mark_archived(
        rid,
        sha256=f"{n:064x}",
        size=1000 + n,
        key=f"{PREFIX}{started:%Y/%m/%d}/{rid}.mp3",
        lock=lock,
        version_id=f"v{n}",
    )
    return rid


def sealer(
    checkpoint: Checkpoint,
    store: FakeStore,
    *,
    retention: RetentionPolicy | None = None,
    signer: Signer | None = None,
) -> Sealer:
    return Sealer(
        PREFIX,
        checkpoint,
        store,
        lookback=timedelta(hours=6),
        retention=retention,
        signer=signer,
        clock=lambda: NOW,
    )


def chain(store: FakeStore) -> list[manifest.Manifest]:
    """Every manifest in the bucket, in sequence order, each link checked against the bytes."""
    found = sorted(
        (
            (manifest.parse(body), key, body)
            for key, (body, _) in store.objects.items()
            if key.endswith(".jsonl")
        ),
        key=lambda found: found[0].sequence,
    )
    previous = None
    for parsed, key, body in found:
        assert parsed.previous == previous
        previous = manifest.Link(key, manifest.digest(body))
    assert [m.sequence for m, _, _ in found] == list(range(1, len(found) + 1))
    return [m for m, _, _ in found]


def test_days_behind_the_lookback_are_sealed_in_order_empty_ones_too(
    checkpoint: Checkpoint,
) -> None:
    checkpoint.set_watermark(at(DAY1, 0))
    first = archive(checkpoint, 1, at(DAY1))
    archive(checkpoint, 2, at(DAY1 + timedelta(days=2)))
    # Day 3 ends at 00:00 on day 4; the watermark is 5 h past it, inside the 6 h lookback.
    checkpoint.set_watermark(at(DAY1 + timedelta(days=3), 5))
    store = FakeStore(prefix=PREFIX)

    written = sealer(checkpoint, store).seal()

    assert [m.day for m in written] == [DAY1, DAY1 + timedelta(days=1)]
    sealed = chain(store)
    assert [(m.day, len(m.entries)) for m in sealed] == [(DAY1, 1), (DAY1 + timedelta(days=1), 0)]
    assert sealed[0].entries[0].id == first
    assert sealed[0].entries[0].version_id == "v1"
    assert checkpoint.last_sealed_day() == DAY1 + timedelta(days=1)
    assert checkpoint.manifests(unwritten=True) == []
    # The sha256sum sidecar lists the day's recording and the manifest, relative to the prefix.
    key = manifest.manifest_key(PREFIX, DAY1)
    body = store.objects[key][0]
    sums = manifest.parse_checksum_file(store.objects[manifest.checksum_key(key)][0])
    assert sums == {
        f"2026/03/01/{first}.mp3": f"{1:064x}",
        "manifests/2026/03/01.jsonl": manifest.digest(body),
    }

    checkpoint.set_watermark(at(DAY1 + timedelta(days=3), 7))
    assert [m.day for m in sealer(checkpoint, store).seal()] == [DAY1 + timedelta(days=2)]
    assert sealer(checkpoint, store).seal() == []  # nothing new: nothing written
    assert len(chain(store)) == 3


def test_a_day_with_pending_recordings_waits_and_so_do_the_days_after_it(
    checkpoint: Checkpoint,
) -> None:
    checkpoint.set_watermark(at(DAY1, 0))
    checkpoint.add_listed([recording(startedAt="2026-03-02T10:00:00.000Z")])
    checkpoint.set_watermark(at(DAY1 + timedelta(days=5)))
    store = FakeStore(prefix=PREFIX)

    assert [m.day for m in sealer(checkpoint, store).seal()] == [DAY1]


def test_a_recording_archived_after_its_day_was_sealed_goes_into_a_supplement(
    checkpoint: Checkpoint,
) -> None:
    checkpoint.set_watermark(at(DAY1, 0))
    archive(checkpoint, 1, at(DAY1))
    checkpoint.set_watermark(at(DAY1 + timedelta(days=2)))
    store = FakeStore(prefix=PREFIX)
    sealer(checkpoint, store).seal()
    late = archive(checkpoint, 3, at(DAY1, 15))  # a backfill, a retry, a reconcile

    written = sealer(checkpoint, store).seal()

    assert [(m.day, m.supplement, m.sequence) for m in written] == [(DAY1, 1, 3)]
    assert written[0].key == f"{PREFIX}manifests/2026/03/01.1.jsonl"
    supplement = chain(store)[-1]
    assert [e.id for e in supplement.entries] == [late]
    assert manifest.checksum_key(written[0].key) in store.objects


def test_a_kill_between_the_write_and_the_checkpoint_writes_the_same_bytes_again(
    checkpoint: Checkpoint,
) -> None:
    checkpoint.set_watermark(at(DAY1, 0))
    archive(checkpoint, 1, at(DAY1))
    checkpoint.set_watermark(at(DAY1 + timedelta(days=1), 7))
    store = FakeStore(prefix=PREFIX)

    class KilledAfterTheManifest(FakeStore):
        def write_once(self, key: str, body: bytes, *args: object, **kwargs: object) -> None:
            store.objects[key] = (body, manifest.digest(body))  # landed in S3
            raise SinkUnavailable("killed before the checkpoint heard of it")

    with pytest.raises(SinkUnavailable):
        sealer(checkpoint, KilledAfterTheManifest()).seal()
    kept = checkpoint.manifests(unwritten=True)
    assert [m.key for m in kept] == [manifest.manifest_key(PREFIX, DAY1)]
    archive(checkpoint, 2, at(DAY1, 18))  # archived meanwhile: it must not change those bytes

    written = sealer(checkpoint, store).seal()

    assert [(m.day, m.supplement) for m in written] == [(DAY1, 0), (DAY1, 1)]
    sealed = chain(store)
    assert [len(m.entries) for m in sealed] == [1, 1]
    assert checkpoint.manifests(unwritten=True) == []


def test_another_object_at_a_manifest_key_is_a_loud_error_and_is_left_as_it_is(
    checkpoint: Checkpoint,
) -> None:
    checkpoint.set_watermark(at(DAY1, 0))
    checkpoint.set_watermark(at(DAY1 + timedelta(days=1), 7))
    key = manifest.manifest_key(PREFIX, DAY1)
    store = FakeStore(prefix=PREFIX, objects={key: (b"not ours\n", "x")})

    with pytest.raises(ObjectConflict, match=key):
        sealer(checkpoint, store).seal()

    assert store.objects[key][0] == b"not ours\n"
    assert checkpoint.last_sealed_day() is None


def test_manifests_are_locked_until_the_latest_date_they_list(checkpoint: Checkpoint) -> None:
    policy = RetentionPolicy(mode=LockMode.COMPLIANCE, period=Period(years=5))
    checkpoint.set_watermark(at(DAY1, 0))
    latest = Lock(LockMode.COMPLIANCE, datetime(2031, 3, 1, 20, tzinfo=UTC))
    archive(checkpoint, 1, at(DAY1), lock=Lock(LockMode.COMPLIANCE, at(DAY1) + timedelta(1)))
    archive(checkpoint, 2, at(DAY1, 20), lock=latest)
    checkpoint.set_watermark(at(DAY1 + timedelta(days=2), 7))
    store = FakeStore(prefix=PREFIX)

    sealer(checkpoint, store, retention=policy).seal()

    day1 = manifest.manifest_key(PREFIX, DAY1)
    assert store.locks[day1] == latest
    assert store.locks[manifest.checksum_key(day1)] == latest
    # An empty day: locked as its recordings would have been, from the day's end.
    empty = manifest.manifest_key(PREFIX, DAY1 + timedelta(days=1))
    assert store.locks[empty] == Lock(LockMode.COMPLIANCE, datetime(2031, 3, 3, tzinfo=UTC))


def test_with_a_signing_key_each_manifest_carries_a_signature_that_verifies(
    checkpoint: Checkpoint, tmp_path: Path
) -> None:
    private, public = generate()
    (tmp_path / "sign.pem").write_bytes(private)
    (tmp_path / "public.pem").write_bytes(public)
    checkpoint.set_watermark(at(DAY1, 0))
    archive(checkpoint, 1, at(DAY1))
    checkpoint.set_watermark(at(DAY1 + timedelta(days=1), 7))
    store = FakeStore(prefix=PREFIX)

    sealer(checkpoint, store, signer=Signer.from_file(tmp_path / "sign.pem")).seal()

    key = manifest.manifest_key(PREFIX, DAY1)
    body, signature = store.objects[key][0], store.objects[manifest.signature_key(key)][0]
    verifier = Verifier.from_file(tmp_path / "public.pem")
    assert verifier.valid(body, signature)
    assert not verifier.valid(body.replace(b'"count":1', b'"count":2'), signature)
