"""Training learns what the synthetic heads' ground truth says it should (stage I; stage II is in the benchmark).

Runs ``benchmarks/learn_synthetic.py`` itself, reduced to fit the test budget (about 40 s on 2 cores):
a ``tiny`` stage-I run of 150 steps must raise the held-out target-view PSNR and cut the rendered
depth error. The full benchmark (300 + 600 steps) adds the stage-II mouth-opening correlation.
"""

import json
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).parents[1] / "benchmarks" / "learn_synthetic.py"


def test_stage_one_raises_held_out_psnr_and_lowers_depth_error(tmp_path):
    figures_file = tmp_path / "figures.json"
    args = ["--clips", "10", "--seconds", "2", "--static-steps", "150", "--dynamic-steps", "0", "--speed-presets", ""]
    subprocess.run([sys.executable, str(BENCHMARK), *args, "--work-dir", str(tmp_path), "--json", str(figures_file)],
                   check=True, capture_output=True, text=True)  # fmt: skip
    figures = json.loads(figures_file.read_text())

    psnr, depth = figures["psnr"], figures["depth_mae"]
    assert psnr["trained"] > psnr["untrained"] + 1.0, psnr
    assert depth["trained"] < 0.6 * depth["untrained"], depth
