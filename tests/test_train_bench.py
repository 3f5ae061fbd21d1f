"""`coda-bench train` runs the real training step and writes its JSON (numbers are not asserted)."""

from __future__ import annotations

import json

from coda_bench.train import main


def test_train_benchmark_writes_tokens_per_second_and_mfu(tmp_path):
    out = tmp_path / "train.json"
    assert main(["--steps", "3", "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["tokens_per_s"] > 0 and 0 < result["mfu"]
    assert result["tokens_per_step"] == 8 * 128 and result["peak_source"].startswith("measured")
    assert len(result["step_time_s"]) == 3
