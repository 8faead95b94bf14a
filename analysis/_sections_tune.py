"""Report sections for tuning studies (Optuna) and stand-alone traces."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from specroll.analysis import _figures_real as R
from specroll.analysis._html import esc, figures, fmt, image, kv_table, note, pct, table
from specroll.analysis._kinds import Run
from specroll.analysis._sections import Ctx, Section, policy_label, read_columns
from specroll.analysis._sections_real import _trace_pngs
from specroll.core.fileio import read_json

MIN_TRIALS_FOR_IMPORTANCE = 4


def _load_study(db: Path, name: str | None) -> Any:
    """The study in ``db``, opened read-only (a report must never alter someone's study)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///file:{db.resolve()}?mode=ro&uri=true"
    storage = optuna.storages.RDBStorage(url, skip_compatibility_check=True, skip_table_creation=True)
    names = optuna.study.get_all_study_names(storage)
    if name not in names:
        if len(names) != 1:
            raise ValueError(f"study.db holds {len(names)} studies and none is named {name!r}")
        name = names[0]
    return optuna.load_study(study_name=name, storage=storage)


def _history_from_study(study: Any) -> dict[str, np.ndarray]:
    trials = study.trials
    params = sorted({k for t in trials for k in t.params})
    cols: dict[str, Any] = {
        "number": np.array([t.number for t in trials]),
        "state": np.array([t.state.name for t in trials], dtype=object),
        "value": np.array([np.nan if t.value is None else float(t.value) for t in trials]),
    }
    for p in params:
        cols[f"param_{p}"] = np.array([t.params.get(p) for t in trials], dtype=object)
    return cols


def _as_array(col: np.ndarray) -> np.ndarray:
    """Object columns of numbers (from a study) as floats; others unchanged."""
    if col.dtype != object:
        return col
    try:
        return col.astype(float)
    except (TypeError, ValueError):
        return col.astype(str)


def rank_importance(params: dict[str, np.ndarray], value: np.ndarray) -> dict[str, float]:
    """Fallback importance: |Spearman rho| between a numeric parameter and the objective; for a
    categorical one, the correlation ratio (eta) of the objective's ranks over its categories.
    Both lie in [0, 1]; they measure monotone association, not variance explained."""
    from scipy.stats import rankdata, spearmanr

    out = {}
    ranks = rankdata(value)
    for name, col in params.items():
        if col.dtype.kind in "biuf":
            rho = spearmanr(col.astype(float), value).statistic if np.ptp(col.astype(float)) > 0 else 0.0
            out[name] = float(abs(np.nan_to_num(rho)))
        else:
            cats = col.astype(str)
            total = float(((ranks - ranks.mean()) ** 2).sum())
            between = sum(float((cats == c).sum()) * (ranks[cats == c].mean() - ranks.mean()) ** 2
                          for c in np.unique(cats))
            out[name] = float(np.sqrt(between / total)) if total > 0 else 0.0
    return out


def importances(study: Any, params: dict[str, np.ndarray], value: np.ndarray) -> tuple[dict[str, float], str]:
    """PED-ANOVA importances from the study (Optuna; needs no scikit-learn, unlike fANOVA), else the
    rank-correlation fallback, with the method's name for the figure."""
    if study is not None:
        try:
            import optuna
            from optuna.importance import PedAnovaImportanceEvaluator

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                imp = optuna.importance.get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
            if imp and all(np.isfinite(v) for v in imp.values()):
                return {k: float(v) for k, v in imp.items()}, "PED-ANOVA, Optuna, from study.db"
        except Exception:  # noqa: BLE001 - any evaluator failure falls back to the simple measure
            pass
    return rank_importance(params, value), "fallback: |Spearman ρ| with the objective, η for categories"


def _plot_refs(refs: dict[str, float], value: np.ndarray) -> dict[str, float]:
    """Reference lines worth drawing: the defaults, and 'ar' only when it does not squash the trials
    into a thin band at the bottom of the plot (its value is in the table either way)."""
    out = {}
    if "defaults" in refs:
        out["family defaults"] = refs["defaults"]
    if "ar" in refs and len(value) and refs["ar"] <= 1.25 * float(value.max()):
        out["ar (no speculation)"] = refs["ar"]
    return out


def tune_section(run: Run, ctx: Ctx) -> Section:
    prefix = ctx.slug(run)
    parts: list[str] = []
    figs: list[str] = []
    summ_path, hist_path = run.path / "tune_summary.json", run.path / "history.parquet"
    best_path, db_path = run.path / "best_policy.json", run.path / "study.db"
    summ = read_json(summ_path) if summ_path.exists() else None
    best = read_json(best_path) if best_path.exists() else None
    missing = [p.name for p in (summ_path, hist_path, best_path, db_path) if not p.exists()]
    if missing:
        parts.append(note(f"Missing: {', '.join(missing)}; the sections that need them are left out."))
    study, study_problem = None, None
    if db_path.exists():
        try:
            study = _load_study(db_path, (summ or {}).get("study") or (best or {}).get("study"))
        except Exception as exc:  # noqa: BLE001 - a locked, corrupt or foreign DB: report and go on
            study_problem = f"could not open study.db ({type(exc).__name__}: {exc})"
            parts.append(note(study_problem + "; importances use the fallback."))
    hist = read_columns(hist_path, required=("number", "state", "value")) if hist_path.exists() else (
        _history_from_study(study) if study is not None else None)
    family = (summ or {}).get("family") or (best or {}).get("policy") or "?"
    best_value = (summ or {}).get("best_value_s", (best or {}).get("objective_s"))
    headline = f"{family}: best objective {fmt(best_value)}"
    sm = summ or {}
    refs = {k: float(sm[f"{k}_value_s"]) for k in ("defaults", "ar")
            if isinstance(sm.get(f"{k}_value_s"), int | float)}
    pairs = [
        ("policy family", family), ("study", sm.get("study") or (best or {}).get("study")),
        ("completed trials", sm.get("n_complete", (best or {}).get("n_complete"))),
        ("best objective (s)", best_value), ("best trial", (best or {}).get("trial")),
        *((f"{k} (s)", f"{fmt(v)}  (best {pct(best_value / v - 1) if best_value else '–'})")
          for k, v in (("family defaults", refs.get("defaults")), ("no speculation (ar)", refs.get("ar")))
          if v),
        ("trials run in the last call", sm.get("trials_run_now")),
        ("tuning wall time (s)", sm.get("wall_s")),
    ]
    if sm.get("objective"):
        pairs.append(("objective", sm["objective"]))
    if sm.get("config"):
        pairs.append(("config", sm["config"]))
    if sm.get("pinned"):
        pairs.append(("pinned parameters", ", ".join(f"{k}={v}" for k, v in sm["pinned"].items())))
    parts.append(kv_table(pairs, cols=2))
    if best is not None:
        parts.append("<h3>Best policy</h3>" + f"<p><code>{esc(policy_label(best))}</code></p>" + table(
            ["parameter", "value", "searched"],
            [[k, v if isinstance(v, str) else fmt(v, 4), k in ((summ or {}).get("best_params") or {})]
             for k, v in (best.get("params") or {}).items()]))
    elif summ is not None and summ.get("best_params"):
        parts.append("<h3>Best parameters</h3>" + table(["parameter", "value"],
                                                         [[k, v] for k, v in summ["best_params"].items()]))
    if hist is not None:
        ok = (hist["state"].astype(str) == "COMPLETE") & np.isfinite(hist["value"].astype(float))
        n_other = int((~ok).sum())
        if n_other:
            parts.append(note(f"{n_other} trial(s) did not complete (failed, pruned or running) and are "
                              "not plotted."))
        value = hist["value"].astype(float)[ok]
        if ok.any():
            figs.append(image(R.tune_history(hist["number"][ok], value, ctx.png(prefix, "history"),
                                             label="objective (s)",
                                             refs=_plot_refs(refs, value)),
                              "Objective of each completed trial (lower is better) and the best so far."))
        params = {c.removeprefix("param_"): _as_array(hist[c][ok]) for c in hist if c.startswith("param_")}
        if params and ok.sum() >= MIN_TRIALS_FOR_IMPORTANCE:
            imp, method = importances(study, params, value)
            figs.append(image(R.tune_importance(imp, ctx.png(prefix, "importance"), method=method),
                              f"Which parameters matter ({method})."))
            figs.append(image(R.tune_slices(params, value, ctx.png(prefix, "slices"), label="objective (s)"),
                              "Objective against each searched parameter.", wide=len(params) >= 3))
        elif params:
            parts.append(note(f"Only {int(ok.sum())} completed trial(s): too few for parameter importances."))
    else:
        parts.append(note("Neither history.parquet nor a readable study.db: no optimization history."))
    parts.append(figures(figs))
    return Section(run.name, f"Optuna study of the '{family}' family", "".join(parts), headline)


def trace_section(run: Run, ctx: Ctx) -> Section:
    from specroll.traces import trace_stats

    trace, pngs = _trace_pngs(run.path, ctx, ctx.slug(run))
    st = trace_stats(trace)
    meta = trace.meta
    extra = getattr(meta, "extra", {}) or {}
    drafters = ", ".join(extra.get("drafters", {})) if isinstance(extra.get("drafters"), dict) else ""
    body = kv_table([
        ("source", meta.source or "–"), ("model", meta.model or "–"),
        ("rollouts", f"{st['count']:,} ({st['prompts']:,} prompts x {st['steps']} steps)"),
        ("tokens", st["tokens"]), ("mean length", st["mean"]),
        ("p50 / p90 / p99 / max", f"{st['p50']:,.0f} / {st['p90']:,.0f} / {st['p99']:,.0f} / {st['max']:,}"),
        ("cap (max response length)", st["cap"]), ("p99 / p50", st["p99_over_p50"]),
        ("hit the cap", f"{100 * st['clip_ratio']:.1f} %"),
        ("token share of the longest 5 %", f"{100 * st['top5_token_share']:.1f} %"),
        ("within-prompt ICC of log length", st["within_group_icc"]),
        ("rank correlation across steps", st["rank_corr"]),
        ("temperature", getattr(meta, "temperature", None)),
        ("drafter match columns", drafters or "none"),
    ], cols=2)
    caps = ["Response-length distribution (log-log) with p50, p99 and the cap.",
            "Per-prompt lengths across RL steps (geometric mean of each group)."]
    body += figures([image(p, c) for p, c in zip(pngs, caps) if st["steps"] > 1 or "by_step" not in p.name])
    headline = f"{st['count']:,} rollouts, p99/p50 {fmt(st['p99_over_p50'])}"
    return Section(run.name, "rollout trace", body, headline)
