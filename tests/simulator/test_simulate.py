import json

import pytest

from specroll.cli import main
from specroll.core.errors import SpecrollError
from specroll.simulator import WALL_KEYS, SimConfig, Simulator, simulate, simulate_policies

SMALL = """
seed = 3
[cluster]
engines = 4
max_batch = 32
dispatch = "{dispatch}"
[model]
name = "qwen2.5-7b"
profile = "h100-sxm:qwen2.5-7b"
[workload]
preset = "tiny"
prompts = 16
samples = 4
steps = 2
[policy]
name = "fixed"
params = {{ k = 3 }}
[acceptance]
source = "parametric"
alpha = 0.7
kmax = 6
"""


def _write(tmp_path, text=None, name="c.toml", dispatch="round-robin"):
    path = tmp_path / name
    path.write_text(text if text is not None else SMALL.format(dispatch=dispatch))
    return path


def _drop_wall(summary):
    data = summary if isinstance(summary, dict) else summary.to_json()
    return {k: v for k, v in data.items() if k not in WALL_KEYS}


def test_same_seed_gives_bit_identical_summary(tmp_path):
    cfg = SimConfig.from_toml(_write(tmp_path))
    a = simulate(cfg, show_progress=False)
    b = simulate(SimConfig.from_toml(_write(tmp_path)), show_progress=False)
    a.write(tmp_path / "a")
    b.write(tmp_path / "b")
    ja = json.loads((tmp_path / "a" / "summary.json").read_text())
    jb = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert json.dumps(_drop_wall(ja)) == json.dumps(_drop_wall(jb))
    for name in ("requests.parquet", "engines.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    cfg.seed = 4
    c = simulate(cfg, show_progress=False)
    assert c.summary["makespan_s"] != a.summary["makespan_s"]


def test_summary_has_the_promised_fields(tmp_path):
    r = simulate(SimConfig.from_toml(_write(tmp_path)), show_progress=False)
    s = r.summary
    for key in ("makespan_s", "rollout_s", "train_s", "tokens", "iterations", "mean_accepted_per_iteration",
                "drafted_tokens", "wasted_draft_tokens", "gpu_busy_fraction", "wall_s", "tokens_per_wall_s"):
        assert key in s, key
    assert len(s["steps"]) == 2
    assert s["makespan_s"] == pytest.approx(sum(st["step_s"] for st in s["steps"]))
    for st in s["steps"]:
        assert st["step_s"] == pytest.approx(st["rollout_s"] + st["train_s"] + st["sync_s"])
        assert 0 < st["gpu_busy_fraction"] <= 1
    assert s["tokens"] == int(r.requests["response_len"].sum())
    assert s["wasted_draft_tokens"] == s["drafted_tokens"] - s["accepted_tokens"]
    assert (r.requests["end_s"] <= s["makespan_s"]).all()


@pytest.mark.parametrize("dispatch", ["round-robin", "least-loaded", "longest-predicted-first"])
def test_dispatch_policies_run_and_conserve_tokens(tmp_path, dispatch):
    r = simulate(SimConfig.from_toml(_write(tmp_path, dispatch=dispatch)), show_progress=False)
    # token 0 of each rollout comes from its prefill, every request iteration emits accepted + 1
    assert r.summary["rollouts"] + r.summary["request_iterations"] + r.summary["accepted_tokens"] \
        == r.summary["tokens"]


def test_speculation_beats_ar_and_policies_share_draws(tmp_path):
    from specroll.policies import make_policy

    cfg = SimConfig.from_toml(_write(tmp_path))
    ar, k3, k3b = simulate_policies(cfg, [make_policy("ar"), make_policy("fixed", k=3),
                                          make_policy("fixed", k=3)], show_progress=False)
    assert k3.summary["rollout_s"] < ar.summary["rollout_s"]
    assert _drop_wall(k3.summary) == _drop_wall(k3b.summary)


@pytest.mark.parametrize("patch,field", [
    (('name = "fixed"', 'name = "nope"'), "policy.name"),
    (("engines = 4", "engines = -1"), "cluster.engines"),
    (('profile = "h100-sxm:qwen2.5-7b"', 'profile = "h100-sxm:llama-3.1-8b"'), "model.profile"),
    (('preset = "tiny"', 'trace = "missing.parquet"'), "workload.trace"),
    (("max_batch = 32", "max_batch = 32\nmax_batchh = 3"), "cluster.max_batchh"),
    (('dispatch = "round-robin"', 'dispatch = "random"'), "cluster.dispatch"),
])
def test_bad_configs_give_one_clear_error(tmp_path, capsys, patch, field):
    text = SMALL.format(dispatch="round-robin").replace(*patch)
    path = _write(tmp_path, text)
    with pytest.raises(SpecrollError) as exc:
        Simulator(SimConfig.from_toml(path))
    assert exc.value.field == field
    assert str(path) in exc.value.message and "Fix:" in exc.value.message
    rc = main(["simulate", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("specroll: error:") and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_cli_overrides_policy_and_writes_files(tmp_path, capsys):
    path = _write(tmp_path)
    out = tmp_path / "out"
    assert main(["simulate", str(path), "--out", str(out), "--policy", "fixed", "--param", "k=5"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["policy"] == {"policy": "fixed", "params": {"k": 5}}
    assert (out / "requests.parquet").exists() and (out / "engines.parquet").exists()
    assert "makespan" in capsys.readouterr().out
    (tmp_path / "best.json").write_text(json.dumps({"policy": "ar", "params": {}}))
    assert main(["simulate", str(path), "--out", str(out), "--policy-file", str(tmp_path / "best.json")]) == 0
    assert json.loads((out / "summary.json").read_text())["drafted_tokens"] == 0
