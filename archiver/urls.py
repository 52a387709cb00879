"""The one url parser that decides where a request goes and whether it may carry the credentials.

requests hands every url to urllib3's `parse_url` to pick the host it connects to. Checking a url
with any other parser (`urllib.parse`, a browser's WHATWG rules) invites a parser differential:
`http://127.0.0.1:9\\@api/` is host `api` to one and host `127.0.0.1` to the other, and the key
goes to whichever the connection believes. So a url is parsed here once, with urllib3, checked
against `base_url`'s origin, and rebuilt from the checked parts; the client fetches that rebuilt
url and nothing else.

Before parsing, whatever parsers are known to read differently is refused outright: userinfo,
backslashes, whitespace, control and non-ASCII characters anywhere, and percent-encoding in the
authority (urllib3 decodes `%2e` in a host, others do not). No legitimate Cradle url needs any of
them, so refusing costs nothing and leaves no room for a disagreement.
"""

from __future__ import annotations

from dataclasses import dataclass

from urllib3.exceptions import LocationParseError
from urllib3.util import Url, parse_url

MAX_URL_LENGTH = 8192
SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}
BAD_URL = "bad_url"
OFF_HOST_URL = "off_host_url"


class UrlRefused(ValueError):
    """A url that must not be fetched; `reason` is the dead letter's (`bad_url`, `off_host_url`)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Origin:
    """Scheme, host and port: credentials go only where all three match `base_url`'s."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def origin_of(url: str) -> Origin:
    """The origin of a url that passes every rule below; raises UrlRefused (`bad_url`)."""
    return _origin(_parse(url))


def checked_url(url: str, origin: Origin) -> str:
    """The url rebuilt from its checked parts, if it is well formed and on `origin`.

    The fragment is dropped (it is never sent); everything else is kept as urllib3 parsed it.
    """
    parts = _parse(url)
    found = _origin(parts)
    if found != origin:
        raise UrlRefused(f"url {shown(url)} is on {found}, not on {origin}", OFF_HOST_URL)
    return Url(
        scheme=found.scheme,
        host=parts.host,
        port=parts.port,
        path=parts.path or "/",
        query=parts.query,
    ).url


def refuse_characters(url: str) -> None:
    """Refuse characters parsers treat differently: raises UrlRefused (`bad_url`). Also for a
    redirect's raw Location, which may be relative."""
    if not isinstance(url, str) or not url:
        raise UrlRefused("url is empty or not a string", BAD_URL)
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"url is {len(url)} characters long (at most {MAX_URL_LENGTH})", BAD_URL)
    for ch in url:
        # Printable ASCII without the space: tab, newline and friends are stripped by WHATWG
        # parsers and kept by others; non-ASCII hosts are IDNA-mapped differently by each.
        if not "!" <= ch <= "~":
            raise UrlRefused(f"url {shown(url)} holds the character {ch!r}", BAD_URL)
    if "\\" in url:
        raise UrlRefused(f"url {shown(url)} holds a backslash", BAD_URL)


def refuse_tricks(url: str) -> None:
    """Refuse what url parsers are known to disagree about; raises UrlRefused (`bad_url`)."""
    refuse_characters(url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise UrlRefused(f"url {shown(url)} is not an absolute http(s) url", BAD_URL)
    authority = rest
    for delimiter in "/?#":
        authority = authority.split(delimiter, 1)[0]
    if "@" in authority:
        raise UrlRefused(f"url {shown(url)} holds userinfo", BAD_URL)
    if "%" in authority:
        raise UrlRefused(f"url {shown(url)} holds percent-encoding in its host", BAD_URL)


def shown(url: object, limit: int = 200) -> str:
    """A url as it may appear in a log line or an error: repr'd (control characters escaped)
    and cut, so a hostile url can neither forge log lines nor flood them."""
    text = repr(url)
    return text if len(text) <= limit else text[:limit] + "…"


def _parse(url: str) -> Url:
    refuse_tricks(url)
    try:
        parts = parse_url(url)
    except (LocationParseError, ValueError) as exc:
        raise UrlRefused(f"url {shown(url)} cannot be parsed: {exc}", BAD_URL) from exc
    if parts.auth is not None:
        raise UrlRefused(f"url {shown(url)} holds userinfo", BAD_URL)
    if not parts.host:
        raise UrlRefused(f"url {shown(url)} has no host", BAD_URL)
    if parts.port is not None and not 1 <= parts.port <= 65535:
        raise UrlRefused(f"url {shown(url)} has port {parts.port} (1 to 65535)", BAD_URL)
    return parts


def _origin(parts: Url) -> Origin:
    scheme = (parts.scheme or "").lower()
    host = (parts.host or "").lower()
    return Origin(scheme, host, parts.port or DEFAULT_PORTS[scheme])
