"""The output contract (maskopt.output) as a user meets it: every subcommand that writes × every output hazard,
and one bad argument each. Every refusal must exit 2 with one line and no traceback, write nothing, leave
nothing behind, and leave every file byte-identical (sha256 of the whole tree before and after).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import random_text, save_tiny

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
SMALL = ["--nsamples", "8", "--seqlen", "16", "-q"]
DIGITS = ["--arch", "mlp", "--batch-size", "128"]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A tiny model, a text, and a maskopt output pruned from them (copied into every case's folder)."""
    from maskopt.cli import app

    root = tmp_path_factory.mktemp("template")
    save_tiny("llama", root / "model")
    (root / "calib.txt").write_text(random_text(3000))
    r = runner.invoke(app, ["prune", str(root / "model"), "--calib", str(root / "calib.txt"), *SMALL, "--no-eval",
                            "--out", str(root / "pruned")])
    assert r.exit_code == 0, r.output
    return root


@pytest.fixture
def case(template, tmp_path) -> Path:
    for name in ("model", "calib.txt", "pruned"):
        src = template / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp_path / name)
    return tmp_path


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` (links not followed) → its content digest, link target or 'dir'."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def cmd(name: str, t: Path, out: str, *extra: str) -> list[str]:
    """The command line of subcommand ``name`` reading the case's inputs and writing ``out``."""
    m, c, p = str(t / "model"), str(t / "calib.txt"), str(t / "pruned")
    return {
        "prune": ["prune", m, "--calib", c, *SMALL, "--no-eval", "--out", out],
        "recover": ["recover", p, "--calib", c, *SMALL, "--recover", "matrix", "--out", out],
        "certify": ["certify", p, "--calib", c, *SMALL, "--iterations", "5", "-o", out],
        "export": ["export", p, "--format", "hf", "--out", out],
        "train-sfw": ["train", "sfw", *DIGITS, "--budget", "2", "--prune-at", "0.5", "-o", out],
        "train-imp": ["train", "imp", *DIGITS, "--dense-budget", "0", "--sparsities", "0.5", "--retrain", "2", "-o", out],
        "train-soup": ["train", "soup", *DIGITS, "--dense-budget", "0", "--sparsities", "0.5", "--retrain", "2",
                       "-m", "2", "--workers", "0", "-o", out],
        "train-lm": ["train", "imp", "--workload", "lm", "--model", m, "--train-text", c, "--eval-text", c,
                     "--seqlen", "16", "--batch-size", "4", "--eval-windows", "1", "--sparsities", "0.5",
                     "--retrain", "1", "--pruner", "wanda", "--pattern", "per_row", "-o", out],
    }[name] + list(extra)


DIR_COMMANDS = ["prune", "recover", "export", "train-sfw", "train-imp", "train-soup"]


def _user_file(t: Path) -> str:
    (t / "notes.txt").write_text("my notes")
    return str(t / "notes.txt")


def _user_dir(t: Path) -> str:
    (t / "mine").mkdir()
    (t / "mine" / "notes.txt").write_text("my notes")
    return str(t / "mine")


def _copied_report(t: Path) -> str:
    d = Path(_user_dir(t))
    shutil.copy2(t / "pruned" / "maskopt_report.json", d)
    return str(d)


def _copied_report_and_marker(t: Path) -> str:
    d = Path(_copied_report(t))
    shutil.copy2(t / "pruned" / ".maskopt-output", d)
    return str(d)


def _output_plus_notes(t: Path) -> str:
    shutil.copytree(t / "pruned", t / "earlier")
    (t / "earlier" / "notes.txt").write_text("my notes")
    return str(t / "earlier")


def _dangling_link(t: Path) -> str:
    os.symlink(t / "nowhere", t / "link")
    return str(t / "link")


def _link_to_output(t: Path) -> str:
    shutil.copytree(t / "pruned", t / "earlier")
    os.symlink(t / "earlier", t / "link")
    return str(t / "link")


def _under_file(t: Path) -> str:
    (t / "afile").write_text("x")
    return str(t / "afile" / "out")


HAZARDS = {  # name → (setup giving --out, with --overwrite)
    "existing-file": (_user_file, True),
    "user-folder": (_user_dir, True),
    "user-folder-no-overwrite": (_user_dir, False),
    "copied-report": (_copied_report, True),
    "copied-report-and-marker": (_copied_report_and_marker, True),
    "output-with-user-file": (_output_plus_notes, True),
    "dangling-symlink": (_dangling_link, False),
    "symlink-to-output": (_link_to_output, True),
    "parent-is-file": (_under_file, False),
    "unwritable-parent": (lambda t: "/proc/maskopt-nope/out", False),
}


def refused(args: list[str], root: Path, says: str | None = None, monkeypatch=None) -> str:
    """Run ``args``; assert a one-line refusal (exit 2), no model loaded, and ``root`` byte-identical after."""
    from maskopt.cli import app

    if monkeypatch is not None:
        import maskopt.run.job
        import maskopt.export.api

        def no_load(*a, **k):
            raise AssertionError("work started before the refusal")

        monkeypatch.setattr(maskopt.run.job, "load_model", no_load)
        monkeypatch.setattr(maskopt.export.api, "load_any", no_load)
    before = tree(root)
    r = runner.invoke(app, args)
    assert r.exit_code == 2, (r.output, r.exception)
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "Traceback" not in r.output
    if says is not None:
        assert says in r.output, r.output
    assert tree(root) == before  # nothing written, nothing left behind, every input file unchanged
    return r.output


@pytest.mark.parametrize("hazard", list(HAZARDS))
@pytest.mark.parametrize("command", DIR_COMMANDS)
def test_folder_outputs_refuse_every_hazard(command, hazard, case, monkeypatch):
    setup, overwrite = HAZARDS[hazard]
    out = setup(case)
    refused(cmd(command, case, out, *(["--overwrite"] if overwrite else [])), case, monkeypatch=monkeypatch)


@pytest.mark.parametrize("command", ["prune", "recover", "export", "train-lm"])
def test_output_inside_or_equal_to_an_input(command, case, monkeypatch):
    src = case / ("pruned" if command in ("recover", "export") else "model")
    refused(cmd(command, case, str(src / "sub")), case, "inside the input", monkeypatch)
    refused(cmd(command, case, str(src), "--overwrite"), case, "is the input", monkeypatch)
    refused(cmd(command, case, str(case / "calib.txt"), "--overwrite"), case, None, monkeypatch)


def test_output_holding_an_input_is_refused(case, monkeypatch):
    """--out an earlier output that holds the model being read: replacing it would delete that input."""
    from maskopt.cli import app

    outer = case / "outer"
    r = runner.invoke(app, cmd("export", case, str(outer)))
    assert r.exit_code == 0, r.output
    refused(["export", str(outer), "--format", "hf", "--out", str(outer), "--overwrite"], case, "is the input",
            monkeypatch)
    from maskopt.run.output import OutputError, check_dir

    with pytest.raises(OutputError, match="holds the input"):
        check_dir(outer, True, [outer / "config.json"])


CERTIFY_HAZARDS = {
    "existing-file": lambda t: _user_file(t),
    "existing-folder": lambda t: _user_dir(t),
    "dangling-symlink": _dangling_link,
    "symlink-to-file": lambda t: (os.symlink(_user_file(t), t / "flink"), str(t / "flink"))[1],
    "parent-is-file": lambda t: str(Path(_under_file(t)).with_name("x.json")),
    "unwritable-parent": lambda t: "/proc/maskopt-nope/x.json",
    "model-weights": lambda t: str(t / "pruned" / "model.safetensors"),
    "inside-pruned": lambda t: str(t / "pruned" / "certificates.json"),
}


@pytest.mark.parametrize("hazard", list(CERTIFY_HAZARDS))
def test_certify_output_file_hazards(hazard, case, monkeypatch):
    out = CERTIFY_HAZARDS[hazard](case)
    refused(cmd("certify", case, out), case, monkeypatch=monkeypatch)
    if hazard not in ("existing-file",):  # --overwrite names that exact file: only then may it be replaced
        refused(cmd("certify", case, out, "--overwrite"), case, monkeypatch=monkeypatch)


def test_certify_overwrites_only_the_named_file(case):
    from maskopt.cli import app

    out = case / "cert.json"
    r = runner.invoke(app, cmd("certify", case, str(out)))
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())
    assert rows and all("gap" in row for row in rows)
    refused(cmd("certify", case, str(out)), case, "--overwrite")
    r = runner.invoke(app, cmd("certify", case, str(out), "--overwrite"))
    untimed = lambda rs: [{k: v for k, v in row.items() if k != "time"} for row in rs]  # noqa: E731
    assert r.exit_code == 0 and untimed(json.loads(out.read_text())) == untimed(rows)
    assert sorted(p.name for p in case.iterdir()) == ["calib.txt", "cert.json", "model", "pruned"]


BAD_ARGS = {
    "prune": ("--sparsity", "1.5"),
    "recover": ("--batch-size", "0"),
    "certify": ("--bnb-rows", "-1"),
    "export": ("--opt", "wat=1"),
    "train-sfw": ("--budget", "0"),
    "train-imp": ("--sparsities", "0.7,0.5"),
    "train-soup": ("--retrain", "0ep"),
}


@pytest.mark.parametrize("command", list(BAD_ARGS))
def test_one_bad_argument_writes_nothing(command, case):
    out = str(case / ("new.json" if command == "certify" else "new"))
    refused(cmd(command, case, out, *BAD_ARGS[command]), case)


@pytest.mark.parametrize("command", ["train-sfw", "train-imp"])
def test_bad_training_argument_keeps_an_earlier_output(command, case):
    """`train ... -o EARLIER --overwrite` with a bad argument: the earlier output stays as it was."""
    from maskopt.cli import app

    earlier = case / "earlier"
    r = runner.invoke(app, cmd(command, case, str(earlier)))
    assert r.exit_code == 0, r.output
    assert (earlier / "results.json").is_file() and (earlier / "model").is_dir()
    refused(cmd(command, case, str(earlier), "--overwrite", *BAD_ARGS[command]), case)
    r = runner.invoke(app, cmd(command, case, str(earlier), "--overwrite"))  # a good run replaces it
    assert r.exit_code == 0, r.output


def test_bad_init_pickle_never_runs(case):
    class Evil:
        def __reduce__(self):
            return (open, (str(case / "pwned.txt"), "w"))

    import torch

    torch.save({"x": Evil()}, case / "evil.pt")
    out = refused(cmd("train-imp", case, str(case / "new"), "--init", str(case / "evil.pt")), case)
    assert "never unpickles" in out and not (case / "pwned.txt").exists()


def test_stale_temporaries_are_removed_but_not_a_running_ones(case):
    """A killed export leaves .OUT.tmp-PID-*; the next export removes it (not those of a live process)."""
    from maskopt.cli import app

    dead = case / ".ex.tmp-999999999-dead"  # no such pid
    dead.mkdir()
    (dead / "model.safetensors").write_text("half")
    (case / ".ex.old-999999999-dead").mkdir()
    live = case / f".ex.tmp-{os.getppid()}-live"
    live.mkdir()
    r = runner.invoke(app, cmd("export", case, str(case / "ex")))
    assert r.exit_code == 0, r.output
    assert not dead.exists() and not (case / ".ex.old-999999999-dead").exists() and live.is_dir()


def test_marker_lists_every_file_and_the_records_repeat_its_id(case):
    from maskopt.run.output import MARKER, maskopt_wrote

    marker = json.loads((case / "pruned" / MARKER).read_text())
    files = {p.relative_to(case / "pruned").as_posix() for p in (case / "pruned").rglob("*") if p.is_file()}
    assert set(marker["files"]) == files - {MARKER}
    assert json.loads((case / "pruned" / "maskopt_report.json").read_text())["output_id"] == marker["id"]
    assert maskopt_wrote(case / "pruned") == (True, "")
    report = json.loads((case / "pruned" / "maskopt_report.json").read_text())
    report["output_id"] = "0" * 32  # a report from another output, same size
    (case / "pruned" / "maskopt_report.json").write_text(json.dumps(report))
    ok, why = maskopt_wrote(case / "pruned")
    assert not ok


def test_same_command_gives_byte_identical_files(case):
    """Two runs of one command (same threads) write the same bytes: weights, masks, and a cs256 export."""
    from maskopt.cli import app

    for name in ("a", "b"):
        args = ["prune", str(case / "model"), "--calib", str(case / "calib.txt"), *SMALL, "--no-eval", "--method",
                "sparseswaps", "--pattern", "cs256", "--sparsity", "0.5", "--out", str(case / name)]
        assert runner.invoke(app, args).exit_code == 0
        r = runner.invoke(app, ["export", str(case / name), "--format", "cs256", "--out", str(case / f"{name}-cs")])
        assert r.exit_code == 0, r.output
    for f in ("model.safetensors", "maskopt_masks.safetensors"):
        assert (case / "a" / f).read_bytes() == (case / "b" / f).read_bytes(), f
    assert (case / "a-cs" / "model.cs256.safetensors").read_bytes() == (case / "b-cs" / "model.cs256.safetensors").read_bytes()
