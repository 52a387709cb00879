"""The peer: the archiver a first attempt would be. Serial; `time.sleep(0.1)` after every request
to respect 10 requests a second; each body read whole into memory with `requests.get(...).content`
(a new connection each time); one boto3 `put_object` per recording, holding the body in memory.

It writes the same keys and metadata as cradle-archiver (using its layout module), so both do
the same S3 work per recording; what differs is how they pace, stream and overlap.

    python -m benchmarks.naive --base-url URL --id ID --from T --until T --bucket B --endpoint URL
(the API key comes from $CRADLE_API_KEY).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from datetime import datetime, timedelta
from typing import Any

import boto3
import requests

from archiver import layout
from archiver.models import Recording, format_time, parse_time

PAUSE = 0.1  # seconds after every request: 10 requests a second at most, or so it hopes
WINDOW = timedelta(hours=1)


def archive(
    base_url: str,
    cradle_id: str,
    api_key: str,
    since: datetime,
    until: datetime,
    s3: Any,
    bucket: str,
    prefix: str = "calls/",
) -> int:
    """List [since, until) an hour at a time, then fetch and upload each recording; the count."""
    headers = {"CRADLE_ID": cradle_id, "CRADLE_API_KEY": api_key}
    recordings: dict[str, Recording] = {}
    cursor = since
    while cursor < until:
        end = min(cursor + WINDOW, until)
        params = {"from": format_time(cursor), "until": format_time(end)}
        response = requests.get(
            f"{base_url}/api/v1/public/recordings", params=params, headers=headers, timeout=60
        )
        time.sleep(PAUSE)
        response.raise_for_status()
        for entry in response.json()["recordings"]:
            recording = Recording.from_api(entry)
            recordings[recording.recording_id] = recording
        cursor = end
    for recording in recordings.values():
        response = requests.get(recording.url, headers=headers, timeout=60)
        time.sleep(PAUSE)
        response.raise_for_status()
        body = response.content
        sha256 = hashlib.sha256(body).hexdigest()
        s3.put_object(
            Bucket=bucket,
            Key=layout.object_key(prefix, recording),
            Body=body,
            ContentType="audio/mpeg",
            Metadata=layout.object_metadata(recording, sha256),
        )
    return len(recordings)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.naive")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--from", dest="since", type=parse_time, required=True)
    parser.add_argument("--until", type=parse_time, required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--endpoint", required=True)
    args = parser.parse_args()
    s3 = boto3.client("s3", endpoint_url=args.endpoint, region_name="us-east-1")
    count = archive(
        args.base_url,
        args.id,
        os.environ["CRADLE_API_KEY"],
        args.since,
        args.until,
        s3,
        args.bucket,
    )
    print(f"naive: {count} archived")


if __name__ == "__main__":
    main()
