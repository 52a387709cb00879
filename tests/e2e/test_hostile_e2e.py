"""Issue 8's hostile-input suite: the real CLI against a Cradle API that lies (tests/hostile).

SPEC guarantees 3, 6, 7 and 9 under input nobody should send: url tricks that would hand the API
key to another host, list entries that are poison, list responses that crash or garble a parser,
bombs, endless and trickling bodies, and credentials that cannot be sent. Every test asserts:

- the canary (another loopback port: "any other host") received nothing, so no url, redirect or
  list call took the key anywhere else;
- the valid entries beside the bad one are archived, byte for byte (where the list call itself
  fails: archived by the next pass, once the API behaves);
- the exit code (0 ok, 1 a failed pass, 2 a bad config, 3 dead letters);
- for the bounds cases, the CLI's peak RSS, the spool's size, and the wall time.

Each scenario gets its own API, canary, bucket and state, and is played by a module fixture; its
tests then assert on what it did. The url tricks share one list, as do the poison entries: every
case between valid entries, as in life. Scenarios of one fixture run side by side: most of their
time is spent waiting on trickles, timeouts and process start, and the file must stay short.

A list call that fails for good is retried by the client's policy: eight attempts and about a
minute of backoff. Those scenarios run the CLI with a budget of two attempts (`retry_attempts`,
see tests/hostile/process.py), because the config has no key for it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from archiver.layout import decode_metadata_value
from tests.e2e.harness import Bucket
from tests.hostile.process import Finished, tree_size
from tests.hostile.scene import (
    API_KEY,
    MiB,
    Outcome,
    Played,
    Scenario,
    Scene,
    play_all,
    rid,
    stamp,
    started_scene,
)
from tests.hostile.server import Reply, endless, gzip_bomb, redirect

pytestmark = pytest.mark.e2e


# -- what the tests assert -----------------------------------------------------------------------


def no_traceback(done: Finished) -> None:
    assert "Traceback" not in done.stderr, done.explain()
    assert not done.named("command.crashed"), done.explain()
    assert not done.named("recording.internal_error"), done.explain()


def canary_untouched(outcome: Outcome) -> None:
    """Nothing reached the canary; and every request the API saw carried the right credentials."""
    seen = [(s.method, s.path) for s in outcome.scene.canary.requests()]
    assert seen == [], f"requests reached the canary: {seen}"
    assert outcome.scene.canary.leaks(API_KEY) == []
    assert outcome.scene.api.refused == []


def archived(outcome: Outcome, *ids: str, objects: dict[str, Any] | None = None) -> None:
    """Each recording is in the bucket, with exactly the bytes the API served for it."""
    objects = outcome.objects if objects is None else objects
    for recording_id in ids:
        key = outcome.scene.key(recording_id)
        assert key in objects, f"{key} is not in the bucket: {sorted(objects)}"
        body = outcome.scene.api.bodies[recording_id]
        assert objects[key]["size"] == len(body)
        assert objects[key]["sha256"] == hashlib.sha256(body).hexdigest()
        assert objects[key]["metadata"]["recording-id"] == recording_id


def not_archived(outcome: Outcome, recording_id: str) -> None:
    assert [key for key in outcome.objects if recording_id in key] == []


def attempts(done: Finished, recording_id: str) -> list[tuple[str, bool]]:
    """(reason, dead-lettered) of each failed attempt logged for the recording."""
    return [
        (event["reason"], event["dead_lettered"])
        for event in done.named("recording.failed")
        if event.get("recording_id") == recording_id
    ]


def watermark_reached_the_end(outcome: Outcome) -> None:
    """The horizon is fixed when the pass starts (settle_delay is 0): between before and after."""
    watermark = datetime.fromisoformat(outcome.status["watermark"].replace("Z", "+00:00"))
    assert outcome.before - timedelta(seconds=1) <= watermark <= outcome.after


def list_failed(outcome: Outcome, calls: int) -> None:
    """The pass failed cleanly on the list call: exit 1 and one line for the operator naming the
    list, no traceback, nothing downloaded, nothing in the bucket, the watermark where it was,
    nothing sent elsewhere; and nothing lost: once the API behaves, the next pass archives it."""
    done = outcome.done
    assert done.code == 1, done.explain()
    assert len(done.messages) == 1, done.explain()
    assert done.messages[0].startswith("cradle-archiver: "), done.explain()
    assert "list" in done.messages[0], done.explain()
    no_traceback(done)
    assert outcome.list_calls == calls, done.explain()
    assert [seen.path for seen in outcome.requests if seen.kind != "list"] == []
    assert outcome.status["watermark"] == stamp(outcome.scene.start)
    assert outcome.objects == {}
    canary_untouched(outcome)
    assert outcome.recovered is not None
    assert outcome.recovered.code == 0, outcome.recovered.explain()
    archived(outcome, *outcome.good(), objects=outcome.recovered_objects)


def figures(label: str, done: Finished, calls: int | None = None) -> None:
    """The measured figures, shown with `pytest -s`."""
    shown = f"peak RSS {done.peak_rss / MiB:.0f} MiB, spool peak {done.spool_peak / MiB:.1f} MiB"
    shown += f", wall {done.wall:.1f}s" + ("" if calls is None else f", {calls} list calls")
    print(f"\n[figures] {label}: {shown}")


# -- 1. url tricks -----------------------------------------------------------------------------

# name -> (where the url is: "entry" (the list entry's url) or "redirect" (a download's 302
# Location), the url from (api port, canary port, recording path), the dead letter's reason).
UrlCase = tuple[str, Callable[[int, int, str], str], str]
URL_CASES: dict[str, UrlCase] = {
    "userinfo": ("entry", lambda a, c, p: f"http://x@127.0.0.1:{a}{p}", "bad_url"),
    "userinfo_canary": (
        "entry",
        lambda a, c, p: f"http://127.0.0.1:{c}@127.0.0.1:{a}{p}",
        "bad_url",
    ),
    "tab": ("entry", lambda a, c, p: f"http://127.0.0.\t1:{a}{p}", "bad_url"),
    "newline": ("entry", lambda a, c, p: f"http://127.0.0.1:{a}{p[:8]}\n{p[8:]}", "bad_url"),
    "space": ("entry", lambda a, c, p: f"http://127.0.0.1:{c} @127.0.0.1:{a}{p}", "bad_url"),
    "pct40": ("entry", lambda a, c, p: f"http://127.0.0.1:{c}%40127.0.0.1:{a}{p}", "bad_url"),
    "pct2e": ("entry", lambda a, c, p: f"http://127.0.0%2e1:{a}{p}", "bad_url"),
    "port_99999": ("entry", lambda a, c, p: f"http://127.0.0.1:99999{p}", "bad_url"),
    "port_abc": ("entry", lambda a, c, p: f"http://127.0.0.1:abc{p}", "bad_url"),
    "canary_host": ("entry", lambda a, c, p: f"http://127.0.0.1:{c}{p}", "off_host_url"),
    "other_scheme": ("entry", lambda a, c, p: f"https://127.0.0.1:{a}{p}", "off_host_url"),
    "redirect_canary": ("redirect", lambda a, c, p: f"http://127.0.0.1:{c}{p}", "off_host_url"),
    "redirect_scheme_relative": ("redirect", lambda a, c, p: f"//127.0.0.1:{c}{p}", "off_host_url"),
    "redirect_backslash": (
        "redirect",
        lambda a, c, p: f"http://127.0.0.1:{c}\\@127.0.0.1:{a}{p}",
        "bad_url",
    ),
    # The latest of the failures, so `status` shows it first.
    "backslash": ("entry", lambda a, c, p: f"http://127.0.0.1:{c}\\@127.0.0.1:{a}{p}", "bad_url"),
}


def url_tricks(scene: Scene) -> dict[str, str]:
    """One list: every url trick between valid entries, and one valid on-host redirect."""
    api, canary = scene.api, scene.canary
    ids = {"good-first": scene.add("url-good-first", timedelta(minutes=1))}
    for i, (name, (where, build, _)) in enumerate(URL_CASES.items()):
        recording_id = rid(f"url-{name}")
        location = build(api.port, canary.port, scene.path_of(recording_id))
        if where == "entry":
            ids[name] = scene.add(f"url-{name}", timedelta(minutes=2 + i), url=location)
        else:
            ids[name] = scene.add(f"url-{name}", timedelta(minutes=2 + i))
            api.downloads[recording_id] = redirect(location)
    # An on-host redirect is followed: the check refuses tricks, not redirects.
    moved = ids["good-redirected"] = scene.add("url-good-redirected", timedelta(minutes=30))
    api.downloads[moved] = redirect(f"/files/{moved}.mp3")
    api.routes[f"/files/{moved}.mp3"] = Reply(
        200, api.bodies[moved], [("Content-Type", "audio/mpeg")]
    )
    ids["good-last"] = scene.add("url-good-last", timedelta(minutes=31))
    return ids


# -- 2. poison entries: (durationSeconds as raw JSON, None to leave it out; startedAt, None for
# the time the entry is filed under) ------------------------------------------------------------

POISON: dict[str, tuple[str | None, str | None]] = {
    "duration_infinity": ("Infinity", None),
    "duration_nan": ("NaN", None),
    "duration_1e999": ("1e999", None),
    "duration_minus_infinity": ("-Infinity", None),
    "started_year_1": ("2", "0001-01-01T00:00:00+01:00"),
    "started_9999_12_31": ("2", "9999-12-31T23:59:59-01:00"),
    "started_9999_06_01": ("2", "9999-06-01T00:00:00Z"),
}


def poison_entries(scene: Scene) -> dict[str, str]:
    ids = {"good-first": scene.add("poison-good-first", timedelta(minutes=1))}
    for i, (name, (duration, started)) in enumerate(POISON.items()):
        at = timedelta(minutes=2 + i)
        ids[name] = scene.add(f"poison-{name}", at, duration=duration, started=started)
        ids[f"good-{i}"] = scene.add(f"poison-good-{i}", at + timedelta(seconds=30))
    ids["good-no-duration"] = scene.add("poison-no-duration", timedelta(minutes=20), duration=None)
    return ids


@pytest.fixture(scope="module")
def entries(tmp_path_factory: pytest.TempPathFactory, moto_server: str) -> Played:
    return play_all(
        tmp_path_factory,
        moto_server,
        {
            "urls": Scenario(url_tricks, span=timedelta(minutes=40)),
            "poison": Scenario(poison_entries),
        },
    )


@pytest.mark.parametrize("case", list(URL_CASES))
def test_a_url_trick_is_dead_lettered_and_nothing_reaches_another_host(
    entries: Played, case: str
) -> None:
    outcome = entries["urls"]
    done = outcome.done
    where, _, reason = URL_CASES[case]
    recording_id = outcome.ids[case]
    assert done.code == 3, done.explain()
    no_traceback(done)
    assert attempts(done, recording_id) == [(reason, True)], done.explain()
    # An entry's url is refused before any request; a redirect costs the one answered request.
    assert len(outcome.downloads_of(recording_id)) == (1 if where == "redirect" else 0)
    not_archived(outcome, recording_id)
    canary_untouched(outcome)
    archived(outcome, *outcome.good())


def test_the_url_tricks_show_in_status_as_failed(entries: Played) -> None:
    outcome = entries["urls"]
    status = outcome.status
    assert (status["failed"], status["archived"], status["pending"]) == (
        len(URL_CASES),
        len(outcome.good()),
        0,
    )
    latest = status["recent_failures"][0]
    assert (latest["recording_id"], latest["state"], latest["reason"]) == (
        outcome.ids["backslash"],
        "failed",
        "bad_url",
    )
    assert API_KEY not in outcome.done.stderr + json.dumps(status)


@pytest.mark.parametrize("case", list(POISON))
def test_a_poison_entry_is_recorded_as_malformed_and_the_rest_archived(
    entries: Played, case: str
) -> None:
    outcome = entries["poison"]
    done, status = outcome.done, outcome.status
    recording_id = outcome.ids[case]
    assert done.code == 0, done.explain()
    no_traceback(done)
    logged = [e for e in done.named("entry.malformed") if recording_id in e.get("entry", "")]
    assert len(logged) == 1, done.explain()
    assert outcome.downloads_of(recording_id) == []
    not_archived(outcome, recording_id)
    archived(outcome, *outcome.good())
    canary_untouched(outcome)
    watermark_reached_the_end(outcome)
    assert status["malformed_entries"] == len(POISON)
    assert (status["pending"], status["failed"]) == (0, 0)


def test_a_missing_duration_is_archived_without_a_duration_key(entries: Played) -> None:
    outcome = entries["poison"]
    recording_id = outcome.ids["good-no-duration"]
    assert outcome.done.code == 0, outcome.done.explain()
    archived(outcome, recording_id)
    metadata = outcome.objects[outcome.scene.key(recording_id)]["metadata"]
    assert "duration-seconds" not in metadata
    assert metadata["agent1"] == "Ann Agent"
    canary_untouched(outcome)


# -- 3. list responses -------------------------------------------------------------------------

NAME = "Zoë Müller"
BOM = "\ufeff".encode()
# name -> (Content-Type, bytes before the JSON)
DRESSINGS: dict[str, tuple[str, bytes]] = {
    "charset_bogus": ("application/json; charset=x-bogus", b""),
    "text_plain": ("text/plain", b""),
    "charset_latin1": ("application/json; charset=iso-8859-1", b""),
    "utf8_bom": ("application/json; charset=utf-8", BOM),
}


def dressed(content_type: str, before: bytes) -> Callable[[Scene], dict[str, str]]:
    def script(scene: Scene) -> dict[str, str]:
        api = scene.api
        api.list_reply = lambda seen: Reply(
            200, before + api.list_body(seen), [("Content-Type", content_type)]
        )
        return {
            "good-name": scene.add(f"{content_type}-name", timedelta(minutes=3), agent1=NAME),
            "good-plain": scene.add(f"{content_type}-plain", timedelta(minutes=9)),
        }

    return script


def lying_size(size: str) -> Callable[[Scene], dict[str, str]]:
    """Four entries in the first of 1-minute windows over a 2-minute range; the others are
    empty, which is where `"size": true` (True == 1 > 0 entries) looked truncated."""

    def script(scene: Scene) -> dict[str, str]:
        scene.api.size = size
        at = [timedelta(seconds=10 * i + 10) for i in range(4)]
        return {f"good-{i}": scene.add(f"size-{size}-{i}", at[i]) for i in range(4)}

    return script


@pytest.fixture(scope="module")
def lists(tmp_path_factory: pytest.TempPathFactory, moto_server: str) -> Played:
    scenarios = {name: Scenario(dressed(*dressing)) for name, dressing in DRESSINGS.items()}
    for size in ("999999", "true"):
        scenarios[f"size_{size}"] = Scenario(
            lying_size(size), span=timedelta(minutes=2), archive={"window": "1m"}
        )
    return play_all(tmp_path_factory, moto_server, scenarios)


@pytest.mark.parametrize("dressing", list(DRESSINGS))
def test_a_list_is_read_as_utf8_whatever_its_header_says(lists: Played, dressing: str) -> None:
    outcome = lists[dressing]
    assert outcome.done.code == 0, outcome.done.explain()
    no_traceback(outcome.done)
    archived(outcome, *outcome.good())
    stored = outcome.objects[outcome.scene.key(outcome.ids["good-name"])]["metadata"]["agent1"]
    assert decode_metadata_value(stored) == NAME
    canary_untouched(outcome)


@pytest.mark.parametrize("size", ["999999", "true"])
def test_a_lying_size_costs_a_handful_of_list_calls(lists: Played, size: str) -> None:
    outcome = lists[f"size_{size}"]
    done = outcome.done
    figures(f"size {size}", done, outcome.list_calls)
    assert done.code == 0, done.explain()
    no_traceback(done)
    archived(outcome, *outcome.good())
    # Each call of the walk, split or not: [start, +1m), [+1m, +2m), then up to the horizon.
    windows = len(done.named("window.listed")) - 2 * len(done.named("window.split"))
    assert 2 <= windows <= 4, done.explain()
    if size == "999999":
        # Split once, and the halves held nothing more: the window was complete. (A window
        # under 2 s is not split at all.)
        assert done.named("window.size_mismatch"), done.explain()
        assert outcome.list_calls <= 3 * windows
    else:
        assert not done.named("window.split"), done.explain()  # a bool is not a count
        assert outcome.list_calls == windows
    assert outcome.list_calls <= 10
    watermark_reached_the_end(outcome)
    canary_untouched(outcome)


# -- the list call fails: off-host redirects, a deep nest, a bomb, trickles ---------------------


def list_redirect(backslash: bool) -> Callable[[Scene], dict[str, str]]:
    def script(scene: Scene) -> dict[str, str]:
        c, a = scene.canary.port, scene.api.port
        authority = f"127.0.0.1:{c}\\@127.0.0.1:{a}" if backslash else f"127.0.0.1:{c}"
        scene.api.list_reply = lambda seen: redirect(f"http://{authority}{seen.path}")
        return {"good": scene.add(f"list-redirect-{backslash}", timedelta(minutes=5))}

    return script


def nested(scene: Scene) -> dict[str, str]:
    depth = 100_000
    body = b'{"recordings": [], "x": ' + b"[" * depth + b"]" * depth + b"}"
    scene.api.list_reply = lambda seen: Reply(200, body, [("Content-Type", "application/json")])
    return {"good": scene.add("nested", timedelta(minutes=5))}


def list_bomb(scene: Scene) -> dict[str, str]:
    bomb = gzip_bomb(b'{"recordings": [], "x": "', 2**30, b'"}')  # 1 GiB decoded
    assert len(bomb) < 2 * MiB
    headers = [("Content-Type", "application/json"), ("Content-Encoding", "gzip")]
    scene.api.list_reply = lambda seen: Reply(200, bomb, headers)
    return {"good": scene.add("bomb", timedelta(minutes=5))}


def list_trickle(part: str) -> Callable[[Scene], dict[str, str]]:
    """One byte every 2 s (of the status line and headers, or of the body), timeout 4 s."""
    head_delay, byte_delay = (2.0, 0.0) if part == "head" else (0.0, 2.0)

    def script(scene: Scene) -> dict[str, str]:
        api = scene.api
        api.list_reply = lambda seen: Reply(
            200,
            api.list_body(seen),
            [("Content-Type", "application/json")],
            head_delay=head_delay,
            byte_delay=byte_delay,
        )
        return {"good": scene.add(f"trickle-list-{part}", timedelta(minutes=5))}

    return script


@pytest.fixture(scope="module")
def list_failures(tmp_path_factory: pytest.TempPathFactory, moto_server: str) -> Played:
    def failing(script: Callable[[Scene], dict[str, str]]) -> Scenario:
        return Scenario(script, retry_attempts=2, recover=True)

    return play_all(
        tmp_path_factory,
        moto_server,
        {
            "redirect": failing(list_redirect(backslash=False)),
            "redirect_backslash": failing(list_redirect(backslash=True)),
            "nested": failing(nested),
            "bomb": failing(list_bomb),
            "trickle_body": failing(list_trickle("body")),
            "trickle_head": failing(list_trickle("head")),
        },
    )


@pytest.mark.parametrize("case", ["redirect", "redirect_backslash"])
def test_a_list_call_redirected_off_the_host_fails_the_pass(
    list_failures: Played, case: str
) -> None:
    outcome = list_failures[case]
    # Refused, not retried: following would hand the key to another host.
    list_failed(outcome, calls=1)
    message = outcome.done.messages[0]
    assert "redirect refused" in message, message
    assert "holds a backslash" in message if case == "redirect_backslash" else "not on" in message


def test_a_list_nested_100000_levels_deep_fails_as_malformed(list_failures: Played) -> None:
    outcome = list_failures["nested"]
    list_failed(outcome, calls=2)  # retried: a malformed list may be a passing fault


def test_a_gzip_bomb_list_is_refused_in_bounded_memory(list_failures: Played) -> None:
    outcome = list_failures["bomb"]
    figures("gzip bomb list", outcome.done, outcome.list_calls)
    assert 30 * MiB < outcome.done.peak_rss < 200 * MiB, (
        f"peak RSS {outcome.done.peak_rss / MiB:.0f} MiB"
    )
    list_failed(outcome, calls=2)
    assert outcome.done.wall < 30


@pytest.mark.parametrize("part", ["body", "head"])
def test_a_trickling_list_fails_the_pass_in_bounded_time(list_failures: Played, part: str) -> None:
    outcome = list_failures[f"trickle_{part}"]
    figures(f"trickling list {part}", outcome.done, outcome.list_calls)
    # Two attempts of about 4 s (the timeout; the body must then average 16 KiB/s).
    assert outcome.done.wall < 20, outcome.done.explain()
    assert outcome.done.peak_rss < 200 * MiB
    list_failed(outcome, calls=2)


# -- 4. downloads: encoded, endless, trickling --------------------------------------------------


def around(scene: Scene, name: str, reply: Callable[[bytes], Reply]) -> dict[str, str]:
    """A recording served by `reply(its body)`, between two plain ones."""
    ids = {"good-before": scene.add(f"{name}-before", timedelta(minutes=2))}
    ids["hostile"] = hostile = scene.add(name, timedelta(minutes=4))
    ids["good-after"] = scene.add(f"{name}-after", timedelta(minutes=6))
    scene.api.downloads[hostile] = reply(scene.api.bodies[hostile])
    return ids


AUDIO = [("Content-Type", "audio/mpeg")]


def gzip_download(scene: Scene) -> dict[str, str]:
    encoded = [*AUDIO, ("Content-Encoding", "gzip")]
    ids = around(scene, "gzip-download", lambda body: Reply(200, gzip.compress(body), encoded))
    ids["good-gzip"] = ids.pop("hostile")  # archived, as the decoded MP3
    return ids


def endless_download(scene: Scene) -> dict[str, str]:
    # An ID3 tag, then zeros for ever, chunked, as fast as the archiver reads.
    return around(
        scene, "endless", lambda body: Reply(200, endless(body[:4096]), AUDIO, chunked=True)
    )


def trickle_download(part: str) -> Callable[[Scene], dict[str, str]]:
    head_delay, byte_delay = (2.0, 0.0) if part == "head" else (0.0, 2.0)

    def script(scene: Scene) -> dict[str, str]:
        return around(
            scene,
            f"trickle-{part}",
            lambda body: Reply(200, body, AUDIO, head_delay=head_delay, byte_delay=byte_delay),
        )

    return script


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory, moto_server: str) -> Played:
    return play_all(
        tmp_path_factory,
        moto_server,
        {
            "gzip": Scenario(gzip_download),
            "endless": Scenario(endless_download),
            # One attempt: a trickle is dead-lettered at once, so the test waits for one.
            "trickle_body": Scenario(trickle_download("body"), max_attempts=1),
            "trickle_head": Scenario(trickle_download("head"), max_attempts=1),
        },
    )


def test_a_gzip_encoded_download_is_archived_as_the_decoded_mp3(downloads: Played) -> None:
    outcome = downloads["gzip"]
    assert outcome.done.code == 0, outcome.done.explain()
    no_traceback(outcome.done)
    archived(outcome, *outcome.good())  # the gzip one holds the decoded bytes: the MP3 itself
    asked = outcome.downloads_of(outcome.ids["good-gzip"])
    assert [seen.header("Accept-Encoding") for seen in asked] == ["identity"]
    canary_untouched(outcome)


def test_an_endless_download_fails_too_large_and_leaves_the_spool_empty(
    downloads: Played,
) -> None:
    outcome = downloads["endless"]
    done = outcome.done
    figures("endless download", done)
    assert done.code == 3, done.explain()
    no_traceback(done)
    assert attempts(done, outcome.ids["hostile"]) == [("too_large", True)]
    archived(outcome, *outcome.good())
    assert tree_size(outcome.scene.spool) == 0, list(outcome.scene.spool.rglob("*"))
    assert done.spool_peak <= 129 * MiB  # 128 MiB, the cap, and a chunk
    assert done.peak_rss < 200 * MiB
    assert done.wall < 45
    canary_untouched(outcome)


@pytest.mark.parametrize("part", ["body", "head"])
def test_a_trickling_download_fails_too_slow_and_the_pass_goes_on(
    downloads: Played, part: str
) -> None:
    outcome = downloads[f"trickle_{part}"]
    done = outcome.done
    figures(f"trickling download {part}", done)
    assert done.wall < 20, done.explain()
    assert done.code == 3, done.explain()
    no_traceback(done)
    assert attempts(done, outcome.ids["hostile"]) == [("too_slow", True)]
    archived(outcome, *outcome.good())
    assert tree_size(outcome.scene.spool) == 0
    assert done.peak_rss < 200 * MiB
    canary_untouched(outcome)


# -- 5. config ---------------------------------------------------------------------------------


@pytest.fixture
def scene(tmp_path: Path, bucket: Bucket) -> Iterator[Scene]:
    made = started_scene(tmp_path, bucket, timedelta(minutes=30))
    yield made
    made.api.stop()
    made.canary.stop()


@pytest.mark.parametrize(
    "key", ["sekrit\x07key-9q", " sekrit-key-9q ", "sekrit-key-9q\n", "\tsekrit-key-9q"]
)
def test_an_api_key_that_cannot_be_a_header_is_a_config_error(scene: Scene, key: str) -> None:
    scene.add("config-key", timedelta(minutes=5))
    scene.config(api_key=key)
    done = scene.run()
    assert done.code == 2, done.explain()
    assert "cradle.api_key" in done.stderr, done.explain()
    assert "sekrit" not in done.stderr, "the key was shown"
    assert scene.api.requests() == []
    assert [s.path for s in scene.canary.requests()] == []
    assert scene.bucket.object_keys() == []
