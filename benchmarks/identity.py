"""Bit-identity check of simulated results across a refactoring.

Runs `specroll simulate examples/reference.toml` under every policy family (the config's own
policy, then each family with its defaults) and `specroll tune examples/tune.toml`, and digests
each run's result files: summary.json (canonical JSON, without wall-clock fields and without the
envelope keys `kind`/`schema_version`/`specroll_version`, which only label the file) and the
Parquet tables (their column data). One intended change is left out too: the mdp and pearl
policies no longer carry a cost-profile name among their parameters (`policy.params.profile`;
they are priced by the run's own profile, which is the same one here). Prints one row per run
and writes the digests as JSON.

    python benchmarks/identity.py --out /tmp/identity-before.json
    python benchmarks/identity.py --out /tmp/identity-after.json --check /tmp/identity-before.json

`--check` exits 1 when any digest differs and names the run and the file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ["ar", "fixed", "das", "threshold", "adaptive", "tlt", "seer", "diffuspec", "pearl", "mdp",
            "oracle"]
# Keys that only label a file (added by the typed-results envelope) or measure the host's clock.
_LABEL_KEYS = {"kind", "schema_version", "specroll_version"}


def _strip(obj: Any, top: bool = True) -> Any:
    if top and isinstance(obj, dict) and isinstance(obj.get("policy"), dict):
        params = obj["policy"].get("params")
        if isinstance(params, dict) and obj["policy"].get("policy") in ("mdp", "pearl"):
            obj = {**obj, "policy": {**obj["policy"], "params": {k: v for k, v in params.items()
                                                                 if k != "profile"}}}
    if isinstance(obj, dict):
        return {k: _strip(v, False) for k, v in sorted(obj.items())
                if k not in _LABEL_KEYS and k != "wall_s" and not k.endswith("_wall_s")
                and k != "tokens_per_wall_s" and k not in ("config", "created", "trials_run_now")}
    if isinstance(obj, list):
        return [_strip(v, False) for v in obj]
    return obj


def digest_dir(folder: Path) -> dict[str, str]:
    """sha256 of each result file in folder (JSON canonicalized, Parquet by column data)."""
    import pyarrow.parquet as pq

    out: dict[str, str] = {}
    for f in sorted(folder.iterdir()):
        if f.suffix == ".json":
            blob = json.dumps(_strip(json.loads(f.read_text())), sort_keys=True).encode()
        elif f.suffix == ".parquet":
            table = pq.read_table(f)
            cols = [c for c in table.column_names if not c.endswith("wall_s") and c != "datetime_start"
                    and c != "datetime_complete" and c != "duration_s"
                    and c != "worker"]  # the tuner's worker: host:pid
            blob = json.dumps({c: table.column(c).to_pylist() for c in cols}, sort_keys=True,
                              default=str).encode()
        else:
            continue
        out[f.name] = hashlib.sha256(blob).hexdigest()
    return out


def _specroll(*args: str) -> None:
    exe = Path(sys.executable).with_name("specroll")
    subprocess.run([str(exe), *args], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def run_all(work: Path) -> dict[str, dict[str, str]]:
    runs: dict[str, list[str]] = {"reference": []}
    for fam in FAMILIES:
        runs[f"reference --policy {fam}"] = ["--policy", fam]
    result: dict[str, dict[str, str]] = {}
    for i, (label, extra) in enumerate(runs.items()):
        out = work / f"sim{i}"
        _specroll("simulate", "examples/reference.toml", "--out", str(out), *extra)
        result[label] = digest_dir(out)
        print(f"{label:<36} {result[label].get('summary.json', '-')[:16]}", flush=True)
    out = work / "tune"
    _specroll("tune", "examples/tune.toml", "--out", str(out))
    result["tune examples/tune.toml"] = {k: v for k, v in digest_dir(out).items()}
    print(f"{'tune examples/tune.toml':<36} {result['tune examples/tune.toml']['best_policy.json'][:16]}")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="write the digests here (JSON)")
    ap.add_argument("--check", default=None, help="digests of an earlier run to compare with")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_all(Path(tmp))
    Path(args.out).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    if args.check is None:
        return 0
    before = json.loads(Path(args.check).read_text())
    bad = []
    for label, files in before.items():
        for name, h in files.items():
            now = result.get(label, {}).get(name)
            if now != h:
                bad.append(f"{label}: {name} differs ({h[:12]} -> {(now or 'missing')[:12]})")
    print("\n".join(bad) if bad else f"identical: {sum(len(f) for f in before.values())} files in "
                                      f"{len(before)} runs")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
