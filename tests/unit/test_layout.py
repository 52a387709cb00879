"""Where and how a recording lands: key, metadata, tags."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from archiver import layout
from archiver.models import Recording
from tests.builders import RECORDING_ID, recording

SHA = "ab" * 32


def test_key_is_prefix_utc_date_and_recording_id() -> None:
    assert layout.object_key("cradle/", recording()) == f"cradle/2022/06/01/{RECORDING_ID}.mp3"


def test_key_without_prefix() -> None:
    assert layout.object_key("", recording()) == f"2022/06/01/{RECORDING_ID}.mp3"


def test_key_dates_an_offset_start_time_by_its_utc_day() -> None:
    # 00:30 on 1 January in Berlin (+01:00) is still 31 December in UTC.
    rec = recording(startedAt="2023-01-01T00:30:00+01:00")
    assert layout.object_key("p/", rec) == f"p/2022/12/31/{RECORDING_ID}.mp3"


def test_key_dates_a_negative_offset_forward_across_midnight() -> None:
    rec = recording(startedAt="2022-02-28T21:00:00-05:00")
    assert layout.object_key("p/", rec) == f"p/2022/03/01/{RECORDING_ID}.mp3"


def test_key_of_a_recording_built_in_another_zone_uses_utc() -> None:
    started = datetime(2022, 6, 2, 1, 0, tzinfo=timezone(timedelta(hours=3)))
    rec = Recording(RECORDING_ID, "u", started, 1, "in", "A")
    assert layout.object_key("", rec) == f"2022/06/01/{RECORDING_ID}.mp3"


def test_key_refuses_a_naive_start_time() -> None:
    rec = Recording(RECORDING_ID, "u", datetime(2022, 6, 1), 1, "in", "A")  # noqa: DTZ001  the case under test
    with pytest.raises(ValueError, match="no time zone"):
        layout.object_key("", rec)


def test_metadata_has_every_field_when_present() -> None:
    assert layout.object_metadata(recording(), SHA.upper()) == {
        "recording-id": RECORDING_ID,
        "started-at": "2022-06-01T10:15:30.250Z",
        "duration-seconds": "93",
        "nature": "in",
        "agent1": "Alice Smith",
        "agent2": "Bob Jones",
        "cradle-number": "+4930123456",
        "third-party-number": "+4940987654",
        "sha256": SHA,
    }


def test_metadata_leaves_out_absent_optional_fields() -> None:
    rec = recording(nature="team", agent2=None, cradleNumber=None, thirdPartyNumber=None)
    metadata = layout.object_metadata(rec, SHA)
    assert set(metadata) == {
        "recording-id",
        "started-at",
        "duration-seconds",
        "nature",
        "agent1",
        "sha256",
    }


def test_metadata_started_at_is_utc_with_z() -> None:
    rec = recording(startedAt="2023-01-01T00:30:00+01:00")
    assert layout.object_metadata(rec, SHA)["started-at"] == "2022-12-31T23:30:00.000Z"


def test_metadata_encodes_a_non_ascii_agent_reversibly_in_ascii() -> None:
    rec = recording(agent1="Jürgen Müller", agent2="渡辺 直美")
    metadata = layout.object_metadata(rec, SHA)
    assert all(value.isascii() for value in metadata.values())
    assert metadata["agent1"] == "=?UTF-8?B?SsO8cmdlbiBNw7xsbGVy?="
    assert layout.decode_metadata_value(metadata["agent1"]) == "Jürgen Müller"
    assert layout.decode_metadata_value(metadata["agent2"]) == "渡辺 直美"


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "",
        "tab\there",
        "line\nbreak",
        " padded ",
        "=?UTF-8?B?SGk=?=",
        "100% =? odd",
        "Zoë",
    ],
)
def test_metadata_values_survive_a_round_trip_as_header_safe_ascii(value: str) -> None:
    encoded = layout.encode_metadata_value(value)
    assert encoded.isascii()
    assert encoded.isprintable()
    assert encoded == encoded.strip()
    assert layout.decode_metadata_value(encoded) == value


def test_plain_ascii_metadata_is_sent_unchanged() -> None:
    assert layout.encode_metadata_value("+49 30 123456") == "+49 30 123456"


def test_tags_have_nature_agent1_and_numbers_but_not_agent2() -> None:
    assert layout.object_tags(recording()) == {
        "nature": "in",
        "agent1": "Alice Smith",
        "cradle-number": "+4930123456",
        "third-party-number": "+4940987654",
    }


def test_tags_of_a_team_call_have_no_numbers() -> None:
    rec = recording(nature="team", cradleNumber=None, thirdPartyNumber=None)
    assert layout.object_tags(rec) == {"nature": "team", "agent1": "Alice Smith"}


@pytest.mark.parametrize(
    ("value", "fitted"),
    [
        ("Alice Smith", "Alice Smith"),
        ("a+b-c=d.e_f:g/h@i", "a+b-c=d.e_f:g/h@i"),
        ("O'Brien, Pat (sales)", "O_Brien_ Pat _sales_"),
        ("Jürgen Müller", "Jürgen Müller"),
        ("渡辺 直美", "渡辺 直美"),
        ("a&b?c#d%e*", "a_b_c_d_e_"),
        ("tab\there", "tab_here"),
    ],
)
def test_tag_values_are_fitted_to_the_s3_character_set(value: str, fitted: str) -> None:
    assert layout.fit_tag_value(value) == fitted


def test_tag_values_are_cut_to_256_characters() -> None:
    assert layout.fit_tag_value("x" * 300) == "x" * 256
    rec = recording(agent1="y" * 1000)
    assert len(layout.object_tags(rec)["agent1"]) == 256


def test_tagging_header_is_url_encoded_and_parses_back() -> None:
    tags = {"agent1": "Jürgen Müller", "cradle-number": "+4930123", "nature": "a=b&c"}
    header = layout.tagging_header(tags)
    assert header.isascii()
    assert " " not in header
    assert "+" not in header
    assert header.startswith("agent1=J%C3%BCrgen%20M%C3%BCller&cradle-number=%2B4930123&")
    assert dict(parse_qsl(header, keep_blank_values=True)) == tags


def test_tagging_header_of_no_tags_is_empty() -> None:
    assert layout.tagging_header({}) == ""


# --- S3's 2 KB of user metadata ---------------------------------------------------------------


def with_free_text(
    agent1: str, agent2: str | None = None, cradle: str | None = None, third: str | None = None
) -> Recording:
    return dataclasses.replace(
        recording(), agent1=agent1, agent2=agent2, cradle_number=cradle, third_party_number=third
    )


def assert_fits_and_decodes(rec: Recording, metadata: dict[str, str]) -> None:
    assert layout.metadata_size(metadata) <= layout.METADATA_MAX == 2048
    originals = {
        "agent1": rec.agent1,
        "agent2": rec.agent2,
        "cradle-number": rec.cradle_number,
        "third-party-number": rec.third_party_number,
    }
    for key, value in metadata.items():
        assert value.isascii() and value.isprintable() and value == value.strip(), key
        decoded = layout.decode_metadata_value(value)
        if key in originals and decoded != originals[key]:
            # Cut: a prefix of the original, marked (or nothing, if not even the marker fits).
            original = originals[key] or ""
            assert decoded == "" or (
                decoded.endswith(layout.TRUNCATED)
                and original.startswith(decoded.removesuffix(layout.TRUNCATED))
            ), key


LONG = {
    "ascii": "A" * 10_000,
    "non-ascii": "渡辺 直美 Zoë " * 1_000,
    "control": "\x00\x01\n\t\x7f" * 2_000,
    "emoji": "\U0001f600" * 3_000,
    "looks-encoded": "=?UTF-8?B?" * 1_000,
}


@pytest.mark.parametrize("kind", LONG)
def test_a_10kb_agent_name_is_cut_with_a_marker_to_fit_2kb(kind: str) -> None:
    rec = with_free_text(LONG[kind], "Bob Jones", "+4930123456", "+4940987654")
    with capture_logs() as logs:
        metadata = layout.object_metadata(rec, SHA)
    assert_fits_and_decodes(rec, metadata)
    assert layout.decode_metadata_value(metadata["agent1"]).endswith("...[truncated]")
    # The short values beside it are kept exactly.
    assert (metadata["agent2"], metadata["cradle-number"]) == ("Bob Jones", "+4930123456")
    assert logs == [
        {
            "event": "metadata.truncated",
            "log_level": "warning",
            "recording_id": RECORDING_ID,
            "keys": ["agent1"],
        }
    ]


@pytest.mark.parametrize("kind", LONG)
def test_every_free_text_field_long_still_fits_and_shares_the_room(kind: str) -> None:
    value = LONG[kind]
    rec = with_free_text(value, value, value, value)
    metadata = layout.object_metadata(rec, SHA)
    assert_fits_and_decodes(rec, metadata)
    # Each gets a fair share of the ~1,800 bytes left, none starves the others.
    assert min(len(metadata[k]) for k in layout.FREE_TEXT) > 400
    # And the fields we control are whole.
    assert metadata["recording-id"] == RECORDING_ID and metadata["sha256"] == SHA


def test_the_cut_keeps_as_much_as_fits() -> None:
    rec = with_free_text("A" * 10_000)
    metadata = layout.object_metadata(rec, SHA)
    assert layout.metadata_size(metadata) == layout.METADATA_MAX  # no byte left unused


def test_values_that_fit_are_never_touched() -> None:
    # 1,700 bytes of agent name fits beside the rest: kept whole, no marker.
    rec = with_free_text("B" * 1_700)
    metadata = layout.object_metadata(rec, SHA)
    assert metadata["agent1"] == "B" * 1_700
    assert layout.metadata_size(metadata) <= 2048


def test_a_missing_duration_is_left_out_not_written_as_zero() -> None:
    rec = dataclasses.replace(recording(), duration_seconds=None)
    assert "duration-seconds" not in layout.object_metadata(rec, SHA)
    assert layout.object_metadata(recording(), SHA)["duration-seconds"] == "93"


def long_text() -> st.SearchStrategy[str]:
    """Short text, or a short piece repeated into kilobytes (cheaper than drawing 10 KB)."""
    piece = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
    return st.one_of(
        piece,
        st.builds(lambda p, n: p * n, piece, st.integers(min_value=1, max_value=4_000)),
    )


@given(
    agent1=long_text(),
    agent2=st.none() | long_text(),
    cradle=st.none() | long_text(),
    third=st.none() | long_text(),
)
@settings(max_examples=300, deadline=None)
def test_metadata_always_fits_2kb_and_decodes(
    agent1: str, agent2: str | None, cradle: str | None, third: str | None
) -> None:
    rec = with_free_text(agent1, agent2 or None, cradle or None, third or None)
    metadata = layout.object_metadata(rec, SHA)
    assert_fits_and_decodes(rec, metadata)
    if (
        layout.metadata_size(
            {k: layout.encode_metadata_value(v) for k, v in _plain_fields(rec).items()}
        )
        <= layout.METADATA_MAX
    ):
        assert all(  # nothing needed cutting: exactly as before
            layout.decode_metadata_value(metadata[k]) == v for k, v in _plain_fields(rec).items()
        )


def _plain_fields(rec: Recording) -> dict[str, str]:
    fields = {
        "recording-id": rec.recording_id,
        "started-at": "2022-06-01T10:15:30.250Z",
        "duration-seconds": str(rec.duration_seconds),
        "nature": rec.nature,
        "agent1": rec.agent1,
        "agent2": rec.agent2,
        "cradle-number": rec.cradle_number,
        "third-party-number": rec.third_party_number,
        "sha256": SHA,
    }
    return {k: v for k, v in fields.items() if v is not None}


def test_the_walked_audio_length_and_a_mismatch_go_in_the_metadata() -> None:
    call = recording()
    metadata = layout.object_metadata(call, "ab" * 32, audio_seconds=59.96, audio_mismatch=True)
    assert metadata["audio-seconds"] == "60.0" and metadata["audio-mismatch"] == "true"
    plain = layout.object_metadata(call, "ab" * 32)
    assert "audio-seconds" not in plain and "audio-mismatch" not in plain
