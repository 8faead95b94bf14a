"""Acceptance rules of the engine's verification: the lossless exact match and the lossy ones.

Every rule sees, for the verify rows of one iteration, the draft tokens x_j, the target's own
position-keyed samples y_j (real_backend/_sampling.py) and the logits they came from, and says which
draft tokens it accepts; the engine keeps the longest accepted prefix, then the target's own token.

- ``exact`` (default, lossless): x_j == y_j. The output equals autoregressive decoding.
- ``lenient`` (SPEC-RL's lenience l): SPEC-RL accepts a cached token x with probability
  min(1, l * p_new(x) / p_old(x)) (their code: log U <= log p_new - log p_old - b). Our drafts are
  deterministic (a point mass: p_old = 1), so the analogous rule accepts x with probability
  min(1, l * p(x)), and we couple it to the keyed sampler: y is the token whose CDF interval
  [F(y) - p(y), F(y)) holds the keyed u; x is accepted when u falls within x's interval widened
  symmetrically (circularly) to width min(1, l * p(x)). At l = 1 the rule *is* x == y (the code
  takes the exact branch), so lenient(1) is lossless and equals AR; l > 1 accepts more.
- ``judge`` (Judge Decoding's accept-if-judged-valid, approximated by a logit judge): also accept
  x != y when x is among the target's ``top_k`` tokens and p(x) >= ``tau`` * p(y). The paper trains
  a small head on the target's embeddings; ours reads the target's distribution.
- ``ead`` (Entropy-Adaptive Decoding): accept every draft token; the layer-skip drafter stops
  drafting where its rolling entropy exceeds ``threshold`` (``draft_stop``), so the target only
  generates there. Needs the ``layerskip`` drafter.

p is the target's sampling distribution: softmax(logits / T) after top-p; at T = 0 (greedy) the
sampling distribution is a point mass, so ``lenient`` equals ``exact`` and ``judge`` reads
softmax(logits). Lossy rules make the rollouts differ from the target's own: the engine counts the
accepted tokens that differ from y (``lossy_tokens``) and the trace is marked lossy.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch

from specroll.core.params import build_params, check_number
from specroll.core.registry import Registry
from specroll.real_backend._sampling import keyed_uniform, top_p_mask

ACCEPT_RULES: Registry[type[AcceptRule]] = Registry("accept rule")


@dataclasses.dataclass
class Verify:
    """One iteration's verification inputs (rows = requests, columns = draft positions)."""

    logits: torch.Tensor   # [n, q, V] float32, q >= k + 1
    drafts: np.ndarray     # [n, q - 1] int64 draft tokens (x_j at column j)
    target: np.ndarray     # [n, q] int64 the target's keyed samples (y_j)
    k: np.ndarray          # [n] draft lengths
    keys: np.ndarray       # [n] sampling keys
    positions: np.ndarray  # [n, q] response positions of the columns
    seed: int
    temperature: float
    top_p: float


class AcceptRule:
    """Base: the exact match. Subclasses add lossy acceptances of mismatching draft tokens."""

    name: ClassVar[str] = "exact"
    lossy: ClassVar[bool] = False

    @dataclasses.dataclass
    class Params:
        pass

    def __init__(self, **params: Any) -> None:
        self.params = build_params(self.Params, params, owner=f"accept rule '{self.name}'",
                                   field="accept_params")
        self.validate()

    def validate(self) -> None: ...

    @property
    def draft_stop(self) -> dict[str, float] | None:
        """Parameters a model drafter stops drafting on (``ead``); None for the others."""
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.name, "params": dataclasses.asdict(self.params), "lossy": self.is_lossy}

    @property
    def is_lossy(self) -> bool:
        return self.lossy

    def accept(self, v: Verify) -> np.ndarray:
        """bool [n, q - 1]: draft token j of row i accepted (the engine masks columns >= k)."""
        q1 = v.drafts.shape[1]
        ok = v.drafts == v.target[:, :q1]
        extra = self._extra(v, ~ok & (np.arange(q1)[None, :] < v.k[:, None]))
        return ok if extra is None else ok | extra

    def _extra(self, v: Verify, where: np.ndarray) -> np.ndarray | None:
        """bool like ``where``: which of the mismatching draft tokens (``where``) the rule accepts
        anyway; None for none (the exact rule)."""
        return None


ACCEPT_RULES.add("exact", AcceptRule)


class _DistributionRule(AcceptRule):
    """A rule that judges each mismatching draft token from the target's sampling distribution there."""

    def _judges(self, v: Verify) -> bool:
        """Whether this iteration's mismatches are judged at all."""
        return True

    def _accepts(self, v: Verify, rows: np.ndarray, cols: np.ndarray, p: torch.Tensor) -> torch.Tensor:
        """bool [M]: draft token (rows[i], cols[i]) accepted, ``p`` [M, V] its distribution."""
        raise NotImplementedError

    def _extra(self, v: Verify, where: np.ndarray) -> np.ndarray | None:
        if not self._judges(v) or not where.any():
            return None
        rows, cols = np.nonzero(where)
        ok = self._accepts(v, rows, cols, _probs(v, rows, cols, 1.0))
        out = np.zeros_like(where)
        out[rows, cols] = ok.numpy()
        return out


def _probs(v: Verify, rows: np.ndarray, cols: np.ndarray, greedy_temperature: float) -> torch.Tensor:
    """The sampling distribution at (rows, cols): float32 [M, V]."""
    logits = v.logits[torch.as_tensor(rows), torch.as_tensor(cols)].float()
    t = v.temperature if v.temperature > 0 else greedy_temperature
    scaled = logits / float(t)
    if v.top_p < 1.0 and v.temperature > 0:
        scaled = scaled.masked_fill(top_p_mask(scaled, v.top_p), float("-inf"))
    return torch.softmax(scaled, dim=-1)


@ACCEPT_RULES.register("lenient")
class LenientRule(_DistributionRule):
    name = "lenient"

    @dataclasses.dataclass
    class Params:
        lenience: float = 1.0

    def validate(self) -> None:
        check_number(self.params.lenience, "lenience", lo=1, fix="pass lenience=1 (lossless) or more")

    @property
    def is_lossy(self) -> bool:
        return float(self.params.lenience) > 1.0

    def _judges(self, v: Verify) -> bool:
        # l = 1 is the exact rule itself; at T = 0 the sampler is a point mass
        return self.is_lossy and v.temperature > 0

    def _accepts(self, v: Verify, rows: np.ndarray, cols: np.ndarray, p: torch.Tensor) -> torch.Tensor:
        cdf = p.cumsum(dim=-1)
        x = torch.as_tensor(v.drafts[rows, cols])
        ar = torch.arange(len(rows))
        px, hi, total = p[ar, x], cdf[ar, x], cdf[:, -1]
        # The sampler's uniform at each (key, position): the same function, the same value.
        u = keyed_uniform(v.seed, torch.as_tensor(v.keys[rows]),
                          torch.as_tensor(v.positions[rows, cols])[:, None])
        t = u[:, 0] * total
        width = torch.minimum(total, float(self.params.lenience) * px)
        d = (t - (hi - px / 2)).abs()
        d = torch.minimum(d, total - d)
        return (px > 0) & (d <= width / 2)


@ACCEPT_RULES.register("judge")
class JudgeRule(_DistributionRule):
    name = "judge"
    lossy = True

    @dataclasses.dataclass
    class Params:
        top_k: int = 4
        tau: float = 0.25

    def validate(self) -> None:
        check_number(self.params.top_k, "top_k", integer=True, lo=1)
        check_number(self.params.tau, "tau", lo=0, hi=1,
                     fix="pass tau=0.25 (accept x when p(x) >= tau * p(target's token))")

    def _accepts(self, v: Verify, rows: np.ndarray, cols: np.ndarray, p: torch.Tensor) -> torch.Tensor:
        ar = torch.arange(len(rows))
        px = p[ar, torch.as_tensor(v.drafts[rows, cols])]
        py = p[ar, torch.as_tensor(v.target[rows, cols])]
        rank = (p > px[:, None]).sum(dim=-1)            # tokens strictly more likely than x
        return (px > 0) & (rank < int(self.params.top_k)) & (px >= float(self.params.tau) * py)


@ACCEPT_RULES.register("ead")
class EntropyAdaptiveRule(AcceptRule):
    name = "ead"
    lossy = True

    @dataclasses.dataclass
    class Params:
        threshold: float = 1.0
        window: int = 4

    def validate(self) -> None:
        check_number(self.params.threshold, "threshold", lo=0, fix="pass a threshold in bits, e.g. 1")
        check_number(self.params.window, "window", integer=True, lo=1)

    @property
    def draft_stop(self) -> dict[str, float] | None:
        return {"threshold": float(self.params.threshold), "window": int(self.params.window)}

    def accept(self, v: Verify) -> np.ndarray:
        return np.ones(v.drafts.shape, dtype=bool)


def make_accept_rule(name: str = "exact", **params: Any) -> AcceptRule:
    return ACCEPT_RULES.get(name, field="accept")(**params)
