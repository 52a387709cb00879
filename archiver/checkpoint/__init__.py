"""The SQLite checkpoint: the watermark, every recording seen, and what became of it.

The only package that imports sqlite3. One file in WAL mode; one writer at a time (an exclusive
flock on `<path>.lock`); short-lived readers (`status`, `verify`, `retry`) beside it, kept safe by
SQLite's locking and a 5 s busy timeout. Every write is one `BEGIN IMMEDIATE` transaction, so a
kill at any instant leaves the state of the last commit.

Durability is `synchronous=NORMAL`. In WAL mode a commit survives the process being killed (its
frames are in the WAL, in the OS page cache). Only a power loss or kernel crash can undo commits,
and then always the most recent ones, never one in the middle: WAL recovery stops at the first
frame whose chained checksum fails. That returns the archiver to a state it has already been in,
and every step from there is safe to redo: a recording back at pending is found in S3 by the
conditional write or HEAD (guarantee 2); a watermark back in time re-lists windows whose
recordings `add_listed` dedupes. A later commit (the watermark) never outlives an earlier one it
depends on (the recordings it covers), which is what guarantee 1 needs. FULL would add an fsync
per recording and buy nothing more.

One `Checkpoint` over one connection; its methods are grouped by what they keep:
schema.py (the tables, their invariants and migrations), files.py (the files on disk: lock,
modes, no links), connection.py (opening, one way to read and to write), recordings.py (the
watermark and the recordings), manifests.py, conversations.py (the call history's export),
holds.py and runs.py (passes, reconciliations, backfill cursors).
"""

from __future__ import annotations

from archiver.checkpoint.conversations import Conversations
from archiver.checkpoint.files import writer_lock
from archiver.checkpoint.holds import Holds
from archiver.checkpoint.manifests import Manifests
from archiver.checkpoint.recordings import Recordings
from archiver.checkpoint.runs import Runs
from archiver.checkpoint.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, migrate

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Checkpoint",
    "migrate",
    "writer_lock",
]


class Checkpoint(Recordings, Manifests, Conversations, Holds, Runs):
    """The archiver's durable state; open it with `Checkpoint.open`."""
