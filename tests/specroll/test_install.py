"""`pip install specroll` (no extras) simulates, tunes, plans and reports: those paths never import
the real backend's dependencies. Checked here with the [real] modules made unimportable in a fresh
interpreter; the slow test builds a fresh virtual environment without torch for real."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCK = "import sys\nfor m in ('torch', 'gguf', 'tokenizers', 'jinja2'):\n    sys.modules[m] = None\n"


def _cli(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    code = BLOCK + f"from specroll.cli import main\nsys.exit(main({list(argv)!r}))\n"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={"SPECROLL_PROGRESS": "0", "PATH": "/usr/bin:/bin"})


def test_simulate_tune_plan_report_run_without_the_real_backends_modules(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text((ROOT / "examples" / "tune.toml").read_text()
                   .replace("prompts = 64", "prompts = 8").replace("engines = 8", "engines = 2"))
    for argv in (["simulate", str(cfg), "--out", str(tmp_path / "sim")],
                 ["tune", str(cfg), "--trials", "2", "--out", str(tmp_path / "tune")],
                 ["plan", str(cfg), "--step-time", "100000", "--out", str(tmp_path / "plan")],
                 ["report", str(tmp_path / "sim"), "--out", str(tmp_path / "rep")],
                 ["trace", "import", "servegen", "--prompts", "4", "--out", str(tmp_path / "r1.parquet")]):
        res = _cli(tmp_path, *argv)
        assert res.returncode == 0, (argv, res.stderr[-2000:])


def test_the_real_backend_without_its_extra_is_one_clear_error(tmp_path):
    res = _cli(tmp_path, "rollout", "--prompts", "1", "--out", str(tmp_path / "r"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "pip install 'specroll[real]'" in res.stderr


@pytest.mark.slow
def test_pip_install_without_extras_in_a_fresh_venv_simulates(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(ROOT)], check=True)
    assert subprocess.run([str(py), "-c", "import torch"], capture_output=True).returncode != 0
    cmd = [str(env_dir / "bin" / "specroll"), "simulate", str(ROOT / "examples" / "reference.toml"),
           "--out", str(tmp_path / "ref")]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "ref" / "summary.json").is_file()
