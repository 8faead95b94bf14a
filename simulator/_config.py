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
[rl]       mode = "async", staleness = 2, batch = 8192, sync = "interrupt"   # asynchronous RL
```

Every section is a declared model (specroll.core.config): types strict, ranges declared, unknown
keys refused, each error one line naming the file, the field path and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, model_validator

from specroll.core.config import ConfigModel, FieldError, parse, recheck
from specroll.core.errors import SpecrollError
from specroll.core.fileio import read_toml
from specroll.policies import tunable

# Static rules decide every engine's rollouts when the step starts (simulator/_workload.py); the
# dynamic ones hand rollouts out while engines run (simulator/_dynamic.py).
STATIC_DISPATCH = ("round-robin", "least-loaded", "longest-predicted-first", "histopipe", "long-dedicated")
DYNAMIC_DISPATCH = ("queue", "seer", "rollpacker")
DISPATCH = STATIC_DISPATCH + DYNAMIC_DISPATCH
Dispatch = Literal["round-robin", "least-loaded", "longest-predicted-first", "histopipe", "long-dedicated",
                   "queue", "seer", "rollpacker"]
# The [cluster] keys each rule reads (a key set for another rule is an error, not silently unused),
# and among them those `specroll tune` searches (their ranges: the fields' ``tune`` metadata).
DISPATCH_KEYS = {"long-dedicated": ("long_engines", "long_frac"), "queue": ("queue_order",),
                 "seer": ("chunk", "interval_s"),
                 "rollpacker": ("long_threshold", "long_round", "queue_order")}
# Tensor parallelism past one node (8 GPUs) and 64 engines' worth of GPUs is not a rollout engine
# any serving system builds; larger values are typos (tp = 1000 made training time vanish).
MAX_TP = 64


class ClusterConfig(ConfigModel):
    engines: int = Field(8, ge=1, le=100_000, description="rollout engines (data-parallel replicas)")
    tp: int = Field(1, ge=1, le=MAX_TP, description="tensor-parallel GPUs per engine")
    max_batch: int = Field(256, ge=1, le=65_536, description="requests one engine runs at once")
    dispatch: Dispatch = Field("round-robin", description="how a step's rollouts go to engines")
    kv_watermark: float = Field(0.01, ge=0.0, lt=1.0,
                                description="fraction of the KV budget admission keeps free")
    kv_capacity_tokens: int | None = Field(None, ge=1,
                                           description="override the profile's KV capacity per engine")
    long_engines: int | None = Field(None, ge=1, description="long-dedicated dispatch (StreamRL): "
                                     "engines reserved for the predicted long tail (default engines // 8)")
    long_frac: float | None = Field(None, gt=0.0, lt=1.0, description="long-dedicated: fraction of a "
                                    "step's rollouts, longest predicted first, sent to them (default 0.1)",
                                    json_schema_extra=tunable(0.02, 0.5))
    queue_order: Literal["fifo", "longest"] | None = Field(
        None, description="queue, rollpacker: order of the central queue: trace order, or longest "
        "predicted first (default fifo; rollpacker: longest)",
        json_schema_extra=tunable(choices=("fifo", "longest")))
    chunk: int | None = Field(None, ge=1, description="seer: samples of a group dispatched together "
                              "(default: a quarter of the group, at least 1)",
                              json_schema_extra=tunable(1, 16))
    interval_s: float | None = Field(None, gt=0.0, le=60.0, description="seer: seconds between two "
                                     "rounds of the global scheduler (default 0.25)",
                                     json_schema_extra=tunable(0.02, 2.0, log=True))
    long_threshold: float | None = Field(None, gt=0.0, lt=1.0, description="rollpacker: a prompt whose "
                                         "predicted length exceeds this fraction of the length cap waits "
                                         "for a long round (default 0.25)",
                                         json_schema_extra=tunable(0.05, 0.9))
    long_round: int | None = Field(None, ge=1, description="rollpacker: deferred rollouts that make a "
                                   "long round (default: a step's rollouts)")

    @model_validator(mode="after")
    def _dispatch_keys(self) -> ClusterConfig:
        if self.long_engines is not None and self.long_engines >= self.engines:
            raise FieldError("long_engines", f"must be < engines ({self.engines}), got {self.long_engines}",
                             "reserve fewer engines for the long tail")
        mine = DISPATCH_KEYS.get(self.dispatch, ())
        for key in sorted({k for keys in DISPATCH_KEYS.values() for k in keys} - set(mine)):
            if getattr(self, key) is not None:
                users = [d for d, keys in DISPATCH_KEYS.items() if key in keys]
                raise FieldError(key, f"applies to dispatch = {' or '.join(map(repr, users))}, not "
                                 f"{self.dispatch!r}", f"remove cluster.{key} or set dispatch = {users[0]!r}")
        return self

    def param(self, key: str) -> Any:
        """A dispatch parameter with its default filled in."""
        value = getattr(self, key)
        if value is not None:
            return value
        return {"long_frac": 0.1, "interval_s": 0.25, "long_threshold": 0.25,
                "queue_order": "longest" if self.dispatch == "rollpacker" else "fifo"}.get(key)

    def dispatch_params(self) -> dict[str, Any]:
        """The parameters of the configured dispatch rule, defaults filled in (None: per workload)."""
        return {k: self.param(k) for k in DISPATCH_KEYS.get(self.dispatch, ())}


def dispatch_space(dispatch: str) -> dict[str, dict[str, Any]]:
    """The searched parameters of a dispatch rule: {cluster key: tunable spec} (like a policy's)."""
    fields = ClusterConfig.model_fields
    return {k: fields[k].json_schema_extra["tune"] for k in DISPATCH_KEYS.get(dispatch, ())
            if isinstance(fields[k].json_schema_extra, dict) and "tune" in fields[k].json_schema_extra}


class ModelConfig(ConfigModel):
    name: str = Field("qwen2.5-7b", description="model shape (specroll calibrate --show lists them)")
    profile: str | None = Field(None, description="cost profile: built-in DEVICE:MODEL[:tpN] or a JSON "
                                "path (required: there is no silent default device)")


class WorkloadConfig(ConfigModel):
    trace: str | None = Field(None, description="a trace file (Parquet), relative to the config")
    preset: str | None = Field(None, description="a synthetic preset (specroll trace synth --help)")
    prompts: int | None = Field(None, ge=1, le=10_000_000)
    samples: int | None = Field(None, ge=1, le=100_000)
    steps: int | None = Field(None, ge=1, le=100_000)
    seed: int | None = None
    history_window: int = Field(4, ge=1, description="steps of length history behind predicted_len")

    @model_validator(mode="after")
    def _one_source(self) -> WorkloadConfig:
        if (self.trace is None) == (self.preset is None):
            raise FieldError("", "give exactly one of workload.trace and workload.preset",
                             'set trace = "FILE.parquet" or preset = "math-16k"')
        return self


class PolicyConfig(ConfigModel):
    name: str = "ar"
    params: dict[str, Any] = Field(default_factory=dict)


class _Flattened(ConfigModel):
    """A table whose keys other than its selector are the selected component's parameters."""

    _selector: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _fold(cls, data: Any) -> Any:
        if not isinstance(data, dict) or set(data) <= {cls._selector, "params"}:
            return data
        sel = cls._selector
        rest = {k: v for k, v in data.items() if k != sel}
        return {sel: data[sel], "params": rest} if sel in data else {"params": rest}


class AcceptanceConfig(_Flattened):
    _selector: ClassVar[str] = "source"
    source: str = "parametric"
    params: dict[str, Any] = Field(default_factory=dict)


class LossyConfig(_Flattened):
    """Lossy acceptance on top of the acceptance source (simulator/_lossy.py)."""

    _selector: ClassVar[str] = "method"
    method: str | None = Field(None, description="judge | entropy | spec-rl (None: lossless)")
    params: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(ConfigModel):
    """Training phase of each RL step: FLOPs of the policy update over the step's tokens."""

    enabled: bool = True
    model: str | None = Field(None, description="shape of the trained model (default: [model].name)")
    passes: float = Field(8.0, ge=0.0, le=100.0, description="FLOPs per parameter per token: 6 "
                          "(forward + backward) + 2 (old/reference log-probs)")
    mfu: float = Field(0.4, gt=0.0, le=1.0, description="model FLOPs utilization of training")
    peak_flops: float | None = Field(None, gt=0.0, description="per GPU; default: the profile's device")
    gpus: int | None = Field(None, ge=1, description="GPUs that train (default engines x tp: colocated)")
    sync_gbps: float = Field(100.0, gt=0.0, description="weight-sync bandwidth, GB/s")


class PartialConfig(ConfigModel):
    """Partial rollouts (CoPRIS): fixed concurrency, the step stops once ``target`` rollouts are done;
    unfinished ones keep their progress and resume in the next step under the new weights."""

    enabled: bool = False
    concurrency: int | None = Field(None, ge=1, description="rollouts in flight across the cluster")
    target: int | None = Field(None, ge=1, description="completed rollouts that end a step")


class RLConfig(ConfigModel):
    """How generation and training interleave (simulator/_async.py for "async")."""

    mode: Literal["sync", "async"] = Field("sync", description="sync: a step's rollouts, then its "
                                           "training (the barrier); async: training takes finished "
                                           "rollouts while generation goes on under older weights")
    staleness: int = Field(1, ge=0, le=1000, description="async: a rollout is trained on at most this "
                           "many weight versions after the one it started under")
    batch: int | None = Field(None, ge=1, description="async: rollouts per training step (default: a "
                              "trace step's)")
    sync: Literal["interrupt", "drain"] = Field("interrupt", description="async weight update: "
                                                "interrupt running rollouts (their KV recomputed) or "
                                                "let each engine drain first")

    @model_validator(mode="after")
    def _async_only(self) -> RLConfig:
        if self.mode == "sync":
            for key, default in (("staleness", 1), ("batch", None), ("sync", "interrupt")):
                if getattr(self, key) != default:
                    raise FieldError(key, 'applies to mode = "async"',
                                     f'set mode = "async" or remove rl.{key}')
        return self


class SimConfig(ConfigModel):
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    workload: WorkloadConfig
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    acceptance: AcceptanceConfig = Field(default_factory=AcceptanceConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    drafter: dict[str, Any] | None = Field(None, description="the drafter's cost (calibration drafter "
                                           "spec) replacing the profile's; None: the profile's")
    lossy: LossyConfig = Field(default_factory=LossyConfig)
    partial: PartialConfig = Field(default_factory=PartialConfig)
    rl: RLConfig = Field(default_factory=RLConfig)
    seed: int = 0
    _file: str | None = PrivateAttr(None)

    @property
    def file(self) -> str | None:
        """The TOML file this came from (error messages, relative paths)."""
        return self._file

    # --- construction --------------------------------------------------------------------------
    @classmethod
    def from_toml(cls, path: str | Path) -> SimConfig:
        return cls.from_dict(read_toml(path), file=str(path))

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, file: str | None = None) -> SimConfig:
        d = {k: v for k, v in d.items() if k != "tune"}  # a tuning config simulates as is
        cfg = parse(cls, d, file=file)
        cfg._file = file
        cfg.validate()
        return cfg

    def replace(self, **sections: Any) -> SimConfig:
        """A deep copy with some fields replaced (e.g. ``cluster=...``), validated."""
        new = self.model_copy(deep=True)
        for k, v in sections.items():
            setattr(new, k, v)
        new.validate()
        return new

    # --- validation beyond each field's own declaration ---------------------------------------
    def validate(self) -> None:  # type: ignore[override]
        """What needs more than one field or the file system: the profile, the trace file, the policy
        and acceptance parameters. Run after any change (the CLI's overrides)."""
        f = self.file
        recheck(self, file=f)
        self._check_combinations()
        if self.model.profile is None:
            from specroll.calibration import builtin_names

            choices = [n for n in builtin_names() if n.endswith(":" + self.model.name)]
            example = choices[0] if choices else f"h100-sxm:{self.model.name}"
            raise SpecrollError("no cost profile (which device prices the iterations?)", file=f,
                                field="model.profile",
                                fix=f'set [model] profile = "{example}"; built-in for {self.model.name}: '
                                    f"{', '.join(choices) or 'none'}; or a profile JSON (specroll calibrate)")
        w = self.workload
        if w.trace is not None and not self.trace_path().is_file():
            raise SpecrollError(f"trace file not found: {self.trace_path()}", file=f, field="workload.trace",
                                fix="check the path (relative paths are relative to the config file)")
        self.make_policy()  # unknown policy or parameter -> error naming the file
        self.make_acceptance()
        if self.drafter is not None:
            self.load_profile()  # a bad [drafter] table -> error naming the file and the key

    def _check_combinations(self) -> None:
        """Features that do not go together: one clear error each."""
        f, d = self.file, self.cluster.dispatch
        if self.rl.mode == "async":
            if self.partial.enabled:
                raise SpecrollError("asynchronous RL with [partial] rollouts: async already trains on "
                                    "finished rollouts while the others run on", file=f,
                                    field="partial.enabled",
                                    fix='remove [partial] (async interrupts and resumes rollouts itself) or '
                                        'set rl.mode = "sync"')
            if d != "queue":
                raise SpecrollError(f'asynchronous RL hands rollouts out from one pool; dispatch {d!r} '
                                    'decides per step', file=f, field="cluster.dispatch",
                                    fix='set [cluster] dispatch = "queue"')
            if self.acceptance.source == "adaptive-drafter":
                raise SpecrollError("the adaptive drafter trains on engines idle before a step's barrier; "
                                    "asynchronous RL has no barrier", file=f, field="acceptance.source",
                                    fix='use another acceptance source or rl.mode = "sync"')
        if self.partial.enabled and d in DYNAMIC_DISPATCH:
            raise SpecrollError(f"partial rollouts with dispatch {d!r}: a stopped step's pool is dealt to "
                                "engines when it starts", file=f, field="cluster.dispatch",
                                fix=f"use a static rule ({', '.join(STATIC_DISPATCH)}) or remove [partial]")

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
            sub = str(exc.field).removeprefix("params").lstrip(".")
            field_ = ("policy.name" if exc.field in (None, "policy")
                      else "policy.params" + (f".{sub}" if sub else ""))
            raise SpecrollError(exc.what, file=self.file, field=field_, fix=exc.fix) from None

    def trace_path(self) -> Path:
        p = Path(str(self.workload.trace))
        if not p.is_absolute() and self.file is not None:
            p = Path(self.file).parent / p
        return p

    def profile_name(self) -> str:
        """model.profile, a path made relative to the config file when it names a file there."""
        if self.model.profile is None:
            raise SpecrollError("no cost profile", file=self.file, field="model.profile",
                                fix='set [model] profile = "h100-sxm:MODEL" or a profile JSON')
        p = Path(self.model.profile)
        if self.file is not None and not p.is_absolute() and (Path(self.file).parent / p).is_file():
            return str(Path(self.file).parent / p)
        return self.model.profile

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="python")
        acc = d.pop("acceptance")
        d["acceptance"] = {"source": acc["source"], **acc["params"]}
        lossy = d.pop("lossy")
        if lossy["method"] is not None:
            d["lossy"] = {"method": lossy["method"], **lossy["params"]}
        if d["drafter"] is None:
            d.pop("drafter")
        return d
