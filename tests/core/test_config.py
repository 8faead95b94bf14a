"""specroll.core.config: declared models and dataclass parameters, every error one SpecrollError
with the field path and a fix."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

import pytest
from pydantic import Field, model_validator

from specroll.core.config import ConfigModel, FieldError, check_kwargs, parse, recheck
from specroll.core.errors import SpecrollError


class Train(ConfigModel):
    mfu: float = Field(0.4, gt=0, le=1)
    passes: int = Field(8, ge=0)


class Item(ConfigModel):
    name: str
    kind: Literal["a", "b"] = "a"


class Run(ConfigModel):
    train: Train = Field(default_factory=Train)
    items: list[Item] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    engines: int = 1
    reserved: int = 0

    @model_validator(mode="after")
    def _fits(self) -> Run:
        if self.reserved >= self.engines:
            raise FieldError("reserved", f"must be < engines ({self.engines})", "reserve fewer")
        return self


@pytest.mark.parametrize("data, field, what", [
    ({"train": {"mfu": 5}}, "train.mfu", "must be <= 1"),
    ({"train": {"mfu": "0.4"}}, "train.mfu", "must be a finite number, got '0.4'"),
    ({"train": {"passes": True}}, "train.passes", "must be an integer"),
    ({"train": {"passes": 2.5}}, "train.passes", "must be an integer"),
    ({"train": {"x": 1}}, "train.x", "unknown key 'x'"),
    ({"items": [{"name": "n", "kind": "c"}]}, "items[0].kind", "must be one of"),
    ({"items": [{}]}, "items[0].name", "missing"),
    ({"seeds": []}, "seeds", "at least 1 item"),
    ({"train": 3}, "train", "must be a table"),
    ({"engines": 2, "reserved": 2}, "reserved", "must be < engines (2)"),
])
def test_each_bad_value_is_one_error_with_the_field_path_and_a_fix(data, field, what):
    with pytest.raises(SpecrollError) as exc:
        parse(Run, data, file="run.toml")
    e = exc.value
    assert e.file == "run.toml" and e.field == field and what in e.what and e.fix, e.message


def test_unknown_key_lists_the_known_ones_and_a_float_takes_an_integer():
    with pytest.raises(SpecrollError) as exc:
        parse(Run, {"train": {"mfuu": 0.5}})
    assert exc.value.fix == "use one of: mfu, passes"
    assert parse(Run, {"train": {"mfu": 1}}).train.mfu == 1.0


def test_recheck_names_the_full_path_after_assignments():
    cfg = parse(Run, {})
    cfg.train.mfu = 7.0  # assignments are not checked one by one
    with pytest.raises(SpecrollError) as exc:
        recheck(cfg, file="c.toml")
    assert exc.value.field == "train.mfu" and exc.value.file == "c.toml"


@dataclasses.dataclass
class Params:
    k: Annotated[int, Field(ge=0, le=32)] = 4
    edges: tuple[float, ...] = (0.5,)
    alpha: float | None = None


def test_dataclass_parameters_are_checked_strictly_with_declared_ranges():
    p = parse(Params, {"edges": [0.2, 0.4], "alpha": 1})
    assert isinstance(p, Params) and p.edges == (0.2, 0.4) and p.alpha == 1.0 and p.k == 4
    for bad, field in (({"k": "six"}, "params.k"), ({"k": 2.5}, "params.k"), ({"k": 1000}, "params.k"),
                       ({"q": 1}, "params.q")):
        with pytest.raises(SpecrollError) as exc:
            parse(Params, bad, prefix="params")
        assert exc.value.field == field


def test_keyword_arguments_are_checked_against_a_signature():
    def source(alpha: float = 0.7, kmax: int = 8) -> None: ...

    def passes_on(drop: float = 0.3, **rest: float) -> None: ...

    assert check_kwargs(source, {"kmax": 4}) == {"kmax": 4}
    with pytest.raises(SpecrollError) as exc:
        check_kwargs(source, {"kmax": "4"}, prefix="acceptance")
    assert exc.value.field == "acceptance.kmax"
    with pytest.raises(SpecrollError, match="unknown key 'x'"):
        check_kwargs(source, {"x": 1}, prefix="acceptance")
    assert check_kwargs(passes_on, {"drop": 0.1, "other": 2}) == {"drop": 0.1, "other": 2}
