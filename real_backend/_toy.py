"""A toy language model with exact arithmetic, for bit-for-bit tests of the engine.

It follows the real model's forward contract (static cache, one slot per request, right-padded
rows of different query lengths, writes at ``start..start+Q-1``, causal reads) but every value
is a small integer held in float32: embeddings and output weights are integers in [-3, 3], the
"attention" is a prefix sum over the row's cached positions, so every sum is exact whatever the
batch composition, the query length or the summation order. Its logits for a position therefore
cannot depend on how the engine batched it, and speculative decoding must reproduce
autoregressive decoding exactly, ties included. (A real model in floating point only does so up
to rounding, which can flip a near-tie.)
"""

from __future__ import annotations

import torch


class ToyCache:
    """Token ids per slot and position: the toy model's whole "KV" state."""

    def __init__(self, n_slots: int, max_ctx: int, device: str | torch.device = "cpu") -> None:
        self.n_slots = int(n_slots)
        self.max_ctx = int(max_ctx)
        # -1 marks never-written positions; reading one is a bug the toy model reports.
        self.tokens = torch.full((self.n_slots, self.max_ctx), -1, dtype=torch.int64, device=device)


class ToyLM(torch.nn.Module):
    """logits(p) = (4 E[x_p] + sum_{p-4<i<=p} E[x_i]) W / 16, and (p - last marker)/2 - 8 on EOS:
    every value exact in float32."""

    WINDOW = 4
    MARKER = 1

    def __init__(self, vocab: int = 48, dim: int = 8, seed: int = 0, eos_id: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.vocab = vocab
        self.eos_id = eos_id
        self.emb = torch.nn.Parameter(torch.randint(-3, 4, (vocab, dim), generator=g).float(),
                                      requires_grad=False)
        self.out = torch.nn.Parameter(torch.randint(-3, 4, (dim, vocab), generator=g).float(),
                                      requires_grad=False)
        self.out.data[:, eos_id] = 0.0  # EOS's logit is the length term alone (see forward)

    def make_cache(self, n_slots: int, max_ctx: int) -> ToyCache:
        return ToyCache(n_slots, max_ctx, self.emb.device)

    def forward(self, tokens: torch.Tensor, slots: torch.Tensor, start: torch.Tensor,
                cache: ToyCache) -> torch.Tensor:
        b, q = tokens.shape
        if int((start + q).max()) > cache.max_ctx:
            raise ValueError(f"start + Q = {int((start + q).max())} exceeds the cache ({cache.max_ctx})")
        pos = start[:, None] + torch.arange(q, device=tokens.device)[None, :]
        cache.tokens[slots[:, None], pos] = tokens.clamp(0, self.vocab - 1)
        rows = cache.tokens[slots]                                           # [B, max_ctx]
        # A causal window over the last WINDOW cached positions: reads the cache the way attention
        # does (only the row's positions <= its own) while keeping the values small.
        col = torch.arange(cache.max_ctx, device=tokens.device)[None, None, :]
        causal = col <= pos[:, :, None]
        visible = causal & (col > pos[:, :, None] - self.WINDOW)
        if bool(((rows[:, None, :] < 0) & visible).any()):
            raise AssertionError("toy model attended an unwritten cache position")
        e = self.emb[rows.clamp(min=0)]                                      # [B, max_ctx, D]
        context = torch.einsum("bqc,bcd->bqd", visible.float(), e)
        h = 4.0 * self.emb[tokens.clamp(0, self.vocab - 1)] + context
        logits = (h @ self.out) / 16.0
        # EOS grows likelier with length (exact: a count over a power of two), so rollouts end on
        # EOS at varied lengths and some run into the cap: a long tail in miniature.
        # Counted from the last MARKER token (the chat template's "response starts here"), so that
        # the response length, not the prompt length, drives it.
        marker = torch.where(causal & (rows[:, None, :] == self.MARKER), col, -1).amax(-1)
        logits[..., self.eos_id] += (pos - marker).float() / 2.0 - 8.0
        return logits


class ToyTokenizer:
    """Bytes folded into the toy vocabulary (ids 2..vocab-1; 0 is EOS, 1 the response marker that
    ends the chat template), so that the whole rollout pipeline runs on the toy model in tests."""

    def __init__(self, vocab: int = 48, eos_id: int = 0) -> None:
        self.vocab = vocab
        self.eos_token_id = eos_id

    def encode(self, text: str) -> list[int]:
        return [2 + b % (self.vocab - 2) for b in text.encode("utf-8")]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(ord("!") + int(i) % 90) for i in ids if int(i) != self.eos_token_id)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True
                            ) -> list[int]:
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages)
        return self.encode(text) + ([ToyLM.MARKER] if add_generation_prompt else [])
