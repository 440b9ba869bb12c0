"""Rows sharded over 2 processes (torchrun, gloo on CPU) give the single-process masks bit for bit."""
import os
import subprocess
import sys

import pytest
import torch
from conftest import save_tiny
from safetensors.torch import load_file

from maskopt.distributed import row_shard


def test_row_shards_cover_rows_in_order():
    for rows in (1, 5, 8, 11):
        for n in (1, 2, 3, 4):
            parts = [row_shard(rows, r, n) for r in range(n)]
            assert [i for p in parts for i in range(p.start, p.stop)] == list(range(rows))
            sizes = [p.stop - p.start for p in parts]
            assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("method,pattern,extra", [("wanda", "per_row", []), ("sparseswaps", "per_row", []),
                                                  ("sparsegpt", "2:4", ["--stream"]),
                                                  ("sparsegpt", "per_row", ["--recover", "matrix"])])
def test_two_processes_equal_one(tmp_path, text_file, method, pattern, extra):
    model = save_tiny("llama", tmp_path / "m")
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    common = ["prune", str(model), "--calib", str(text_file), "--nsamples", "8", "--seqlen", "16", "-q", "--no-eval",
              "--method", method, "--pattern", pattern, "--threads", "1", *extra]
    one = subprocess.run([sys.executable, "-m", "maskopt", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "maskopt", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = load_file(tmp_path / "one" / "maskopt_masks.safetensors"), load_file(tmp_path / "two" / "maskopt_masks.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    from maskopt.model.loading import load_model

    wa, wb = load_model(tmp_path / "one")[0].state_dict(), load_model(tmp_path / "two")[0].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # the work was split: every layer's rows were solved half by each rank (sharding silently off would show one)
    import json

    layers = json.loads((tmp_path / "two" / "maskopt_report.json").read_text())["layers"]
    for rec in layers:
        rows = rec["shape"][0]
        assert rec["info"]["rows_by_rank"] == [rows - rows // 2, rows // 2], rec["name"]
