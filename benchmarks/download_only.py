"""The download-only bound, measured: the archiver's own Cradle client (same session, limiter and
streaming, hashing and fsync) lists and downloads what a pass would, and uploads nothing.

    python -m benchmarks.download_only --config F --from T --until T
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import timedelta
from pathlib import Path

from archiver import logs
from archiver.config import load_config
from archiver.cradle import CradleClient
from archiver.models import parse_time, walk
from archiver.spool import Spool

OVERLAP = timedelta(seconds=1)  # as the archive pass lists


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.download_only")
    parser.add_argument("--config", required=True)
    parser.add_argument("--from", dest="since", type=parse_time, required=True)
    parser.add_argument("--until", type=parse_time, required=True)
    args = parser.parse_args()
    logs.configure("json")  # as the archiver logs, so both pay the same per-recording cost
    config = load_config(args.config)
    client = CradleClient(config.cradle)
    seen = set()
    total = 0
    with tempfile.TemporaryDirectory(prefix="download-only-") as spool:
        for window in walk(args.since, args.until, config.archive.window):
            listing = client.list_recordings(window, window.start - OVERLAP, window.end + OVERLAP)
            for recording in listing.recordings:
                if recording.recording_id in seen:
                    continue
                seen.add(recording.recording_id)
                staged = client.download(recording, Spool(Path(spool)))
                total += staged.size
                staged.path.unlink()
    client.close()
    print(f"download-only: {len(seen)} recordings, {total} bytes")


if __name__ == "__main__":
    main()
