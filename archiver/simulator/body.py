"""MP3-looking bodies generated chunk by chunk, so any size streams in constant memory.

A body is an ID3v2.3 tag (one TIT2 frame) followed by MPEG-1 Layer III frames at 44.1 kHz,
joint stereo: each a 4-byte header starting with the 0xFF 0xFB sync, then pseudo-random payload.
Each 64 KiB chunk is generated from its own seed, so the server, `iter_body` and `body_sha256`
agree byte for byte without ever holding a whole body.

- CBR (the default): every frame is 128 kbps, 417 bytes.
- VBR: after the tag, a Xing frame, as LAME writes it first (frame count, stream bytes, a
  table of contents and a quality; no LAME extension), then audio frames whose bitrate goes
  round `VBR_CYCLE`. The Xing frame's frame count is the number of whole audio frames the body
  holds, so it is computed once from the size before the first chunk.

Both are a fixed head (the tag, and the Xing frame) then frames whose lengths repeat with a
period (one frame, or one cycle), so the headers are stamped column by column either way.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Iterator
from itertools import accumulate
from typing import NamedTuple

CHUNK_SIZE = 64 * 1024
FRAME_HEADER = b"\xff\xfb\x90\x64"
# 144 * 128000 / 44100, rounded down: the length of an unpadded 128 kbps frame.
FRAME_LENGTH = 417
SAMPLE_RATE = 44_100
SAMPLES_PER_FRAME = 1152  # MPEG-1 Layer III

# VBR: (kbps, padded) frame after frame, round and round. The 192 pair and the 96 pair across
# the wrap are runs (the walker's fast path), the padded one a padding bit inside a run.
VBR_CYCLE = (
    (96, False),
    (128, False),
    (160, False),
    (192, False),
    (192, True),
    (160, False),
    (128, False),
    (96, False),
)
_BITRATE_INDEX = {96: 7, 128: 9, 160: 10, 192: 11}  # MPEG-1 Layer III
_FOURTH_BYTE = FRAME_HEADER[3]  # joint stereo, original, no emphasis
_XING_FLAGS = 0x0F  # frames, bytes, table of contents, quality: all LAME writes
_XING_OFFSET = 4 + 32  # header, then MPEG-1 stereo side information
_XING_QUALITY = 50


class _Layout(NamedTuple):
    """Where frame headers go: (offset, byte) columns repeating every `period` bytes."""

    columns: tuple[tuple[int, int], ...]
    period: int


def _header(kbps: int, padded: bool) -> bytes:
    third = _BITRATE_INDEX[kbps] << 4 | padded << 1  # sample-rate index 0: 44.1 kHz
    return bytes((0xFF, 0xFB, third, _FOURTH_BYTE))


def _length(kbps: int, padded: bool) -> int:
    return 144_000 * kbps // SAMPLE_RATE + padded


_VBR_LENGTHS = tuple(_length(kbps, padded) for kbps, padded in VBR_CYCLE)
_VBR_STARTS = (0, *accumulate(_VBR_LENGTHS))[:-1]  # each cycle position's offset
_VBR_ENDS = tuple(accumulate(_VBR_LENGTHS))
VBR_CYCLE_LENGTH = _VBR_ENDS[-1]
_CBR_LAYOUT = _Layout(tuple(enumerate(FRAME_HEADER)), FRAME_LENGTH)
_VBR_LAYOUT = _Layout(
    tuple(
        (start + offset, value)
        for start, (kbps, padded) in zip(_VBR_STARTS, VBR_CYCLE, strict=True)
        for offset, value in enumerate(_header(kbps, padded))
    ),
    VBR_CYCLE_LENGTH,
)


def id3_tag(title: str) -> bytes:
    """An ID3v2.3 tag holding only a title, the way recorders stamp their files."""
    text = b"\x00" + title.encode("latin-1", "replace")  # 0x00: ISO-8859-1 encoding byte
    frame = b"TIT2" + len(text).to_bytes(4, "big") + b"\x00\x00" + text
    return b"ID3\x03\x00\x00" + _syncsafe(len(frame)) + frame


def _syncsafe(n: int) -> bytes:
    # ID3 sizes keep the top bit of each byte clear so no 0xFF can fake a frame sync.
    return bytes(((n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F))


def _title(recording_id: str) -> str:
    return f"Cradle recording {recording_id}"


def _vbr_audio_bytes(frames: int) -> int:
    """The bytes of the first `frames` VBR audio frames."""
    cycles, position = divmod(frames, len(VBR_CYCLE))
    return cycles * VBR_CYCLE_LENGTH + _VBR_STARTS[position]


def _vbr_whole_frames(audio_bytes: int) -> int:
    """How many whole VBR audio frames `audio_bytes` hold."""
    cycles, rest = divmod(audio_bytes, VBR_CYCLE_LENGTH)
    return cycles * len(VBR_CYCLE) + bisect_right(_VBR_ENDS, rest)


def vbr_body_size(recording_id: str, seconds: float) -> int:
    """The size of a VBR body whose audio lasts `seconds`, to the nearest frame, and ends on
    a frame boundary: the tag, the Xing frame and round(seconds * 44100 / 1152) frames."""
    frames = round(seconds * SAMPLE_RATE / SAMPLES_PER_FRAME)
    return len(id3_tag(_title(recording_id))) + FRAME_LENGTH + _vbr_audio_bytes(frames)


def audio_frames(recording_id: str, size: int, *, vbr: bool = False) -> int:
    """The whole audio frames in the body `iter_body` makes: not the Xing frame, nor a last
    frame the size cuts short. Each lasts SAMPLES_PER_FRAME / SAMPLE_RATE seconds."""
    stream_bytes = max(size - len(id3_tag(_title(recording_id))), 0)
    if vbr:
        return _vbr_whole_frames(max(stream_bytes - FRAME_LENGTH, 0))
    return stream_bytes // FRAME_LENGTH


def xing_frame(frames: int, stream_bytes: int) -> bytes:
    """A 128 kbps frame holding a Xing tag for `frames` audio frames in `stream_bytes` bytes
    (this frame included), where LAME puts it: right after the stereo side information.

    Its table of contents gives, for each percent of the duration, the position of the frame
    playing then, in 256ths of the audio frames' bytes (as LAME counts them: after this frame).
    """
    audio_bytes = max(stream_bytes - FRAME_LENGTH, 1)
    toc = bytes(
        min(255, 256 * _vbr_audio_bytes(i * frames // 100) // audio_bytes) for i in range(100)
    )
    tag = b"".join(
        (
            b"Xing",
            _XING_FLAGS.to_bytes(4, "big"),
            frames.to_bytes(4, "big"),
            stream_bytes.to_bytes(4, "big"),
            toc,
            _XING_QUALITY.to_bytes(4, "big"),
        )
    )
    frame = FRAME_HEADER + bytes(_XING_OFFSET - len(FRAME_HEADER)) + tag
    return frame + bytes(FRAME_LENGTH - len(frame))


def iter_body(seed: int, recording_id: str, size: int, *, vbr: bool = False) -> Iterator[bytes]:
    """The exact bytes served for a recording, in chunks of at most CHUNK_SIZE."""
    tag = id3_tag(_title(recording_id))
    head, layout = tag, _CBR_LAYOUT
    if vbr:
        frames = audio_frames(recording_id, size, vbr=True)
        stream_bytes = max(size - len(tag), 0)  # the Xing frame's and the audio's
        head, layout = tag + xing_frame(frames, stream_bytes), _VBR_LAYOUT
    for chunk_no in range((size + CHUNK_SIZE - 1) // CHUNK_SIZE):
        start = chunk_no * CHUNK_SIZE
        length = min(CHUNK_SIZE, size - start)
        rng = random.Random(f"{seed}:{recording_id}:{chunk_no}")
        chunk = bytearray(rng.randbytes(length))
        if start < len(head):
            piece = head[start : start + length]
            chunk[: len(piece)] = piece
        _stamp_frame_headers(chunk, start, len(head), layout)
        yield bytes(chunk)


def _stamp_frame_headers(chunk: bytearray, start: int, audio_start: int, layout: _Layout) -> None:
    """Write the frame headers that fall inside this chunk, one byte column at a time.

    Extended-slice assignment does a whole chunk's worth of one column in C, which keeps the
    generator well above 100 MB/s; a header split across two chunks is handled because each
    of its four bytes is placed independently.
    """
    end = start + len(chunk)
    period = layout.period
    for offset, value in layout.columns:
        first = audio_start + offset
        if first < start:
            first += -(-(start - first) // period) * period
        if first >= end:
            continue
        positions = range(first - start, len(chunk), period)
        chunk[positions.start :: period] = bytes((value,)) * len(positions)


def canary_body() -> bytes:
    """A small but plausible MP3, so a client that follows a bad url sees 'success'."""
    return b"".join(iter_body(0, "canary", 2 * 1024))
