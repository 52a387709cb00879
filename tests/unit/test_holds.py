"""Hold rules: what each selector matches, how they are kept, and the CLI's selector check."""

from __future__ import annotations

import argparse
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from archiver.checkpoint import Checkpoint
from archiver.cli import build_parser, hold_rule
from archiver.errors import UsageError
from archiver.holds import HoldRule, Selector, period_rule, to_change
from archiver.models import Recording

RID = "935f1dc8-b56a-535c-b678-95edf74c593c"
CALL = Recording(
    recording_id=RID,
    url=f"https://api.cradle.io/api/v1/public/recordings/{RID}.mp3",
    started_at=datetime(2024, 5, 1, 10, tzinfo=UTC),
    duration_seconds=60,
    nature="in",
    agent1="Ann@Example.com",
    agent2="bob@example.com",
    cradle_number="+441234",
    third_party_number="+339876",
)


@pytest.mark.parametrize(
    ("rule", "matches"),
    [
        (HoldRule(Selector.IDS, (RID,), "r"), True),
        (HoldRule(Selector.IDS, ("0" * 8 + RID[8:],), "r"), False),
        (HoldRule(Selector.NUMBER, ("+441234",), "r"), True),
        (HoldRule(Selector.NUMBER, ("+339876",), "r"), True),
        (HoldRule(Selector.NUMBER, ("+000",), "r"), False),
        (HoldRule(Selector.AGENT, ("ann@example.com",), "r"), True),
        (HoldRule(Selector.AGENT, ("bob@example.com",), "r"), True),
        (HoldRule(Selector.AGENT, ("carol@example.com",), "r"), False),
        (period_rule(CALL.started_at, datetime(2024, 5, 2, tzinfo=UTC), "r"), True),
        (period_rule(datetime(2024, 4, 1, tzinfo=UTC), CALL.started_at, "r"), False),
    ],
)
def test_each_selector_matches_what_it_names(rule: HoldRule, matches: bool) -> None:
    assert rule.matches(CALL) is matches


def test_only_a_period_rule_bounds_the_archived_rows_read() -> None:
    end = datetime(2024, 5, 2, tzinfo=UTC)
    assert period_rule(CALL.started_at, end, "r").bounds() == (CALL.started_at, end)
    assert HoldRule(Selector.AGENT, ("ann@example.com",), "r").bounds() == (None, None)


def test_removing_a_hold_spares_what_another_hold_still_wants(tmp_path: Path) -> None:
    other_id = "1" * 8 + RID[8:]
    other = replace(
        CALL,
        recording_id=other_id,
        url=CALL.url.replace(RID, other_id),
        agent1="carol@example.com",
        agent2=None,
    )
    with Checkpoint.open(tmp_path / "state.db") as checkpoint:
        checkpoint.add_listed([CALL, other])
        for call in (CALL, other):
            checkpoint.mark_archived(
                call.recording_id, sha256="ab" * 32, size=1, key=call.recording_id
            )
        rows = list(checkpoint.archived())
    number = HoldRule(Selector.NUMBER, ("+441234",), "case 42")
    agent = HoldRule(Selector.AGENT, ("ann@example.com",), "case 43")

    def changed(adding: bool, others: list[HoldRule]) -> list[str]:
        return [
            row.recording.recording_id for row in to_change(number, rows, others, adding=adding)
        ]

    assert changed(True, [agent]) == [CALL.recording_id, other.recording_id]
    assert changed(False, []) == [CALL.recording_id, other.recording_id]
    assert changed(False, [agent]) == [other.recording_id]


def test_rules_are_kept_once_and_removed_by_what_they_select(tmp_path: Path) -> None:
    with Checkpoint.open(tmp_path / "state.db") as checkpoint:
        rule = HoldRule(Selector.NUMBER, ("+441234",), "case 42")
        assert checkpoint.add_hold(rule) and not checkpoint.add_hold(rule)
        assert checkpoint.holds() == [rule]
        assert checkpoint.remove_hold(HoldRule(Selector.NUMBER, ("+441234",), "closed"))
        assert checkpoint.holds() == [] and not checkpoint.remove_hold(rule)


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["hold", "add", *argv])


def test_the_cli_builds_one_rule_from_one_selector() -> None:
    assert hold_rule(parse("--agent", "Ann@Example.com", "--reason", "r")).values == (
        "ann@example.com",
    )
    assert hold_rule(parse(RID.upper(), "--reason", "r")).values == (RID,)
    rule = hold_rule(
        parse("--from", "2024-05-01T00:00:00Z", "--until", "2024-05-02T00:00:00Z", "--reason", "r")
    )
    assert rule.selector is Selector.PERIOD and rule.matches(CALL)


@pytest.mark.parametrize(
    "argv",
    [
        ("--reason", "r"),
        ("--number", "+1", "--agent", "a@b", "--reason", "r"),
        ("--from", "2024-05-01T00:00:00Z", "--reason", "r"),
        ("--from", "2024-05-02T00:00:00Z", "--until", "2024-05-01T00:00:00Z", "--reason", "r"),
    ],
)
def test_a_selection_that_is_not_exactly_one_is_a_usage_error(argv: tuple[str, ...]) -> None:
    with pytest.raises(UsageError, match="hold add"):
        hold_rule(parse(*argv))
