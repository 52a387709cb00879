"""The legal holds' rules, kept as given; holds.py decides what they select."""

from __future__ import annotations

import json

from archiver.checkpoint.connection import Connection
from archiver.holds import HoldRule, Selector


class Holds(Connection):
    """The `holds` table."""

    def add_hold(self, rule: HoldRule) -> bool:
        """Keep a hold rule; False when one selecting the same recordings is kept already."""
        with self._write() as conn:
            added = conn.execute(
                "INSERT INTO holds (selector, selection, reason, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (selector, selection) DO NOTHING",
                (rule.selector.value, json.dumps(rule.values), rule.reason, self._now()),
            ).rowcount
        return bool(added)

    def remove_hold(self, rule: HoldRule) -> bool:
        """Drop the rule selecting what `rule` selects; False when there was none."""
        with self._write() as conn:
            removed = conn.execute(
                "DELETE FROM holds WHERE selector = ? AND selection = ?",
                (rule.selector.value, json.dumps(rule.values)),
            ).rowcount
        return bool(removed)

    def holds(self) -> list[HoldRule]:
        rows = self._query("SELECT selector, selection, reason FROM holds ORDER BY id")
        return [HoldRule(Selector(row[0]), tuple(json.loads(row[1])), row[2]) for row in rows]
