"""`--model PATH`: local Hugging Face checkpoints of the Llama, Qwen2 and Qwen3 families, built by
transformers in a temporary folder: same logits as transformers, same chat-templated prompts, and
speculative rollouts equal to autoregressive ones."""

from __future__ import annotations

import json

import pytest
import torch

from specroll.cli import main
from specroll.core.errors import SpecrollError
from specroll.real_backend import KVCache, RolloutConfig, load_model, load_tokenizer, rollout
from specroll.real_backend._hf import checkpoint_name, hf_config, to_hf_state_dict

from .hf_checkpoints import CASES, write_checkpoint

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {case: (root / case, write_checkpoint(root / case, case, seed=i)) for i, case in enumerate(CASES)}


def _forward(model, tokens, slots, start, cache):
    with torch.inference_mode():
        return model(tokens, slots, start, cache)


@pytest.mark.parametrize("case", list(CASES))
def test_logits_equal_transformers_on_the_checkpoint(checkpoints, case):
    folder, hf = checkpoints[case]
    model = load_model(str(folder))
    family, tied, _ = CASES[case]
    cfg = model.cfg
    assert cfg.name == checkpoint_name(folder) and cfg.tied_embeddings == tied
    assert (model.lm_head is None) == tied
    assert cfg.qkv_bias == (family == "qwen2" or case.endswith("bias")) and cfg.qk_norm == (family == "qwen3")
    tokens = torch.randint(0, cfg.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1))
    ours = _forward(model, tokens, torch.arange(2), torch.zeros(2, dtype=torch.int64), KVCache(cfg, 2, 64))
    with torch.inference_mode():
        ref = hf(tokens).logits
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=1e-4)
    # Through the cache: a prefill, then decode and verify chunks at later positions.
    cache = KVCache(cfg, 1, 64)
    parts = [_forward(model, tokens[:1, :9], torch.tensor([0]), torch.tensor([0]), cache)]
    for t in range(9, 40, 4):
        parts.append(_forward(model, tokens[:1, t:t + 4], torch.tensor([0]), torch.tensor([t]), cache))
    torch.testing.assert_close(torch.cat(parts, dim=1), ref[:1], atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("case", ["llama-untied-rope3-bias", "qwen3-tied"])
def test_our_weights_round_trip_to_transformers(checkpoints, case):
    from transformers import AutoConfig, AutoModelForCausalLM

    folder, _ = checkpoints[case]
    model = load_model(str(folder))
    hf = AutoModelForCausalLM.from_config(AutoConfig.for_model(**hf_config(model.cfg))).eval()
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model), strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    tokens = torch.randint(0, model.cfg.vocab_size, (1, 20), generator=torch.Generator().manual_seed(2))
    ours = _forward(model, tokens, torch.tensor([0]), torch.tensor([0]), KVCache(model.cfg, 1, 32))
    with torch.inference_mode():
        torch.testing.assert_close(ours, hf(tokens).logits, atol=2e-4, rtol=1e-4)


def test_tokenizer_and_chat_template_equal_transformers(checkpoints):
    from transformers import AutoTokenizer

    folder, _ = checkpoints["qwen2-tied"]
    ours, ref = load_tokenizer(str(folder)), AutoTokenizer.from_pretrained(str(folder))
    msgs = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Tom has 3 boxes of 12 pencils. How many? (é, 日本)"}]
    want = ref.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert ours.apply_chat_template(msgs, tokenize=False) == want
    assert ours.apply_chat_template(msgs) == ref(want, add_special_tokens=False)["input_ids"]
    assert ours.eos_token_id == ref.eos_token_id == 258
    ids = ours.encode("12 + 30 = 42")
    assert ours.decode(ids) == ref.decode(ids) == "12 + 30 = 42"


@pytest.mark.parametrize("case, temperature", [("qwen3-untied", 0.0), ("qwen2-tied", 0.9),
                                               ("llama-untied-rope3-bias", 0.0)])
def test_speculative_rollouts_equal_ar_on_a_checkpoint(checkpoints, case, temperature):
    folder, _ = checkpoints[case]
    base = dict(model=str(folder), prompts=2, samples=2, steps=2, max_new_tokens=24, max_batch=4,
                temperature=temperature, seed=3)
    ar = rollout(RolloutConfig(**base, policy="ar"))
    spec = rollout(RolloutConfig(**base, policy="fixed", params={"k": 4}))
    ids = ar.trace.table.column("token_ids").to_pylist()
    assert spec.trace.table.column("token_ids").to_pylist() == ids
    assert ar.trace.meta.model == checkpoint_name(folder)
    if temperature == 0.0:  # greedy: later steps repeat earlier text, so drafts are accepted
        assert spec.summary["accepted"] > 0 and spec.summary["iterations"] < ar.summary["iterations"]


def test_cli_rollout_with_model_path(checkpoints, tmp_path, capsys):
    folder, _ = checkpoints["llama-tied"]
    code = main(["rollout", "--model", str(folder), "--prompts", "2", "--samples", "1", "--steps", "1",
                 "--max-new-tokens", "8", "--policy", "fixed", "--param", "k=2",
                 "--out", str(tmp_path / "r")])
    assert code == 0
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["config"]["model"] == str(folder) and s["tokens"] >= 2


def test_random_weights_of_a_checkpoint_config_need_no_weights(checkpoints, tmp_path):
    folder, _ = checkpoints["qwen3-tied"]
    only_config = tmp_path / "cfg-only"
    only_config.mkdir()
    (only_config / "config.json").write_text((folder / "config.json").read_text())
    model = load_model(str(only_config), random_weights=True, max_ctx=128)
    assert model.cfg.qk_norm and model.cfg.max_ctx == 128
    with pytest.raises(SpecrollError, match="safetensors"):
        load_model(str(only_config))


@pytest.mark.parametrize("edit, needle", [
    ({"model_type": "gpt2"}, "model type 'gpt2'"),
    ({"use_sliding_window": True}, "sliding-window"),
    ({"hidden_act": "gelu"}, "activation"),
    ({"mlp_bias": True}, "MLP biases"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}}, "RoPE scaling 'yarn'"),
    ({"num_hidden_layers": 3}, "model.layers.2"),
    ({"num_hidden_layers": 1}, "does not use"),
])
def test_unsupported_or_inconsistent_checkpoints_are_one_clear_error(checkpoints, tmp_path, edit, needle):
    folder, _ = checkpoints["qwen2-untied"]
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in folder.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(edit)
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SpecrollError, match=needle):
        load_model(str(bad))
