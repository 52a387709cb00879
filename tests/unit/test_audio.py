"""The frame walker on frame streams built here, bit by bit from the MPEG audio header layout."""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.audio import MAX_CARRY, AudioSummary, FrameWalker, walk
from benchmarks import audio_walk

VERSION_BITS = {"1": 0b11, "2": 0b10, "2.5": 0b00}
LAYER3_BITS = 0b01
KBPS = {
    "1": (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    "2": (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
RATES = {"1": (44100, 48000, 32000), "2": (22050, 24000, 16000), "2.5": (11025, 12000, 8000)}
MONO = 0b11
HTML = b"<!doctype html><html><head><title>502 Bad Gateway</title></head><body>nope</body></html>"


def kbps_table(version: str) -> tuple[int, ...]:
    return KBPS["1" if version == "1" else "2"]


def header(
    version: str = "1",
    kbps: int = 128,
    rate: int = 44100,
    *,
    padded: bool = False,
    mono: bool = False,
    layer_bits: int = LAYER3_BITS,
    version_bits: int | None = None,
    bitrate_index: int | None = None,
    rate_index: int | None = None,
) -> bytes:
    """Four header bytes; the *_bits and *_index arguments force raw (possibly reserved) values."""
    version_bits = VERSION_BITS[version] if version_bits is None else version_bits
    if bitrate_index is None:
        bitrate_index = kbps_table(version).index(kbps) + 1
    if rate_index is None:
        rate_index = RATES[version].index(rate)
    second = 0xE0 | version_bits << 3 | layer_bits << 1 | 1  # 1: no CRC
    third = bitrate_index << 4 | rate_index << 2 | int(padded) << 1
    fourth = (MONO if mono else 0) << 6
    return bytes([0xFF, second, third, fourth])


def frame_length(version: str, kbps: int, rate: int, padded: bool) -> int:
    slot_bytes = 144 if version == "1" else 72
    return slot_bytes * kbps * 1000 // rate + int(padded)


def samples(version: str) -> int:
    return 1152 if version == "1" else 576


def frame(
    version: str = "1", kbps: int = 128, rate: int = 44100, *, padded: bool = False, **bits: bool
) -> bytes:
    length = frame_length(version, kbps, rate, padded)
    return header(version, kbps, rate, padded=padded, **bits).ljust(length, b"\x00")


def frames(count: int, version: str = "1", kbps: int = 128, rate: int = 44100) -> bytes:
    """`count` frames padded the way an encoder pads them, to hold the bitrate exactly."""
    slot_bytes = 144 if version == "1" else 72
    out, remainder = [], 0
    for _ in range(count):
        remainder += slot_bytes * kbps * 1000 % rate
        padded = remainder >= rate
        remainder -= rate if padded else 0
        out.append(frame(version, kbps, rate, padded=padded))
    return b"".join(out)


def info_frame(
    version: str = "1",
    kbps: int = 128,
    rate: int = 44100,
    *,
    tag: bytes = b"Xing",
    mono: bool = False,
) -> bytes:
    """The first frame of a VBR file: a Xing/Info tag after the side information, or VBRI at 36."""
    body = bytearray(frame(version, kbps, rate, mono=mono))
    if tag == b"VBRI":
        at = 36
    elif version == "1":
        at = 4 + (17 if mono else 32)
    else:
        at = 4 + (9 if mono else 17)
    body[at : at + 4] = tag
    return bytes(body)


def id3v2(payload_size: int, *, footer: bool = False) -> bytes:
    size = bytes((payload_size >> shift) & 0x7F for shift in (21, 14, 7, 0))
    flags = 0x10 if footer else 0
    tag = b"ID3\x04\x00" + bytes([flags]) + size + b"\x00" * payload_size
    return tag + (b"3DI\x04\x00" + bytes([flags]) + size if footer else b"")


def id3v1() -> bytes:
    return b"TAG" + b"A Call".ljust(30) + b"Cradle".ljust(30) + b"".ljust(65, b"\x00")


def seconds(*parts: tuple[int, str, int]) -> float:
    """Exact seconds of (frame count, version, sample rate) parts."""
    return float(sum(Fraction(count * samples(version), rate) for count, version, rate in parts))


def fed(body: bytes, chunk_size: int) -> AudioSummary:
    return walk(body[i : i + chunk_size] for i in range(0, len(body), chunk_size))


def fed_in(body: bytes, cuts: list[int]) -> AudioSummary:
    bounds = [0, *sorted(set(cuts)), len(body)]
    return walk(body[a:b] for a, b in itertools.pairwise(bounds))


def test_cbr_128_kbps_gives_the_exact_seconds() -> None:
    body = id3v2(500) + frames(1000)
    summary = fed(body, 4096)
    assert summary == AudioSummary(
        seconds=seconds((1000, "1", 44100)),
        frames=1000,
        junk_bytes=0,
        partial_last_frame=False,
        has_audio=True,
    )
    assert summary.seconds == 1000 * 1152 / 44100


@pytest.mark.parametrize("tag", [b"Xing", b"Info", b"VBRI"])
@pytest.mark.parametrize("mono", [False, True])
def test_vbr_with_an_info_frame_counts_the_audio_frames_only(tag: bytes, mono: bool) -> None:
    rng = random.Random(7)
    audio = [frame("1", rng.choice(KBPS["1"]), 44100, mono=mono) for _ in range(300)]
    body = info_frame("1", 128, 44100, tag=tag, mono=mono) + b"".join(audio)
    summary = fed(body, 1000)
    assert summary.info_frame
    assert summary.frames == 300
    assert summary.seconds == seconds((300, "1", 44100))
    assert summary.junk_bytes == 0


@pytest.mark.parametrize("mono", [False, True])
def test_mpeg2_info_frame_is_found_after_the_shorter_side_information(mono: bool) -> None:
    body = info_frame("2", 64, 22050, mono=mono) + frames(50, "2", 64, 22050)
    summary = fed(body, 7)
    assert summary.info_frame
    assert summary.frames == 50


def test_a_long_run_in_one_chunk_counts_every_frame() -> None:
    body = frames(5000) + frames(3000, "2", 8, 24000)
    summary = fed(body, len(body))
    assert summary.frames == 8000
    assert summary.seconds == seconds((5000, "1", 44100), (3000, "2", 24000))
    assert summary == fed(body, 262144)


def test_an_ordinary_first_frame_is_audio() -> None:
    summary = fed(frames(3), 1 << 20)
    assert not summary.info_frame
    assert summary.frames == 3


@pytest.mark.parametrize(
    ("version", "kbps", "rate"),
    [
        ("2", 64, 22050),
        ("2", 32, 24000),
        ("2", 160, 16000),
        ("2", 8, 24000),
        ("2.5", 8, 8000),
        ("2.5", 32, 11025),
        ("2.5", 64, 12000),
    ],
)
def test_mpeg2_and_mpeg25_frames_hold_576_samples(version: str, kbps: int, rate: int) -> None:
    summary = fed(frames(400, version, kbps, rate), 65536)
    assert summary.frames == 400
    assert summary.seconds == seconds((400, version, rate))
    assert summary.junk_bytes == 0


def test_every_mpeg1_bitrate_and_rate_walks_clean() -> None:
    body = b"".join(frames(5, "1", kbps, rate) for kbps in KBPS["1"] for rate in RATES["1"])
    summary = fed(body, 8192)
    assert summary.frames == 5 * len(KBPS["1"]) * 3
    assert summary.junk_bytes == 0
    assert summary.seconds == float(
        sum(Fraction(5 * 1152, rate) for _ in KBPS["1"] for rate in RATES["1"])
    )


def test_junk_between_frames_is_counted_and_the_walk_resynchronises() -> None:
    junk = b"\r\n--boundary\r\nContent-Type: text/plain\r\n\r\n" * 3
    body = frames(100) + junk + frames(100) + junk[:5] + frames(10)
    summary = fed(body, 333)
    assert summary.junk_bytes == len(junk) + 5
    assert summary.frames == 210
    assert summary.seconds == seconds((210, "1", 44100))


def test_a_lone_header_in_junk_is_junk() -> None:
    junk = b"garbage" + frame() + b"more garbage, no sync here"
    summary = fed(frames(20) + junk + frames(20), 4096)
    assert summary.frames == 40
    assert summary.junk_bytes == len(junk)


def test_a_candidate_the_next_header_contradicts_is_junk() -> None:
    stray = frame(rate=48000)  # valid, but the stream that follows is at 44.1 kHz
    summary = fed(b"junk" + stray + frames(20), 4096)
    assert summary.frames == 20
    assert summary.junk_bytes == 4 + len(stray)


@pytest.mark.parametrize(
    ("before", "junk"), [(b"", 0), (id3v2(10), 0), (b"junk", 4)], ids=["bare", "tag", "junk"]
)
def test_a_frame_that_ends_the_body_needs_no_confirming_header(before: bytes, junk: int) -> None:
    summary = fed(before + frame(), 4096)
    assert summary.frames == 1
    assert summary.junk_bytes == junk


def test_a_truncated_last_frame_is_reported_and_not_counted() -> None:
    body = frames(100)[:-100]
    summary = fed(body, 4096)
    assert summary.partial_last_frame
    assert summary.frames == 99
    assert summary.junk_bytes == 0
    assert summary.seconds == seconds((99, "1", 44100))


def test_a_truncated_last_frame_after_a_change_of_rate_is_not_counted() -> None:
    body = frames(10) + frames(10, "2", 64, 24000)[:-50]
    summary = fed(body, 1 << 20)
    assert summary.partial_last_frame
    assert summary.frames == 19
    assert summary.seconds == seconds((10, "1", 44100), (9, "2", 24000))


@pytest.mark.parametrize("kept", [20, 200])
@pytest.mark.parametrize("before", [b"", frames(10)], ids=["alone", "after frames"])
def test_a_frame_cut_short_after_junk_is_junk(before: bytes, kept: int) -> None:
    summary = fed(before + b"junk" + frame()[:kept], 4096)
    assert summary.junk_bytes == 4 + kept
    assert summary.frames == (10 if before else 0)
    assert not summary.partial_last_frame


@pytest.mark.parametrize("kept", [1, 2, 3])
def test_a_body_cut_inside_the_last_header_is_a_partial_frame(kept: int) -> None:
    summary = fed(frames(10) + frame()[:kept], 4096)
    assert summary.partial_last_frame
    assert summary.frames == 10
    assert summary.junk_bytes == 0


def test_an_html_body_has_no_audio() -> None:
    summary = fed(HTML * 50, 1000)
    assert summary == AudioSummary(
        seconds=0.0, frames=0, junk_bytes=len(HTML) * 50, partial_last_frame=False, has_audio=False
    )


def test_an_empty_body_has_no_audio() -> None:
    assert FrameWalker().finish() == AudioSummary(0.0, 0, 0, False, False)


def test_a_tag_alone_has_no_audio_and_no_junk() -> None:
    summary = fed(id3v2(3000), 1000)
    assert not summary.has_audio
    assert summary.junk_bytes == 0


@pytest.mark.parametrize("footer", [False, True])
def test_an_id3_tag_larger_than_the_first_chunk_is_skipped(footer: bool) -> None:
    body = id3v2(200_000, footer=footer) + frames(500)
    summary = fed(body, 16384)
    assert summary.frames == 500
    assert summary.junk_bytes == 0
    assert summary.seconds == seconds((500, "1", 44100))


def test_two_id3v2_tags_in_a_row_are_both_skipped() -> None:
    summary = fed(id3v2(100) + id3v2(30) + frames(10), 64)
    assert summary.frames == 10
    assert summary.junk_bytes == 0


def test_an_id3v1_tag_at_the_end_is_neither_audio_nor_junk() -> None:
    summary = fed(frames(50) + id3v1(), 100)
    assert summary.frames == 50
    assert summary.junk_bytes == 0
    assert not summary.partial_last_frame


def test_a_tag_block_with_more_after_it_is_junk() -> None:
    body = frames(50) + id3v1() + b"trailer"
    summary = fed(body, 100)
    assert summary.frames == 50
    assert summary.junk_bytes == 128 + len(b"trailer")


@pytest.mark.parametrize(
    "bad",
    [
        header(bitrate_index=0),  # free format
        header(bitrate_index=15),
        header(rate_index=3),
        header(version_bits=0b01),
        header(layer_bits=0b00),
        header(layer_bits=0b10),  # Layer II
        header(layer_bits=0b11),  # Layer I
    ],
)
def test_reserved_and_unsupported_headers_are_junk(bad: bytes) -> None:
    body = (bad + bytes(413)) * 20
    summary = fed(body, 4096)
    assert not summary.has_audio
    assert summary.junk_bytes == len(body)


@pytest.mark.parametrize("cut", range(1, 4))
def test_a_frame_header_split_across_two_chunks(cut: int) -> None:
    body = frames(10)
    second_frame = frame_length("1", 128, 44100, False)
    summary = fed_in(body, [second_frame + cut])
    assert summary == fed(body, len(body))
    assert summary.frames == 10


@pytest.mark.parametrize("cut", range(1, 40))
def test_an_info_frame_split_anywhere_in_its_first_bytes(cut: int) -> None:
    body = id3v2(20) + info_frame() + frames(10)
    summary = fed_in(body, [30 + cut])
    assert summary.info_frame
    assert summary.frames == 10


def test_one_byte_chunks_give_the_same_summary() -> None:
    body = id3v2(50) + info_frame() + frames(30) + HTML + frames(30, "2", 32, 16000)[:-9]
    assert fed(body, 1) == fed(body, len(body))


def test_the_benchmark_body_is_a_clean_frame_stream() -> None:
    seconds_taken, summary = audio_walk.walk_cost(audio_walk.stream(2**20, lambda _: 128), 1)
    assert seconds_taken >= 0
    assert summary.junk_bytes == 0
    assert not summary.partial_last_frame
    assert summary.seconds == seconds((summary.frames, "1", 44100))
    assert summary.frames == 2509  # 1 MiB at 128 kbps, rounded up to a whole frame


def test_feeding_after_the_finish_is_refused() -> None:
    walker = FrameWalker()
    walker.finish()
    with pytest.raises(ValueError, match="finished"):
        walker.feed(frames(1))


PARTS = st.sampled_from(
    [
        frames(7),
        frames(5, "2", 24, 22050),
        frames(6, "2.5", 8, 8000),
        frame(kbps=320, padded=True),
        HTML,
        b"\xff\xfb",
        b"\xff" * 5,
        id3v1(),
        info_frame(),
        b"\x00" * 3,
    ]
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    head = draw(st.sampled_from([b"", id3v2(0), id3v2(700), id3v2(40, footer=True)]))
    parts = draw(st.lists(PARTS | st.binary(max_size=300), max_size=12))
    body = head + b"".join(parts)
    return body[: draw(st.integers(0, len(body)))] if draw(st.booleans()) else body


@settings(max_examples=300, deadline=None)
@given(body=bodies(), data=st.data())
def test_any_chunking_gives_the_same_summary(body: bytes, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=20))
    assert fed_in(body, cuts) == fed(body, max(len(body), 1))


@settings(max_examples=300, deadline=None)
@given(body=bodies() | st.binary(max_size=5000), data=st.data())
def test_the_walker_never_holds_more_than_a_few_bytes(body: bytes, data: st.DataObject) -> None:
    walker = FrameWalker()
    position = 0
    while position < len(body):
        size = data.draw(st.integers(1, 64))
        walker.feed(body[position : position + size])
        position += size
        assert walker.carried_bytes <= MAX_CARRY
    summary = walker.finish()
    assert summary.junk_bytes <= len(body)
