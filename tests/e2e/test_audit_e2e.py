"""`audit` through the real CLI on an archive sealed by a real `run --once`: clean as sealed, and
each kind of tampering an insider could try is found and named by the line `audit` prints.

One run seals a few days of calls (and the empty days after them) into a versioned moto bucket
without a lock; each case then tampers as an attacker with write access would, runs `audit`, and
undoes the tampering by deleting the version it made, so the cases share one archive.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from archiver import manifest
from archiver.signing import generate
from archiver.simulator import Simulator
from tests import seaweed
from tests.e2e.harness import Bucket, cli, simulator_options, write_config

pytestmark = pytest.mark.e2e

PREFIX = "calls/"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Archive:
    bucket: Bucket
    days: list[date]  # the days with calls, in order

    @property
    def client(self) -> Any:
        return self.bucket.client

    def audit(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli(
            "audit",
            "--bucket",
            self.bucket.name,
            "--endpoint-url",
            self.bucket.endpoint,
            "--prefix",
            PREFIX,
            *args,
        )

    def body(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.bucket.name, Key=key)["Body"].read())

    def put(self, key: str, body: bytes, **args: Any) -> str:
        """A new version at `key`, as an attacker would write it; its version id."""
        put = self.client.put_object(Bucket=self.bucket.name, Key=key, Body=body, **args)
        return str(put["VersionId"])

    def delete(self, key: str) -> str:
        """A delete marker over `key`; its version id."""
        return str(self.client.delete_object(Bucket=self.bucket.name, Key=key)["VersionId"])

    def undo(self, key: str, version: str) -> None:
        self.client.delete_object(Bucket=self.bucket.name, Key=key, VersionId=version)

    def recording_keys(self, day: date) -> list[str]:
        listed = self.client.list_objects_v2(
            Bucket=self.bucket.name, Prefix=f"{PREFIX}{day:%Y/%m/%d}/"
        )
        return sorted(item["Key"] for item in listed.get("Contents", []))


@pytest.fixture(scope="module")
def archive(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """Three days of calls twelve days ago, sealed by `run --once` with the days after them."""
    client = boto3.client(
        "s3",
        endpoint_url=moto_server,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    name = "audit-e2e"
    client.create_bucket(Bucket=name)
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    bucket = Bucket(name, moto_server, client)
    first = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first -= timedelta(days=12)
    sim = Simulator(
        simulator_options(
            start=first + timedelta(hours=1), end=first + timedelta(days=3), per_hour=0.5
        )
    ).start()
    try:
        config = write_config(
            tmp_path_factory.mktemp("audit") / "config.toml",
            sim,
            bucket,
            archive={
                "start": first.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "window": "1d",
                "lookback": "1h",
            },
        )
        ran = cli("run", "--once", config=config)
        assert ran.returncode == 0, ran.stderr[-2000:]
        days = sorted({r.started_at.date() for r in sim.recordings()})
    finally:
        sim.stop()
    yield Archive(bucket, days)


def lines_of(ran: subprocess.CompletedProcess[str], mark: str) -> list[str]:
    return [line for line in ran.stdout.splitlines() if line.startswith(f"{mark} ")]


def test_an_archive_as_sealed_audits_clean(archive: Archive) -> None:
    ran = archive.audit()
    assert ran.returncode == 0, ran.stdout + ran.stderr
    matching = lines_of(ran, "=")
    assert len(matching) == len(ran.stdout.splitlines()) - 1  # every line but the summary
    assert any(line.startswith("= manifests/") for line in matching)
    assert sum(len(archive.recording_keys(d)) for d in archive.days) == len(
        [line for line in matching if line.endswith(".mp3")]
    )
    assert ran.stdout.splitlines()[-1].startswith("audit clean:")


def test_a_manifest_edited_in_one_line_is_named(archive: Archive) -> None:
    key = manifest.manifest_key(PREFIX, archive.days[1])
    lines = archive.body(key).decode().splitlines(keepends=True)
    entry = json.loads(lines[1])
    entry["size"] += 1
    lines[1] = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
    version = archive.put(key, "".join(lines).encode())
    try:
        ran = archive.audit()
    finally:
        archive.undo(key, version)
    print(ran.stdout)
    assert ran.returncode == 3
    edited = [line for line in lines_of(ran, "*") if line.startswith(f"* {key[len(PREFIX) :]}  ")]
    assert len(edited) == 1 and "edited" in edited[0]


def test_a_deleted_manifest_is_named(archive: Archive) -> None:
    key = manifest.manifest_key(PREFIX, archive.days[1])
    markers = [(k, archive.delete(k)) for k in (key, manifest.checksum_key(key))]
    try:
        ran = archive.audit()
    finally:
        for k, marker in markers:
            archive.undo(k, marker)
    print(ran.stdout)
    assert ran.returncode == 3
    missing = lines_of(ran, "-")
    assert any(line.startswith(f"- {key[len(PREFIX) :]}  deleted") for line in missing)


def test_two_manifests_with_swapped_links_are_named(archive: Archive) -> None:
    keys = [manifest.manifest_key(PREFIX, day) for day in archive.days[1:3]]
    bodies = [archive.body(key).decode().split("\n", 1) for key in keys]
    headers = [json.loads(head) for head, _ in bodies]
    headers[0]["previous"], headers[1]["previous"] = headers[1]["previous"], headers[0]["previous"]
    versions = []
    for key, header, (_, rest) in zip(keys, headers, bodies, strict=True):
        line = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        versions.append((key, archive.put(key, f"{line}\n{rest}".encode())))
    try:
        ran = archive.audit()
    finally:
        for key, version in versions:
            archive.undo(key, version)
    print(ran.stdout)
    assert ran.returncode == 3
    broken = [line for line in lines_of(ran, "*") if "broken link" in line]
    assert {line.split()[1] for line in broken} == {k[len(PREFIX) :] for k in keys}


def test_a_recording_replaced_by_a_new_version_is_named(archive: Archive) -> None:
    key = archive.recording_keys(archive.days[0])[0]
    head = archive.client.head_object(Bucket=archive.bucket.name, Key=key)
    # The attacker keeps the metadata (its sha256 included) and the size: only the bytes differ.
    body = bytearray(archive.body(key))
    body[-1] ^= 0xFF
    version = archive.put(key, bytes(body), Metadata=head["Metadata"], ChecksumAlgorithm="SHA256")
    try:
        ran = archive.audit()
    finally:
        archive.undo(key, version)
    print(ran.stdout)
    assert ran.returncode == 3
    assert [line.split("  ")[0] for line in lines_of(ran, "*")] == [f"* {key[len(PREFIX) :]}"]
    assert "replaced: the current version is" in lines_of(ran, "*")[0]
    assert "S3's ChecksumSHA256" in lines_of(ran, "*")[0]


@contextlib.contextmanager
def one_deleted_one_planted(archive: Archive) -> Iterator[tuple[str, str]]:
    """A recording deleted (a delete marker) and a stray planted in a sealed day, undone after."""
    key = archive.recording_keys(archive.days[2])[-1]
    stray = f"{PREFIX}{archive.days[0]:%Y/%m/%d}/00000000-0000-4000-8000-000000000000.mp3"
    marker = archive.delete(key)
    stray_version = archive.put(stray, b"ID3 not a recording of ours")
    try:
        yield key, stray
    finally:
        archive.undo(key, marker)
        archive.undo(stray, stray_version)


def test_a_deleted_recording_and_a_stray_one_are_named(archive: Archive, tmp_path: Path) -> None:
    with one_deleted_one_planted(archive) as (key, stray):
        ran = archive.audit("--report", str(tmp_path / "audit.json"))
    print(ran.stdout)
    assert ran.returncode == 3
    assert lines_of(ran, "-") == [
        f"- {key[len(PREFIX) :]}  deleted: a delete marker hides the listed version "
        + _listed_version(archive, key)
    ]
    assert lines_of(ran, "+") == [f"+ {stray[len(PREFIX) :]}  in the bucket, in no manifest"]
    report = json.loads((tmp_path / "audit.json").read_text())
    assert report["clean"] is False
    assert {(p["mark"], p["key"]) for p in report["problems"]} == {
        ("-", key[len(PREFIX) :]),
        ("+", stray[len(PREFIX) :]),
    }
    assert report["chain"]["intact"] is True


def test_the_html_report_renders_in_chromium_with_its_tables_and_problems(
    archive: Archive, tmp_path: Path
) -> None:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (.ci/install-tools installs Debian's chromium)")
    with one_deleted_one_planted(archive) as (key, stray):
        ran = archive.audit("--report", str(tmp_path / "audit.html"))
    assert ran.returncode == 3
    _check_in_browser(CHROMIUM, tmp_path / "audit.html", tmp_path, [key, stray])


def _listed_version(archive: Archive, key: str) -> str:
    day = date.fromisoformat(key[len(PREFIX) : len(PREFIX) + 10].replace("/", "-"))
    listed = manifest.parse(archive.body(manifest.manifest_key(PREFIX, day)))
    return next(str(e.version_id) for e in listed.entries if e.key == key)


def _check_in_browser(chromium: str, page: Path, tmp_path: Path, keys: list[str]) -> None:
    """The page renders in headless Chromium: the days table and both problems are in its DOM;
    a screenshot is saved beside it."""
    flags = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ]
    url = page.resolve().as_uri()
    dom = subprocess.run(
        [*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=False
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert '<table id="days">' in dom.stdout
    assert '<table id="problems">' in dom.stdout
    for key in keys:
        assert key[len(PREFIX) :] in dom.stdout
    shot = tmp_path / "audit-report.png"
    taken = subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1280,2000", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def archive_locked_and_signed(endpoint: str, folder: Path) -> tuple[Bucket, int]:
    """`run --once` as the admin identity: two days of calls five days ago, each recording
    locked for 30 days in governance mode, each manifest signed with `folder/sign.pem`; the
    bucket and the number of recordings."""
    admin = seaweed.client(endpoint)
    admin.create_bucket(Bucket="audit-locked", ObjectLockEnabledForBucket=True)
    bucket = Bucket("audit-locked", endpoint, admin)
    first = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first -= timedelta(days=5)
    sim = Simulator(
        simulator_options(
            start=first + timedelta(hours=1), end=first + timedelta(days=2), per_hour=0.25
        )
    ).start()
    try:
        config = write_config(
            folder / "config.toml",
            sim,
            bucket,
            archive={
                "start": first.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "window": "1d",
                "lookback": "1h",
            },
            retention={"mode": "governance", "period": "30d"},
            manifest={"sign_key_file": str(folder / "sign.pem")},
        )
        ran = cli("run", "--once", config=config)
        assert ran.returncode == 0, ran.stderr[-2000:]
        return bucket, len(sim.recordings())
    finally:
        sim.stop()


def test_a_read_only_identity_audits_a_locked_archive_on_seaweedfs(
    seaweed_server: str, tmp_path: Path
) -> None:
    """The admin identity archives under Object Lock (governance), signing the manifests; the
    auditor's identity, which may only read and list, audits it clean, signatures included,
    and sees every recording locked."""
    private, public = generate()
    (tmp_path / "sign.pem").write_bytes(private)
    (tmp_path / "public.pem").write_bytes(public)
    bucket, recordings = archive_locked_and_signed(seaweed_server, tmp_path)
    report = tmp_path / "audit.json"
    audited = cli(
        "audit",
        "--bucket",
        bucket.name,
        "--endpoint-url",
        seaweed_server,
        "--prefix",
        PREFIX,
        "--report",
        str(report),
        "--public-key",
        str(tmp_path / "public.pem"),
        AWS_ACCESS_KEY_ID=seaweed.AUDITOR_KEY,
        AWS_SECRET_ACCESS_KEY=seaweed.AUDITOR_SECRET,
    )
    print(audited.stdout)
    assert audited.returncode == 0, audited.stdout + audited.stderr
    found = json.loads(report.read_text())
    assert found["retention"]["modes"] == {"GOVERNANCE": recordings}
    assert found["retention"]["locked_short"] == 0
    assert found["chain"]["signatures"] == "every manifest signed and valid"
    assert found["chain"]["versions_checked"] is True  # List covers ListBucketVersions
    assert any(line.endswith(".jsonl.sig") for line in audited.stdout.splitlines())
    assert sum(day["verified"] for day in found["days"]) == recordings
    # The auditor's identity is read-only indeed: SeaweedFS refuses it a write.
    reader = seaweed.client(seaweed_server, seaweed.AUDITOR_KEY, seaweed.AUDITOR_SECRET)
    with pytest.raises(ClientError) as refused:
        reader.put_object(Bucket=bucket.name, Key=f"{PREFIX}probe", Body=b"x")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"


def test_a_config_with_only_s3_is_enough_and_read_data_prints_its_seed(
    archive: Archive, tmp_path: Path
) -> None:
    config = tmp_path / "auditor.toml"
    config.write_text(
        f'[s3]\nbucket = "{archive.bucket.name}"\nprefix = "{PREFIX}"\n'
        f'endpoint_url = "{archive.bucket.endpoint}"\n'
    )
    ran = cli("audit", "--read-data=50", "--seed", "42", config=config)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "--read-data 50: seed 42 (--seed 42 draws the same)" in ran.stdout


def test_a_bucket_that_cannot_be_read_exits_1_and_bad_usage_exits_2(archive: Archive) -> None:
    gone = cli("audit", "--bucket", "no-such-bucket", "--endpoint-url", archive.bucket.endpoint)
    assert gone.returncode == 1, gone.stdout + gone.stderr
    assert "bucket no-such-bucket does not exist" in gone.stderr
    assert gone.stdout == ""
    wrong = archive.audit("--report", "audit.pdf")
    assert wrong.returncode == 2
    assert "name a .html or a .json file" in wrong.stderr
