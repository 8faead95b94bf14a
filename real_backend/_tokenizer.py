"""Tokenizers with chat templates: SmolLM2's rebuilt from its GGUF, or a checkpoint folder's own
``tokenizer.json`` (real_backend/_hf.py). Nothing is downloaded.

Byte-level BPE from ``tokenizer.ggml.tokens``/``merges`` built with the ``tokenizers`` library;
the pre-tokenizer is SmolLM2's own (llama.cpp's ``smollm`` pre-type, the model's tokenizer.json):
every digit is its own piece, then the GPT-2 byte-level split. Control tokens (``<|im_start|>``,
``<|im_end|>``, ...) are special added tokens. The chat template is the GGUF's
``tokenizer.chat_template``, rendered with jinja2 the way transformers renders it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from specroll.core.errors import SpecrollError

_CONTROL = 3  # llama.cpp token type of control tokens


class Tokenizer:
    """encode / decode / apply_chat_template / eos_token_id, as the engine and rollouts need.

    ``Tokenizer(meta)`` builds SmolLM2's from the GGUF metadata; :meth:`from_parts` wraps any
    ``tokenizers.Tokenizer`` (a checkpoint's tokenizer.json) with its special tokens and template."""

    def __init__(self, meta: dict[str, Any]) -> None:
        from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        tokens: list[str] = meta["tokens"]
        vocab = {t: i for i, t in enumerate(tokens)}
        merges = [tuple(m.split(" ", 1)) for m in meta["merges"]]
        tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
        tok.decoder = decoders.ByteLevel()
        specials = [t for t, kind in zip(tokens, meta["token_types"]) if kind == _CONTROL]
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
        self._init(tok, int(meta["eos_token_id"]), meta.get("bos_token_id"), meta.get("chat_template"))

    @classmethod
    def from_parts(cls, tok: Any, eos_token_id: int, bos_token_id: int | None,
                   chat_template: str | None) -> Tokenizer:
        """A ``tokenizers.Tokenizer`` with its EOS/BOS ids and chat template (jinja source)."""
        self = cls.__new__(cls)
        self._init(tok, eos_token_id, bos_token_id, chat_template)
        return self

    def _init(self, tok: Any, eos_token_id: int, bos_token_id: int | None, chat_template: str | None) -> None:
        self._tok = tok
        self.vocab_size = int(tok.get_vocab_size(with_added_tokens=True))
        self.eos_token_id = int(eos_token_id)
        self.bos_token_id = None if bos_token_id is None else int(bos_token_id)
        self.eos_token = tok.id_to_token(self.eos_token_id)
        self.bos_token = None if self.bos_token_id is None else tok.id_to_token(self.bos_token_id)
        self.chat_template = chat_template
        self._template: Any = None

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (special-token strings in it become their ids; no BOS is added)."""
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True,
                            tokenize: bool = True) -> list[int] | str:
        """The prompt of a conversation ([{"role", "content"}, ...]) as token ids (or text)."""
        if self._template is None:
            self._template = _compile(self.chat_template)
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise SpecrollError(f"message {i} must be a dict with 'role' and 'content'", field="messages",
                                    fix='pass [{"role": "user", "content": "..."}]')
        text = self._template.render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                     bos_token=self.bos_token or "", eos_token=self.eos_token)
        return self.encode(text) if tokenize else text


def _compile(source: str | None) -> Any:
    """A jinja2 template configured as transformers configures chat templates."""
    if not source:
        raise SpecrollError("the model has no chat template", field="tokenizer.chat_template",
                            fix="encode a plain prompt with encode()")
    import json

    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False: json.dumps(
        x, indent=indent, ensure_ascii=ensure_ascii)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


_CACHE: dict[str, Tokenizer] = {}


def load_tokenizer(name: str = "smollm2-135m") -> Tokenizer:
    """SmolLM2-135M-Instruct's tokenizer, from its GGUF (a checkpoint folder's own tokenizer:
    real_backend/_load.py's load_tokenizer, which the package exports)."""
    if name != "smollm2-135m":
        raise SpecrollError(f"no tokenizer ships for model '{name}'", field="model",
                            fix="use smollm2-135m or a checkpoint folder (other shapes are random-weight "
                                "timing models)")
    if name not in _CACHE:
        from specroll.real_backend._gguf import read_meta

        _CACHE[name] = Tokenizer(read_meta())
    return _CACHE[name]
