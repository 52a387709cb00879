"""The sections that carry a secret, `[cradle]` (id and API key) and `[webhook]` (its token), and
the check that the file holding the API key is not readable by others.

The credentials are checked here, not at the first request: they travel as HTTP header values,
so one with a control character, a non-ASCII character or surrounding whitespace can never
authenticate, and finding that out at load time is an exit 2 with the key named instead of a
minute of retries on a request that cannot be sent. Messages about the API key never quote it.
"""

from __future__ import annotations

import grp
import os
import re
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from archiver.config.sections import Config, CradleConfig, KeySource, WebhookConfig
from archiver.config.values import (
    _base_url,
    _listen,
    _positive_duration,
    _rate,
    _Reader,
    _secret,
    _string,
    _transfer_rate,
)
from archiver.errors import Problem

MIN_WEBHOOK_TOKEN_CHARS = 16
_URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]*$")  # RFC 3986 unreserved: the same in any URL


def _read_cradle(read: _Reader, env: Mapping[str, str], require_credentials: bool) -> CradleConfig:
    d = CradleConfig()
    base_url = read.get("base_url", d.base_url, _base_url)
    before = len(read.problems)
    cradle_id = _read_id(read, env)
    id_reported = len(read.problems) > before
    before = len(read.problems)
    api_key, api_key_file, source = _read_api_key(read, env)
    key_reported = len(read.problems) > before
    rate = read.get("requests_per_second", d.requests_per_second, _rate)
    timeout = read.get("timeout", d.timeout, _positive_duration)
    min_rate = read.get("min_transfer_rate", d.min_transfer_rate, _transfer_rate)
    read.unknown()
    if require_credentials:
        if not cradle_id and not id_reported:
            read.problem("id", "is empty (set it, or the CRADLE_ID environment variable)")
        if not api_key and not key_reported:
            read.problem(
                "api_key",
                "is empty (set api_key, api_key_file, or the CRADLE_API_KEY environment variable)",
            )
    return CradleConfig(
        base_url,
        cradle_id,
        api_key,
        api_key_file,
        rate,
        timeout,
        source,
        min_transfer_rate=min_rate,
    )


def _read_id(read: _Reader, env: Mapping[str, str]) -> str:
    read.seen.add("id")
    if env.get("CRADLE_ID"):
        label, cradle_id = "CRADLE_ID (environment)", env["CRADLE_ID"]
    else:
        label, cradle_id = "cradle.id", read.get("id", "", _string)
    problem = header_value_problem(cradle_id)
    if problem:  # the id is not a secret: quoting it shows the stray character
        read.problems.append(Problem(label, f"{cradle_id!r} {problem}"))
        return ""
    return cradle_id


def _read_api_key(read: _Reader, env: Mapping[str, str]) -> tuple[str, str, KeySource]:
    """The key, `api_key_file` as configured, and where the key came from, first found wins:
    $CRADLE_API_KEY, cradle.api_key, cradle.api_key_file, $CREDENTIALS_DIRECTORY/cradle-api-key."""
    read.seen.add("api_key")
    api_key_file = read.get("api_key_file", "", _string)
    if env.get("CRADLE_API_KEY"):
        key = _checked_key(read, "CRADLE_API_KEY (environment)", env["CRADLE_API_KEY"])
        return key, api_key_file, KeySource.ENVIRONMENT
    key = read.get("api_key", "", _secret)
    if key:
        return _checked_key(read, "cradle.api_key", key), api_key_file, KeySource.CONFIG
    if api_key_file:
        key = _read_key_file(read, "cradle.api_key_file", api_key_file)
        return key, api_key_file, KeySource.FILE
    credentials_dir = env.get("CREDENTIALS_DIRECTORY")
    if credentials_dir:
        # systemd's LoadCredential=cradle-api-key:... puts the key here for the unit only.
        candidate = Path(credentials_dir) / "cradle-api-key"
        if candidate.exists():
            key = _read_key_file(read, "$CREDENTIALS_DIRECTORY/cradle-api-key", str(candidate))
            return key, api_key_file, KeySource.CREDENTIALS
    return "", api_key_file, KeySource.NONE


def _read_key_file(read: _Reader, label: str, path: str) -> str:
    try:
        # Bytes, not text mode, which would turn a stray \r\n inside into \n. strip(): the
        # newline an editor or `echo` leaves at the end is not part of the key.
        key = Path(path).read_bytes().decode("utf-8").strip()
    except UnicodeDecodeError:
        # Not str(exc): it quotes the offending byte, which is a byte of the key.
        read.problems.append(Problem(label, f"{path} is not UTF-8 text"))
        return ""
    except OSError as exc:
        read.problems.append(Problem(label, f"cannot read {path}: {exc.strerror or exc}"))
        return ""
    if not key:
        read.problems.append(Problem(label, f"{path} is empty"))
    return _checked_key(read, label, key, where=path)


def _checked_key(read: _Reader, label: str, key: str, where: str = "") -> str:
    problem = header_value_problem(key)
    if problem:  # never the key itself
        read.problems.append(Problem(label, f"{where}: {problem}" if where else problem))
        return ""
    return key


def header_value_problem(value: str) -> str | None:
    """Why `value` cannot be sent as a credential header, without quoting it; None if it can."""
    if value != value.strip():
        return "has leading or trailing whitespace, which HTTP strips from a header"
    control = next((ch for ch in value if ch < " " or ch == "\x7f"), None)
    if control is not None:
        return f"contains a control character (U+{ord(control):04X}), which a header cannot carry"
    if not value.isascii():
        return "contains a non-ASCII character, which a header cannot carry"
    return None


def _read_webhook(read: _Reader, env: Mapping[str, str]) -> WebhookConfig:
    """The listener and its token, from `token_file` or else systemd's credential
    `$CREDENTIALS_DIRECTORY/cradle-webhook-token`; a listener needs a token."""
    listen = read.get("listen", "", _listen)
    token_file = read.get("token_file", "", _string)
    read.unknown()
    token, label = "", "webhook.token_file"
    if token_file:
        token = _read_key_file(read, label, token_file)
    elif listen and env.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(env["CREDENTIALS_DIRECTORY"]) / "cradle-webhook-token"
        if candidate.exists():
            label = "$CREDENTIALS_DIRECTORY/cradle-webhook-token"
            token = _read_key_file(read, label, str(candidate))
    problem = webhook_token_problem(token) if token else None
    if problem:  # never the token itself
        read.problems.append(Problem(label, problem))
        token = ""
    if listen and not token and not any(p.key.startswith(label) for p in read.problems):
        read.problem(
            "token_file",
            "is empty, and webhook.listen needs a token (a file holding it, or the systemd"
            " credential cradle-webhook-token)",
        )
    return WebhookConfig(listen=listen, token_file=token_file, token=token)


def webhook_token_problem(token: str) -> str | None:
    """Why `token` cannot be the webhook's secret, without quoting it; None if it can. It is a
    path segment a sender copies into a URL, so only characters every URL keeps as they are."""
    if len(token) < MIN_WEBHOOK_TOKEN_CHARS:
        return (
            f"the token has {len(token)} characters, fewer than {MIN_WEBHOOK_TOKEN_CHARS}"
            " (generate one with `openssl rand -hex 32`)"
        )
    if not _URL_SAFE.match(token):
        return (
            "the token may hold only letters, digits and . _ ~ - (generate one with"
            " `openssl rand -hex 32`)"
        )
    return None


@dataclass(frozen=True)
class ReadableSecret:
    """A file holding the API key that someone other than the archiver's user can read."""

    path: str
    mode: int  # the permission bits, e.g. 0o644
    readers: str  # "everyone", or "group NAME"

    def __str__(self) -> str:
        return (
            f"{self.path} holds the API key and is readable by {self.readers}"
            f" (mode {self.mode:04o}); chmod 600 it"
        )


def readable_secret(config: Config, groups: Collection[int] | None = None) -> ReadableSecret | None:
    """The file holding the API key, if others can read it: the config file when the key is in
    it, or `api_key_file`. `groups` are the archiver's own (default: this process's).

    A group the archiver itself belongs to does not count: a Kubernetes secret mounted 0440 with
    the pod's fsGroup, or a key file `root:cradle-archiver 0640`, is the usual way to hand the key
    to a service user. The environment and systemd's credentials directory are not files we judge.
    """
    holders = {KeySource.CONFIG: config.source, KeySource.FILE: config.cradle.api_key_file}
    path = holders.get(config.cradle.api_key_source)
    if not path:
        return None
    try:
        found = os.stat(path)  # follows links: a mounted secret is a link to the real file
    except OSError:
        return None
    mode = stat.S_IMODE(found.st_mode)
    own = {os.getegid(), *os.getgroups()} if groups is None else set(groups)
    if mode & stat.S_IROTH:
        return ReadableSecret(path, mode, "everyone")
    if mode & stat.S_IRGRP and found.st_gid not in own:
        return ReadableSecret(path, mode, f"group {_group_name(found.st_gid)}")
    return None


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
