"""Model shapes: the numbers the physical cost model needs (bytes of weights and KV, FLOPs)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from specroll.core.registry import Registry


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only transformer (Llama/Qwen family): GQA attention + SwiGLU MLP."""

    name: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    vocab_size: int
    tied_embeddings: bool

    @property
    def params_per_layer(self) -> int:
        attn = self.d_model * self.head_dim * (2 * self.n_heads + 2 * self.n_kv_heads)
        mlp = 3 * self.d_model * self.d_ff
        return attn + mlp + 2 * self.d_model

    @property
    def n_params(self) -> int:
        emb = self.vocab_size * self.d_model * (1 if self.tied_embeddings else 2)
        return self.n_layers * self.params_per_layer + emb + self.d_model

    def weight_bytes(self, dtype_bytes: float = 2.0) -> float:
        """Bytes read per forward: every layer plus the LM head (the input embedding is a gather)."""
        return dtype_bytes * (self.n_layers * self.params_per_layer + self.vocab_size * self.d_model)

    def kv_bytes_per_token(self, dtype_bytes: float = 2.0) -> float:
        """KV-cache bytes per cached token across all layers (K and V)."""
        return dtype_bytes * 2 * self.n_layers * self.n_kv_heads * self.head_dim

    def linear_flops_per_token(self) -> float:
        """FLOPs of the matrix products for one query token (2 per multiply-add), LM head included."""
        return 2.0 * (self.n_layers * (self.params_per_layer - 2 * self.d_model)
                      + self.vocab_size * self.d_model)

    def attention_flops_per_pair(self) -> float:
        """FLOPs of QK^T and PV for one (query token, key token) pair across all layers."""
        return 4.0 * self.n_layers * self.n_heads * self.head_dim

    def to_dict(self) -> dict:
        return asdict(self)


MODEL_SHAPES: Registry[ModelShape] = Registry("model")


def _add(shape: ModelShape) -> None:
    MODEL_SHAPES.add(shape.name, shape)


# Published configs (config.json of each model on its hub page).
_add(ModelShape("smollm2-135m", 30, 576, 9, 3, 64, 1536, 49152, True))
_add(ModelShape("qwen2.5-0.5b", 24, 896, 14, 2, 64, 4864, 151936, True))
_add(ModelShape("qwen2.5-1.5b", 28, 1536, 12, 2, 128, 8960, 151936, True))
_add(ModelShape("qwen2.5-7b", 28, 3584, 28, 4, 128, 18944, 152064, False))
_add(ModelShape("qwen2.5-14b", 48, 5120, 40, 8, 128, 13824, 152064, False))
_add(ModelShape("qwen2.5-32b", 64, 5120, 40, 8, 128, 27648, 152064, False))
_add(ModelShape("llama-3.1-8b", 32, 4096, 32, 8, 128, 14336, 128256, False))
_add(ModelShape("llama-3.1-70b", 80, 8192, 64, 8, 128, 28672, 128256, False))
_add(ModelShape("deepseek-r1-distill-qwen-7b", 28, 3584, 28, 4, 128, 18944, 152064, False))


def get_shape(name: str) -> ModelShape:
    return MODEL_SHAPES.get(name)
