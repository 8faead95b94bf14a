"""rollout(config) and `specroll rollout` end to end on the exact-arithmetic toy model."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from specroll import policies
from specroll.cli import main
from specroll.core.errors import SpecrollError
from specroll.real_backend import RolloutConfig, rollout

BASE = dict(model="toy", prompts=3, samples=2, steps=3, max_new_tokens=40, max_batch=4, seed=5,
            temperature=0.8, drafter="suffix")


def deployable_policies() -> list[str]:
    return [n for n in policies.POLICIES.names() if policies.POLICIES.get(n).deployable]


def test_every_policy_reproduces_ar_tokens():
    ar = rollout(RolloutConfig(**BASE, policy="ar"))
    ar_tokens = ar.trace.table.column("token_ids").to_pylist()
    assert ar.summary["accepted"] == 0
    for name in deployable_policies():
        if name == "ar":
            continue
        cost = {"profile": "h100-sxm:smollm2-135m"} if policies.POLICIES.get(name).needs_cost else {}
        res = rollout(RolloutConfig(**BASE, policy=name, **cost))
        assert res.trace.table.column("token_ids").to_pylist() == ar_tokens, name
        assert res.trace.column("finished").tolist() == ar.trace.column("finished").tolist()


def test_suffix_drafter_learns_from_earlier_steps():
    cfg = dict(BASE, temperature=0.0)  # greedy on the toy: later steps repeat step 0's text
    res = rollout(RolloutConfig(**cfg, policy="fixed", params={"k": 4}))
    acc = [s["accepted_per_iteration"] for s in res.summary["steps"]]
    assert acc[1] > acc[0] and acc[2] > acc[0], acc
    ar = rollout(RolloutConfig(**cfg, policy="ar"))
    assert res.summary["iterations"] < ar.summary["iterations"]


def test_online_acceptance_matches_offline_match_lengths():
    res = rollout(RolloutConfig(**BASE, policy="fixed", params={"k": 3}))
    trace = policies.compute_match_lengths(res.trace, "suffix")
    values, offsets = trace.ragged("match_suffix")
    row_of = {(s, p, g): i for i, (s, p, g) in enumerate(zip(trace.column("step"), trace.column("prompt_id"),
                                                              trace.column("sample")))}
    n_prompts, samples = BASE["prompts"], BASE["samples"]
    checked = 0
    for d in res.decisions:
        local = d["rid"] - d["step"] * n_prompts * samples
        row = row_of[(d["step"], local // samples, local % samples)]
        m = values[offsets[row] + d["generated"]]
        # the last token of a response is the target's own (m_t <= L - 1 - t, as in the simulator)
        left = int(offsets[row + 1] - offsets[row]) - 1 - d["generated"]
        assert d["accepted"] == min(d["k"], m, left), d
        checked += d["k"] > 0
    assert checked > 10


def test_files_are_written_and_reproducible(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert main(["rollout", "--model", "toy", "--policy", "fixed", "--param", "k=3", "--prompts", "2",
                     "--samples", "2", "--steps", "2", "--max-new-tokens", "30", "--max-batch", "3",
                     "--seed", "1", "--out", str(out)]) == 0
    assert (a / "trace.parquet").read_bytes() == (b / "trace.parquet").read_bytes()
    ia, ib = (pq.read_table(p / "iterations.parquet").to_pydict() for p in (a, b))
    timing = [c for c in ia if c.endswith("wall_s")]
    assert timing and {k: v for k, v in ia.items() if k not in timing} == {
        k: v for k, v in ib.items() if k not in timing}
    from specroll.traces import read_trace
    tr = read_trace(a / "trace.parquet")
    assert len(tr) == 8 and set(tr.column("step").tolist()) == {0, 1}
    lens = [len(t) for t in tr.table.column("token_ids").to_pylist()]
    assert lens == tr.column("response_len").tolist()
    summary = json.loads((a / "summary.json").read_text())
    assert len(summary["makespan_s"]) == 2 and summary["tokens"] == sum(lens)
    assert set(ia["step"]) == {0, 1} and min(ia["batch_size"]) >= 1


@pytest.mark.parametrize("argv, needle", [
    (["--model", "llama-9000"], "unknown model"),
    (["--model", "toy", "--max-new-tokens", "5000"], "exceeds the model's context"),
    (["--model", "toy", "--prompts", "0"], "'--prompts': must be >= 1"),
    (["--model", "toy", "--policy", "nope"], "unknown policy"),
])
def test_bad_inputs_give_one_clear_error(tmp_path, capsys, argv, needle):
    rc = main(["rollout", *argv, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err
    assert not (tmp_path / "o" / "trace.parquet").exists()


def test_empty_prompts_file(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text("\n")
    with pytest.raises(SpecrollError, match="no prompts"):
        rollout(RolloutConfig(**{**BASE, "prompts": None}, prompts_file=str(f)))


def test_perturbation_is_deterministic():
    from specroll.real_backend._rollout import perturb_weights
    from specroll.real_backend._toy import ToyLM
    a, b = ToyLM(), ToyLM()
    w0 = a.emb.detach().clone()
    perturb_weights(a, 0.01, seed=1, step=1)
    perturb_weights(b, 0.01, seed=1, step=1)
    assert np.array_equal(a.emb.numpy(), b.emb.numpy()) and not np.array_equal(a.emb.numpy(), w0.numpy())


class PreviousStepDrafter:
    """Test double of a history drafter: proposes the continuation, at the same response position,
    of the previous step's first rollout of the prompt."""

    name, kmax = "prevstep", 4

    def __init__(self):
        self.hist, self.req, self.steps_started = {}, {}, []

    def start_step(self, step):
        self.steps_started.append(step)

    def add_rollout(self, step, prompt_id, prompt_tokens, response_tokens):
        self.hist.setdefault((step, prompt_id), list(response_tokens))

    def begin(self, rid, prompt_id, prompt_tokens):
        step = max([s for s, p in self.hist if p == prompt_id], default=None)
        self.req[rid] = (self.hist.get((step, prompt_id), []), [])

    def extend(self, rid, tokens):
        self.req[rid][1].extend(int(t) for t in tokens)

    def propose(self, rid):
        ref, out = self.req[rid]
        cont = ref[len(out):len(out) + self.kmax]
        return np.asarray(cont, dtype=np.int64), np.full(len(cont), 0.5, dtype=np.float32)

    def end(self, rid):
        del self.req[rid]


class MeanHistory:
    def __init__(self):
        self.lens = {}

    def record(self, step, prompt_id, response_len, finished):
        self.lens.setdefault(prompt_id, []).append(response_len)

    def predict(self, prompt_ids, step):
        return np.array([np.mean(self.lens[p]) if p in self.lens else np.nan for p in prompt_ids])


def test_rollout_pipeline_with_test_doubles(tmp_path, monkeypatch):
    """The rollout plumbing (steps, history, trace, files) independent of the policies package."""
    cfg = dict(BASE, drafter="prevstep", temperature=0.0)  # greedy: every step repeats step 0
    ar = rollout(RolloutConfig(**cfg, policy="ar"), drafter=PreviousStepDrafter(), history=MeanHistory())
    d = PreviousStepDrafter()
    spec = rollout(RolloutConfig(**cfg, policy="fixed", params={"k": 4}), drafter=d, history=MeanHistory())
    assert d.steps_started == [0, 1, 2] and not d.req, "every request ended"
    assert spec.trace.table.column("token_ids").to_pylist() == ar.trace.table.column("token_ids").to_pylist()
    steps = spec.summary["steps"]
    assert steps[0]["accepted"] == 0 and steps[1]["accepted"] > 0 and steps[2]["accepted"] > 0
    assert spec.summary["iterations"] < ar.summary["iterations"]
    assert spec.summary["tokens"] == ar.summary["tokens"] == int(spec.trace.column("response_len").sum())
    assert [s["tokens"] for s in steps] == [
        int(spec.trace.column("response_len")[spec.trace.column("step") == s].sum()) for s in range(3)]
    paths = spec.write(tmp_path)
    from specroll.traces import read_trace
    tr = read_trace(paths["trace"])
    assert tr.meta.model == "toy" and tr.meta.max_response_len == 40
    assert tr.table.column("prompt_token_ids").to_pylist() == spec.trace.table.column(
        "prompt_token_ids").to_pylist()
    it = {k: np.asarray(v) for k, v in pq.read_table(paths["iterations"]).to_pydict().items()}
    dec = {k: v[it["phase"] == "decode"] for k, v in it.items()}
    assert int(dec["accepted"].sum()) == spec.summary["accepted"]
    assert (dec["q_sum"] == dec["batch_size"] + dec["drafted"]).all()
    assert (dec["new_tokens"] <= dec["q_sum"]).all() and (dec["accepted"] <= dec["drafted"]).all()
    assert json.loads(paths["summary"].read_text())["config"]["policy_spec"] == {
        "policy": "fixed", "params": {"k": 4}}


def test_drafter_none_runs_autoregressively():
    res = rollout(RolloutConfig(**{**BASE, "drafter": "none"}, policy="fixed", params={"k": 4}))
    assert res.summary["accepted"] == 0 and res.summary["config"]["kmax"] == 0
    assert all(d["k"] == 0 for d in res.decisions)
    assert res.summary["iterations"] >= max(res.trace.column("response_len")) - 1
