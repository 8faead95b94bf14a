import json

import pytest

from specroll.cli import main
from specroll.core.results import read_summary
from specroll.policies import make_policy
from specroll.simulator import SimConfig, batch_size_over_time, fewest_engines, plot_batch_size

CFG = """
seed = 1
[cluster]
engines = 2
max_batch = 64
[model]
name = "qwen2.5-7b"
profile = "h100-sxm:qwen2.5-7b"
[workload]
preset = "tiny"
prompts = 16
samples = 4
steps = 1
[policy]
name = "fixed"
params = { k = 4 }
[acceptance]
source = "parametric"
alpha = 0.8
"""


def test_fewest_engines_is_the_boundary(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(CFG)
    cfg = SimConfig.from_toml(path)
    ar = make_policy("ar")
    from specroll.simulator._plan import _mean_step_s
    target = _mean_step_s(cfg, 3, ar, None, None) * 1.0001
    best, tried = fewest_engines(cfg, target, ar)
    assert tried[best] <= target
    assert best == 1 or tried[best - 1] > target


def test_plan_cli_writes_a_table(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text(CFG)
    assert main(["plan", str(path), "--step-time", "1e9", "--out", str(tmp_path / "o")]) == 0
    rows = json.loads((tmp_path / "o" / "plan.json").read_text())["rows"]
    assert [r["engines"] for r in rows] == [1, 1]
    assert "no speculation" in capsys.readouterr().out


def test_batch_size_over_time_shows_the_tail(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(CFG)
    data = batch_size_over_time(SimConfig.from_toml(path), [make_policy("ar"), make_policy("fixed", k=4)],
                                engines=2)
    (ar_label, ar), (_, spec) = data.items()
    assert ar_label.startswith("ar")
    assert ar["batch_size"].max() == 32 and ar["batch_size"][-1] == 0
    assert spec["rollout_s"] < ar["rollout_s"]
    png = plot_batch_size(data, tmp_path / "tail.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_an_unmet_target_says_the_best_time_and_the_engines_it_would_need(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text(CFG)
    rc = main(["plan", str(path), "--step-time", "1e-3", "--max-engines", "2", "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert rc == 3 and "not met with up to 2 engines" in out and "best" in out
    s = read_summary(tmp_path / "o" / "plan.json")
    assert s.kind == "plan" and not s.met
    assert all(r["engines"] is None and r["best_step_s"] > 1e-3 for r in s.rows)


def test_extrapolation_fits_a_plus_b_over_engines():
    from specroll.simulator._plan import extrapolate

    tried = {1: 10.0 + 100.0, 2: 10.0 + 50.0, 4: 10.0 + 25.0}  # a = 10, b = 100
    floor, needed = extrapolate(tried, 20.0)
    assert floor == pytest.approx(10.0) and needed == 10
    assert extrapolate(tried, 5.0)[1] is None  # below the floor: no engine count meets it


def test_max_engines_below_one_is_refused(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text(CFG)
    argv = ["plan", str(path), "--step-time", "10", "--max-engines", "0", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "--max-engines" in capsys.readouterr().err and not (tmp_path / "o").exists()
