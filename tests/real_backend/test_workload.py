"""Workload: seeded arithmetic prompts with checkable answers, prompt files, rollout schedule."""

from __future__ import annotations

import json

import pytest

from specroll.core.errors import SpecrollError
from specroll.real_backend._workload import (
    arithmetic_prompts,
    check_answer,
    extract_final_number,
    load_prompts_file,
    step_requests,
)


def test_arithmetic_prompts_are_seeded_and_prefix_stable():
    a = arithmetic_prompts(12, seed=3)
    assert a == arithmetic_prompts(12, seed=3)
    assert a[:5] == arithmetic_prompts(5, seed=3)
    assert a != arithmetic_prompts(12, seed=4)
    assert len({p.text for p in a}) > 6
    for p in a:
        assert p.answer is not None and p.answer == int(p.answer)
        assert p.messages[-1]["role"] == "user"


def test_answers_check():
    assert extract_final_number("so 3 + 4 = 7. The answer is 7.") == 7
    assert extract_final_number("\\boxed{1,204} and then 5") == 1204
    assert extract_final_number("Answer: -12.5 (then rambling 3)") == -12.5
    assert extract_final_number("total 15 apples") == 15
    assert extract_final_number("no digits") is None
    assert check_answer("It is 42", 42.0) is True
    assert check_answer("It is 41", 42.0) is False
    assert check_answer("It is 41", None) is None


def test_prompts_file_formats(tmp_path):
    f = tmp_path / "p.jsonl"
    lines = ['"plain text prompt"', json.dumps({"prompt": "with answer", "answer": 3}),
             json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}),
             "", json.dumps([{"role": "user", "content": "list form"}])]
    f.write_text("\n".join(lines) + "\n")
    ps = load_prompts_file(f)
    assert [p.prompt_id for p in ps] == [0, 1, 2, 3]
    assert ps[0].messages == ({"role": "user", "content": "plain text prompt"},)
    assert ps[1].answer == 3.0
    assert len(ps[2].messages) == 2 and ps[3].text == "list form"


@pytest.mark.parametrize("content, field", [
    ("", None), ("{bad json", None), ('{"foo": 1}', "prompt"), ('[{"role": 1}]', "messages"),
    ('{"prompt": "x", "answer": "many"}', "answer"), ('"   "', "prompt"),
])
def test_bad_prompts_file(tmp_path, content, field):
    f = tmp_path / "p.jsonl"
    f.write_text(content + "\n")
    with pytest.raises(SpecrollError) as err:
        load_prompts_file(f)
    assert str(f) in err.value.message
    if field:
        assert err.value.field == field


def test_missing_file_and_empty_prompt_list(tmp_path):
    with pytest.raises(SpecrollError, match="not found"):
        load_prompts_file(tmp_path / "nope.jsonl")
    with pytest.raises(SpecrollError, match="at least one prompt"):
        arithmetic_prompts(0, seed=0)


def test_step_requests_keys_are_unique_across_steps():
    toks = [[1, 2], [3, 4, 5], [6]]
    reqs = [r for s in range(3) for r in step_requests(toks, samples=2, step=s)]
    assert len({r.key for r in reqs}) == len(reqs) == 18
    s1 = step_requests(toks, samples=2, step=1)
    assert [(r.prompt_id, r.sample) for r in s1] == [(p, g) for p in range(3) for g in range(2)]
    assert s1[2].prompt_tokens == (3, 4, 5)
