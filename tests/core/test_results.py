"""specroll.core.results: summaries say their kind and schema version; readers dispatch on them."""

from __future__ import annotations

import json
from typing import Literal

import pytest

from specroll.core.errors import SpecrollError
from specroll.core.results import SCHEMA_VERSION, Summary, parse_summary, read_summary, register_summary


@register_summary
class ToySummary(Summary):
    kind: Literal["toy-test"] = "toy-test"
    makespan_s: float
    note: str | None = None


def test_write_and_read_back_by_kind(tmp_path):
    s = ToySummary(makespan_s=1.5)
    path = s.write(tmp_path / "summary.json")
    data = json.loads(path.read_text())
    assert list(data)[:2] == ["kind", "schema_version"] and data["schema_version"] == SCHEMA_VERSION
    back = read_summary(path)
    assert isinstance(back, ToySummary) and back.makespan_s == 1.5
    assert back["makespan_s"] == 1.5 and "makespan_s" in back and "nope" not in back
    with pytest.raises(KeyError):
        back["nope"]  # a renamed key is an error, never a silent default


@pytest.mark.parametrize("data, field", [
    ({"makespan_s": 1.0}, "kind"),
    ({"kind": "nope", "schema_version": SCHEMA_VERSION}, "kind"),
    ({"kind": "toy-test", "schema_version": 99, "makespan_s": 1.0}, "schema_version"),
    ({"kind": "toy-test", "schema_version": SCHEMA_VERSION, "makespan": 1.0}, "makespan_s"),
    ({"kind": "toy-test", "schema_version": SCHEMA_VERSION, "makespan_s": 1.0, "extra": 2}, "extra"),
])
def test_unknown_kinds_versions_and_keys_are_refused(data, field):
    with pytest.raises(SpecrollError) as exc:
        parse_summary(data, file="s.json")
    assert exc.value.field == field and exc.value.file == "s.json"


def test_a_kind_registers_once():
    with pytest.raises(ValueError):
        register_summary(ToySummary)
