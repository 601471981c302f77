"""benchmarks/gpu_check.py must not rot before a GPU is lent: its dry run walks every step here."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from splat_portrait.data.synthetic import SynthConfig, write_synthetic_dataset

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"
DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
STEPS = ["install", "environment", "gsplat-jit", "gpu-tests", "render-bench", "animate-bench", "train-paper", "train-default"]


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(not DATA.is_dir(), reason=f"sample data folder {DATA} is absent")
def test_the_dry_run_walks_every_step_and_writes_one_report(tmp_path):
    data = tmp_path / "data"
    write_synthetic_dataset(data, 1, seed=0, config=SynthConfig(seconds=0.6, size=32, speech="voiced"), test_fraction=0.0)
    report_path = tmp_path / "out" / "gpu_check.json"
    result = run("--dry-run", "--json", str(report_path), "--train-default", str(data))
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert report["mode"] == "dry-run" and list(report["steps"]) == STEPS
    statuses = {name: step["status"] for name, step in report["steps"].items()}
    assert set(statuses.values()) <= {"ok", "skipped"}, report["steps"]
    steps = report["steps"]
    assert report["record"] == steps["environment"]["record"] and report["record"]["versions"]["torch"]
    assert steps["gpu-tests"]["collected"] >= 2  # the gsplat parity test and the CUDA training step
    assert {r["backend"] for r in steps["render-bench"]["rows"]} >= {"torch"}
    engines = [r for r in steps["animate-bench"]["rows"] if "engine" in r]
    assert len(engines) == 2 and all(r["frames"] == r["of_frames"] == 25 and r["frames_per_second"] > 0 for r in engines)
    assert steps["train-paper"]["steps"] == 2 and steps["train-paper"]["seconds_per_step"] > 0
    assert (tmp_path / "out" / "default-model" / "model.json").is_file()
    assert "gpu_check (dry-run)" in result.stdout and "animate tiny" in result.stdout


def test_a_step_past_its_time_is_stopped_and_the_run_keeps_its_budget(tmp_path):
    report_path = tmp_path / "gpu_check.json"
    started = time.monotonic()
    args = ["--dry-run", "--only", "environment", "gpu-tests", "render-bench", "--hang", "gpu-tests", "--budget", "15"]
    result = run(*args, "--json", str(report_path), timeout=60)
    assert time.monotonic() - started < 25
    assert result.returncode == 0, result.stderr
    steps = json.loads(report_path.read_text())["steps"]
    assert steps["environment"]["status"] == "ok"
    assert steps["gpu-tests"]["status"] == "timed out"
    assert re.fullmatch(r"stopped at its \d+ s limit", steps["gpu-tests"]["reason"])
    assert steps["gpu-tests"]["limit_s"] <= 15 - steps["environment"]["seconds"] + 1
    assert steps["render-bench"] == {"status": "not run", "reason": "the run's time budget was spent"}
