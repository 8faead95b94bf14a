"""A tiny tuning config and helpers shared by the `specroll tune` tests (a trial simulates a few
milliseconds of work)."""

import pyarrow.parquet as pq
import pytest

from specroll.cli import main

SIM = """
seed = 1
[cluster]
engines = 2
max_batch = 16
[model]
name = "qwen2.5-7b"
profile = "h100-sxm:qwen2.5-7b"
[workload]
preset = "tiny"
prompts = 8
samples = 2
steps = 2
[acceptance]
source = "parametric"
alpha = 0.7
kmax = 6
"""


class TuneCLI:
    SIM = SIM

    def __init__(self, tmp_path):
        self.tmp = tmp_path

    def config(self, tune='seeds = [2, 3]', name="tune.toml", sim=SIM):
        path = self.tmp / name
        path.write_text(sim + "[tune]\n" + tune + "\n")
        return path

    def tune(self, out, *extra, tune='seeds = [2, 3]', family="threshold", trials="6", name="tune.toml"):
        return main(["tune", str(self.config(tune, name)), "--family", family, "--trials", trials,
                     "--out", str(out), *extra])

    @staticmethod
    def complete(out):
        rows = pq.read_table(out / "history.parquet").to_pylist()
        return [r for r in rows if r["state"] == "COMPLETE"]


@pytest.fixture
def tune_cli(tmp_path):
    return TuneCLI(tmp_path)
