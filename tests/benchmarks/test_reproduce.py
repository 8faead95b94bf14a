"""benchmarks/reproduce.py --check: every figure block in the docs is what its committed JSON renders,
and the checked docs hold no hand-typed figures."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.append(str(ROOT))  # the benchmarks package; specroll comes from the install

from benchmarks import reproduce  # noqa: E402


def test_the_docs_match_their_jsons():
    assert reproduce.check() == []


def test_a_changed_figure_and_a_hand_typed_row_are_caught():
    text = "x\n<!-- figure:presets -->\n| a | 1.5 |\n<!-- /figure:presets -->\n| typed | 2.5 |\n"
    new, unknown = reproduce.render_doc(text, {"presets": "| a | 1.6 |"})
    assert "1.6" in new and "1.5" not in new and not unknown
    assert reproduce.hand_typed_rows(text) == [5]
    assert reproduce.render_doc("<!-- figure:nope -->\n<!-- /figure:nope -->", {})[1] == ["nope"]
