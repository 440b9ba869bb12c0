"""bench/common.py's run_child: the child's progress reaches the parent's stderr as it comes (a redrawn bar in its
last state), its last stdout line is the result, and a failed child's last lines are in the error."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import common  # noqa: E402

CHILD = """import json, sys
assert sys.argv[1] == "--child"
sys.stderr.write("block 0 done\\n")
sys.stderr.write("bar 1/3\\rbar 2/3\\rbar 3/3\\n")
print("not the result")
if sys.argv[2] == "fail":
    sys.stderr.write("boom: bad layer\\n")
    sys.exit(3)
print(json.dumps({"ppl": 12.5}))
"""


def test_progress_is_relayed_and_the_result_is_the_last_stdout_line(tmp_path, capfd):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    res = common.run_child(str(script), ["ok"])
    assert res["ppl"] == 12.5 and res["process_seconds"] >= 0
    err = capfd.readouterr().err
    assert err.splitlines() == ["block 0 done", "bar 3/3"]  # relayed; the redrawn bar in its final state


def test_a_failed_child_raises_with_its_last_lines(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    with pytest.raises(RuntimeError, match="boom: bad layer"):
        common.run_child(str(script), ["fail"])
