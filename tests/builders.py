"""Builders shared by every test tier: real MP3 bodies, and the recordings that name them."""

from __future__ import annotations

from archiver.simulator.body import iter_body


def mp3(size: int = 10_240, name: str = "test") -> bytes:
    """A real MP3 of `size` bytes: an ID3v2 tag, then MPEG-1 Layer III frames (128 kbps,
    44.1 kHz), the same bytes the simulator serves; the same for the same name."""
    return b"".join(iter_body(7, name, size))
