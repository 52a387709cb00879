"""The call history end to end: `run --once` against the simulator and moto's S3, then the
exported parts audited object by object, queried with DuckDB, and reconciled.

One simulator and two passes serve every test. A share of its conversations changes once, an
hour after start-up by the simulator's own clock; the clock is moved two hours on between the
passes, so the first pass exports every conversation at revision 1 and the second (whose
lookback lists the calls again) the changed ones at revision 2. No test waits for time to pass.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import duckdb
import pytest

from archiver.simulator import Simulator
from archiver.simulator.conversations import SimConversation
from tests.e2e.harness import ROOT, Bucket, cli, simulator_options, write_config

pytestmark = pytest.mark.e2e

PREFIX = "calls/conversations/"
UPDATE_DELAY = timedelta(hours=1)
EXPORTED_FIELDS = ("schema_version", "revision", "archived_at")
_PART = re.compile(
    r"^calls/conversations/year=(\d{4})/month=(\d{2})/day=(\d{2})/"
    r"part-(\d{8}T\d{6}Z)-([0-9a-f]{12})\.jsonl\.gz$"
)


@dataclass
class ShiftedClock:
    """Real time, `offset` ahead: the simulator's clock."""

    offset: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Export:
    sim: Simulator
    clock: ShiftedClock
    bucket: Bucket
    config: Path
    since: datetime  # archive.start: the simulator's first call time
    first: dict[str, bytes]  # the parts after the first pass: key -> body
    final: dict[str, bytes]  # after the second

    def truth(self) -> dict[str, SimConversation]:
        """uuid -> conversation, of those the simulator lists now."""
        now = self.clock()
        return {c.uuid: c for c in self.sim.conversations(self.since) if c.revision_at(now) > 0}


def parts(bucket: Bucket) -> dict[str, bytes]:
    return {
        key: bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read()
        for key in bucket.object_keys()
        if key.startswith(PREFIX)
    }


def run_once(config: Path) -> float:
    started = time.monotonic()
    done = cli("run", "--once", config=config)
    assert done.returncode == 0, done.stderr[-3000:]
    return time.monotonic() - started


@pytest.fixture(scope="module")
def export(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Export]:
    # Module-scoped, so before the autouse fixture sets fake credentials: given here, to moto.
    client = boto3.client(
        "s3",
        endpoint_url=moto_server,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    bucket = Bucket(f"e2e-conversations-{os.getpid()}", moto_server, client)
    client.create_bucket(Bucket=bucket.name)
    clock = ShiftedClock()
    options = simulator_options(
        conversation_updates=0.3,
        conversation_update_delay=UPDATE_DELAY.total_seconds(),
        clock=clock,
    )
    assert options.start is not None
    sim = Simulator(options).start()
    try:
        # From the first call time itself (calls without a recording may come before the first
        # recording); a 6 h lookback lists every call again on the second pass.
        config = write_config(
            tmp_path_factory.mktemp("conversations") / "config.toml",
            sim,
            bucket,
            archive={"start": f"{options.start:%Y-%m-%dT%H:%M:%SZ}", "window": "6h"},
        )
        first_seconds = run_once(config)
        first = parts(bucket)
        clock.offset = 2 * UPDATE_DELAY  # the changes are listed from here on
        second_seconds = run_once(config)
        print(f"\nrun --once: {first_seconds:.1f}s, again after the changes: {second_seconds:.1f}s")
        yield Export(sim, clock, bucket, config, options.start, first, parts(bucket))
    finally:
        sim.stop()


def lines(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress(body).splitlines()]


def audited(found: dict[str, bytes]) -> Counter[tuple[str, int]]:
    """Each part checked (name, gzip, partition, fields); (uuid, revision) -> lines naming it."""
    seen: Counter[tuple[str, int]] = Counter()
    for key, body in found.items():
        match = _PART.match(key)
        assert match, key
        year, month, day, _, short = match.groups()
        assert short == hashlib.sha256(body).hexdigest()[:12], f"{key}: not keyed by its content"
        for line in lines(body):  # gzip.decompress checks the CRC and length: a valid gzip
            started = datetime.fromisoformat(line["startedAt"]).astimezone(UTC)
            assert started.date() == date(int(year), int(month), int(day)), (key, line["uuid"])
            assert line["schema_version"] == 1 and line["revision"] >= 1
            datetime.fromisoformat(line["archived_at"])
            seen[line["uuid"], line["revision"]] += 1
    return seen


def test_every_conversation_is_exported_once_at_each_revision(export: Export) -> None:
    truth = export.truth()
    changed = {uuid for uuid, c in truth.items() if c.revision == 2}
    assert changed and len(changed) < len(truth), "the seed should change some, not all"
    assert any(not c.recording_ids for c in truth.values()), "and have calls without recordings"
    assert any(len(c.recording_ids) == 2 for c in truth.values()), "and transfers"

    # The first pass: every conversation once, at revision 1 (the changes were not listed yet).
    assert audited(export.first) == Counter({(uuid, 1): 1 for uuid in truth})
    # The second: the changed ones once more, at revision 2; the first parts untouched.
    final = audited(export.final)
    assert final == Counter(
        {(uuid, r): 1 for uuid, c in truth.items() for r in (1, 2)[: c.revision]}
    )
    assert {k: export.final[k] for k in export.first} == export.first

    # Each line is the API's object, plus our three fields.
    for body in export.final.values():
        for line in lines(body):
            conversation = truth[line["uuid"]]
            api_object = {k: v for k, v in line.items() if k not in EXPORTED_FIELDS}
            assert api_object == conversation.versions[line["revision"] - 1].entry

    status = json.loads(cli("status", "--json", config=export.config).stdout)
    assert status["conversations"] == len(truth)


@pytest.fixture(scope="module")
def local_copy(export: Export, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding `conversations/`: the prefix as `aws s3 sync` copies it down."""
    root = tmp_path_factory.mktemp("copy")
    for key, body in export.final.items():
        path = root / "conversations" / key.removeprefix(PREFIX)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return root


def duckdb_in(root: Path) -> duckdb.DuckDBPyConnection:
    """DuckDB with relative paths read from `root`, in UTC (a startedAt's date is its UTC one)."""
    db = duckdb.connect()
    db.execute("SET TimeZone = 'UTC'")
    db.execute("SET file_search_path = ?", [str(root)])
    return db


# Each uuid at its highest revision, as the task gives it.
LATEST = """
CREATE VIEW latest AS
SELECT * FROM read_json_auto('conversations/**/*.jsonl.gz', hive_partitioning = true)
QUALIFY row_number() OVER (PARTITION BY uuid ORDER BY revision DESC) = 1
"""


def test_duckdb_reads_the_export_as_a_partitioned_table(export: Export, local_copy: Path) -> None:
    db = duckdb_in(local_copy)
    db.execute(LATEST)
    by_kind = db.sql(
        "SELECT nature, status, count(*) AS calls FROM latest GROUP BY ALL ORDER BY ALL"
    )
    print(f"\n{by_kind}")
    totals = db.sql(
        "SELECT count(*) AS conversations, count(DISTINCT uuid) AS uuids,"
        " count(*) FILTER (revision = 2) AS at_revision_2,"
        " count(*) FILTER (CAST(startedAt AS DATE) <> make_date(year, month, day)) AS misfiled"
        " FROM latest"
    )
    print(totals)

    truth = export.truth()
    [(conversations, uuids, at_revision_2, misfiled)] = totals.fetchall()
    assert (conversations, uuids, misfiled) == (len(truth), len(truth), 0)
    assert at_revision_2 == sum(1 for c in truth.values() if c.revision == 2)
    revisions = dict(db.sql("SELECT uuid::VARCHAR, revision FROM latest").fetchall())
    assert revisions == {uuid: c.revision for uuid, c in truth.items()}
    expected = Counter((c.nature, c.status) for c in truth.values())
    assert {(n, s): calls for n, s, calls in by_kind.fetchall()} == expected


def documented_queries() -> dict[str, str]:
    """docs/athena.md's DuckDB queries by name: each ```sql block after `<!-- duckdb: NAME -->`."""
    text = (ROOT / "docs" / "athena.md").read_text()
    return dict(re.findall(r"<!-- duckdb: (\w+) -->\n```sql\n(.*?)```", text, re.DOTALL))


def test_the_duckdb_queries_in_the_docs_answer_as_the_simulator_says(
    export: Export, local_copy: Path
) -> None:
    queries = documented_queries()
    assert set(queries) == {
        "view", "calls_per_agent", "missed_inbound", "recordings_per_conversation"
    }  # fmt: skip
    db = duckdb_in(local_copy)
    db.execute(queries["view"])
    now = export.clock()
    calls = [c.entry_at(now) | {"day": c.started_at.date()} for c in export.truth().values()]

    per_agent: Counter[tuple[date, str]] = Counter()
    seconds: Counter[tuple[date, str]] = Counter()
    for call in calls:
        for user in call["users"]:
            if user["status"] in ("answered", "dialled"):
                per_agent[call["day"], user["email"]] += 1
                seconds[call["day"], user["email"]] += user["durationSeconds"]
    rows = db.sql(queries["calls_per_agent"]).fetchall()
    assert {(day, agent): n for day, agent, n, _ in rows} == per_agent
    assert {(day, agent): s for day, agent, _, s in rows} == seconds

    missed = db.sql(queries["missed_inbound"]).fetchall()
    assert missed, "the seed should have missed inbound calls"
    assert sorted(
        (started.isoformat(), status, rang) for started, status, _, _, rang in missed
    ) == sorted(
        (
            datetime.fromisoformat(call["startedAt"]).isoformat(),
            call["status"],
            [user["email"] for user in call["users"]],
        )
        for call in calls
        if call["nature"] == "in" and call["status"] in ("missed", "voicemail")
    )

    named = {
        uuid: ids for uuid, _, _, ids in db.sql(queries["recordings_per_conversation"]).fetchall()
    }
    assert named == {c.uuid: list(c.recording_ids) for c in export.truth().values()}


def test_reconcile_finds_every_recording_a_conversation_names(export: Export) -> None:
    until = datetime.now(UTC).replace(microsecond=0)
    done = cli(
        "reconcile", "--from", f"{export.since:%Y-%m-%dT%H:%M:%SZ}", "--until",
        f"{until:%Y-%m-%dT%H:%M:%SZ}", "--json", config=export.config,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["differences"] == []
    assert report["counts"]["conversation_recording_missing"] == 0
    assert report["conversations"] == len(export.truth())
