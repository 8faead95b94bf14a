"""`specroll report` / analysis.report on real small outputs of every kind."""

from __future__ import annotations

import base64
import json
import re
import shutil

import numpy as np
import pytest

from specroll.analysis import build_report, discover, report
from specroll.analysis._sections_tune import rank_importance
from specroll.cli import main
from specroll.core.errors import SpecrollError
from tests.analysis.conftest import write_validate_fixture

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def _section(html: str, title: str) -> str:
    """The HTML of the section whose heading contains ``title``."""
    for part in html.split("<section")[1:]:
        if title in part.split("</h2>")[0]:
            return part
    raise AssertionError(f"no section titled {title!r}")


def test_discover_recognises_every_kind(outputs):
    runs, notes = discover(outputs)
    kinds = {(r.kind, r.name) for r in runs}
    assert kinds == {("simulate", "sim_ar"), ("simulate", "sim_fixed"), ("tune", "tune"), ("plan", "plan"),
                     ("rollout", "rollout"), ("validate", "validate"), ("trace", "traces/t.parquet")}
    assert notes == []  # the rollout's trace.parquet belongs to the rollout, not a stand-alone trace


@pytest.fixture(scope="module")
def full_report(outputs, tmp_path_factory):
    """The report of the folder holding every kind (rendered once: several tests read it)."""
    return build_report(outputs, tmp_path_factory.mktemp("full") / "rep")


def test_report_of_a_folder_of_runs_has_every_section(full_report):
    res = full_report
    html = res.index.read_text()
    assert res.failed == [] and 'class="error"' not in html
    for kind in ("simulate", "rollout", "validate", "plan", "tune", "trace", "compare"):
        assert f'<span class="kind">{kind}</span>' in html, kind
    assert "Policy comparison (simulations)" in html
    # self-contained: no script, no external resource; every PNG written beside it is embedded
    assert "<script" not in html.lower()
    assert not re.search(r'(src|href)="(https?:)?//', html)
    embedded = _embedded_pngs(html)
    assert len(res.pngs) >= 15 and len(embedded) == len(res.pngs)
    on_disk = {p.read_bytes() for p in res.pngs}
    assert all(p.startswith(PNG_MAGIC) for p in on_disk) and set(embedded) == on_disk
    assert {p.parent for p in res.pngs} == {res.index.parent}


def test_simulate_section_shows_the_summary(outputs, tmp_path):
    index = report(outputs / "sim_fixed", tmp_path / "rep")
    html = index.read_text()
    s = json.loads((outputs / "sim_fixed" / "summary.json").read_text())
    sec = _section(html, "sim_fixed")
    assert f"{s['makespan_s']:.3f}" in sec and f"{s['steps'][1]['rollout_s']:.3f}" in sec
    assert "fixed k=3" in sec
    names = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert names == ["sim_fixed_batch.png", "sim_fixed_breakdown.png", "sim_fixed_lengths.png"]
    assert "Policy comparison" not in html  # one run: nothing to compare


def test_comparison_speedup_is_over_the_ar_run(outputs, full_report):
    html = full_report.index.read_text()
    ar = json.loads((outputs / "sim_ar" / "summary.json").read_text())["makespan_s"]
    k3 = json.loads((outputs / "sim_fixed" / "summary.json").read_text())["makespan_s"]
    sec = _section(html, "Policy comparison (simulations)")
    assert f"{ar / k3:.3f}x" in sec and "1.000x" in sec


def test_validate_section_has_parity_errors_and_speedups(tmp_path):
    summary = write_validate_fixture(tmp_path / "val", seed=4)
    res = build_report(tmp_path / "val", tmp_path / "rep")
    html = res.index.read_text()
    assert {p.name for p in res.pngs} == {"val_parity.png", "val_speedup.png"}
    err = summary["policies"]["das"]["makespan_error"]
    assert f'<span class="bad">{100 * err:+.1f} %</span>' in html  # das is biased by +14 %: outside ±10 %
    ok = summary["policies"]["fixed"]["makespan_error"]
    assert f'<span class="good">{100 * ok:+.1f} %</span>' in html
    assert f"{100 * summary['makespan_error']['overall']:+.1f} %" in html
    assert f"{summary['speedup_measured']['das']:.3f}" in html
    assert f"{summary['speedup_predicted']['fixed']:.3f}" in html


def test_validate_without_comparison_says_so(tmp_path):
    write_validate_fixture(tmp_path / "val")
    (tmp_path / "val" / "comparison.parquet").unlink()
    res = build_report(tmp_path / "val", tmp_path / "rep")
    html = res.index.read_text()
    assert "comparison.parquet missing" in html and "no per-step parity plot" in html
    assert [p.name for p in res.pngs] == ["val_speedup.png"]


def test_tune_section_uses_optuna_importances(outputs, tmp_path):
    res = build_report(outputs / "tune", tmp_path / "rep")
    html = res.index.read_text()
    assert "PED-ANOVA" in html and "fallback: |Spearman" not in html
    assert {p.name for p in res.pngs} == {"tune_history.png", "tune_importance.png", "tune_slices.png"}
    best = json.loads((outputs / "tune" / "best_policy.json").read_text())
    assert best["policy"] == "threshold" and "Best policy" in html


def test_tune_without_study_db_falls_back_to_rank_correlation(copy_of, tmp_path):
    d = copy_of("tune")
    (d / "study.db").unlink()
    html = report(d, tmp_path / "rep").read_text()
    assert "Missing: study.db" in html
    assert "fallback: |Spearman ρ|" in html


def test_rank_importance_orders_parameters_by_association():
    rng = np.random.default_rng(0)
    n = 60
    strong = rng.uniform(0, 1, n)
    noise = rng.uniform(0, 1, n)
    mode = np.where(rng.uniform(size=n) < 0.5, "a", "b")
    value = 3 * strong + 0.1 * rng.standard_normal(n) + np.where(mode == "a", 0.0, 0.0)
    imp = rank_importance({"strong": strong, "noise": noise, "mode": mode.astype(object)}, value)
    assert imp["strong"] > 0.9 and imp["noise"] < 0.4 and imp["mode"] < 0.4
    value2 = np.where(mode == "a", 0.0, 5.0) + 0.01 * rng.standard_normal(n)
    assert rank_importance({"mode": mode.astype(object)}, value2)["mode"] > 0.8


def test_rollout_section_plots_batch_acceptance_lengths(outputs, tmp_path):
    res = build_report(outputs / "rollout", tmp_path / "rep")
    names = {p.name for p in res.pngs}
    assert names == {f"rollout_{n}.png" for n in ("batch", "accepted", "iter_time", "lengths_hist",
                                                          "lengths_by_step")}
    html = res.index.read_text()
    s = json.loads((outputs / "rollout" / "summary.json").read_text())
    assert s["accepted"] > 0  # the history drafter does get tokens accepted in step 1
    assert "drafter history" in html and f"{s['accepted']:,}" in html


def test_missing_optional_files_are_named_not_fatal(copy_of, tmp_path):
    d = copy_of("sim_fixed")
    (d / "engines.parquet").unlink()
    (d / "requests.parquet").unlink()
    res = build_report(d, tmp_path / "rep")
    html = res.index.read_text()
    assert res.failed == []
    assert "engines.parquet missing" in html and "requests.parquet missing" in html
    assert [p.name for p in res.pngs] == ["sim_fixed_breakdown.png"]


def test_one_broken_run_gets_an_error_box_the_rest_render(outputs, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(outputs / "sim_ar", root / "good")
    shutil.copytree(outputs / "sim_ar", root / "bad")
    (root / "bad" / "engines.parquet").write_bytes(b"not parquet")
    res = build_report(root, tmp_path / "rep")
    assert [r.name for r, _ in res.failed] == ["bad"]
    html = res.index.read_text()
    assert html.count('class="error"') == 1 and "not a readable Parquet file" in html
    with pytest.raises(SpecrollError, match="not a readable Parquet file"):
        build_report(root / "bad", tmp_path / "rep2")  # nothing renders: the error is raised


def test_report_folder_inside_the_input_is_not_read_back(copy_of):
    d = copy_of("validate")
    report(d, d / "report")
    runs, _ = discover(d, skip=d / "report")
    assert [r.kind for r in runs] == ["validate"]


@pytest.mark.parametrize("setup, match", [
    (lambda p: p / "nope", "no such file or directory"),
    (lambda p: p, "no specroll output found"),
    (lambda p: (p / "x.txt").write_text("hi") and p / "x.txt", "not a specroll output folder"),
])
def test_bad_input_is_one_clear_error(tmp_path, setup, match):
    d = tmp_path / "in"
    d.mkdir()
    with pytest.raises(SpecrollError, match=match):
        report(setup(d), tmp_path / "rep")
    assert not (tmp_path / "rep" / "index.html").exists()


def test_unrecognised_summary_is_reported(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "summary.json").write_text('{"hello": 1}')
    with pytest.raises(SpecrollError, match="summary.json is from no command"):
        report(d, tmp_path / "rep")


def test_cli_prints_a_summary_and_errors_without_traceback(outputs, tmp_path, capsys):
    assert main(["report", str(outputs / "sim_ar"), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "simulate" in out and str(tmp_path / "rep" / "index.html") in out
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "rep2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("specroll: error:") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_validate_folder_with_its_real_and_sim_runs(outputs, tmp_path):
    """validate's own layout: real/POLICY/repN rollouts, sim/POLICY simulations, the recorded trace."""
    v = tmp_path / "val"
    write_validate_fixture(v)
    shutil.copy(outputs / "rollout" / "trace.parquet", v / "trace.parquet")
    for pol in ("ar", "fixed"):
        shutil.copytree(outputs / "rollout", v / "real" / pol / "rep0")
        shutil.copytree(outputs / f"sim_{pol}", v / "sim" / pol)
    runs, _ = discover(v)
    assert sorted((r.kind, r.name) for r in runs) == [
        ("rollout", "real/ar/rep0"), ("rollout", "real/fixed/rep0"), ("simulate", "sim/ar"),
        ("simulate", "sim/fixed"), ("validate", "val")]  # the recorded trace belongs to validate
    res = build_report(v, tmp_path / "rep")
    html = res.index.read_text()
    assert res.failed == []
    assert "Policy comparison (simulations)" in html and "Policy comparison (real rollouts)" in html
    assert (tmp_path / "rep" / "val_lengths_hist.png").exists()


def test_a_trace_file_alone(outputs, tmp_path):
    res = build_report(outputs / "traces" / "t.parquet", tmp_path / "rep")
    assert [r.kind for r in res.runs] == ["trace"]
    assert {p.name for p in res.pngs} == {"t_lengths_hist.png", "t_lengths_by_step.png"}
    from specroll.traces import read_trace, trace_stats
    st = trace_stats(read_trace(outputs / "traces" / "t.parquet"))
    assert f"{st['count']:,} ({st['prompts']:,} prompts x {st['steps']} steps)" in res.index.read_text()


def test_same_outputs_give_the_same_page(outputs, tmp_path):
    a = report(outputs / "sim_fixed", tmp_path / "a").read_bytes()
    b = report(outputs / "sim_fixed", tmp_path / "b").read_bytes()
    assert a == b


def test_short_names_drop_the_shared_folder():
    from specroll.analysis._sections import short_names
    assert short_names(["sim/das", "sim/ar"]) == ["das", "ar"]
    assert short_names(["a/x", "b/x"]) == ["a/x", "b/x"]
    assert short_names(["sim/ar"]) == ["ar"]
    assert short_names(["x", "y"]) == ["x", "y"]


def test_comparisons_only_within_one_workload(outputs, tmp_path):
    from specroll.policies import make_policy
    from specroll.simulator import SimConfig, Simulator
    from tests.analysis.conftest import SMALL

    root = tmp_path / "runs"
    for name in ("sim_ar", "sim_fixed"):
        shutil.copytree(outputs / name, root / "a" / name)
    cfg = tmp_path / "two.toml"
    cfg.write_text(SMALL.replace("engines = 4", "engines = 2"))
    sim = Simulator(SimConfig.from_toml(cfg))
    sim.run(make_policy("fixed", k=3), show_progress=False).write(root / "b" / "fixed")
    html = report(root, tmp_path / "rep").read_text()
    sec = _section(html, "Policy comparison (simulations)")
    assert "a/sim_fixed" in sec and "b/fixed" not in sec and "4 engines" in sec
    sim.run(make_policy("ar"), show_progress=False).write(root / "b" / "ar")
    res = build_report(root, tmp_path / "rep2")
    html = res.index.read_text()
    assert "Policy comparison (simulations) 1/2" in html and "Policy comparison (simulations) 2/2" in html
    assert "b/fixed" in _section(html, "Policy comparison (simulations) 2/2")
    assert {"compare_simulations.png", "compare_simulations_2.png"} <= {p.name for p in res.pngs}
