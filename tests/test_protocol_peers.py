"""The ALPS peer runner loads the authors' file with only the device replaced, and refuses a changed upstream; a peer
scored again (whole sets) reuses its pruned folder, and is merged only when it is the same model."""
import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
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


# --- scoring a peer again (whole-set headline rows) ------------------------------------------------------------------

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def _scored(n: int, scale: float = 1.0, zeroshot: bool = True) -> dict:
    nll = [(3.0 + 0.01 * (i % 17)) * 511 * scale for i in range(n)]
    row = {"protocol": "v2", "model": "smollm", "method": "peer:alps", "setting": "50%",
           "peer_label": "ALPS (authors' code) (unstructured)", "windows_sha256": "x",
           "eval_tag": "W128 H128 T Z500" if zeroshot else "Wall H128 T Z–",
           "wikitext": {"nll": nll, "seqlen": 512, "ppl": 20.0 * scale, "lo": 19.0, "hi": 21.0},
           "heldout": {"nll": nll[:128], "seqlen": 512, "ppl": 30.0, "lo": 29.0, "hi": 31.0}}
    if zeroshot:
        row["zeroshot"] = {"limit": 500, "mean_acc": 0.4, "mean_acc_norm": 0.42, "tasks": {}}
    return row


def _setup(tmp_path, monkeypatch, scale: float, ids=np.arange(12).reshape(3, 4)):
    """A peer folder pruned from ``ids``, its grid scoring in the results, and a fake scorer that writes a whole-set
    scoring of a model whose NLL are ``scale`` × the grid's."""
    import json
    import subprocess

    import run as peers_run

    results, models = tmp_path / "results", tmp_path / "models"
    monkeypatch.setattr(peers_run, "RESULTS", results)
    monkeypatch.setenv("MASKOPT_PEER_MODELS", str(models))
    windows = tmp_path / "w.npy"
    np.save(windows, ids)
    sha = hashlib.sha256(np.arange(12).reshape(3, 4).astype(np.int64).tobytes()).hexdigest()
    (models / "alps-50pct").mkdir(parents=True)
    (models / "alps-50pct" / "peer_row.json").write_text(json.dumps({"windows_sha256": sha, "method": "peer:alps"}))
    (results / "peers").mkdir(parents=True)
    (results / "peers" / "alps-50pct.json").write_text(json.dumps(_scored(128)))
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        assert "score" in cmd and "--no-zeroshot" in cmd and cmd[cmd.index("--wikitext-windows") + 1] == "0"
        Path(cmd[cmd.index("--json") + 1]).write_text(json.dumps(_scored(595, scale, zeroshot=False)))

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(peers_run, "prune", lambda *a, **k: pytest.fail("the folder was pruned again"))
    a = argparse.Namespace(wikitext_windows=0, heldout_windows=128, no_zeroshot=True, zeroshot_limit=500,
                           force=False, threads=1, calib_seed=0)
    return peers_run, a, windows, results, calls


def test_a_whole_set_rescore_scores_the_pruned_folder_and_the_scoreboard_merges_it(tmp_path, monkeypatch):
    import json

    import smollm

    peers_run, a, windows, results, calls = _setup(tmp_path, monkeypatch, scale=1.0)
    out = peers_run.run_one("alps", "50%", a, windows)
    assert out.name == "alps-50pct-Wall-H128-T.json" and len(calls) == 1  # scored, never pruned again
    assert json.loads(out.read_text())["same_model_as"] == "alps-50pct.json"
    assert json.loads((results / "peers" / "alps-50pct.json").read_text())["eval_tag"] == "W128 H128 T Z500"
    monkeypatch.setattr(smollm, "PEERS_DIR", results / "peers")
    (row,) = smollm.pick_rows(smollm.load_peers())
    assert len(row["wikitext"]["nll"]) == 595 and row["zeroshot"]["limit"] == 500  # one row: both scorings
    assert peers_run.run_one("alps", "50%", a, windows) == out and len(calls) == 1  # done: skipped


def test_a_rescore_of_other_weights_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    peers_run, a, windows, results, _ = _setup(tmp_path, monkeypatch, scale=1.001)
    with pytest.raises(SystemExit, match="is not the model scored in"):
        peers_run.run_one("alps", "50%", a, windows)
    assert sorted(p.name for p in (results / "peers").iterdir()) == ["alps-50pct.json"]


def test_a_folder_pruned_from_other_calibration_ids_is_pruned_again(tmp_path, monkeypatch):
    peers_run, a, windows, _, _ = _setup(tmp_path, monkeypatch, scale=1.0, ids=np.arange(12).reshape(4, 3) + 1)
    with pytest.raises(pytest.fail.Exception, match="pruned again"):
        peers_run.run_one("alps", "50%", a, windows)


def test_a_pruning_from_another_calibration_seed_has_its_own_folder_and_stays_out_of_the_scoreboard(tmp_path,
                                                                                                     monkeypatch):
    """--calib-seed 2: pruned into alps-50pct-seed2 (the seed-0 folder is not reused), the result written under
    peers/seeds/, and the scoreboard's peer rows are still the seed-0 scoring alone."""
    import json

    import smollm

    peers_run, a, windows, results, calls = _setup(tmp_path, monkeypatch, scale=1.0)
    pruned = []

    def fake_prune(peer, setting, a, windows, folder):
        pruned.append(folder)
        folder.mkdir(parents=True)
        (folder / "peer_row.json").write_text(json.dumps({"method": "peer:alps"}))
        return folder / "peer_row.json"

    monkeypatch.setattr(peers_run, "prune", fake_prune)
    a.calib_seed = 2
    out = peers_run.run_one("alps", "50%", a, windows)
    assert [f.name for f in pruned] == ["alps-50pct-seed2"] and len(calls) == 1
    assert out == results / "peers" / "seeds" / "alps-50pct-Wall-H128-T-seed2.json" and out.is_file()
    assert "same_model_as" not in json.loads(out.read_text())  # not merged with the seed-0 scoring
    monkeypatch.setattr(smollm, "PEERS_DIR", results / "peers")
    assert [r["peer_file"] for r in smollm.load_peers()] == ["alps-50pct.json"]


def test_a_result_name_holds_only_what_was_scored(tmp_path, monkeypatch):
    """The tag's unscored measures ("Z–", "W–") are left out of the file name: a perplexity-only rescore must not be
    named as if zero-shot had been scored; the grid's own tag keeps the plain name."""
    import run as peers_run

    monkeypatch.setattr(peers_run, "RESULTS", tmp_path)
    assert peers_run.result_path("alps", "50%", "W128 H128 T Z500").name == "alps-50pct.json"
    assert peers_run.result_path("alps", "2:4", "Wall Hall T Z–").name == "alps-2of4-Wall-Hall-T.json"
    assert peers_run.result_path("alps", "50%", "W– H– T Z–", seed=1).name == "alps-50pct-T-seed1.json"
    assert peers_run.result_path("alps", "70%", "W128 H128 T Zall").name == "alps-70pct-W128-H128-T-Zall.json"
