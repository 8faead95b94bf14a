"""The README's Python example runs as written (from the repository root) and does what it says."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python_block(section: str) -> str:
    text = (ROOT / "README.md").read_text()
    part = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", part, flags=re.S)
    assert len(blocks) == 1, f"expected one python block under '{section}'"
    return blocks[0]


def test_from_python_example_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")  # the test's own choice: no screen here
    code = _python_block("From Python").replace('"examples/reference.toml"',
                                                repr(str(ROOT / "examples" / "reference.toml")))
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    out = capsys.readouterr().out
    assert "simulated on h100-sxm:qwen2.5-7b" in out and "speedup" in out
    ar, das = scope["ar"], scope["das"]
    assert das.makespan_s < ar.makespan_s  # speculation pays on the reference
    assert (tmp_path / "batch.png").read_bytes()[:4] == b"\x89PNG"
