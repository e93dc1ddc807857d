"""The supersede/purge rule (unlearning.compliance.purge): which versions, which dates, what is due."""

from datetime import datetime, timedelta, timezone

import pytest

from unlearning.compliance import purge as rule
from unlearning.errors import UnlearnError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def test_every_earlier_version_not_purged_yet_is_superseded():
    versions = {"1": {"purged": "2026-01-01T00:00:00+00:00"}, "2": {"verified": "false", "rolled_back": "x"},
                "3": {}, "4": {}, "5": {}}
    assert rule.superseded("4", versions) == ["2", "3"]  # not 1 (purged already), not 4 itself, not 5 (newer)
    assert rule.superseded("1", versions) == []


def test_purge_time_and_due():
    assert rule.purge_time(NOW, None) == NOW == rule.purge_time(NOW, 0)
    later = rule.purge_time(NOW, 30)
    assert later - NOW == timedelta(days=30)
    tags = {rule.PURGE_AFTER: rule.iso(later)}
    assert not rule.is_due(tags, NOW) and rule.is_due(tags, later) and rule.is_due(tags, later + timedelta(days=1))
    assert not rule.is_due({**tags, rule.PURGED: rule.iso(later)}, later + timedelta(days=1))
    assert not rule.is_due({}, NOW)  # never superseded


def test_a_version_superseded_twice_keeps_the_earlier_date_and_its_data_version():
    first = rule.supersede_tags({}, "2", NOW + timedelta(days=30), "aaa.dir")
    assert first == {rule.SUPERSEDED_BY: "2", rule.PURGE_AFTER: rule.iso(NOW + timedelta(days=30)),
                     rule.PURGE_DATA: "aaa.dir"}
    sooner = rule.supersede_tags(first, "3", NOW, None)
    assert sooner[rule.PURGE_AFTER] == rule.iso(NOW) and sooner[rule.SUPERSEDED_BY] == "2"
    assert rule.PURGE_DATA not in sooner  # the data version already scheduled stays as it is
    later = rule.supersede_tags(first, "3", NOW + timedelta(days=90), "bbb.dir")
    assert later[rule.PURGE_AFTER] == first[rule.PURGE_AFTER] and rule.PURGE_DATA not in later


@pytest.mark.parametrize("value, days", [(None, None), ("", None), ("0", 0), (" 30 ", 30), (7, 7), ("3650", 3650)])
def test_keep_days(value, days):
    assert rule.check_keep_days(value) == days


# "²" passes str.isdigit() and int() raises on it (a traceback, exit 1); "٣" (Arabic-Indic 3) is not "3"
@pytest.mark.parametrize("value", ["-3", "a week", "1.5", "3651", True, "+5", "²", "٣", "1_0"])
def test_keep_days_refuses_what_is_not_a_whole_number_of_days(value):
    with pytest.raises(UnlearnError, match="whole number of days from 0 to 3650"):
        rule.check_keep_days(value)


def test_the_rolled_back_tag_is_named_in_one_place():
    """The release writes `rolled_back` and three readers skip the versions it marks (a request's
    earlier result, the gates' requests outside the ledger, an audit's promotion): each spelled it
    out, so renaming it in one would have let a rolled-back candidate pass for a promoted one there."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spelled = [f"{path.relative_to(root)}:{node.lineno}" for folder in ("tasks", "flows")
               for path in sorted((root / folder).rglob("*.py"))
               for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Constant) and node.value == rule.ROLLED_BACK]
    assert spelled == []
