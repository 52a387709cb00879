"""The manifest chain verified from its bytes alone: what `audit` concludes about `manifests/`.

Pure: it is handed every file under `{prefix}manifests/` (manifests, `.sha256` sidecars,
`.jsonl.sig` signatures) as bytes and returns one finding per key, marked as `rclone check
--combined` marks files. It trusts nothing it reads: a manifest is data an attacker may have
edited, so each conclusion rests on a comparison of two things, never on one file's word.

What a deletion, edit or reordering leaves behind, and where it is reported:
- an edited manifest: the next manifest's `previous` no longer matches its bytes, and neither
  does its own `.sha256` (both are reported on the edited manifest; the last manifest of the
  chain has no successor, so only its sidecar and signature can show it);
- a deleted manifest: a gap in the sequence (the successor's `previous` still names its key), a
  day missing between the first and the last sealed day (empty days are sealed too), or a
  sidecar or signature left without its manifest;
- reordered links (`previous` swapped or pointed elsewhere): the link names another key than the
  manifest one sequence before;
- on a versioned bucket, any of these: every file here is written once, so a second version or a
  delete marker is itself the trace (and the only one left when the newest manifests are deleted
  whole, or the last is rewritten along with its sidecar).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from enum import Enum

from archiver.manifest import (
    MANIFEST_DIR,
    Manifest,
    ManifestInvalid,
    ManifestName,
    checksum_key,
    digest,
    manifest_key,
    parse,
    parse_checksum_file,
    parse_key,
    signature_key,
)
from archiver.signing import Verifier
from archiver.sink.reader import ListedVersion


class Mark(Enum):
    """What one object's line starts with, as in `rclone check --combined`."""

    MATCH = "="  # as listed
    MISSING = "-"  # listed (or implied by the chain), not in the bucket
    UNLISTED = "+"  # in the bucket, listed nowhere
    DIFFERS = "*"  # there, but not as listed: size, checksum, version, lock, link
    ERROR = "!"  # could not be checked


# When one key collects several reasons, its line shows the gravest mark.
_GRAVITY = (Mark.MISSING, Mark.DIFFERS, Mark.UNLISTED, Mark.ERROR, Mark.MATCH)


@dataclass(frozen=True)
class Finding:
    """One object's verdict: its full key, its mark and why (empty for `=`)."""

    key: str
    mark: Mark
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sealed:
    """A manifest that parsed: its key, the SHA-256 of its bytes, and what it says."""

    key: str
    sha256: str
    manifest: Manifest


class SignatureStatus(Enum):
    NOT_CHECKED = "not checked (no --public-key)"
    VALID = "every manifest signed and valid"
    BROKEN = "missing or invalid signatures"


@dataclass(frozen=True)
class Chain:
    """The chain as found: parsed manifests in sequence order and a finding per key."""

    manifests: tuple[Sealed, ...]
    findings: tuple[Finding, ...]
    signatures: SignatureStatus
    versions_checked: bool = False  # whether a version listing was there to check

    @property
    def days(self) -> tuple[date, ...]:
        """Every day from the first sealed day to the last: all of them must be sealed."""
        sealed = [s.manifest.day for s in self.manifests]
        if not sealed:
            return ()
        first, last = min(sealed), max(sealed)
        return tuple(first + timedelta(days=n) for n in range((last - first).days + 1))

    @property
    def head(self) -> Sealed | None:
        return self.manifests[-1] if self.manifests else None

    @property
    def intact(self) -> bool:
        return all(f.mark is Mark.MATCH for f in self.findings)


class _Verdicts:
    """Reasons collected per key; a key with none is a match."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._reasons: dict[str, list[tuple[Mark, str]]] = defaultdict(list)

    def name(self, key: str) -> str:
        """A key as reasons quote it: relative to the prefix, as the lines print keys."""
        return key.removeprefix(self._prefix) if self._prefix else key

    def seen(self, key: str) -> None:
        self._reasons.setdefault(key, [])

    def add(self, key: str, mark: Mark, reason: str) -> None:
        self._reasons[key].append((mark, reason))

    def findings(self) -> tuple[Finding, ...]:
        found = []
        for key in sorted(self._reasons):
            reasons = self._reasons[key]
            marks = {mark for mark, _ in reasons} or {Mark.MATCH}
            mark = next(m for m in _GRAVITY if m in marks)
            found.append(Finding(key, mark, tuple(dict.fromkeys(r for _, r in reasons))))
        return tuple(found)


def verify_chain(
    prefix: str,
    files: Mapping[str, bytes],
    verifier: Verifier | None,
    versions: Sequence[ListedVersion] | None = None,
) -> Chain:
    """Every check of the chain over the files under `{prefix}manifests/` (key -> bytes), and,
    given their version listing, over what each file went through since it was written."""
    verdicts = _Verdicts(prefix)
    if not files:  # never "clean" over nothing: a wrong --prefix must not pass an audit
        verdicts.add(
            prefix + MANIFEST_DIR,
            Mark.ERROR,
            "no manifest here: nothing sealed yet, or not the archive's prefix",
        )
    names = _names(prefix, files, verdicts)
    sealed = _parse_manifests(files, names, verdicts)
    _check_names(prefix, sealed, verdicts)
    by_sequence = _check_sequence(sealed, set(files), verdicts)
    _check_links(by_sequence, verdicts)
    _check_days(prefix, sealed, names, verdicts)
    _check_orphans(files, names, verdicts)
    _check_sidecars(prefix, sealed, files, verdicts)
    signatures = _check_signatures(sealed, files, verifier, verdicts)
    if versions is not None:
        _check_versions(versions, verdicts)
    return Chain(tuple(by_sequence), verdicts.findings(), signatures, versions is not None)


def _names(prefix: str, files: Iterable[str], verdicts: _Verdicts) -> dict[str, ManifestName]:
    names = {}
    for key in files:
        name = parse_key(prefix, key)
        if name is None:
            verdicts.add(key, Mark.UNLISTED, "not a manifest, checksum or signature file")
        else:
            names[key] = name
    return names


def _parse_manifests(
    files: Mapping[str, bytes], names: Mapping[str, ManifestName], verdicts: _Verdicts
) -> list[Sealed]:
    sealed = []
    for key, name in names.items():
        if name.kind != "jsonl":
            continue
        verdicts.seen(key)
        try:
            sealed.append(Sealed(key, digest(files[key]), parse(files[key])))
        except ManifestInvalid as exc:
            verdicts.add(key, Mark.DIFFERS, f"not a manifest: {exc}")
    return sealed


def _check_names(prefix: str, sealed: Iterable[Sealed], verdicts: _Verdicts) -> None:
    """A manifest sits at the key its own header names (one moved or renamed does not)."""
    for s in sealed:
        expected = manifest_key(prefix, s.manifest.day, s.manifest.supplement)
        if s.key != expected:
            verdicts.add(s.key, Mark.DIFFERS, f"its header belongs at {verdicts.name(expected)}")


def _check_sequence(sealed: list[Sealed], keys: set[str], verdicts: _Verdicts) -> list[Sealed]:
    """Sequences run 1, 2, 3 ... with no gap and no repeat; the manifests in that order."""
    by_number: dict[int, list[Sealed]] = defaultdict(list)
    for s in sealed:
        by_number[s.manifest.sequence].append(s)
    for number, same in by_number.items():
        for s in same[1:]:
            verdicts.add(
                s.key, Mark.DIFFERS, f"sequence {number} is also {verdicts.name(same[0].key)}"
            )
    top = max(by_number, default=0)
    for number in range(1, top):
        if number in by_number:
            continue
        after = by_number.get(number + 1)
        if not after:
            continue  # a longer gap: its last number names what is missing
        named = after[0].manifest.previous
        if named is not None and named.key not in keys:
            verdicts.add(
                named.key,
                Mark.MISSING,
                f"deleted: sequence {number} of the chain, named by {verdicts.name(after[0].key)}",
            )
        else:
            verdicts.add(after[0].key, Mark.DIFFERS, f"sequence {number} before it is missing")
    return sorted(sealed, key=lambda s: (s.manifest.sequence, s.key))


def _check_links(chain: list[Sealed], verdicts: _Verdicts) -> None:
    """Each `previous` names the manifest one sequence before, and the SHA-256 of its bytes."""
    by_number = {s.manifest.sequence: s for s in chain}
    for s in chain:
        link, number = s.manifest.previous, s.manifest.sequence
        if number == 1:
            if link is not None:
                verdicts.add(s.key, Mark.DIFFERS, "sequence 1 must not link to a previous one")
            continue
        before = by_number.get(number - 1)
        if link is None:
            verdicts.add(s.key, Mark.DIFFERS, f"sequence {number} has no link to the previous")
        elif before is None:
            continue  # the gap is reported by _check_sequence
        elif link.key != before.key:
            verdicts.add(
                s.key,
                Mark.DIFFERS,
                f"broken link: previous names {verdicts.name(link.key)}, "
                f"but sequence {number - 1} is {verdicts.name(before.key)}",
            )
        elif link.sha256 != before.sha256:
            verdicts.add(
                before.key,
                Mark.DIFFERS,
                f"edited: SHA-256 {before.sha256[:12]}..., but {verdicts.name(s.key)} links to "
                f"{link.sha256[:12]}...",
            )


def _check_days(
    prefix: str,
    sealed: list[Sealed],
    names: Mapping[str, ManifestName],
    verdicts: _Verdicts,
) -> None:
    """Every day from the first sealed to the last has its manifest, and supplements 1..n."""
    supplements: dict[date, set[int]] = defaultdict(set)
    for s in sealed:
        supplements[s.manifest.day].add(s.manifest.supplement)
    for name in names.values():
        if name.kind == "jsonl":
            supplements[name.day].add(name.supplement)
    if not supplements:
        return
    first, last = min(supplements), max(supplements)
    for n in range((last - first).days + 1):
        day = first + timedelta(days=n)
        present = supplements.get(day, set())
        for supplement in range(max(present, default=0) + 1):
            if supplement not in present:
                what = "day" if supplement == 0 else f"supplement {supplement}"
                verdicts.add(
                    manifest_key(prefix, day, supplement),
                    Mark.MISSING,
                    f"deleted: no manifest for this {what} between the first sealed day "
                    f"({first}) and the last ({last}); empty days are sealed too",
                )


def _check_orphans(
    files: Mapping[str, bytes], names: Mapping[str, ManifestName], verdicts: _Verdicts
) -> None:
    """A sidecar or signature whose manifest is gone: the manifest was deleted."""
    left: dict[str, list[str]] = defaultdict(list)
    for key, name in sorted(names.items()):
        if name.kind == "jsonl":
            continue
        if name.kind == "jsonl.sig":
            manifest, kind = key.removesuffix(".sig"), "signature"
        else:
            manifest, kind = key.removesuffix(".sha256") + ".jsonl", ".sha256"
        if manifest not in files:
            left[manifest].append(kind)
            verdicts.add(key, Mark.UNLISTED, "its manifest is gone")
    for manifest, kinds in left.items():
        verdicts.add(manifest, Mark.MISSING, f"deleted: its {' and '.join(kinds)} still there")


def _check_sidecars(
    prefix: str, sealed: list[Sealed], files: Mapping[str, bytes], verdicts: _Verdicts
) -> None:
    """Each `.sha256` holds the manifest's own SHA-256 and exactly its recordings' sums."""
    for s in sealed:
        key = checksum_key(s.key)
        body = files.get(key)
        if body is None:
            verdicts.add(key, Mark.MISSING, "the manifest's .sha256 is missing")
            continue
        verdicts.seen(key)
        try:
            sums = parse_checksum_file(body)
        except ManifestInvalid as exc:
            verdicts.add(key, Mark.DIFFERS, f"not a sha256sum file: {exc}")
            continue
        own = s.key[len(prefix) :]
        if sums.pop(own, None) != s.sha256:
            verdicts.add(
                s.key, Mark.DIFFERS, f"edited: its bytes do not match {verdicts.name(key)}"
            )
        listed = {e.key[len(prefix) :]: e.sha256 for e in s.manifest.entries}
        if sums != listed:
            wrong = sorted(set(sums.items()) ^ set(listed.items()))
            verdicts.add(
                key,
                Mark.DIFFERS,
                f"{len(wrong)} lines differ from the manifest's recordings, e.g. {wrong[0][0]}",
            )


def _check_signatures(
    sealed: list[Sealed],
    files: Mapping[str, bytes],
    verifier: Verifier | None,
    verdicts: _Verdicts,
) -> SignatureStatus:
    if verifier is None:
        return SignatureStatus.NOT_CHECKED
    status = SignatureStatus.VALID
    for s in sealed:
        key = signature_key(s.key)
        signature = files.get(key)
        if signature is None:
            verdicts.add(key, Mark.MISSING, "no signature beside the manifest")
            status = SignatureStatus.BROKEN
        elif not verifier.valid(files[s.key], signature):
            verdicts.add(key, Mark.DIFFERS, "the signature does not verify with the public key")
            status = SignatureStatus.BROKEN
        else:
            verdicts.seen(key)
    return status


def _check_versions(versions: Sequence[ListedVersion], verdicts: _Verdicts) -> None:
    """Each file is written once: one version, never hidden. On a versioned bucket this shows
    what the chain cannot: the newest manifests deleted with their sidecars, or the last one
    rewritten with a matching sidecar (nothing links to it yet)."""
    by_key: dict[str, list[ListedVersion]] = defaultdict(list)
    for version in versions:
        by_key[version.key].append(version)
    for key, history in sorted(by_key.items()):
        kept = [v for v in history if not v.delete_marker]
        if any(v.latest and v.delete_marker for v in history):
            verdicts.add(
                key, Mark.MISSING, f"deleted: a delete marker hides {len(kept)} version(s)"
            )
        if len(kept) > 1:
            verdicts.add(
                key, Mark.DIFFERS, f"rewritten: {len(kept)} versions of a file written once"
            )
