"""Every policy family on the reference scenario: makespan, speedup over AR, gap to the oracle.

    .venv/bin/python benchmarks/bench_policy_table.py [--scale 1] [--trials 30] [--tune das,threshold]
        [--tune-seeds 2,3] [--eval-seed 1] [--kmax-sweep 1-8] [--out out/bench_policy_table] [--fresh]

Scenario: examples/reference.toml (64 engines x 128 rollouts of math-16k per step, 2 steps, qwen2.5-7b
on the H100 what-if profile, parametric "decay" acceptance) with ``acceptance.confidence = true`` for
EVERY row: threshold, seer and mdp read the drafter's confidence, the reference has none, and the
draws of m_t do not depend on it (it only exposes p_j), so rows stay comparable. ``--scale s``
multiplies engines and prompts by s (the same 128 rollouts per engine, so the same per-engine
batch dynamics).

Rows: ar; fixed K for every K of the sweep (the best marked *); threshold, das, tlt, seer, adaptive,
mdp at their source defaults; das and threshold tuned (``specroll tune``'s objective: mean total
time of all steps, incl. training) on OTHER seeds than the evaluation's -- both the acceptance seed
and the synthetic trace's seed differ, so the tuned policies never see the evaluated lengths or
draws; the oracle. Evaluation: seed ``--eval-seed`` (the reference's 1). Studies are SQLite files in
--out and resume when re-run with the same settings (``--fresh`` starts over).

Columns: total_s (all steps: rollout + train + sync), rollout_s (the rollout phases: where policies
differ; training is the same for all), speedups over AR, gap to the oracle (rollout and total),
engine iterations, drafted tokens per generated token and the fraction of drafted tokens accepted.
Writes --out/policy_table.json and policy_table.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("SPECROLL_PROGRESS", "0")

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # the benchmarks package; specroll comes from the install
from benchmarks._meta import finish, rel, run_meta  # noqa: E402

DEFAULT_FAMILIES = ("threshold", "das", "tlt", "seer", "adaptive", "mdp")


def scenario(path: Path, scale: float, seed: int, workload_seed: int | None = None,
             acceptance: dict | None = None) -> dict:
    """The reference config as a dict, scaled, with confidence on, the given seeds and any
    acceptance overrides."""
    from specroll.core.fileio import read_toml

    raw = read_toml(path)
    raw.pop("tune", None)
    w = raw["workload"]
    raw["cluster"]["engines"] = max(1, round(raw["cluster"]["engines"] * scale))
    w["prompts"] = max(1, round(w["prompts"] * scale))
    raw["acceptance"]["confidence"] = True
    raw["acceptance"].update(acceptance or {})
    raw["seed"] = seed
    w["seed"] = seed if workload_seed is None else workload_seed
    return raw


def run_row(sim, label: str, policy, rows: list[dict]) -> dict:
    s = sim.run(policy, show_progress=False).summary
    row = {"label": label, "policy": policy.to_dict(), "total_s": s["makespan_s"],
           "rollout_s": s["rollout_s"], "iterations": s["iterations"], "tokens": s["tokens"],
           "drafted": s["drafted_tokens"], "accepted": s["accepted_tokens"],
           "steps_rollout_s": [st["rollout_s"] for st in s["steps"]]}
    rows.append(row)
    print(f"  {label:<22} total {row['total_s']:9.2f} s  rollout {row['rollout_s']:9.2f} s", file=sys.stderr,
          flush=True)
    return row


def hybrid_policy(batch: int):
    """Analysis only (not deployable): the oracle on engines whose batch is above ``batch``, kmax
    drafts at or below it. Oracle and fixed k=kmax accept the same tokens (min(kmax, m_t)), so they
    run the same iterations; between them only the verification cost of rejected drafts differs,
    and this splits that cost by batch size."""
    import numpy as np

    from specroll.policies import Policy

    class OracleAbove(Policy):
        name = f"oracle-above-batch-{batch}"
        deployable = False

        def decide(self, state):
            big = state.batch_size[state.engine] > batch
            return np.where(big, state.match_len, state.kmax).astype(np.int32)

    return OracleAbove()


def tune_family(family: str, args: argparse.Namespace, cfg_path: Path, out: Path) -> tuple[object, dict]:
    from specroll.policies import tune
    from specroll.simulator import SimConfig, TuneSetup

    seeds = [int(s) for s in args.tune_seeds.split(",")]
    configs = [SimConfig.from_dict(scenario(cfg_path, args.scale, s, acceptance=args.acc), file=str(cfg_path))
               for s in seeds]
    setup = TuneSetup(configs, [f"seed={s}" for s in seeds])
    setup.build()
    pins = {}
    if family == "mdp":  # the table spans the simulated batch sizes; its cost is the run's profile
        pins = {"max_batch": configs[0].cluster.max_batch}
    t0 = time.perf_counter()
    res = tune(setup.objective, family, n_trials=args.trials, out_dir=out / f"tune-{family}", seed=0,
               study_name=f"{family}-scale{args.scale:g}-seeds{args.tune_seeds}{_acc_tag(args.acc)}",
               fixed=pins)
    info = {"family": family, "best_value_s": res.best_value, "n_complete": res.n_complete,
            "tune_seeds": seeds, "wall_s": time.perf_counter() - t0,
            "best_params": res.best_policy.to_dict()["params"]}
    return res.best_policy, info


def _acc_tag(acc: dict) -> str:
    return "".join(f"-{k}{v}" for k, v in sorted(acc.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "examples/reference.toml"))
    ap.add_argument("--scale", type=float, default=1.0, help="multiply engines and prompts (default 1)")
    ap.add_argument("--trials", type=int, default=30, help="tuning trials per tuned family")
    ap.add_argument("--tune", default="das,threshold", help="families to tune (comma list; '' for none)")
    ap.add_argument("--tune-seeds", default="2,3", help="seeds the tuning averages over (not --eval-seed)")
    ap.add_argument("--eval-seed", type=int, default=1)
    ap.add_argument("--kmax-sweep", default="1-8", help="fixed K values, 'A-B' or a comma list")
    ap.add_argument("--out", default=str(ROOT / "out/bench_policy_table"))
    ap.add_argument("--json", default=None, help="also write policy_table.json here (e.g. docs/results/)")
    ap.add_argument("--fresh", action="store_true", help="delete the stored studies first")
    ap.add_argument("--acceptance", action="append", default=[], metavar="KEY=VALUE",
                    help="override an [acceptance] parameter (repeatable), e.g. spread=0.5")
    ap.add_argument("--decompose", default="8,32,64",
                    help="batch sizes splitting the oracle's lead over fixed k=kmax ('' for none)")
    args = ap.parse_args()
    meta = run_meta()
    from specroll.core.kv import parse_pairs

    args.acc = parse_pairs(args.acceptance, "--acceptance")

    from specroll.core.fileio import atomic_write, write_json
    from specroll.policies import make_policy
    from specroll.simulator import SimConfig, Simulator

    cfg_path = Path(args.config)
    out = Path(args.out)
    if args.fresh and out.exists():
        import shutil

        shutil.rmtree(out)
    tuned_families = [f for f in args.tune.split(",") if f]
    if str(args.eval_seed) in args.tune_seeds.split(","):
        sys.exit("--eval-seed must not be one of --tune-seeds (that would hide overfitting)")
    ks = (list(range(int(args.kmax_sweep.split("-")[0]), int(args.kmax_sweep.split("-")[1]) + 1))
          if "-" in args.kmax_sweep else [int(k) for k in args.kmax_sweep.split(",")])
    t_all = time.perf_counter()

    tuned, tune_info = {}, []
    for fam in tuned_families:
        print(f"tuning {fam}: {args.trials} trials on seeds {args.tune_seeds}", file=sys.stderr, flush=True)
        tuned[fam], info = tune_family(fam, args, cfg_path, out)
        tune_info.append(info)

    cfg = SimConfig.from_dict(scenario(cfg_path, args.scale, args.eval_seed, acceptance=args.acc),
                              file=str(cfg_path))
    sim = Simulator(cfg)
    print(f"evaluating on seed {args.eval_seed}", file=sys.stderr, flush=True)
    rows: list[dict] = []
    ar = run_row(sim, "ar", make_policy("ar"), rows)
    fixed = [run_row(sim, f"fixed k={k}", make_policy("fixed", k=k), rows) for k in ks]
    best_fixed = min(fixed, key=lambda r: r["rollout_s"])
    best_fixed["label"] += " *"
    mdp_pins = {"max_batch": cfg.cluster.max_batch}
    for fam in DEFAULT_FAMILIES:
        # mdp alone prices its decisions with the very profile that is simulated (no other family
        # sees the cost model): its row says so.
        label = f"{fam} (defaults{', priced by the simulated profile' if fam == 'mdp' else ''})"
        run_row(sim, label, make_policy(fam, **(mdp_pins if fam == "mdp" else {})), rows)
    for fam, pol in tuned.items():
        run_row(sim, f"{fam} (tuned)", pol, rows)
    oracle = run_row(sim, "oracle", make_policy("oracle"), rows)

    for r in rows:
        r["speedup_total"] = ar["total_s"] / r["total_s"]
        r["speedup_rollout"] = ar["rollout_s"] / r["rollout_s"]
        r["gap_rollout"] = r["rollout_s"] / oracle["rollout_s"] - 1.0
        r["gap_total"] = r["total_s"] / oracle["total_s"] - 1.0
    head = (f"reference scenario x{args.scale:g}: {cfg.cluster.engines} engines, "
            f"{cfg.workload.prompts} prompts x {cfg.workload.samples} samples, "
            f"{cfg.workload.steps} steps, {cfg.model.name} on {cfg.profile_name()}, acceptance "
            f"{cfg.acceptance.params}, eval seed {args.eval_seed}")
    lines = [head, "",
             "| policy | total_s | rollout_s | speedup (total) | speedup (rollout) | gap to oracle (rollout) "
             "| gap to oracle (total) | iterations | drafted/token | accepted/drafted |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        acc = r["accepted"] / r["drafted"] if r["drafted"] else float("nan")
        lines.append(f"| {r['label']} | {r['total_s']:.1f} | {r['rollout_s']:.1f} | "
                     f"{r['speedup_total']:.2f}x | {r['speedup_rollout']:.2f}x | "
                     f"{100 * r['gap_rollout']:+.1f} % | {100 * r['gap_total']:+.1f} % | "
                     f"{r['iterations']:,} | {r['drafted'] / r['tokens']:.2f} | {acc:.2f} |")
    lines.append("")
    for info in tune_info:
        p = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in info["best_params"].items()}
        lines.append(f"{info['family']} tuned: {info['n_complete']} trials on seeds {info['tune_seeds']} "
                     f"(tuning objective {info['best_value_s']:.1f} s, {info['wall_s']:.0f} s wall): {p}")
    for fam in tuned:
        r = next(x for x in rows if x["label"] == f"{fam} (tuned)")
        beats = all(r["rollout_s"] < f["rollout_s"] for f in fixed)
        lines.append(f"{fam} tuned: gap to oracle {100 * r['gap_rollout']:+.1f} % (rollout), "
                     f"{100 * r['gap_total']:+.1f} % (total); better than every fixed K: "
                     f"{'yes' if beats else 'no'} (best fixed: {best_fixed['label']} at "
                     f"{best_fixed['rollout_s']:.1f} s rollout)")
    cuts = [int(b) for b in args.decompose.split(",") if b]
    if cuts:
        kmax_row = next(r for r in fixed if r["policy"]["params"]["k"] >= int(cfg.acceptance.params["kmax"]))
        lead = kmax_row["rollout_s"] - oracle["rollout_s"]
        lines.append("")
        k_top = kmax_row["policy"]["params"]["k"]
        lines.append(f"where the oracle's {lead:.1f} s rollout lead over fixed k={k_top} "
                     "lies (oracle drafts only on engines with batch > B, kmax at or below):")
        prev = oracle["rollout_s"]
        prev_b = 0
        for b in sorted(cuts) + [None]:
            if b is None:
                r_s, label = kmax_row["rollout_s"], f"batch > {prev_b}"
            else:
                r_s = sim.run(hybrid_policy(b), show_progress=False).summary["rollout_s"]
                label = f"batch {prev_b + 1}..{b}"
            share = (r_s - prev) / lead if lead > 0 else float("nan")
            lines.append(f"  {label:<14} {r_s - prev:7.2f} s  ({100 * share:4.0f} % of the lead)")
            prev, prev_b = r_s, (b or prev_b)
    lines.append(f"wall {time.perf_counter() - t_all:.0f} s")
    text = "\n".join(lines)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    args_out = {k: (rel(v) if k in ("config", "out") else v) for k, v in vars(args).items() if k != "acc"}
    table = {"meta": finish(meta), "args": args_out, "scenario": head, "rows": rows, "tuning": tune_info}
    write_json(out / "policy_table.json", table)
    if args.json:
        write_json(Path(args.json), table)
    with atomic_write(out / "policy_table.md", "w") as fh:
        fh.write(text + "\n")


if __name__ == "__main__":
    main()
