"""RL-shaped rollout workloads: the prompts, their checkable answers, and the rollout schedule.

An RL step samples G responses for each of N prompts; the next step re-samples the same prompts
with new keys. Prompts are either arithmetic word problems generated from templates (seeded, so
the same seed gives the same problems and their answers can be checked) or the user's own prompts
from a JSONL file (plain text or chat messages).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specroll.core.errors import SpecrollError

# Why these instructions: SmolLM2-135M-Instruct answers such problems in a few dozen to a few
# hundred tokens, with a long tail of rambling responses (the design card's "Real models here").
_INSTRUCTION = "Solve the problem step by step, then write the final answer as a number."

# (template, answer function). Names and items are filled in from the seeded generator.
_TEMPLATES: list[tuple[str, Any]] = [
    ("{name} has {a} {item}. {pronoun} buys {b} more and gives {c} to a friend. "
     "How many {item} does {name} have now?", lambda a, b, c: a + b - c),
    ("A box holds {a} {item}. How many {item} are in {b} boxes if {c} {item} are removed?",
     lambda a, b, c: a * b - c),
    ("{name} reads {a} pages a day for {b} days, then {c} more pages. How many pages did "
     "{name} read in total?", lambda a, b, c: a * b + c),
    ("A shop sells {item} at {a} dollars each. {name} buys {b} of them and pays with {c} dollars "
     "more than the cost. How much money did {name} hand over?", lambda a, b, c: a * b + c),
    ("{name} had {c} {item}, shared them equally among {b} friends and then found {a} more. "
     "How many {item} does each friend get, plus the {a} found?", lambda a, b, c: c // b + a),
    ("A train travels {a} km every hour. How far does it go in {b} hours and {c} more km?",
     lambda a, b, c: a * b + c),
]
_NAMES = [("Sam", "He"), ("Mia", "She"), ("Leo", "He"), ("Ava", "She"), ("Noah", "He"),
          ("Zoe", "She"), ("Omar", "He"), ("Lena", "She")]
_ITEMS = ["apples", "pencils", "marbles", "stickers", "cookies", "books", "coins", "shells"]


@dataclass(frozen=True)
class Prompt:
    """One prompt of the workload: chat messages and, when known, the expected final answer."""

    prompt_id: int
    messages: tuple[dict[str, str], ...]
    answer: float | None = None

    @property
    def text(self) -> str:
        return self.messages[-1]["content"]


def arithmetic_prompts(n: int, seed: int) -> list[Prompt]:
    """``n`` arithmetic word problems, a deterministic function of ``(n, seed)`` (prefix-stable)."""
    if n <= 0:
        raise SpecrollError(f"need at least one prompt, got {n}", field="prompts",
                            fix="pass --prompts N with N >= 1")
    out = []
    for pid in range(n):
        # One generator per prompt so that prompt i does not depend on n.
        rng = random.Random(f"specroll-arith:{seed}:{pid}")
        template, answer_fn = _TEMPLATES[rng.randrange(len(_TEMPLATES))]
        name, pronoun = _NAMES[rng.randrange(len(_NAMES))]
        item = _ITEMS[rng.randrange(len(_ITEMS))]
        b = rng.randint(2, 9)
        a = rng.randint(2, 40)
        c = rng.randint(1, 30) if "shared" not in template else b * rng.randint(2, 12)
        if "gives" in template:
            c = rng.randint(1, a + b)
        if "removed" in template:
            c = rng.randint(1, a * b)
        problem = template.format(name=name, pronoun=pronoun, item=item, a=a, b=b, c=c)
        out.append(Prompt(pid, ({"role": "user", "content": f"{problem} {_INSTRUCTION}"},),
                          float(answer_fn(a, b, c))))
    return out


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def extract_final_number(text: str) -> float | None:
    """The response's final answer: the number after the last 'answer' marker or boxed{},
    else the last number in the text; None when there is none."""
    for marker in (r"\\boxed\{([^}]*)\}", r"(?i)answer\s*(?:is)?\s*[:=]?\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)"):
        hits = re.findall(marker, text)
        if hits:
            nums = _NUMBER.findall(hits[-1])
            if nums:
                return _to_float(nums[-1])
    nums = _NUMBER.findall(text)
    return _to_float(nums[-1]) if nums else None


def _to_float(s: str) -> float | None:
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return None


def check_answer(text: str, answer: float | None) -> bool | None:
    """True/False when the prompt has a known answer, None otherwise."""
    if answer is None:
        return None
    got = extract_final_number(text)
    return got is not None and abs(got - answer) < 1e-6


def load_prompts_file(path: str | Path) -> list[Prompt]:
    """Prompts from JSONL: each line a JSON string, an object with ``prompt``/``text`` or
    ``messages`` (and optional ``answer``), or a list of chat messages."""
    path = Path(path)
    if not path.exists():
        raise SpecrollError("prompts file not found", file=path, fix="check the --prompts-file path")
    prompts = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SpecrollError(f"not valid JSON ({exc.msg})", file=where,
                                fix="write one JSON value per line") from None
        answer = None
        if isinstance(obj, dict):
            answer = obj.get("answer")
            if "messages" in obj:
                obj = obj["messages"]
            elif isinstance(obj.get("prompt", obj.get("text")), str):
                obj = obj.get("prompt", obj.get("text"))
            else:
                raise SpecrollError("object has no 'prompt', 'text' or 'messages'", file=where,
                                    field="prompt", fix='write {"prompt": "..."} or {"messages": [...]}')
        if isinstance(obj, str):
            messages = ({"role": "user", "content": obj},)
        elif isinstance(obj, list):
            messages = tuple(_check_message(m, where) for m in obj)
        else:
            raise SpecrollError(f"expected a string, an object or a list, got {type(obj).__name__}",
                                file=where, fix="write a prompt string or chat messages")
        if not messages or not any(m["content"].strip() for m in messages):
            raise SpecrollError("empty prompt", file=where, field="prompt", fix="remove the line")
        try:
            answer = None if answer is None else float(answer)
        except (TypeError, ValueError):
            raise SpecrollError(f"answer {answer!r} is not a number", file=where, field="answer",
                                fix="give a number or leave it out") from None
        prompts.append(Prompt(len(prompts), messages, answer))
    if not prompts:
        raise SpecrollError("no prompts in the file", file=path, fix="write one prompt per line (JSONL)")
    return prompts


def _check_message(m: Any, where: str) -> dict[str, str]:
    if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
        raise SpecrollError("chat message must be an object with string 'role' and 'content'",
                            file=where, field="messages", fix='write {"role": "user", "content": "..."}')
    return {"role": m["role"], "content": m["content"]}


@dataclass(frozen=True)
class RolloutRequest:
    """One rollout to generate: the prompt's tokens and the identity that keys its sampling."""

    rid: int
    """stable over the whole run (step-major): indexes per-request policy memory."""
    step: int
    prompt_id: int
    sample: int
    prompt_tokens: tuple[int, ...]

    @property
    def key(self) -> int:
        # The sampling key is the rollout's identity: a new step re-samples the prompt with new keys.
        return self.rid


def step_requests(prompt_tokens: list[list[int]], samples: int, step: int) -> list[RolloutRequest]:
    """The rollouts of one RL step: ``samples`` of each prompt, in prompt-major order."""
    n = len(prompt_tokens)
    base = step * n * samples
    return [RolloutRequest(base + pid * samples + g, step, pid, g, tuple(toks))
            for pid, toks in enumerate(prompt_tokens) for g in range(samples)]
