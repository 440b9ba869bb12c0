"""The ALPS peer runner loads the authors' file with only the device replaced, and refuses a changed upstream."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "peers"))
import alps_prune  # noqa: E402

FAKE = """import torch
dev = 'cuda:0'
def solve(x):
    y = x.to('cuda:0') * 2
    torch.cuda.synchronize()
    return y, dev
"""


def test_the_cuda_device_is_replaced_in_memory_only(tmp_path):
    (tmp_path / "alps.py").write_text(FAKE)
    mod, prov = alps_prune.load_alps(tmp_path, "cpu")
    import torch

    y, dev = mod.solve(torch.ones(2))
    assert dev == "cpu" and y.tolist() == [2.0, 2.0]
    assert prov["replacements"] == {"'cuda:0'": 2, "torch.cuda.synchronize()": 1} and len(prov["alps_py_sha256"]) == 64
    assert (tmp_path / "alps.py").read_text() == FAKE  # the checkout is untouched


def test_a_changed_or_missing_upstream_file_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        alps_prune.load_alps(tmp_path, "cpu")
    (tmp_path / "alps.py").write_text("dev = 'cuda:1'\n")
    with pytest.raises(SystemExit, match="upstream file changed"):
        alps_prune.load_alps(tmp_path, "cpu")
