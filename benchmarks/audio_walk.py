"""The frame walker's CPU cost on a 100 MB body, fed the way the download feeds it (256 KiB chunks).

    python -m benchmarks.audio_walk [--megabytes 100] [--repeat 5]

The body is built in memory, so only the walk is timed (`time.process_time`, best of the
repeats): a constant-bitrate 128 kbps MPEG 1 stream at 44.1 kHz (the simulator's kind, and a
call recorder's), and, for comparison, two variable-bitrate ones whose bitrate is drawn anew
every 4 frames or every frame (from 64 to 320 kbps): where runs of equal headers are short, the
walker takes its per-frame path. Payloads are random bytes (the walker never reads them). SHA-256
of the same body is timed beside it, since the download hashes every byte anyway.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from archiver import logs
from archiver.audio import AudioSummary, FrameWalker
from archiver.config import CradleConfig
from archiver.cradle import CradleClient
from archiver.models import Window
from archiver.spool import Spool
from benchmarks.harness import API_KEY, CRADLE_ID, Period, start_simulator

MB = 2**20
CHUNK = 256 * 1024
SAMPLE_RATE = 44100
MPEG1_LAYER3_KBPS = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)


def frame(kbps: int, padded: bool, noise: bytes, offset: int) -> bytes:
    """One MPEG 1 Layer III frame at 44.1 kHz, stereo, no CRC, its payload cut from `noise`."""
    bitrate_index = MPEG1_LAYER3_KBPS.index(kbps) + 1
    header = bytes([0xFF, 0xFB, bitrate_index << 4 | int(padded) << 1, 0x00])
    length = 144_000 * kbps // SAMPLE_RATE + int(padded)
    return header + noise[offset : offset + length - 4]


def stream(size: int, choose_kbps: Callable[[int], int]) -> bytes:
    """Frames until `size` bytes; padded the way an encoder pads, to keep the exact bitrate."""
    rng = random.Random(1)
    noise = rng.randbytes(2 * MB)
    parts: list[bytes] = []
    built = remainder = index = 0
    while built < size:
        kbps = choose_kbps(index)
        remainder += 144_000 * kbps % SAMPLE_RATE
        padded = remainder >= SAMPLE_RATE
        remainder -= SAMPLE_RATE if padded else 0
        parts.append(frame(kbps, padded, noise, rng.randrange(MB)))
        built += len(parts[-1])
        index += 1
    return b"".join(parts)


def walk_cost(body: bytes, repeat: int) -> tuple[float, AudioSummary]:
    """Best CPU seconds of `repeat` walks, and the summary."""
    view = memoryview(body)
    chunks = [bytes(view[i : i + CHUNK]) for i in range(0, len(body), CHUNK)]
    best = float("inf")
    summary = None
    for _ in range(repeat):
        start = time.process_time()
        walker = FrameWalker()
        for chunk in chunks:
            walker.feed(chunk)
        summary = walker.finish()
        best = min(best, time.process_time() - start)
    assert summary is not None
    return best, summary


@dataclass(frozen=True)
class Share:
    download: float  # CPU seconds of the downloading thread, the walk included
    walk: float  # CPU seconds of walking the same body alone


def download_share(megabytes: int) -> Share:
    """The archiver's own client downloads one recording of `megabytes` from the simulator on
    loopback (stream, hash, walk, write, fsync), timed by the CPU of its own thread (the
    simulator serves from others); then the same body is walked alone."""
    logs.configure("json", "warning")
    period = Period.hours_back(1)
    sim = start_simulator(period, per_hour=1, size=megabytes * MB)
    try:
        client = CradleClient(CradleConfig(base_url=sim.base_url, id=CRADLE_ID, api_key=API_KEY))
        window = Window(period.start, period.end)
        (recording,) = client.list_recordings(window, window.start, window.end).recordings
        with tempfile.TemporaryDirectory(prefix="audio-walk-") as spool:
            start = time.thread_time()
            staged = client.download(recording, Spool(Path(spool)))
            download = time.thread_time() - start
            with staged.path.open("rb") as handle:
                chunks = list(iter(lambda: handle.read(CHUNK), b""))
        client.close()
    finally:
        sim.stop()
    start = time.thread_time()
    walker = FrameWalker()
    for chunk in chunks:
        walker.feed(chunk)
    walker.finish()
    return Share(download, time.thread_time() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.audio_walk")
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    size = args.megabytes * MB
    vbr_rng = random.Random(2)
    vbr_kbps = [vbr_rng.choice(MPEG1_LAYER3_KBPS[4:]) for _ in range(4096)]
    bodies = {
        "CBR 128 kbps": stream(size, lambda _: 128),
        "VBR, bitrate drawn every 4 frames": stream(size, lambda i: vbr_kbps[i // 4 % 4096]),
        "VBR, bitrate drawn every frame": stream(size, lambda i: vbr_kbps[i % 4096]),
    }
    share = download_share(args.megabytes)
    print(
        f"download of one {args.megabytes} MB recording from the simulator: {share.download:.3f} s"
        f" CPU in the downloading thread, of which the walk {share.walk:.3f} s"
        f" ({100 * share.walk / share.download:.1f} %; target under 10 %)"
    )
    for name, body in bodies.items():
        seconds, summary = walk_cost(body, args.repeat)
        start = time.process_time()
        hashlib.sha256(body).digest()
        sha_seconds = time.process_time() - start
        megabytes = len(body) / MB
        print(
            f"{name}: {megabytes:.0f} MB, {summary.frames} frames, {summary.seconds:.1f} s of audio;"
            f" walk {seconds:.3f} s CPU ({megabytes / seconds:,.0f} MB/s),"
            f" {seconds / megabytes * 100:.3f} s per 100 MB; sha256 {sha_seconds:.3f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
