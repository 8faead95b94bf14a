"""The report's HTML: escaping, tables, notes and images embedded as base64 data URIs.

The page is self-contained on purpose (inline CSS, images as data URIs, no JavaScript, nothing
fetched), so it can be mailed, attached to a ticket or opened offline; the PNGs are also written
beside it for slides.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       color: #1d2433; background: #f4f5f7; margin: 0; }
main { max-width: 1320px; margin: 0 auto; padding: 18px 28px 40px; }
h1 { font-size: 22px; margin: 8px 0 2px; }
h2 { font-size: 18px; margin: 0 0 6px; padding-bottom: 4px; border-bottom: 2px solid #d6dae2; }
h3 { font-size: 15px; margin: 16px 0 6px; color: #34405a; }
section { background: #fff; border: 1px solid #dde1e8; border-radius: 6px; padding: 14px 18px 16px;
          margin: 16px 0; }
.sub { color: #5b6478; margin: 0 0 10px; }
.kind { display: inline-block; font-size: 11px; font-weight: 600; letter-spacing: .04em;
        text-transform: uppercase; color: #fff; background: #4477aa; border-radius: 3px;
        padding: 1px 6px; margin-right: 8px; vertical-align: 2px; }
table { border-collapse: collapse; margin: 4px 0 10px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #e4e7ec; padding: 3px 10px; text-align: right; vertical-align: top; }
th { background: #f0f2f5; font-weight: 600; }
td { white-space: nowrap; }
.tablewrap { overflow-x: auto; }
th:first-child, td:first-child { text-align: left; }
td.text, th.text { text-align: left; }
td.text { white-space: normal; max-width: 30em; }
table.kv th { text-align: left; background: none; font-weight: normal; color: #5b6478; white-space: nowrap; }
table.kv td { text-align: left; padding-right: 32px; font-weight: 600; white-space: normal; min-width: 11em; }
.figs { display: grid; grid-template-columns: repeat(auto-fill, minmax(600px, 1fr)); gap: 12px; }
figure { margin: 0; }
.figs figure.wide { grid-column: 1 / -1; }
figure img { width: 100%; height: auto; border: 1px solid #e4e7ec; border-radius: 4px; background: #fff; }
figcaption { color: #5b6478; font-size: 12.5px; margin-top: 2px; }
.note { background: #fff8e1; border-left: 4px solid #f0b429; padding: 6px 10px; margin: 8px 0; }
.error { background: #fdecea; border-left: 4px solid #cc3311; padding: 6px 10px; margin: 8px 0; }
.toc a { margin-right: 14px; white-space: nowrap; }
code { background: #f0f2f5; padding: 0 3px; border-radius: 3px; font-size: 12.5px; }
.good { color: #1a7f37; } .bad { color: #cc3311; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: thousands separators for integers, ``digits`` significant-ish decimals for
    floats, a dash for missing values (None, NaN)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.{digits}g}"
        if abs(value) >= 100:
            return f"{value:,.1f}"
        return f"{value:.{digits}f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt(v)}" for k, v in value.items()) or "–"
    return str(value)


def pct(value: float | None, digits: int = 1, signed: bool = True) -> str:
    """A ratio shown as a percentage (0.05 -> +5.0 %)."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{100 * value:{'+' if signed else ''}.{digits}f} %"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, raw: bool = False,
          text_cols: Sequence[int] = ()) -> str:
    """An HTML table; cells are formatted with :func:`fmt` and escaped unless ``raw``."""
    def cell(tag: str, i: int, v: Any) -> str:
        cls = ' class="text"' if i in text_cols else ""
        body = str(v) if raw else esc(v if isinstance(v, str) else fmt(v))
        return f"<{tag}{cls}>{body}</{tag}>"

    head = "".join(cell("th", i, esc(h) if raw else h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def kv_table(pairs: Iterable[tuple[str, Any]], cols: int = 1) -> str:
    """Key/value pairs (headline figures), ``cols`` pairs per row, filled column by column."""
    cells = [f"<th>{esc(k)}</th><td>{esc(v if isinstance(v, str) else fmt(v))}</td>" for k, v in pairs]
    per_col = -(-len(cells) // cols)
    rows = []
    for i in range(per_col):
        row = [cells[c * per_col + i] for c in range(cols) if c * per_col + i < len(cells)]
        rows.append("<tr>" + "".join(row) + "</tr>")
    return f'<table class="kv"><tbody>{"".join(rows)}</tbody></table>'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def error(text: str) -> str:
    return f'<p class="error">{esc(text)}</p>'


def image(path: Path, caption: str = "", *, wide: bool = False) -> str:
    """The PNG at ``path`` embedded as a data URI (the page needs no other file), captioned;
    ``wide`` spans the whole row of the figure grid."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    cls = ' class="wide"' if wide else ""
    return (f'<figure{cls}><img alt="{esc(caption or Path(path).name)}" '
            f'src="data:image/png;base64,{data}">{cap}</figure>')


def figures(items: Sequence[str]) -> str:
    """A responsive grid of figures (two per row on a wide screen)."""
    return f'<div class="figs">{"".join(items)}</div>' if items else ""


def page(title: str, subtitle: str, toc: Sequence[tuple[str, str]], body: str) -> str:
    links = "\n".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in toc)  # newlines: the list can wrap
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
        f"<style>{CSS}</style></head><body><main>"
        f"<h1>{esc(title)}</h1><p class=\"sub\">{esc(subtitle)}</p>"
        f"<p class=\"toc\">{links}</p>{body}</main></body></html>\n"
    )


def section(anchor: str, kind: str, title: str, subtitle: str, body: str) -> str:
    sub = f'<p class="sub">{esc(subtitle)}</p>' if subtitle else ""
    return (f'<section id="{esc(anchor)}"><h2><span class="kind">{esc(kind)}</span>{esc(title)}</h2>'
            f"{sub}{body}</section>")
