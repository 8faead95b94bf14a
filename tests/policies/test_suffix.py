"""The suffix drafter's behaviour: frequencies, ties, probabilities, limits, history windows and
whose text it reads (the brute-force equality tests stay in test_drafters.py)."""

from __future__ import annotations

import numpy as np
import pytest

from specroll.policies import make_drafter
from tests.policies.test_drafters import propose, with_history


def test_most_frequent_child_and_its_conditional():
    d = with_history([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 5]], prompt=[9])
    d.begin(1, 7, [9])
    d.extend(1, [1, 2, 3])
    toks, probs = propose(d)
    assert toks == [4] and probs == pytest.approx([2 / 3])


def test_first_tokens_come_from_the_end_of_the_prompt():
    d = with_history([[5, 6, 7, 8], [5, 6, 7, 8]], prompt=[1, 2, 3])
    d.begin(1, 7, [1, 2, 3])
    assert propose(d) == ([5, 6, 7], [1.0, 1.0, 1.0])  # spec_factor 1: at most L = 3 tokens
    d.extend(1, [5])
    assert propose(d)[0] == [6, 7, 8]


def test_ties_go_to_the_smallest_token_id():
    for order in ([[1, 2, 7], [1, 2, 5]], [[1, 2, 5], [1, 2, 7]]):
        d = with_history(order, prompt=[9])
        d.begin(1, 7, [9])
        d.extend(1, [1, 2])
        assert propose(d) == ([5], [0.5])


def test_min_prob_cuts_the_path():
    # after 1 2 3 the ten rollouts continue with ten different tokens: p = 1/10 each
    hist = [[1, 2, 3, 10 + i, 50] for i in range(10)]
    for min_prob, want in ((0.1, [3, 10, 50]), (0.11, [3])):
        d = with_history(hist, prompt=[9], min_prob=min_prob, spec_factor=10.0)
        d.begin(1, 7, [9])
        d.extend(1, [1, 2])
        toks, probs = propose(d)
        assert toks == want and probs == pytest.approx([1.0, 0.1, 1.0][:len(want)])


def test_path_probability_is_the_product_of_conditionals():
    hist = [[1, 2, 3, 4]] * 3 + [[1, 2, 3, 5]] + [[1, 2, 6, 6]] * 2
    d = with_history(hist, prompt=[9], min_prob=0.0, spec_factor=10.0)
    d.begin(1, 7, [9])
    d.extend(1, [1])
    toks, probs = propose(d)
    assert toks[:3] == [2, 3, 4] and probs[:3] == pytest.approx([1.0, 4 / 6, 3 / 4])
    assert np.prod(probs[:3]) == pytest.approx(3 / 6)


def test_spec_factor_limits_the_proposal_by_the_match_length():
    hist = [[1, 2, 3, 4, 5, 6, 7, 8]] * 2
    d = with_history(hist, prompt=[9])
    d.begin(1, 7, [0])  # a prompt unlike the history's: only the response text can match
    d.extend(1, [1])
    assert propose(d)[0] == [2]  # L = 1 -> one token
    d2 = with_history(hist, prompt=[9], spec_factor=3.0)
    d2.begin(1, 7, [0])
    d2.extend(1, [1])
    assert propose(d2)[0] == [2, 3, 4]
    d3 = with_history(hist, prompt=[9], spec_offset=1.0, kmax=2)
    d3.begin(1, 7, [0])
    d3.extend(1, [1])
    assert propose(d3)[0] == [2, 3]  # 1 * 1 + 1 tokens, within kmax 2


def test_depth_limits_the_matched_context():
    # "8 2 3" is followed by 4 once, "2 3" (after other tokens) by 5 twice
    hist = [[8, 2, 3, 4], [0, 2, 3, 5], [1, 2, 3, 5]]
    for depth, want in ((3, [4]), (2, [5])):
        d = with_history(hist, prompt=[9], depth=depth)
        d.begin(1, 7, [9])
        d.extend(1, [8, 2, 3])
        assert propose(d)[0] == want, depth


def test_window_evicts_old_steps_and_the_current_step_is_not_visible():
    d = make_drafter("suffix", window=2)
    d.start_step(0)
    d.add_rollout(0, 7, [9], [1, 2, 3])
    d.start_step(1)
    d.add_rollout(1, 7, [9], [1, 2, 4])  # step 1's own rollout: not visible during step 1
    d.begin(1, 7, [9])
    d.extend(1, [1, 2])
    assert propose(d)[0] == [3]
    d.end(1)
    d.start_step(2)  # window 2: steps 0 and 1 -> 3 and 4 tie, 3 wins
    d.begin(1, 7, [9])
    d.extend(1, [1, 2])
    assert propose(d) == ([3], [0.5])
    d.end(1)
    d.start_step(3)  # step 0 evicted
    d.begin(1, 7, [9])
    d.extend(1, [1, 2])
    assert propose(d) == ([4], [1.0])
    d.end(1)
    d.start_step(4)  # all evicted
    d.begin(1, 7, [9])
    d.extend(1, [1, 2])
    assert propose(d)[0] == []


def test_history_is_per_prompt():
    d = with_history([[1, 2, 3]], prompt=[9])
    d.begin(1, 8, [9])  # another prompt id
    d.extend(1, [1, 2])
    assert propose(d)[0] == []


def test_own_prompt_and_output_are_used():
    d = make_drafter("suffix", spec_factor=5.0)
    d.begin(1, 0, [4, 5, 6, 7, 1])
    assert propose(d)[0] == []  # nothing occurred twice yet
    d.extend(1, [4, 5])  # the walk follows the earlier copy up to the text's end
    assert propose(d) == ([6, 7, 1, 4, 5], [1.0] * 5)
    d.extend(1, [6, 7, 1, 4])
    assert propose(d)[0] == [5, 6, 7, 1, 4]


def test_history_and_own_text_counts_add_up():
    d = with_history([[1, 2, 3], [1, 2, 3]], prompt=[0], spec_factor=5.0)
    d.begin(1, 7, [5, 5, 5])  # own text: 1 2 5 twice
    d.extend(1, [1, 2, 5, 1, 2, 5, 1, 2])
    # own text: "5 1 2 5 1 2" occurred before, followed by 5 1 2 up to the text's end; the
    # history never saw a 5, so its counts do not enter
    assert propose(d) == ([5, 1, 2], [1.0, 1.0, 1.0])
    d2 = with_history([[1, 2, 3], [1, 2, 3], [1, 2, 3]], prompt=[0], spec_factor=5.0)
    d2.begin(1, 7, [5, 5, 5])
    d2.extend(1, [1, 2, 5, 2])
    # longest suffix "5 2"? never followed; "2" is: history 3x -> 3, own once -> 5
    assert propose(d2) == ([3], [0.75])


def test_siblings_off_by_default_and_on_for_later_requests():
    for siblings in (False, True):
        d = make_drafter("suffix", siblings=siblings)
        d.start_step(0)
        d.begin(1, 7, [9])
        d.extend(1, [1, 2, 3, 4])
        d.end(1)
        d.begin(2, 7, [9])
        d.extend(2, [1, 2])
        assert propose(d, 2)[0] == ([3, 4] if siblings else []), siblings
        d.end(2)
        # after the step, both rollouts arrive by add_rollout: no double count of the sibling
        d.add_rollout(0, 7, [9], [1, 2, 3, 4])
        d.add_rollout(0, 7, [9], [1, 2, 5])
        d.start_step(1)
        d.begin(3, 7, [9])
        d.extend(3, [1, 2])
        assert propose(d, 3) == ([3, 4], [0.5, 1.0]), siblings


# ---- ngram: crafted --------------------------------------------------------------------------------
