"""The simulator's VBR bodies (`vbr`): a Xing frame, then frames whose bitrate goes round a cycle,
as long as the list's durationSeconds says; and the archiver's frame walker reading them."""

from __future__ import annotations

import argparse
import hashlib
import itertools
from collections.abc import Iterable, Iterator
from datetime import timedelta

import pytest
import requests

from archiver.audio import AudioSummary, mismatched, walk
from archiver.simulator import Simulator
from archiver.simulator.arguments import add_arguments, options_from_args
from archiver.simulator.body import (
    CHUNK_SIZE,
    FRAME_LENGTH,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    VBR_CYCLE,
    audio_frames,
    iter_body,
    vbr_body_size,
)
from archiver.simulator.data import SimRecording
from archiver.simulator.options import MAX_BODY_SIZE, MIN_BODY_SIZE
from tests.unit.test_simulator import START, options

FRAME_SECONDS = SAMPLES_PER_FRAME / SAMPLE_RATE
HALF_FRAME = FRAME_SECONDS / 2 + 1e-9  # a duration can fall on a frame's middle: 240 s
RECORDING_ID = "3f2b9c1e-5a4d-4e8f-9b7a-0c6d2e1f4a58"
KBPS = {7: 96, 9: 128, 10: 160, 11: 192}  # MPEG-1 Layer III bitrate indexes used


@pytest.fixture
def api() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers.update({"CRADLE_ID": "demo-id", "CRADLE_API_KEY": "demo-key"})
        yield session


def tag_size(body: bytes) -> int:
    assert body.startswith(b"ID3\x03\x00")
    return 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(body[6:10]))


def pieces(body: bytes, size: int) -> Iterator[bytes]:
    return (body[i : i + size] for i in range(0, len(body), size))


def walks_alike(body: bytes, chunks: Iterable[bytes]) -> AudioSummary:
    """The walk of `body`, checked to be the same whole, as served, and cut anywhere."""
    whole = walk([body])
    assert walk(chunks) == whole
    for size in (1, 4, 37, 1000, 4097):
        if len(body) // size <= 200_000:
            assert walk(pieces(body, size)) == whole, size
    return whole


def frame_headers(body: bytes, start: int) -> list[bytes]:
    """The headers of the frames from `start`, by their own lengths (a minimal reader)."""
    headers, position = [], start
    while position + 4 <= len(body):
        header = body[position : position + 4]
        assert header[:2] == b"\xff\xfb" and header[3] == 0x64, position
        headers.append(header)
        position += 144_000 * KBPS[header[2] >> 4] // SAMPLE_RATE + (header[2] >> 1 & 1)
    return headers


def assert_vbr_walk(summary: AudioSummary, duration: float) -> None:
    assert summary.info_frame
    assert summary.has_audio
    assert summary.junk_bytes == 0
    assert not summary.partial_last_frame
    assert abs(summary.seconds - duration) <= FRAME_SECONDS
    assert not mismatched(duration, summary.seconds)


# -- the option ----------------------------------------------------------------------------


def test_vbr_is_off_by_default_and_has_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert options_from_args(parser.parse_args([])).vbr == 0.0
    assert options_from_args(parser.parse_args(["--vbr", "0.25"])).vbr == 0.25
    with pytest.raises(SystemExit):
        parser.parse_args(["--vbr", "1.5"])
    assert "argument --vbr: must be 0.0..1.0" in capsys.readouterr().err


def listed(recording: SimRecording) -> tuple[object, ...]:
    entry = {k: v for k, v in recording.entry.items() if k != "url"}  # the url names the port
    return recording.recording_id, recording.started_at, recording.visible_at, entry


def test_turning_vbr_on_changes_only_the_recordings_it_picks() -> None:
    span = {"end": START + timedelta(hours=12)}
    with Simulator(options(**span)) as plain, Simulator(options(vbr=0.5, **span)) as mixed:
        before, after = plain.recordings(), mixed.recordings()
        assert [listed(r) for r in before] == [listed(r) for r in after]
        assert not any(r.vbr for r in before)
        picked = [r for r in after if r.vbr]
        assert 0.35 * len(after) <= len(picked) <= 0.65 * len(after)
        for old, new in zip(before, after, strict=True):
            if new.vbr:
                natural = vbr_body_size(new.recording_id, new.duration_seconds)
                assert new.size == min(natural, MAX_BODY_SIZE)
            else:
                assert new.size == old.size
        kept = next(r for r in after if not r.vbr).recording_id
        assert mixed.body_sha256(kept) == plain.body_sha256(kept)


def test_vbr_sizes_follow_the_duration_within_the_bounds() -> None:
    with Simulator(options(vbr=1.0, end=START + timedelta(days=3))) as sim:
        recordings = sim.recordings()
        assert all(r.vbr for r in recordings)
        capped = [r for r in recordings if r.size == MAX_BODY_SIZE]
        assert capped, "some calls are long enough to reach the 100 MB cap"
        for r in recordings:
            natural = vbr_body_size(r.recording_id, r.duration_seconds)
            assert r.size == min(max(natural, MIN_BODY_SIZE), MAX_BODY_SIZE)
            frames = audio_frames(r.recording_id, r.size, vbr=True)
            if r.size < MAX_BODY_SIZE:
                assert abs(frames * FRAME_SECONDS - r.duration_seconds) <= HALF_FRAME
    with Simulator(options(vbr=1.0, size=5000)) as fixed:
        assert {r.size for r in fixed.recordings()} == {5000}
    with Simulator(options(vbr=1.0, large_fraction=1.0, large_size=MIN_BODY_SIZE)) as large:
        assert {r.size for r in large.recordings()} == {MIN_BODY_SIZE}


# -- VBR bodies ----------------------------------------------------------------------------


def test_a_vbr_download_is_a_xing_frame_then_cycling_bitrates(api: requests.Session) -> None:
    with Simulator(options(vbr=1.0)) as sim:
        recording = min(sim.recordings(), key=lambda r: abs(r.duration_seconds - 90))
        response = api.get(recording.url)
        body = response.content

        assert response.status_code == 200
        assert int(response.headers["Content-Length"]) == len(body) == recording.size
        assert hashlib.sha256(body).hexdigest() == sim.body_sha256(recording.recording_id)
        assert b"".join(sim.iter_body(recording.recording_id)) == body

        first = tag_size(body)
        xing = body[first : first + FRAME_LENGTH]
        assert xing[:4] == b"\xff\xfb\x90\x64"  # 128 kbps, 44.1 kHz, joint stereo
        assert xing[4:36] == bytes(32)  # side information
        assert xing[36:40] == b"Xing"
        flags = int.from_bytes(xing[40:44], "big")
        assert flags & 0x1 and flags & 0x2  # frame count, then byte count
        frames = int.from_bytes(xing[44:48], "big")
        assert int.from_bytes(xing[48:52], "big") == len(body) - first
        toc = xing[52:152]
        assert toc[0] == 0 and list(toc) == sorted(toc) and toc[50] in range(118, 138)

        headers = frame_headers(body, first + FRAME_LENGTH)
        assert len(headers) == frames
        cycle = [(KBPS[h[2] >> 4], bool(h[2] & 2)) for h in headers[: len(VBR_CYCLE)]]
        assert cycle == list(VBR_CYCLE)
        assert len({h[2] for h in headers}) == len(set(VBR_CYCLE))

        summary = walks_alike(body, sim.iter_body(recording.recording_id))
        assert summary.frames == frames
        assert_vbr_walk(summary, recording.duration_seconds)


def test_vbr_bodies_walk_to_their_duration() -> None:
    with Simulator(options(vbr=1.0)) as sim:
        # The longest under 30 MB: a longer one takes more time, not another case.
        recordings = sorted(
            (r for r in sim.recordings() if r.size < 30_000_000), key=lambda r: r.duration_seconds
        )
        for recording in (recordings[0], recordings[len(recordings) // 2], recordings[-1]):
            body = b"".join(sim.iter_body(recording.recording_id))
            summary = walks_alike(body, sim.iter_body(recording.recording_id))
            assert_vbr_walk(summary, recording.duration_seconds)


@pytest.mark.parametrize("duration", [3, 4, 29, 30, 61, 240, 600, 1799])
def test_a_vbr_body_lasts_its_duration_to_the_nearest_frame(duration: int) -> None:
    size = vbr_body_size(RECORDING_ID, duration)
    body = b"".join(iter_body(11, RECORDING_ID, size, vbr=True))

    assert len(body) == size
    summary = walks_alike(body, iter_body(11, RECORDING_ID, size, vbr=True))
    assert_vbr_walk(summary, duration)
    assert abs(summary.seconds - duration) <= HALF_FRAME


@pytest.mark.parametrize(
    "size",
    [MIN_BODY_SIZE, 1000, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 3, 3 * CHUNK_SIZE + 2, 777_777],
)
def test_a_vbr_body_of_any_size_holds_the_frames_its_xing_frame_counts(size: int) -> None:
    # A fixed --size, a --large-size or --short-audio's half cut the frames anywhere.
    body = b"".join(iter_body(5, RECORDING_ID, size, vbr=True))
    chunks = list(iter_body(5, RECORDING_ID, size, vbr=True))
    first = tag_size(body)

    assert len(body) == size
    assert all(len(c) == CHUNK_SIZE for c in chunks[:-1])
    frames = int.from_bytes(body[first + 44 : first + 48], "big")
    summary = walks_alike(body, chunks)
    assert summary.info_frame and summary.junk_bytes == 0
    assert summary.frames == frames == audio_frames(RECORDING_ID, size, vbr=True)
    assert summary.has_audio == (frames > 0)
    ends_on_a_frame = len(body) - first - FRAME_LENGTH == sum(
        144_000 * kbps // SAMPLE_RATE + padded
        for kbps, padded in itertools.islice(itertools.cycle(VBR_CYCLE), frames)
    )
    assert summary.partial_last_frame == (not ends_on_a_frame)


def test_short_audio_vbr_holds_about_half_its_duration() -> None:
    with Simulator(options(vbr=1.0, short_audio=1.0)) as sim:
        recording = max(
            (r for r in sim.recordings() if r.duration_seconds < 600),
            key=lambda r: r.duration_seconds,
        )
        assert recording.vbr and recording.short_audio
        summary = walk(sim.iter_body(recording.recording_id))
        assert summary.info_frame and summary.junk_bytes == 0
        assert abs(summary.seconds - recording.duration_seconds / 2) <= 1
        assert mismatched(recording.duration_seconds, summary.seconds)


# -- CBR, unchanged ------------------------------------------------------------------------


def cbr_seconds(recording: SimRecording) -> float:
    return audio_frames(recording.recording_id, recording.size) * FRAME_SECONDS


def test_a_cbr_body_still_walks_to_its_duration() -> None:
    with Simulator(options()) as sim:
        recordings = sorted(
            (r for r in sim.recordings() if r.size < 30_000_000), key=lambda r: r.duration_seconds
        )
        for recording in (recordings[0], recordings[len(recordings) // 2], recordings[-1]):
            assert not recording.vbr
            body = b"".join(sim.iter_body(recording.recording_id))
            summary = walks_alike(body, sim.iter_body(recording.recording_id))
            duration = recording.duration_seconds
            assert not summary.info_frame
            assert summary.has_audio and summary.junk_bytes == 0
            assert summary.seconds == pytest.approx(cbr_seconds(recording))
            # 16,000 bytes a second against 128 kbps frames' 15,963.5: 0.23% more audio.
            assert abs(summary.seconds - duration) <= 0.003 * duration + FRAME_SECONDS
            assert not mismatched(duration, summary.seconds)
