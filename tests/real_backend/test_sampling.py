"""Position-keyed sampling: deterministic, batch-invariant, distributed as softmax(logits / T)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from specroll.real_backend._sampling import _ROW_CHUNK, keyed_sample, keyed_uniform, row_hash, top_p_mask


def _logits(b: int, q: int, v: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, q, v, generator=torch.Generator().manual_seed(seed)) * 2.0


def test_same_inputs_same_tokens_and_seed_key_position_all_matter():
    lg = _logits(4, 3, 1000)
    keys = torch.tensor([5, 6, 7, 8])
    pos = torch.arange(3).repeat(4, 1) + 40
    a = keyed_sample(lg, 123, keys, pos, 1.0, 1.0)
    assert a.dtype == torch.int64 and a.shape == (4, 3)
    assert torch.equal(a, keyed_sample(lg.clone(), 123, keys.clone(), pos.clone(), 1.0, 1.0))
    u = keyed_uniform(123, keys, pos)
    assert not torch.equal(u, keyed_uniform(124, keys, pos))
    assert not torch.equal(u, keyed_uniform(123, keys + 1, pos))
    assert not torch.equal(u, keyed_uniform(123, keys, pos + 1))
    # Large and negative identities fold in without overflow.
    h = row_hash(2**62 + 3, torch.tensor([-1, 2**40]), torch.tensor([[0], [2**33]]))
    assert int(h.min()) >= 0 and int(h.max()) < 2**32
    assert float(u.min()) > 0.0 and float(u.max()) < 1.0


def test_token_depends_only_on_its_own_row_not_on_batch_composition():
    v = 4096
    lg = _logits(6, 4, v, seed=1)
    keys = torch.tensor([11, 12, 13, 14, 15, 16])
    pos = torch.tensor([[0, 1, 2, 3], [7, 8, 9, 10], [3, 4, 5, 6], [0, 1, 2, 3], [100, 101, 102, 103],
                        [50, 51, 52, 53]])
    for temperature, top_p in ((0.7, 1.0), (1.0, 0.9), (0.0, 1.0)):
        full = keyed_sample(lg, 9, keys, pos, temperature, top_p)
        perm = torch.tensor([4, 2, 0, 5, 1, 3])
        shuffled = keyed_sample(lg[perm], 9, keys[perm], pos[perm], temperature, top_p)
        assert torch.equal(shuffled, full[perm])
        for i in range(6):
            alone = keyed_sample(lg[i:i + 1], 9, keys[i:i + 1], pos[i:i + 1], temperature, top_p)
            assert torch.equal(alone[0], full[i])
            # ... and a query slot's token does not depend on the row's other query slots.
            one = keyed_sample(lg[i:i + 1, 2:3], 9, keys[i:i + 1], pos[i:i + 1, 2:3], temperature, top_p)
            assert int(one) == int(full[i, 2])


def test_temperature_zero_is_argmax():
    lg = _logits(3, 5, 300, seed=2)
    out = keyed_sample(lg, 0, torch.arange(3), torch.zeros(3, 5, dtype=torch.int64), 0.0, 0.5)
    assert torch.equal(out, lg.argmax(-1))


def _empirical(logits_row: torch.Tensor, n: int, temperature: float, top_p: float, seed: int) -> np.ndarray:
    """Counts of n draws: one request, positions 0..n-1, all with the same logits."""
    lg = logits_row.expand(1, n, -1).contiguous()
    out = keyed_sample(lg, seed, torch.tensor([77]), torch.arange(n)[None], temperature, top_p)
    return np.bincount(out[0].numpy(), minlength=logits_row.numel())


@pytest.mark.parametrize("temperature", [0.7, 1.0, 1.5])
def test_empirical_distribution_matches_softmax(temperature):
    logits_row = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0, 1.5])
    n = 40_000
    counts = _empirical(logits_row, n, temperature, 1.0, seed=3)
    w = np.exp(logits_row.double().numpy() / temperature)
    expected = w / w.sum() * n
    p = stats.chisquare(counts, expected).pvalue
    assert p > 1e-3, (counts, expected.round())


def test_top_p_keeps_the_nucleus_renormalized_and_never_the_tail():
    logits_row = torch.log(torch.tensor([0.40, 0.25, 0.15, 0.10, 0.05, 0.03, 0.02]))
    mask = top_p_mask(logits_row[None], 0.75)[0]
    # Mass before token 2 is 0.65 < 0.75 -> kept; before token 3 it is 0.80 -> dropped.
    assert mask.tolist() == [False, False, False, True, True, True, True]
    n = 30_000
    counts = _empirical(logits_row, n, 1.0, 0.75, seed=4)
    assert counts[3:].sum() == 0
    nucleus = np.array([0.40, 0.25, 0.15]) / 0.80
    assert stats.chisquare(counts[:3], nucleus * n).pvalue > 1e-3
    # The most likely token survives any top_p.
    assert top_p_mask(logits_row[None], 1e-6)[0].tolist() == [False] + [True] * 6


def test_bad_arguments():
    lg = _logits(1, 1, 10)
    with pytest.raises(ValueError):
        keyed_sample(lg, 0, torch.tensor([0]), torch.zeros(1, 1, dtype=torch.int64), -1.0, 1.0)
    with pytest.raises(ValueError):
        keyed_sample(lg, 0, torch.tensor([0]), torch.zeros(1, 1, dtype=torch.int64), 1.0, 0.0)
    with pytest.raises(ValueError):
        keyed_sample(lg[0], 0, torch.tensor([0]), torch.zeros(1, 1, dtype=torch.int64), 1.0, 1.0)


def test_uniforms_stay_inside_the_open_interval_and_zero_probability_tokens_never_win():
    # 23 bits: the largest uniform is below 1.0 in float32, the smallest above 0.
    u = keyed_uniform(5, torch.arange(4096), torch.arange(64)[None, :].expand(4096, 64))
    assert float(u.min()) > 0.0 and float(u.max()) < 1.0
    # A row whose mass sits on a few tokens among many impossible ones (-inf logits), sampled at
    # many positions: only possible tokens come out, including the first and the last one.
    v = 1000
    row = torch.full((v,), float("-inf"))
    row[[0, 500, 999]] = torch.tensor([0.0, 1.0, 0.5])
    out = keyed_sample(row.expand(1, 3000, v).contiguous(), 1, torch.tensor([3]), torch.arange(3000)[None],
                       1.0, 1.0)
    assert set(out[0].tolist()) == {0, 500, 999}


def test_rows_across_chunk_boundaries_are_sampled_alike():
    # More positions than one CPU chunk: every position's token equals sampling it alone.
    n = 2 * _ROW_CHUNK + 5
    lg = _logits(1, n, 700, seed=6)
    keys, pos = torch.tensor([9]), torch.arange(n)[None] + 11
    full = keyed_sample(lg, 2, keys, pos, 0.9, 0.95)
    for j in (0, _ROW_CHUNK - 1, _ROW_CHUNK, n - 1):
        assert int(keyed_sample(lg[:, j:j + 1], 2, keys, pos[:, j:j + 1], 0.9, 0.95)) == int(full[0, j])
