"""SmolLM2's tokenizer rebuilt from the GGUF: round-trips, and equals transformers' tokenizer."""

from __future__ import annotations

import os

import pytest

from specroll.core.errors import SpecrollError
from specroll.real_backend import load_tokenizer

from .test_model_common import needs_gguf

TEXTS = [
    "Hello world!",
    "Tom has 3 boxes with 12 pencils each. How many pencils does he have? Answer: 36.",
    "I have 12345 apples, 3.14 pies and -7 debts",
    "  leading spaces\n\nnewlines\ttabs   trailing ",
    "émoji 🙂 ünïcödé 中文 ελληνικά",
    "don't won't they're I'll x=1000000; y = x**2 // 7",
]
MESSAGES = [
    [{"role": "user", "content": "What is 17 * 23?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sum 2 and 40."},
     {"role": "assistant", "content": "42"}, {"role": "user", "content": "Now times 3?"}],
]

pytestmark = needs_gguf


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def hf_tok():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    from specroll.real_backend import model_file

    path = model_file()
    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_digits_are_single_tokens_and_specials_are_atomic(tok):
    ids = tok.encode("12345")
    assert len(ids) == 5 and [tok.decode([i]) for i in ids] == list("12345")
    assert tok.encode("<|im_start|>user<|im_end|>")[0] == 1
    assert tok.eos_token_id == 2 and tok.decode([2], skip_special_tokens=False) == "<|im_end|>"
    assert tok.decode([2]) == ""


@pytest.mark.parametrize("text", TEXTS)
def test_equals_transformers_tokenizer_from_the_gguf(tok, hf_tok, text):
    assert tok.encode(text) == hf_tok.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("messages", MESSAGES)
def test_chat_template_equals_transformers(tok, hf_tok, messages):
    for gen in (True, False):
        text = hf_tok.apply_chat_template(messages, add_generation_prompt=gen, tokenize=False)
        assert tok.apply_chat_template(messages, add_generation_prompt=gen, tokenize=False) == text
        assert tok.apply_chat_template(messages, add_generation_prompt=gen) == hf_tok.encode(
            text, add_special_tokens=False)
    rendered = tok.apply_chat_template(messages, tokenize=False)
    assert rendered.startswith("<|im_start|>system\n") and rendered.endswith("<|im_start|>assistant\n")


def test_bad_messages_and_unknown_models(tok):
    with pytest.raises(SpecrollError, match="role"):
        tok.apply_chat_template([{"content": "no role"}])
    with pytest.raises(SpecrollError, match="no tokenizer"):
        load_tokenizer("qwen2.5-7b")
