"""The MPEG audio frame walker: how much audio a body holds, learned while it streams to the spool.

The body is read once, as it arrives, and never held: the walker keeps counters, the position of
the next frame header as a number of bytes still to skip, and at most `MAX_CARRY` bytes of a
header (or of the first frame's info tag) that a chunk boundary cut. Any chunking of the same
body gives the same summary.

What it follows:
- ID3v2 tags at the start (syncsafe size, plus 10 when the footer flag is set), one after
  another; their bytes are neither audio nor junk.
- MPEG 1, 2 and 2.5 Layer III frames. The length comes from bitrate, sample rate and padding
  (144 * bitrate / rate + padding for MPEG 1, 72 * ... for 2 and 2.5); a frame holds 1152
  samples (MPEG 1) or 576. The fourth header byte is not checked, except the channel mode where
  the info tag is looked for. Free-format and bad bitrates, the reserved sample rate, the reserved
  version and the reserved layer are no header. Layers I and II are treated as junk too: a call
  recording is Layer III, and every extra layer accepted is one more way for junk to look like
  a frame.
- The Xing, Info or VBRI frame an encoder puts first: a valid frame that carries the stream's
  table of contents, not sound (decoders drop it), so its samples are not counted and it is not
  an audio frame. Its tag sits after the side information (at 4 + 17 or 32 bytes for MPEG 1,
  4 + 9 or 17 for MPEG 2 and 2.5, mono or not, as ffmpeg reads it) or, for VBRI, at byte 36:
  the first frame's first `INFO_SPAN` bytes are all it takes.
- An ID3v1 tag: the 128 bytes from a `TAG` where the frames break off, when the body ends
  exactly there. If more follows, they were junk.

Junk and resynchronisation: where a header should be and is not, the bytes up to the next 0xFF
(the only byte a header starts with) are junk, found by `bytes.find`, not a loop. A header found
after junk (or at the start) is a candidate until the next header confirms it: one with the same
version, layer and sample rate right where the candidate ends, or the end of the body. A
candidate the next header does not confirm is junk, and the search goes on from its end, not
from its second byte, since going back would mean keeping its bytes: a false sync costs at most
the one real frame it overlapped. Once confirmed, each valid header where the previous frame
ends is trusted, which is what keeps the common case fast.

Speed: a 100 MB body at 128 kbps is about 250,000 frames, and the walk must cost a small part of
the download. Each header is looked up in tables indexed by its second and third bytes (length
and duration, computed once), and a run of frames with the same header but for the padding bit
(a constant-bitrate stream is one long run) is matched by a compiled regular expression, which
checks every header of the run and skips every payload inside the regex engine: at most
length - 1 frames per match, so the byte count of the match gives the frame count exactly. No
payload is ever copied or looked at.

Durations are added up as integers, in ticks of 1 / 14,112,000 s (the least common multiple of
the nine sample rates), so `seconds` is the exact sum, rounded once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

TICKS_PER_SECOND = 14_112_000  # lcm(44100, 48000, 32000, 22050, 24000, 16000, 11025, 12000, 8000)
HEADER_SIZE = 4
ID3V2_HEADER_SIZE = 10
ID3V2_FOOTER_SIZE = 10
ID3V1_SIZE = 128
INFO_SPAN = 40  # the first frame's bytes that can hold a Xing, Info or VBRI tag
MAX_CARRY = max(INFO_SPAN, ID3V2_HEADER_SIZE) - 1  # the most the walker ever keeps of a body

# Header bits, by the values they take in the second byte (version, layer) and third (the rest).
_MPEG1, _MPEG2, _MPEG25 = 0b11, 0b10, 0b00  # 0b01 is reserved
_LAYER3 = 0b01
_KBPS = {  # by bitrate index; 0 (free format) and 15 (bad) are no bitrate
    _MPEG1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0),
    _MPEG2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0),
}
_SAMPLE_RATES = {  # by sample-rate index; 3 is reserved
    _MPEG1: (44100, 48000, 32000),
    _MPEG2: (22050, 24000, 16000),
    _MPEG25: (11025, 12000, 8000),
}
_RUN_MASK = 0xFFFC  # a run's frames differ at most in the padding and private bits
_STREAM_MASK = 0x1E0C  # version, layer and sample rate: what a confirming header must share
_FRAME_SYNC = 0xFF


def _frame_tables() -> tuple[list[int], list[int]]:
    """Frame length in bytes and duration in ticks, by the header's second and third bytes.

    0 marks what is no Layer III header; 64 K entries each, so a lookup is one list index.
    """
    lengths = [0] * 65536
    ticks = [0] * 65536
    for version, rates in _SAMPLE_RATES.items():
        mpeg1 = version == _MPEG1
        kbps_by_index = _KBPS[_MPEG1 if mpeg1 else _MPEG2]
        bytes_per_kbps = 144_000 if mpeg1 else 72_000
        samples = 1152 if mpeg1 else 576
        for protection in (0, 1):
            second = 0xE0 | version << 3 | _LAYER3 << 1 | protection
            for bitrate_index, kbps in enumerate(kbps_by_index):
                for rate_index, rate in enumerate(rates):
                    for low_bits in range(4):  # padding, private
                        if kbps:
                            key = second << 8 | bitrate_index << 4 | rate_index << 2 | low_bits
                            lengths[key] = bytes_per_kbps * kbps // rate + (low_bits >> 1)
                            ticks[key] = samples * (TICKS_PER_SECOND // rate)
    return lengths, ticks


_LENGTHS, _TICKS = _frame_tables()
_RunMatch = Callable[[bytes, int], re.Match[bytes] | None]
_RUNS: dict[int, _RunMatch] = {}  # compiled on first use; at most one per valid header, masked


def _run_matcher(run: int) -> _RunMatch:
    """`match(buffer, position)` for the longest run of whole frames whose headers equal `run`
    but for padding and private bits, up to length - 1 of them, so bytes // length is the count.
    """
    matcher = _RUNS.get(run)
    if matcher is None:
        length = _LENGTHS[run]
        second, third = run >> 8, run & 0xFF

        def header(padding: int) -> bytes:
            thirds = re.escape(bytes([third | padding])) + re.escape(bytes([third | padding | 1]))
            return b"\xff" + re.escape(bytes([second])) + b"[" + thirds + b"]"

        unpadded, padded = header(0) + b".{%d}" % (length - 3), header(2) + b".{%d}" % (length - 2)
        source = b"(?:%s|%s){1,%d}+" % (unpadded, padded, length - 1)
        matcher = _RUNS[run] = re.compile(source, re.DOTALL).match
    return matcher


def _id3v2_size(buffer: bytes, position: int) -> int | None:
    """The whole size of the ID3v2 tag starting at `position`, or None if none starts there."""
    head = buffer[position : position + ID3V2_HEADER_SIZE]
    if len(head) < ID3V2_HEADER_SIZE or not head.startswith(b"ID3"):
        return None
    major, revision, flags = head[3], head[4], head[5]
    if major == 0xFF or revision == 0xFF or any(byte & 0x80 for byte in head[6:]):
        return None
    size = head[6] << 21 | head[7] << 14 | head[8] << 7 | head[9]
    footer = ID3V2_FOOTER_SIZE if flags & 0x10 else 0
    return ID3V2_HEADER_SIZE + size + footer


def _is_info_frame(buffer: bytes, position: int, length: int) -> bool:
    """Whether the frame at `position` carries a Xing, Info or VBRI tag (needs its first
    min(length, INFO_SPAN) bytes)."""
    mpeg1 = (buffer[position + 1] >> 3) & 0b11 == _MPEG1
    mono = buffer[position + 3] >> 6 == 0b11
    side_info = (17 if mono else 32) if mpeg1 else (9 if mono else 17)
    xing = position + HEADER_SIZE + side_info
    end = position + length
    if xing + 4 <= end and buffer[xing : xing + 4] in (b"Xing", b"Info"):
        return True
    return position + 40 <= end and buffer[position + 36 : position + 40] == b"VBRI"


@dataclass(frozen=True)
class AudioSummary:
    """What the walk found in one body.

    `frames` and `seconds` count audio frames only: not the Xing, Info or VBRI frame
    (`info_frame`), nor a last frame the body cut short (`partial_last_frame`; its bytes are not
    junk either). `has_audio` is `frames > 0`: a body of tags, junk or an info frame alone has
    none. `junk_bytes` are the bytes in no tag and no frame.
    """

    seconds: float
    frames: int
    junk_bytes: int
    partial_last_frame: bool
    has_audio: bool
    info_frame: bool = False


class _Span(Enum):
    """What the walk last went into: the next header position is right after it."""

    START = "start"  # nothing yet: an ID3v2 tag may begin here
    TAG = "tag"  # an ID3v2 tag: another may follow
    JUNK = "junk"  # junk, or the start of the frames: a header next is only a candidate
    CANDIDATE = "candidate"  # a frame found after junk, awaiting the next header
    FRAME = "frame"  # an accepted frame: a valid header next is trusted
    ID3V1 = "id3v1"  # the 128 bytes from a "TAG" where frames broke off


class FrameWalker:
    """Walks one body's frames as it streams: `feed` each chunk, then `finish` once."""

    def __init__(self) -> None:
        self._last = _Span.START
        self._skip = 0  # bytes of the last span still to come
        self._carry = b""  # the start of a header position a chunk cut (at most MAX_CARRY)
        self._frames = 0
        self._ticks = 0
        self._junk = 0
        self._found_frame = False  # a frame (audio or info) accepted: the info tag is behind
        self._info_frame = False
        self._partial = False
        self._candidate = 0  # the candidate's header key, while `_last` is CANDIDATE
        self._candidate_is_info = False
        self._open_frame = 0  # the key of the accepted frame `_skip` is inside
        self._run = -1  # the last frame's header key, masked: the run the next may continue
        self._summary: AudioSummary | None = None

    @property
    def carried_bytes(self) -> int:
        """Bytes of the body the walker holds between chunks (never more than MAX_CARRY)."""
        return len(self._carry)

    def feed(self, chunk: bytes) -> None:
        if self._summary is not None:
            raise ValueError("the walk is finished")
        if not isinstance(chunk, bytes | bytearray):
            chunk = bytes(chunk)  # a memoryview has no find()
        if self._skip >= len(chunk):
            self._skip -= len(chunk)
            return
        if self._carry:  # never together with a skip: a carry is at a header position
            chunk, self._carry = self._carry + chunk, b""
        position, self._skip = self._skip, 0
        self._walk(chunk, position, final=False)

    def finish(self) -> AudioSummary:
        """The summary of the body fed so far, which has ended."""
        if self._summary is not None:
            return self._summary
        if self._carry:
            carried, self._carry = self._carry, b""
            self._walk(carried, 0, final=True)
        if self._skip:  # the body ended inside the last span
            if self._last is _Span.FRAME:
                self._partial = True
                self._frames -= 1
                self._ticks -= _TICKS[self._open_frame]
            elif self._last is _Span.CANDIDATE:
                self._junk += _LENGTHS[self._candidate] - self._skip
            elif self._last is _Span.ID3V1:
                self._junk += ID3V1_SIZE - self._skip
        elif self._last is _Span.CANDIDATE:  # ended right after it: as good as a next header
            self._confirm_candidate()
        self._summary = AudioSummary(
            seconds=self._ticks / TICKS_PER_SECOND,
            frames=self._frames,
            junk_bytes=self._junk,
            partial_last_frame=self._partial,
            has_audio=self._frames > 0,
            info_frame=self._info_frame,
        )
        return self._summary

    def _walk(self, buffer: bytes, position: int, *, final: bool) -> None:
        end = len(buffer)
        while position < end:
            if self._last is _Span.FRAME:
                position = self._follow(buffer, position)
                if position >= end:
                    break
            next_position = self._step(buffer, position, final=final)
            if next_position is None:  # the header position is cut: kept for the next chunk
                self._carry = bytes(buffer[position:])
                return
            position = next_position
        self._skip = position - end

    def _follow(self, buffer: bytes, position: int) -> int:
        """Accepts frames while a valid header sits where the previous frame ends: the hot path.

        Returns where it stopped: a position that holds no valid header, fewer than
        HEADER_SIZE bytes before the end, or past the end, inside the last frame.
        """
        # Locals, not globals or attributes: this loop runs once per frame outside long runs.
        lengths, ticks_by_key, runs = _LENGTHS, _TICKS, _RUNS
        run_mask, sync = _RUN_MASK, _FRAME_SYNC
        frames, ticks, run = self._frames, self._ticks, self._run
        key = 0
        limit = len(buffer) - (HEADER_SIZE - 1)
        while position < limit:
            if buffer[position] != sync:
                break
            key = buffer[position + 1] << 8 | buffer[position + 2]
            length = lengths[key]
            if not length:
                break
            if key & run_mask != run:
                run = key & run_mask  # a second frame like this one starts a run
            else:
                matched = (runs.get(run) or _run_matcher(run))(buffer, position)
                if matched:
                    run_end = matched.end()
                    count = (run_end - position) // lengths[run]
                    frames += count
                    ticks += count * ticks_by_key[key]
                    position = run_end
                    continue
            frames += 1
            ticks += ticks_by_key[key]
            position += length
        self._frames, self._ticks, self._run = frames, ticks, run
        if position > len(buffer):  # the last frame counted goes on in the next chunk
            self._open_frame = key
        return position

    def _step(self, buffer: bytes, position: int, *, final: bool) -> int | None:
        """Decides what starts at `position` when the hot path cannot; returns where the next
        decision is due, or None when more bytes are needed (and the body has not ended)."""
        available = len(buffer) - position
        if self._last in (_Span.START, _Span.TAG):
            if available < ID3V2_HEADER_SIZE and not final:
                return None
            tag_size = _id3v2_size(buffer, position)
            if tag_size is not None:
                self._last = _Span.TAG
                return position + tag_size
            self._last = _Span.JUNK
        if available < HEADER_SIZE:
            if not final:
                return None
            self._end_in_header(buffer, position)
            return len(buffer)
        key = buffer[position + 1] << 8 | buffer[position + 2]
        length = _LENGTHS[key] if buffer[position] == _FRAME_SYNC else 0
        if not length:
            return self._skip_junk(buffer, position)
        confirms = (
            self._last is _Span.CANDIDATE and key & _STREAM_MASK == self._candidate & _STREAM_MASK
        )
        if self._last is _Span.FRAME or confirms:
            if confirms:
                self._confirm_candidate()
            return self._accept(key, position)
        return self._hold_candidate(buffer, position, key, final=final)

    def _hold_candidate(self, buffer: bytes, position: int, key: int, *, final: bool) -> int | None:
        """A valid header that follows no frame: held until a second one like it confirms it.
        The first one may be the info frame, which takes its first bytes to tell."""
        length = _LENGTHS[key]
        available = len(buffer) - position
        info_span = min(length, INFO_SPAN) if not self._found_frame else HEADER_SIZE
        if available < info_span:
            if not final:
                return None
            self._drop_pending()
            self._junk += available  # a candidate the body cuts short
            return len(buffer)
        self._drop_pending()
        self._last = _Span.CANDIDATE
        self._candidate = key
        self._candidate_is_info = not self._found_frame and _is_info_frame(buffer, position, length)
        return position + length

    def _accept(self, key: int, position: int) -> int:
        self._frames += 1
        self._ticks += _TICKS[key]
        self._open_frame = key
        self._last = _Span.FRAME
        return position + _LENGTHS[key]

    def _confirm_candidate(self) -> None:
        self._found_frame = True
        if self._candidate_is_info:
            self._info_frame = True
        else:
            self._frames += 1
            self._ticks += _TICKS[self._candidate]
        self._last = _Span.JUNK

    def _drop_pending(self) -> None:
        """What comes next disproves the candidate or the ID3v1 guess before it: junk."""
        if self._last is _Span.CANDIDATE:
            self._junk += _LENGTHS[self._candidate]
        elif self._last is _Span.ID3V1:
            self._junk += ID3V1_SIZE
        self._last = _Span.JUNK

    def _skip_junk(self, buffer: bytes, position: int) -> int:
        """Where a header should be and is not: junk up to the next possible header."""
        if self._last is _Span.FRAME and buffer.startswith(b"TAG", position):
            self._last = _Span.ID3V1
            return position + ID3V1_SIZE
        self._drop_pending()
        sync = buffer.find(b"\xff", position + 1)
        junk_end = len(buffer) if sync < 0 else sync
        self._junk += junk_end - position
        return junk_end

    def _end_in_header(self, buffer: bytes, position: int) -> None:
        """The body ends fewer than HEADER_SIZE bytes after a header position. After a frame, a
        frame sync there is the start of a frame the body cut short; anything else is junk."""
        if self._last in (_Span.FRAME, _Span.CANDIDATE) and buffer[position] == _FRAME_SYNC:
            if self._last is _Span.CANDIDATE:
                self._confirm_candidate()
            self._partial = True
            self._last = _Span.JUNK
            return
        self._drop_pending()
        self._junk += len(buffer) - position


# `durationSeconds` and the walked length may differ by the larger of these before it counts.
MISMATCH_SECONDS = 2.0
MISMATCH_FRACTION = 0.02


def mismatched(duration_seconds: float | None, audio_seconds: float) -> bool:
    """The audio is further from the listed duration than rounding and encoder padding explain.
    Without a listed duration there is nothing to compare."""
    if duration_seconds is None:
        return False
    tolerance = max(MISMATCH_SECONDS, MISMATCH_FRACTION * duration_seconds)
    return abs(audio_seconds - duration_seconds) > tolerance


def walk(chunks: Iterable[bytes]) -> AudioSummary:
    """The summary of a body given as chunks (a body on disk, read again)."""
    walker = FrameWalker()
    for chunk in chunks:
        walker.feed(chunk)
    return walker.finish()
