import json

from specroll.cli import main
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
