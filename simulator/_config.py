"""SimConfig: one simulation, read from TOML and validated up front (one clear error per mistake).

```toml
seed = 0                      # acceptance draws (and the synthetic trace unless [workload].seed)
[cluster]  engines = 64, tp = 1, max_batch = 256, dispatch = "round-robin"
[model]    name = "qwen2.5-7b", profile = "h100-sxm:qwen2.5-7b"   # builtin name or JSON path
[workload] preset = "math-16k" (or trace = "file.parquet"), prompts, samples, steps, seed
[policy]   name = "fixed", params = { k = 4 }
[acceptance] source = "parametric", alpha = 0.7, ...   # every other key is a source parameter
[train]    model, passes, mfu, peak_flops, gpus, sync_gbps
[drafter]  kind = "model", model = "qwen2.5-0.5b", overlap = true   # replaces the profile's drafter cost
[lossy]    method = "judge", p = 0.3                                  # lossy acceptance on top
[partial]  enabled = true, concurrency = 4096, target = 8192          # partial rollouts (CoPRIS)
```
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specroll.core.errors import SpecrollError
from specroll.core.fileio import read_toml

DISPATCH = ("round-robin", "least-loaded", "longest-predicted-first", "histopipe", "long-dedicated")


@dataclass
class ClusterConfig:
    engines: int = 8
    tp: int = 1
    max_batch: int = 256
    dispatch: str = "round-robin"
    kv_watermark: float = 0.01
    kv_capacity_tokens: int | None = None
    """override the profile's KV capacity per engine (tokens)."""
    long_engines: int | None = None
    """``long-dedicated`` dispatch (StreamRL): engines reserved for the predicted long tail
    (default engines // 8, at least 1)."""
    long_frac: float = 0.1
    """``long-dedicated``: fraction of a step's rollouts, longest predicted first, sent to them."""


@dataclass
class ModelConfig:
    name: str = "qwen2.5-7b"
    profile: str | None = None
    """builtin profile name (DEVICE:MODEL[:tpN]) or a JSON path; default h100-sxm:NAME[:tpN]."""


@dataclass
class WorkloadConfig:
    trace: str | None = None
    preset: str | None = None
    prompts: int | None = None
    samples: int | None = None
    steps: int | None = None
    seed: int | None = None
    history_window: int = 4
    """steps of length history behind predicted_len (LengthHistory window)."""


@dataclass
class PolicyConfig:
    name: str = "ar"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class AcceptanceConfig:
    source: str = "parametric"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Training phase of each RL step: FLOPs of the policy update over the step's tokens."""

    enabled: bool = True
    model: str | None = None
    """shape of the trained model (default: [model].name)."""
    passes: float = 8.0
    """FLOPs per parameter per token: 6 (forward + backward) + 2 (old/reference log-probs)."""
    mfu: float = 0.4
    peak_flops: float | None = None
    """per GPU; default: the profile's device peak."""
    gpus: int | None = None
    """GPUs that train (default engines x tp: colocated training)."""
    sync_gbps: float = 100.0
    """weight-sync bandwidth, GB/s, to broadcast the new weights to the engines."""


@dataclass
class LossyConfig:
    """Lossy acceptance on top of the acceptance source (simulator/_lossy.py)."""

    method: str | None = None
    """judge | entropy | spec-rl (None: lossless)."""
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class PartialConfig:
    """Partial rollouts (CoPRIS): fixed concurrency, the step stops once ``target`` rollouts are done;
    unfinished ones keep their progress and resume in the next step under the new weights."""

    enabled: bool = False
    concurrency: int | None = None
    """rollouts in flight across the cluster (split evenly over engines; default engines x max_batch)."""
    target: int | None = None
    """completed rollouts that end a step (default: the step's rollouts in the trace)."""


@dataclass
class SimConfig:
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    acceptance: AcceptanceConfig = field(default_factory=AcceptanceConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    drafter: dict[str, Any] | None = None
    """the drafter's cost (calibration drafter spec) replacing the profile's; None: the profile's."""
    lossy: LossyConfig = field(default_factory=LossyConfig)
    partial: PartialConfig = field(default_factory=PartialConfig)
    seed: int = 0
    file: str | None = None
    """the TOML file this came from (error messages, relative paths)."""

    # --- construction --------------------------------------------------------------------------
    @classmethod
    def from_toml(cls, path: str | Path) -> SimConfig:
        return cls.from_dict(read_toml(path), file=str(path))

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, file: str | None = None) -> SimConfig:
        d = copy.deepcopy(d)
        d.pop("tune", None)  # the tuner's table (specroll tune): a tuning config simulates as is
        top = {"cluster", "model", "workload", "policy", "acceptance", "train", "drafter", "lossy", "partial",
               "seed"}
        _no_unknown(d, top, "", file)
        cfg = cls(file=file, seed=_int(d.get("seed", 0), "seed", file))
        for name, typ in (("cluster", ClusterConfig), ("model", ModelConfig), ("workload", WorkloadConfig),
                          ("train", TrainConfig), ("partial", PartialConfig)):
            sec = d.get(name, {})
            if not isinstance(sec, dict):
                raise SpecrollError("must be a table", file=file, field=name, fix=f"write [{name}]")
            _no_unknown(sec, {f.name for f in dataclasses.fields(typ)}, name + ".", file)
            setattr(cfg, name, typ(**sec))
        pol = dict(d.get("policy", {}))
        _no_unknown(pol, {"name", "params"}, "policy.", file)
        cfg.policy = PolicyConfig(name=str(pol.get("name", "ar")), params=dict(pol.get("params", {})))
        acc = dict(d.get("acceptance", {}))
        source = str(acc.pop("source", "parametric"))
        cfg.acceptance = AcceptanceConfig(source=source, params=acc)
        for name in ("drafter", "lossy"):
            if not isinstance(d.get(name, {}), dict):
                raise SpecrollError("must be a table", file=file, field=name, fix=f"write [{name}]")
        if d.get("drafter"):
            cfg.drafter = dict(d["drafter"])
        lossy = dict(d.get("lossy", {}))
        method = lossy.pop("method", None)
        cfg.lossy = LossyConfig(method=None if method is None else str(method), params=lossy)
        cfg.validate()
        return cfg

    def replace(self, **sections: Any) -> SimConfig:
        """A deep copy with some fields replaced (e.g. ``cluster=...``), validated."""
        new = copy.deepcopy(self)
        for k, v in sections.items():
            setattr(new, k, v)
        new.validate()
        return new

    # --- validation ----------------------------------------------------------------------------
    def validate(self) -> None:
        f = self.file
        c = self.cluster
        for name in ("engines", "tp", "max_batch"):
            v = getattr(c, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SpecrollError(f"must be a positive integer, got {v!r}", file=f, field=f"cluster.{name}",
                                    fix=f"set cluster.{name} >= 1")
        if c.dispatch not in DISPATCH:
            raise SpecrollError(f"unknown dispatch '{c.dispatch}'", file=f, field="cluster.dispatch",
                                fix=f"use one of: {', '.join(DISPATCH)}")
        if not 0.0 <= float(c.kv_watermark) < 1.0:
            raise SpecrollError("must be in [0, 1)", file=f, field="cluster.kv_watermark")
        if c.kv_capacity_tokens is not None and int(c.kv_capacity_tokens) < 1:
            raise SpecrollError("must be >= 1", file=f, field="cluster.kv_capacity_tokens")
        w = self.workload
        if (w.trace is None) == (w.preset is None):
            raise SpecrollError("give exactly one of workload.trace and workload.preset", file=f,
                                field="workload", fix='set trace = "FILE.parquet" or preset = "math-16k"')
        if w.trace is not None and not self.trace_path().is_file():
            raise SpecrollError(f"trace file not found: {self.trace_path()}", file=f, field="workload.trace",
                                fix="check the path (relative paths are relative to the config file)")
        for name in ("prompts", "samples", "steps"):
            v = getattr(w, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise SpecrollError(f"must be a positive integer, got {v!r}", file=f,
                                    field=f"workload.{name}")
        if int(w.history_window) < 1:
            raise SpecrollError("must be >= 1", file=f, field="workload.history_window")
        t = self.train
        if t.passes < 0 or not 0.0 < t.mfu <= 1.0 or t.sync_gbps <= 0:
            raise SpecrollError("need passes >= 0, 0 < mfu <= 1, sync_gbps > 0", file=f, field="train")
        if c.long_engines is not None and (not isinstance(c.long_engines, int) or not 1 <= c.long_engines
                                           < c.engines):
            raise SpecrollError(f"must be an integer in [1, engines - 1], got {c.long_engines!r}", file=f,
                                field="cluster.long_engines", fix="reserve fewer engines for the long tail")
        if not 0.0 < float(c.long_frac) < 1.0:
            raise SpecrollError(f"must be in (0, 1), got {c.long_frac!r}", file=f, field="cluster.long_frac")
        pa = self.partial
        for name in ("concurrency", "target"):
            v = getattr(pa, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise SpecrollError(f"must be a positive integer, got {v!r}", file=f, field=f"partial.{name}")
        if not isinstance(pa.enabled, bool):
            raise SpecrollError("must be true or false", file=f, field="partial.enabled")
        self.make_policy()  # unknown policy or parameter -> error naming the file
        self.make_acceptance()
        if self.drafter is not None:
            self.load_profile()  # a bad [drafter] table -> error naming the file and the key

    def make_acceptance(self):
        """The acceptance source, with the [lossy] method on top when there is one."""
        from specroll.simulator._acceptance import make_acceptance

        src = make_acceptance(self.acceptance.source, self.acceptance.params, file=self.file)
        if self.lossy.method is None:
            if self.lossy.params:
                raise SpecrollError("lossy parameters without a method", file=self.file, field="lossy.method",
                                    fix='write method = "judge", "entropy" or "spec-rl"')
            return src
        from specroll.simulator._lossy import LossyAcceptance

        return LossyAcceptance(src, self.lossy.method, file=self.file, **self.lossy.params)

    def load_profile(self):
        """The cost profile of model.profile, with the [drafter] table's drafter when there is one."""
        from specroll.calibration import load_profile

        try:
            prof = load_profile(self.profile_name(), expect_model=self.model.name)
        except SpecrollError as exc:
            raise SpecrollError(f"profile '{self.profile_name()}': {exc.what}", file=self.file,
                                field="model.profile", fix=exc.fix) from None
        if self.drafter is not None:
            prof = prof.with_drafter(self.drafter, file=self.file)
        return prof

    def make_policy(self):
        from specroll.policies import make_policy

        try:
            return make_policy(self.policy.name, **self.policy.params)
        except SpecrollError as exc:
            field_ = "policy.name" if exc.field in (None, "policy") else f"policy.params.{exc.field}"
            raise SpecrollError(exc.what, file=self.file, field=field_, fix=exc.fix) from None

    def trace_path(self) -> Path:
        p = Path(str(self.workload.trace))
        if not p.is_absolute() and self.file is not None:
            p = Path(self.file).parent / p
        return p

    def profile_name(self) -> str:
        if self.model.profile:
            p = Path(self.model.profile)
            if self.file is not None and not p.is_absolute() and (Path(self.file).parent / p).is_file():
                return str(Path(self.file).parent / p)
            return self.model.profile
        tp = f":tp{self.cluster.tp}" if self.cluster.tp > 1 else ""
        return f"h100-sxm:{self.model.name}{tp}"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("file")
        acc = d.pop("acceptance")
        d["acceptance"] = {"source": acc["source"], **acc["params"]}
        lossy = d.pop("lossy")
        if lossy["method"] is not None:
            d["lossy"] = {"method": lossy["method"], **lossy["params"]}
        if d["drafter"] is None:
            d.pop("drafter")
        return d


def _no_unknown(d: dict[str, Any], known: set[str], prefix: str, file: str | None) -> None:
    bad = sorted(set(d) - known)
    if bad:
        raise SpecrollError(f"unknown key '{prefix}{bad[0]}'", file=file, field=f"{prefix}{bad[0]}",
                            fix=f"use one of: {', '.join(sorted(known))}")


def _int(v: Any, name: str, file: str | None) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise SpecrollError(f"must be an integer, got {v!r}", file=file, field=name)
    return v
