"""The figures in README.md and MODEL_CARD.md are the ones their committed JSON gives, and every JSON says where it comes from."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import figures  # noqa: E402


def test_every_marked_table_matches_its_json():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "figures.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout
    for document in figures.DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        assert figures.regenerate(text) == text


def test_every_table_is_used_and_every_source_has_its_json():
    used = {name for document in figures.DOCUMENTS for name in figures._BLOCK.findall(document.read_text(encoding="utf-8"))}
    assert used == set(figures.TABLES)
    for name, (file, command) in figures.SOURCES.items():
        data = json.loads((figures.RESULTS / file).read_text())
        records = [data[k]["record"] for k in ("model", "previous", "copy_source")] if name == "default-model" else [data["record"]]
        for record in records:
            assert len(record["commit"]) == 40 and record["date"][:2] == "20" and record["machine"]["cpus"] >= 1
            assert {"python", "torch"} <= set(record["versions"]) and record["command"], name
        # "[VAR=value ...] bash script.sh ..." or "[VAR=value ...] python script.py ...": the script comes second.
        words = [w for w in command.split() if not re.match(r"^[A-Z_]+=", w)]
        assert words[1].endswith((".py", ".sh")), command


def test_a_changed_figure_is_caught():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("<!-- figures:render -->")
    edited = text[:start] + text[start:].replace("| torch |", "| torch (typed) |", 1)
    assert edited != text and figures.regenerate(edited) == text


def test_synthetic_and_real_clips_are_separate_rows_and_the_paper_stands_apart():
    card = (REPO / "MODEL_CARD.md").read_text(encoding="utf-8")
    ours = card[card.index("<!-- figures:default-model -->") : card.index("<!-- /figures:default-model -->")]
    rows = [line for line in ours.splitlines() if line.startswith("| ") and "---" not in line][1:]
    # Every row is of one kind of clip (synthetic heads are far easier and must not lift the real figure).
    assert rows and all(", real clips |" in row or ", synthetic clips |" in row for row in rows), rows
    assert "paper" not in ours.lower().split("*from")[0]
    paper = card[card.index("<!-- figures:paper-hdtf -->") : card.index("<!-- /figures:paper-hdtf -->")]
    assert "Splat-Portrait" in paper and "23.87" in paper and "Not comparable" in paper


@pytest.mark.parametrize("script", ["render.py", "animate.py", "learn_synthetic.py", "gpu_check.py", "lipsync.py", "views.py"])
def test_every_benchmark_can_write_json(script):
    assert "--json" in (REPO / "benchmarks" / script).read_text()
