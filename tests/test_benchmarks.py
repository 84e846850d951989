"""The benchmark suite runs end to end at small shapes (a smoke test: the figures themselves are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def test_the_quick_benchmark_suite_writes_every_comparison(tmp_path):
    output = tmp_path / "benchmarks.json"
    subprocess.run(
        [sys.executable, "benchmarks/run_all.py", "--quick", "--skip-compile", "--output", str(output)],
        cwd=REPOSITORY,
        check=True,
        capture_output=True,
        timeout=600,
    )
    result = json.loads(output.read_text())
    names = [row["name"] for row in result["rows"]]
    assert any(name.startswith("decode, text") for name in names)
    assert any(name.startswith("decode, image") for name in names)
    assert any(name.startswith("encode") for name in names)
    assert any(name.startswith("text-to-image") for name in names)
    assert any(name.startswith("decode, text, eager: int8") for name in names)
    assert any(name.startswith("LLM training: packed vs padded") for name in names)
    for row in result["rows"]:
        assert row["ours_s"] > 0 and ("baseline_s" not in row or row["ratio"] > 0)
    assert result["peak_rss_mb"] > 0
    assert output.with_suffix(".md").read_text().startswith("| benchmark |")
