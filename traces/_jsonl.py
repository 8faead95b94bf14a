"""JSONL rollout-dump importer: one JSON record per response, as RL frameworks write them.

Field names differ between frameworks (verl, OpenRLHF, TRL ...), so every field is mapped by an
option. A record needs a step, a group (uid) or prompt text, and either a response length or the
response text and an ``encode`` function. Prompt identity across steps: the prompt text when present
(hashed, so the same prompt gets the same id in every step and every file), else an explicit
prompt-id field, else the group field. Samples are numbered within (step, prompt) in file order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from specroll.core.errors import SpecrollError
from specroll.traces._schema import TraceMeta
from specroll.traces._trace import Trace


@dataclass
class JsonlFields:
    """Names of the record fields; None = not in the dump."""

    step: str = "step"
    group: str | None = "uid"
    prompt: str | None = "prompt"
    prompt_id: str | None = None
    response: str | None = "response"
    response_len: str | None = "response_length"
    prompt_len: str | None = None
    finished: str | None = None


def _stable_id(value: Any) -> int:
    # blake2b of the canonical JSON: the same prompt maps to the same id in every file and run.
    digest = hashlib.blake2b(json.dumps(value, sort_keys=True).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def import_jsonl(path: str | Path, *, cap: int, fields: JsonlFields | None = None,
                 encode: Callable[[str], Sequence[int]] | None = None,
                 default_prompt_len: int | None = None, model: str = "",
                 temperature: float = 1.0) -> Trace:
    """Read a JSONL dump into a validated Trace.

    ``encode`` (text -> token ids, e.g. the model's tokenizer, which the caller loads: traces
    import no model code) counts prompt and response tokens from their text and stores the ids.
    """
    path = Path(path)
    f = fields or JsonlFields()
    if not path.exists():
        raise SpecrollError("file not found", file=path, fix="check the path")
    cols: dict[str, list[Any]] = {k: [] for k in ("step", "prompt_id", "sample", "prompt_len",
                                                  "response_len", "finished")}
    tokens: list[list[int]] = []
    prompt_tokens: list[list[int]] = []
    counters: dict[tuple[int, int], int] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SpecrollError(f"not valid JSON ({exc.msg})", file=where,
                                    fix="one JSON object per line") from None
            if not isinstance(rec, dict):
                raise SpecrollError("a record must be a JSON object", file=where, fix="one object per line")

            def get(name: str | None, what: str, rec: dict = rec, where: str = where) -> Any:
                if name is None or name not in rec:
                    raise SpecrollError(f"record has no {what} field '{name}'", file=where, field=str(name),
                                        fix=f"map the {what} with the matching --*-field option")
                return rec[name]

            def as_int(value: Any, name: str | None, where: str = where) -> int:
                if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
                    raise SpecrollError(f"expected an integer, got {value!r}", file=where, field=str(name),
                                        fix="map a field holding whole numbers")
                return int(value)

            step = as_int(get(f.step, "step"), f.step)
            prompt_text = rec.get(f.prompt) if f.prompt else None
            if f.prompt_id and f.prompt_id in rec:
                pid = _stable_id(rec[f.prompt_id])
            elif prompt_text is not None:
                pid = _stable_id(prompt_text)
            else:
                pid = _stable_id(get(f.group, "group (uid) or prompt"))
            if encode is not None:
                resp = encode(str(get(f.response, "response text")))
                ptoks = encode(str(get(f.prompt, "prompt text")))
                tokens.append(resp)
                prompt_tokens.append(ptoks)
                rlen, plen = len(resp), len(ptoks)
            else:
                if f.response_len is None or f.response_len not in rec:
                    raise SpecrollError(f"record has no response-length field '{f.response_len}'", file=where,
                                        field=str(f.response_len), fix="map it with --length-field, or pass "
                                        "--tokenize to count tokens of the response text")
                rlen = as_int(rec[f.response_len], f.response_len)
                if f.prompt_len and f.prompt_len in rec:
                    plen = as_int(rec[f.prompt_len], f.prompt_len)
                elif default_prompt_len is not None:
                    plen = default_prompt_len
                else:
                    raise SpecrollError(f"record has no prompt-length field '{f.prompt_len}'", file=where,
                                        field=str(f.prompt_len), fix="map it with --prompt-len-field, pass "
                                        "--default-prompt-len N, or --tokenize")
            if rlen > cap or rlen < 1:
                raise SpecrollError(f"response length {rlen} outside 1..cap={cap}", file=where,
                                    field=str(f.response_len or f.response),
                                    fix="raise --cap to the generation limit, or drop empty responses")
            finished = bool(rec[f.finished]) if f.finished and f.finished in rec else rlen < cap
            sample = counters.get((step, pid), 0)
            counters[(step, pid)] = sample + 1
            for k, v in (("step", step), ("prompt_id", pid), ("sample", sample), ("prompt_len", plen),
                         ("response_len", rlen), ("finished", finished)):
                cols[k].append(v)
    if not cols["step"]:
        raise SpecrollError("no records", file=path, fix="pass a non-empty JSONL dump")
    data: dict[str, Any] = {k: np.asarray(v) for k, v in cols.items()}
    if encode is not None:
        data["token_ids"] = tokens
        data["prompt_token_ids"] = prompt_tokens
    meta = TraceMeta(max_response_len=cap, source=f"import:jsonl {path.name}", model=model,
                     temperature=temperature,
                     extra={"import": {"fields": vars(f), "tokenized": encode is not None}})
    return Trace.from_columns(meta, data, file=path).sort()
