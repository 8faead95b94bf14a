"""Acceptance sources: how many draft tokens a request accepts at each position.

Every source turns one RL step's rollouts into a flat per-position match-length array ``match``
(m_t of docs/design.md §1: drafting K tokens at position t accepts min(K, m_t)), so the kernel's
acceptance is one gather per iteration whatever the source:

- ``trace``: exact replay of a trace's ``match_<drafter>`` (and ``conf_<drafter>``) columns;
- ``parametric``: synthetic match lengths drawn ONCE per rollout from an acceptance model
  (i.i.d. alpha, position-decaying alpha, or per-request alpha from a Beta), with an optional
  drafter-confidence signal of configurable quality. The draws are keyed by
  (seed, step, prompt_id, sample) with a counter-based hash, so every policy, every dispatch and
  the oracle face the same realization (common random numbers).

Both bake in the end of the response: m_t <= L - 1 - t (the target always adds one token), so the
kernel never needs to clip an advance to the response length.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from specroll.core.config import check_kwargs
from specroll.core.errors import SpecrollError
from specroll.core.registry import Registry
from specroll.simulator._keys import position_bits, rollout_keys, to_unit

# Positions generated per chunk: keeps temporaries cache-sized and memory bounded at 4x scale.
_CHUNK = 1 << 18


@dataclass
class StepRollouts:
    """The rollouts of one RL step, in trace order (arrays of shape (R,))."""

    step: int
    prompt_id: np.ndarray
    sample: np.ndarray
    prompt_len: np.ndarray
    response_len: np.ndarray
    finished: np.ndarray
    match: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """drafter -> (flat int values, offsets (R+1,)) of the trace's match_<drafter> column."""
    conf: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """drafter -> (flat float32 values, offsets (R+1,)) of conf_<drafter> (row-major (L, kmax))."""
    kmax: dict[str, int] = field(default_factory=dict)
    tree_width: dict[str, int] = field(default_factory=dict)
    """drafter -> branches of its draft trees (trace metadata ``drafters[name]["tree_width"]``)."""
    prev_len: np.ndarray | None = None
    """int64 (R,): response length of the previous step's rollout of the same (prompt_id, sample),
    0 where there is none (SPEC-RL's cached rollout)."""

    @property
    def n(self) -> int:
        return int(self.response_len.shape[0])

    @property
    def offsets(self) -> np.ndarray:
        """int64 (R+1,): start of each rollout in the flat per-position arrays."""
        off = np.zeros(self.n + 1, dtype=np.int64)
        np.cumsum(self.response_len, out=off[1:])
        return off


@dataclass
class StepAcceptance:
    """Per-position acceptance data of one step, flat over rollouts (see ``StepRollouts.offsets``).

    ``match`` has ``kmax + 1`` padding entries at the end so gathers past a response never fail.
    """

    match: np.ndarray
    """int8 (total + pad,): m_t, already clipped to kmax and to the response end."""
    offsets: np.ndarray
    kmax: int
    proposal_len: np.ndarray | None = None
    """int8 per position: the drafter's proposal length (None: always kmax). ``match <=
    proposal_len`` everywhere (the sources enforce it), so clipping a draft to the proposal
    never changes what it accepts."""
    conf_builder: Callable[[], np.ndarray] | None = field(default=None, repr=False)
    """Builds the per-position confidence, 1-D (parametric) or 2-D (trace), on first use."""
    tree_width: int = 1
    """branches of the drafter's draft trees: drafting depth k verifies ``tree_width * k`` nodes
    (an upper bound when branches are shorter); ``match`` is then the best branch's."""
    lossy: Any = None
    """specroll.simulator._lossy.LossyPositions when accepted tokens may differ from the target's (judge,
    entropy-adaptive, lenient SPEC-RL): counts them per iteration. None: lossless."""
    start_gen: np.ndarray | None = None
    """int64 per rollout: response tokens already there at admission (default 1: the prefill's
    token 0). SPEC-RL's reused prefix + 1; a partial rollout's progress when it resumes."""
    prefill_len: np.ndarray | None = None
    """int64 per rollout: tokens the admission forward processes (default the prompt): SPEC-RL's
    verification of the cached rollout; a resumed rollout's recomputed KV."""
    pre_drafted: np.ndarray | None = None
    """int64 per rollout: draft tokens verified by the admission forward (SPEC-RL's long draft)."""
    pre_lossy: np.ndarray | None = None
    """int64 per rollout: lossy tokens among those accepted by the admission forward."""
    _conf: np.ndarray | None = field(default=None, repr=False)
    _match1: np.ndarray | None = field(default=None, repr=False)

    @property
    def has_confidence(self) -> bool:
        return self.conf_builder is not None

    @property
    def match1(self) -> np.ndarray:
        """int8 ``match + 1``: the tokens a verify at each position emits when the draft is at
        least m_t long. Built on first use and kept (the windowed kernel's inner step reads it)."""
        if self._match1 is None:
            self._match1 = self.match + np.int8(1)
        return self._match1

    def conf_at(self, pos: np.ndarray) -> np.ndarray:
        """float32 (n, kmax): confidence of each proposed token for requests at flat positions pos."""
        if self._conf is None:
            assert self.conf_builder is not None
            self._conf = self.conf_builder()
        if self._conf.ndim == 2:
            return self._conf[pos]
        return self._conf[pos[:, None] + np.arange(self.kmax)]


class AcceptanceSource:
    """Builds a step's :class:`StepAcceptance`; parameters come from the config's [acceptance]."""

    name = "base"

    def prepare(self, rollouts: StepRollouts, seed: int) -> StepAcceptance:
        raise NotImplementedError


ACCEPTANCE: Registry[Callable[..., AcceptanceSource]] = Registry("acceptance source")


def make_acceptance(name: str, params: dict[str, Any] | None = None, *, file: str | None = None
                    ) -> AcceptanceSource:
    """The acceptance source ``name`` with ``params`` (names and types checked against its
    constructor: one clear error for an unknown parameter or a wrong type)."""
    factory = ACCEPTANCE.get(name, file=file, field="acceptance.source")
    kwargs = check_kwargs(factory, params or {}, file=file, prefix="acceptance")
    return factory(**kwargs)


def match_from_failures(fail: np.ndarray, kmax: int) -> np.ndarray:
    """m_t = min(kmax, run of non-failing positions from t) as int8; ``fail`` is bool.

    kmax shifted ANDs on bytes: far cheaper than a reverse scan, since m is capped at kmax.
    """
    n = fail.shape[0]
    ok = np.zeros(n + kmax, dtype=np.uint8)
    np.logical_not(fail, out=ok[:n].view(bool))
    alive = ok[:n].copy()
    m = alive.copy()
    for i in range(1, kmax):
        alive &= ok[i:n + i]
        m += alive
    return m.view(np.int8)


def _chunks(lens: np.ndarray) -> list[tuple[int, int]]:
    """Split rollouts [0, R) into consecutive runs of about _CHUNK positions."""
    ends = np.cumsum(lens)
    cuts = np.searchsorted(ends, np.arange(_CHUNK, int(ends[-1]) if len(ends) else 0, _CHUNK),
                           side="right")
    bounds = np.unique(np.concatenate([[0], cuts, [len(lens)]]))
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


@ACCEPTANCE.register("parametric")
class ParametricAcceptance(AcceptanceSource):
    """Synthetic match lengths from a per-token acceptance model (see module docstring).

    Each response token j has a latent acceptance probability p_j and is accepted when
    u_j < p_j (u_j a keyed uniform); m_t is the run of accepted tokens from t, capped at kmax.
    - ``model="iid"``: p_j = alpha.
    - ``model="decay"``: p_j = alpha_end + (alpha - alpha_end) * exp(-t / decay_tokens).
    - ``model="beta"``: alpha_r ~ Beta with mean ``alpha`` and ``concentration`` per request.
    - ``spread`` in [0, 1] makes p_j vary token to token around its mean (p = (1-s)*a + s*v^c,
      v uniform, c = (1-a)/a, which keeps the mean a): what a confidence signal can exploit.
    - ``confidence=True`` exposes p_j + uniform noise of half-width ``conf_noise`` as the
      drafter's per-token probability (policies read it via PolicyState.draft_conf).
    """

    name = "parametric"

    def __init__(self, model: str = "iid", alpha: float = 0.7, kmax: int = 8, decay_tokens: float = 4096.0,
                 alpha_end: float = 0.3, concentration: float = 10.0, spread: float = 0.0,
                 confidence: bool = False, conf_noise: float = 0.0, tree_width: int = 1) -> None:
        if model not in ("iid", "decay", "beta"):
            raise SpecrollError(f"unknown parametric model '{model}'", field="acceptance.model",
                                fix="use one of: iid, decay, beta")
        for name, value in (("alpha", alpha), ("alpha_end", alpha_end), ("spread", spread)):
            if not 0.0 <= float(value) <= 1.0:
                raise SpecrollError(f"{name} must be in [0, 1], got {value}", field=f"acceptance.{name}")
        if not 0.0 < float(alpha) < 1.0:
            raise SpecrollError(f"alpha must be in (0, 1), got {alpha}", field="acceptance.alpha")
        if int(kmax) < 1 or int(kmax) > 64:
            raise SpecrollError(f"kmax must be in [1, 64], got {kmax}", field="acceptance.kmax")
        if float(decay_tokens) <= 0 or float(concentration) <= 0 or float(conf_noise) < 0:
            raise SpecrollError("decay_tokens and concentration must be > 0, conf_noise >= 0",
                                field="acceptance")
        if not isinstance(tree_width, int) or isinstance(tree_width, bool) or not 1 <= tree_width <= 16:
            raise SpecrollError(f"tree_width must be an integer in [1, 16], got {tree_width!r}",
                                field="acceptance.tree_width",
                                fix="write 1 (a chain) or the branches of a tree")
        self.tree_width = int(tree_width)
        self.model, self.alpha, self.kmax = model, float(alpha), int(kmax)
        self.decay_tokens, self.alpha_end = float(decay_tokens), float(alpha_end)
        self.concentration, self.spread = float(concentration), float(spread)
        self.confidence, self.conf_noise = bool(confidence), float(conf_noise)
        self._decay_table: np.ndarray | None = None

    def _request_alpha(self, ro: StepRollouts, seed: int) -> np.ndarray:
        if self.model != "beta":
            return np.full(ro.n, self.alpha)
        from scipy.special import betaincinv

        u = to_unit(rollout_keys(seed, ro.step, ro.prompt_id, ro.sample, stream=7)).astype(np.float64)
        a = self.alpha * self.concentration
        b = (1.0 - self.alpha) * self.concentration
        return np.clip(betaincinv(a, b, np.clip(u, 1e-7, 1 - 1e-7)), 1e-4, 1 - 1e-4)

    def _latent_p(self, ro: StepRollouts, seed: int, req_alpha: np.ndarray, lo: int, hi: int,
                  lens: np.ndarray) -> np.ndarray | float:
        """float32 per-position p_j of rollouts [lo, hi), or a scalar when it is constant."""
        constant = self.model == "iid" and self.spread == 0.0
        if constant:
            return self.alpha
        local = np.arange(int(lens.sum()), dtype=np.float32) - np.repeat(
            (np.cumsum(lens) - lens).astype(np.float32), lens)
        if self.model == "decay":
            decay = np.exp(-local / np.float32(self.decay_tokens))
            mean = self.alpha_end + (self.alpha - self.alpha_end) * decay
        else:
            mean = np.repeat(req_alpha[lo:hi].astype(np.float32), lens)
        if self.spread == 0.0:
            return mean.astype(np.float32)
        keys = rollout_keys(seed, ro.step, ro.prompt_id[lo:hi], ro.sample[lo:hi], stream=2)
        v = to_unit(position_bits(keys, lens))
        c = (1.0 - mean) / np.maximum(mean, 1e-6)
        return ((1.0 - self.spread) * mean + self.spread * v ** c).astype(np.float32)

    def _thresholds(self, req_alpha: np.ndarray, lo: int, hi: int, lens: np.ndarray) -> np.ndarray:
        """uint32 thresholds (accept when bits < threshold) per position of rollouts [lo, hi)."""
        def to_u32(p: np.ndarray) -> np.ndarray:
            return np.minimum(np.asarray(p, np.float64) * 2.0**32, 2.0**32 - 1).astype(np.uint32)

        if self.model == "iid":
            return to_u32(self.alpha)
        if self.model == "beta":
            return np.repeat(to_u32(req_alpha[lo:hi]), lens)
        if self._decay_table is None or self._decay_table.shape[0] < int(lens.max()):
            t = np.arange(max(int(lens.max()), 1 << 14), dtype=np.float64)
            self._decay_table = to_u32(self.alpha_end + (self.alpha - self.alpha_end)
                                       * np.exp(-t / self.decay_tokens))
        # Each rollout's thresholds are the table's first L entries: concatenated slices (one
        # memcpy per rollout) instead of a gather by position.
        table = self._decay_table
        return np.concatenate([table[:n] for n in lens.tolist()])

    def prepare(self, rollouts: StepRollouts, seed: int) -> StepAcceptance:
        ro = rollouts
        lens = ro.response_len.astype(np.int64)
        offsets = ro.offsets
        total = int(offsets[-1])
        match = np.zeros(total + self.kmax + 1, dtype=np.int8)
        req_alpha = self._request_alpha(ro, seed)
        # Branch b of a draft tree draws its own keyed bits (branch 0: the chain's stream, so a
        # one-branch tree is the chain bit for bit); m_t = the best branch's run from t.
        keys = [rollout_keys(seed, ro.step, ro.prompt_id, ro.sample, stream=1 if b == 0 else 100 + b)
                for b in range(self.tree_width)]
        for lo, hi in _chunks(lens):
            ln = lens[lo:hi]
            thr = p = None
            for b in range(self.tree_width):
                bits = position_bits(keys[b][lo:hi], ln)
                if self.spread == 0.0:
                    # Compare the raw bits with integer thresholds: no float array per position.
                    thr = self._thresholds(req_alpha, lo, hi, ln) if thr is None else thr
                    fail = bits >= thr
                else:
                    p = self._latent_p(ro, seed, req_alpha, lo, hi, ln) if p is None else p
                    fail = to_unit(bits) >= p
                fail[np.cumsum(ln) - 1] = True  # the last token is always the target's own
                m = match_from_failures(fail, self.kmax)
                seg = match[offsets[lo]:offsets[hi]]
                if b == 0:
                    seg[:] = m
                else:
                    np.maximum(seg, m, out=seg)
        builder = None
        if self.confidence:
            def builder() -> np.ndarray:
                return self._observed_conf(ro, seed, req_alpha, total)
        return StepAcceptance(match=match, offsets=offsets, kmax=self.kmax, conf_builder=builder,
                              tree_width=self.tree_width)

    def _observed_conf(self, ro: StepRollouts, seed: int, req_alpha: np.ndarray, total: int) -> np.ndarray:
        lens = ro.response_len.astype(np.int64)
        offsets = ro.offsets
        conf = np.zeros(total + self.kmax + 1, dtype=np.float32)
        keys = rollout_keys(seed, ro.step, ro.prompt_id, ro.sample, stream=3)
        for lo, hi in _chunks(lens):
            ln = lens[lo:hi]
            p = self._latent_p(ro, seed, req_alpha, lo, hi, ln)
            p = np.full(int(ln.sum()), p, np.float32) if np.isscalar(p) else p
            if self.conf_noise > 0:
                noise = to_unit(position_bits(keys[lo:hi], ln)) * 2.0 - 1.0
                p = np.clip(p + np.float32(self.conf_noise) * noise, 0.0, 1.0)
            conf[offsets[lo]:offsets[hi]] = p
        return conf


@ACCEPTANCE.register("trace")
class TraceAcceptance(AcceptanceSource):
    """Exact replay of a trace's match_<drafter> column (and conf_<drafter> when present)."""

    name = "trace"

    def __init__(self, drafter: str = "suffix", kmax: int | None = None) -> None:
        self.drafter = str(drafter)
        self.kmax = None if kmax is None else int(kmax)

    def prepare(self, rollouts: StepRollouts, seed: int) -> StepAcceptance:
        ro = rollouts
        if self.drafter not in ro.match:
            have = ", ".join(sorted(ro.match)) or "none"
            raise SpecrollError(
                f"the trace has no column 'match_{self.drafter}' (match columns: {have})",
                field="acceptance.drafter",
                fix="run `specroll trace match` on the trace, or use source = \"parametric\"")
        kmax = self.kmax or ro.kmax.get(self.drafter) or 8
        values, voff = ro.match[self.drafter]
        lens = ro.response_len.astype(np.int64)
        offsets = ro.offsets
        if not np.array_equal(np.diff(voff), lens):
            raise SpecrollError(f"match_{self.drafter} lengths differ from response_len",
                                field=f"match_{self.drafter}", fix="recompute the match lengths")
        total = int(offsets[-1])
        remaining = np.repeat(offsets[1:], lens) - np.arange(total) - 1  # L - 1 - t
        m = np.minimum(np.minimum(values.astype(np.int64), remaining), kmax)
        match = np.zeros(total + kmax + 1, dtype=np.int8)
        match[:total] = np.maximum(m, 0)
        acc = StepAcceptance(match=match, offsets=offsets, kmax=kmax,
                             tree_width=int(ro.tree_width.get(self.drafter, 1)))
        if self.drafter in ro.conf:
            cvals, _ = ro.conf[self.drafter]
            ckmax = ro.kmax.get(self.drafter) or kmax
            width = min(kmax, ckmax)
            rows = cvals.reshape(total, ckmax)[:, :width]
            plen = np.zeros(total + kmax + 1, dtype=np.int8)
            plen[:total] = (rows > 0).sum(axis=1)
            # m_t <= proposal length by the schema; enforce it so bad traces cannot over-accept.
            np.minimum(acc.match, plen, out=acc.match)
            acc.proposal_len = plen

            def conf2d() -> np.ndarray:  # (total + pad, kmax): built only if a policy reads it
                out = np.zeros((total + kmax + 1, kmax), dtype=np.float32)
                out[:total, :width] = rows
                return out

            acc.conf_builder = conf2d
        return acc
