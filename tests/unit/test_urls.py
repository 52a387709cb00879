"""The one url check against a table of known parser differentials, and a property: whatever
url it accepts, urllib3, requests, urllib.parse and WHATWG's preprocessing all read the same
scheme, host and port from it, so no parser can connect somewhere the check did not approve."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from urllib3.util import parse_url

from archiver.urls import BAD_URL, OFF_HOST_URL, Origin, UrlRefused, checked_url, origin_of

API = origin_of("http://api.example:8080")
PATH = "/api/v1/public/recordings/935f1dc8-b56a-535c-b678-95edf74c593c.mp3"

# (url, what the check must say): None means accepted, else the dead letter's reason.
DIFFERENTIALS = [
    # backslash: WHATWG reads it as "/", RFC 3986 and urllib3 keep it in the authority or path
    (f"http://127.0.0.1:9\\@api.example:8080{PATH}", BAD_URL),
    (f"http://api.example:8080\\@127.0.0.1:9{PATH}", BAD_URL),
    (f"http://api.example:8080\\{PATH}", BAD_URL),
    (f"http://api.example:8080{PATH}\\..\\x", BAD_URL),
    # tab, newline, CR, space, NUL: WHATWG strips or trims them, the others keep them
    (f"http://api.exa\tmple:8080{PATH}", BAD_URL),
    (f"http://api.example:8080\n{PATH}", BAD_URL),
    (f"http://api.example:8080{PATH}\r\nX-Injected: 1", BAD_URL),
    (f" http://api.example:8080{PATH}", BAD_URL),
    (f"http://api.example:8080{PATH}\x00", BAD_URL),
    (f"http://api.example:8080/a b{PATH}", BAD_URL),
    # "#@" and "?@": the fragment or query ends the authority for every parser
    (f"http://127.0.0.1:9#@api.example:8080{PATH}", OFF_HOST_URL),
    (f"http://api.example:8080#@127.0.0.1:9{PATH}", None),
    (f"http://api.example:8080?@127.0.0.1:9{PATH}", None),
    (f"http://api.example:8080{PATH}?next=http://127.0.0.1:9/", None),
    (f"http://api.example:8080{PATH}/@127.0.0.1:9", None),
    # userinfo, plain or percent-encoded, in either order
    (f"http://user@api.example:8080{PATH}", BAD_URL),
    (f"http://user:pass@api.example:8080{PATH}", BAD_URL),
    (f"http://api.example:8080@127.0.0.1:9{PATH}", BAD_URL),
    (f"http://api.example%40127.0.0.1:9{PATH}", BAD_URL),
    (f"http://127.0.0.1%2f@api.example:8080{PATH}", BAD_URL),
    (f"http://api%2eexample:8080{PATH}", BAD_URL),
    # ports: not an integer, out of range, signs and spaces
    (f"http://api.example:99999{PATH}", BAD_URL),
    (f"http://api.example:abc{PATH}", BAD_URL),
    (f"http://api.example:0{PATH}", BAD_URL),
    (f"http://api.example:+8080{PATH}", BAD_URL),
    (f"http://api.example:-1{PATH}", BAD_URL),
    (f"http://api.example:8081{PATH}", OFF_HOST_URL),
    (f"http://api.example:08080{PATH}", None),
    # case, a trailing dot, another scheme
    (f"HTTP://API.Example:8080{PATH}", None),
    (f"http://api.example.:8080{PATH}", OFF_HOST_URL),
    (f"https://api.example:8080{PATH}", OFF_HOST_URL),
    (f"ftp://api.example:8080{PATH}", BAD_URL),
    (f"javascript://api.example:8080{PATH}", BAD_URL),
    # scheme-relative and malformed authorities
    (f"//api.example:8080{PATH}", BAD_URL),
    (f"http:api.example:8080{PATH}", BAD_URL),
    (f"http:/api.example:8080{PATH}", BAD_URL),
    (f"http:///api.example:8080{PATH}", BAD_URL),
    (f"http://:8080{PATH}", BAD_URL),
    ("", BAD_URL),
    # IDNA: a Cyrillic a (U+0430) maps to punycode in urllib3, differently or not at all elsewhere
    (f"http://\u0430pi.example:8080{PATH}", BAD_URL),
    (f"http://api\uff0eexample:8080{PATH}", BAD_URL),
    (f"http://xn--pi-7kc.example:8080{PATH}", OFF_HOST_URL),
    (f"http://api.example:8080/\u00e9{PATH}", BAD_URL),
    # IPv6 brackets
    (f"http://[::1]:8080{PATH}", OFF_HOST_URL),
    (f"http://[::1{PATH}", BAD_URL),
    (f"http://[fe80::1%25eth0]:8080{PATH}", BAD_URL),
    # a very long url
    ("http://api.example:8080/" + "a" * 9000, BAD_URL),
]


@pytest.mark.parametrize(("url", "reason"), DIFFERENTIALS)
def test_known_parser_differentials(url: str, reason: str | None) -> None:
    if reason is None:
        rebuilt = checked_url(url, API)
        assert origin_of(rebuilt) == API
        assert "#" not in rebuilt
        return
    with pytest.raises(UrlRefused) as caught:
        checked_url(url, API)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("base", "url", "on_host"),
    [
        ("https://api.example", "https://api.example:443/x", True),
        ("https://api.example:443", "https://api.example/x", True),
        ("http://api.example", "http://api.example:80/x", True),
        ("http://api.example", "http://api.example:443/x", False),
        ("https://api.example", "http://api.example/x", False),
        ("http://[::1]:8080", "http://[::1]:8080/x", True),
        ("http://[::1]:8080", "http://[0:0::1]:8080/x", False),  # not normalised: refused
    ],
)
def test_default_ports_and_ipv6(base: str, url: str, on_host: bool) -> None:
    if on_host:
        assert origin_of(checked_url(url, origin_of(base))) == origin_of(base)
    else:
        with pytest.raises(UrlRefused):
            checked_url(url, origin_of(base))


def test_the_fetched_url_is_the_checked_one() -> None:
    rebuilt = checked_url(f"HTTP://API.example:8080{PATH}?source=api#frag", API)
    assert rebuilt == f"http://api.example:8080{PATH}?source=api"
    prepared = requests.Request("GET", rebuilt).prepare()
    assert prepared.url == rebuilt


def test_an_origin_prints_for_an_operator() -> None:
    assert str(Origin("https", "api.cradle.io", 443)) == "https://api.cradle.io:443"


# -- the property ------------------------------------------------------------------------------

PIECES = [
    "http://",
    "https://",
    "HTTP://",
    "//",
    "api.example",
    "API.EXAMPLE",
    "127.0.0.1",
    "[::1]",
    "[",
    "]",
    ":8080",
    ":9",
    ":",
    "@",
    "\\",
    "#",
    "?",
    "/",
    ".",
    "%40",
    "%2e",
    "%2F",
    "\t",
    "\n",
    " ",
    "\x00",
    "\u0430",
    "\uff0e",
    "xn--pi-7kc",
    "user:pass",
    "99999",
    "0",
    PATH,
]


def whatwg_preprocess(url: str) -> str:
    """What the WHATWG url parser does before parsing: trim C0 controls and spaces, remove tab
    and newline anywhere, and read a backslash as a slash in http(s)."""
    url = url.strip("".join(map(chr, range(0x21))))
    url = url.replace("\t", "").replace("\n", "").replace("\r", "")
    return url.replace("\\", "/")


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=10).map("".join))
def test_every_parser_reads_an_accepted_url_as_the_check_did(url: str) -> None:
    try:
        rebuilt = checked_url(url, API)
    except UrlRefused as exc:
        assert exc.reason in (BAD_URL, OFF_HOST_URL)
        return
    # WHATWG would read the very same string: nothing it strips or rewrites is left.
    assert whatwg_preprocess(url) == url
    for candidate in (url, rebuilt):
        parts = parse_url(candidate)
        assert (parts.scheme, parts.host, parts.port or 80) == ("http", "api.example", 8080)
        split = urlsplit(candidate)
        assert (split.scheme.lower(), split.hostname, split.port or 80) == (
            "http",
            "api.example",
            8080,
        )
    # And requests, which prepares the request that urllib3 then connects for.
    prepared = requests.Request("GET", rebuilt).prepare()
    assert origin_of(prepared.url or "") == API
