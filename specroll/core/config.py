"""Declared config models (pydantic v2): unknown keys forbidden, types strict, ranges declared, and
every validation error turned into the one-line :class:`SpecrollError` (file, field path, fix).

Why pydantic: the configs are nested tables read from TOML/JSON, and what a user needs from a
checker is exactly what pydantic reports per error: the location (a field path), the kind of
error and the constraint. Strict mode so that ``mfu = "0.4"`` or ``repeats = "three"`` is an error,
not a silent conversion; a float field still takes an integer (``mfu = 1``). Lists stand for
tuples (TOML and JSON have no tuples).

    class TrainConfig(ConfigModel):
        mfu: float = Field(0.4, gt=0, le=1, description="model FLOPs utilization of training")

    cfg = parse(TrainConfig, {"mfu": 5}, file="run.toml", prefix="train")
    # SpecrollError: run.toml: field 'train.mfu': must be <= 1, got 5. Fix: set train.mfu <= 1.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from specroll.core.errors import SpecrollError

M = TypeVar("M")


class FieldError(ValueError):
    """Raised by a model's validator about one of its fields: the error then names that field
    (pydantic would name the whole model) and carries its own fix."""

    def __init__(self, field: str, what: str, fix: str = "") -> None:
        super().__init__(what)
        self.field, self.what, self.fix = field, what, fix


class ConfigModel(BaseModel):
    """Base of every declared config: unknown keys forbidden, strict types. Build one from user
    data with :func:`parse` (a bad value is then one SpecrollError, not a pydantic traceback).
    Assignments are not checked one by one (a config is often changed in several places, then
    checked whole: :func:`recheck`)."""

    model_config = ConfigDict(extra="forbid", strict=True)


def recheck(model: ConfigModel, *, file: str | Path | None = None) -> None:
    """Validate ``model`` again as a whole (after assignments): errors name the full field path."""
    try:
        type(model).model_validate(model.model_dump(mode="python", round_trip=True))
    except ValidationError as exc:
        raise to_spec_error(exc, type(model), file=file) from None


def parse(cls: type[M], data: Any, *, file: str | Path | None = None, prefix: str = "") -> M:
    """``cls`` (a ConfigModel, or a dataclass) validated from ``data``; one SpecrollError on failure."""
    data = _tuples_from_lists(cls, data)
    try:
        if isinstance(cls, type) and issubclass(cls, BaseModel):
            return cls.model_validate(data)  # type: ignore[return-value]
        checked = _dataclass_model(cls).model_validate(data)
    except ValidationError as exc:
        raise to_spec_error(exc, cls, file=file, prefix=prefix) from None
    return cls(**{k: getattr(checked, k) for k in data})


@functools.cache
def _dataclass_model(cls: type) -> type[BaseModel]:
    """A strict model with the fields of dataclass ``cls`` (its hints, ``Annotated`` constraints
    included): components keep plain dataclasses for their parameters, checked the same way."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = ...
        fields[f.name] = (hints[f.name], default)
    return create_model(cls.__name__, __config__=ConfigDict(extra="forbid", strict=True), **fields)


def to_spec_error(exc: ValidationError, cls: type, *, file: str | Path | None = None,
                  prefix: str = "") -> SpecrollError:
    """The first error of ``exc`` as a SpecrollError naming the field path and the fix."""
    err = exc.errors(include_url=False)[0]
    # pydantic names a union's member (``str``, ``dict[str,any]``) and a validator in the location;
    # a user knows only field names and indices.
    loc = [x for x in err["loc"] if isinstance(x, int) or not _is_type_tag(str(x))]
    field = _join([prefix, *loc]) or None
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if isinstance(ctx.get("error"), FieldError):
        fe = ctx["error"]
        field = _join([prefix, *loc, fe.field])
        return SpecrollError(fe.what, file=file, field=field, fix=fe.fix or None)
    what, fix = _explain(kind, ctx, value, err["msg"], cls, loc)
    return SpecrollError(what, file=file, field=field, fix=fix.replace("FIELD", field or "it"))


def _is_type_tag(part: str) -> bool:
    return ("[" in part or part.startswith("function-")
            or part in ("str", "int", "float", "bool", "dict", "list", "tuple", "none"))


def _join(parts: list[Any]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p:
            out += f".{p}" if out else str(p)
    return out


def _explain(kind: str, ctx: dict[str, Any], value: Any, msg: str, cls: type,
             loc: list[Any]) -> tuple[str, str]:
    got = f", got {value!r}" if kind != "missing" else ""
    bounds = {"greater_than": ("> ", "gt"), "greater_than_equal": (">= ", "ge"),
              "less_than": ("< ", "lt"), "less_than_equal": ("<= ", "le")}
    if kind == "extra_forbidden":
        known = known_fields(cls, loc[:-1])
        return f"unknown key '{loc[-1]}'", f"use one of: {', '.join(known) or '(none)'}"
    if kind == "missing":
        return "missing", "add FIELD"
    if kind in bounds:
        op, key = bounds[kind]
        return f"must be {op}{ctx[key]}{got}", f"set FIELD {op}{ctx[key]}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}{got}", f"use one of: {ctx.get('expected')}"
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return f"must be an integer{got}", "write a whole number without quotes, e.g. 4"
    if kind in ("float_type", "float_parsing", "finite_number"):
        return f"must be a finite number{got}", "write a number without quotes, e.g. 0.5"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false{got}", "write true or false without quotes"
    if kind in ("string_type",):
        return f"must be a string{got}", 'write it in quotes, e.g. "name"'
    if kind in ("list_type", "tuple_type"):
        return f"must be a list{got}", "write a list, e.g. [1, 2]"
    if kind in ("dict_type", "model_type", "dataclass_type", "model_attributes_type"):
        return f"must be a table{got}", "write a table, e.g. { key = value }"
    if kind == "too_short" or kind == "too_long":
        return f"{msg.lower()}{got}", "give the number of items it asks for"
    if kind == "value_error":  # a validator's own message
        text = msg.removeprefix("Value error, ")
        what, _, fix = text.partition(" | fix: ")
        return what, fix or "see the docs of FIELD"
    return f"{msg}{got}", "see the docs of FIELD"


def known_fields(cls: type, path: list[Any]) -> list[str]:
    """Field names of the (nested) model or dataclass reached by ``path`` from ``cls``."""
    for part in path:
        if isinstance(part, int):  # an item of a list: its type is the list's item type
            continue
        nxt = _field_type(cls, part)
        if nxt is None:
            return []
        cls = nxt
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return sorted(cls.model_fields)
    if dataclasses.is_dataclass(cls):
        return sorted(f.name for f in dataclasses.fields(cls))
    return []


def _field_type(cls: type, name: str) -> type | None:
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        f = cls.model_fields.get(name)
        ann = None if f is None else f.annotation
    elif dataclasses.is_dataclass(cls):
        ann = typing.get_type_hints(cls).get(name)
    else:
        return None
    for arg in (ann, *typing.get_args(ann)):
        if isinstance(arg, type) and (issubclass(arg, BaseModel) or dataclasses.is_dataclass(arg)):
            return arg
    return None


def _tuples_from_lists(cls: Any, data: Any) -> Any:
    """Lists become tuples where ``cls`` (a dataclass) declares a tuple: TOML and JSON have none."""
    if not dataclasses.is_dataclass(cls) or not isinstance(data, Mapping):
        return data
    hints = typing.get_type_hints(cls)
    out = dict(data)
    for name, value in data.items():
        ann = hints.get(name)
        origins = {typing.get_origin(a) for a in (ann, *typing.get_args(ann))}
        if isinstance(value, list) and (ann is tuple or tuple in origins):
            out[name] = tuple(value)
    return out


def dump(model: BaseModel) -> dict[str, Any]:
    """The model as plain data (TOML/JSON-able), in declaration order."""
    return model.model_dump(mode="python")


def check_kwargs(fn: Any, params: Mapping[str, Any], *, file: str | Path | None = None,
                 prefix: str = "") -> dict[str, Any]:
    """``params`` checked against ``fn``'s signature (names and annotated types, strictly): the
    keyword arguments of a factory whose parameters are its constructor's (acceptance sources)."""
    checked = parse(_signature_model(fn), dict(params), file=file, prefix=prefix)
    return {k: getattr(checked, k, params[k]) for k in params}


@functools.cache
def _signature_model(fn: Any) -> type[BaseModel]:
    target = fn.__init__ if isinstance(fn, type) else fn
    hints = typing.get_type_hints(target)
    fields: dict[str, Any] = {}
    passes_on = False  # **kwargs: the rest goes to another component, which checks it itself
    for name, p in inspect.signature(target).parameters.items():
        passes_on = passes_on or p.kind == p.VAR_KEYWORD
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[name] = (hints.get(name, Any), default)
    return create_model(getattr(fn, "__name__", "params"),
                        __config__=ConfigDict(extra="allow" if passes_on else "forbid", strict=True),
                        **fields)
