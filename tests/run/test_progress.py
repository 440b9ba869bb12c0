"""Solvers report how far they are (rows done, iterations) to the prune stage's bar, and only when asked."""
import torch
from conftest import VOCAB, tiny_model

from maskopt.solve.methods import get_method
from maskopt.testing import random_problem
from maskopt.solve.progress import reporting_to, say


def test_say_is_silent_without_a_sink_and_never_builds_the_text():
    def boom() -> str:
        raise AssertionError("text built without a sink")

    say(boom)


def test_sparseswaps_and_sparsefw_report_progress():
    from maskopt.solve.problem import LayerProblem

    problem = LayerProblem(*random_problem(rows=24, d=32, seed=0), "per_row", 0.5)
    seen: list[str] = []
    with reporting_to(seen.append, interval=0.0):
        get_method("sparseswaps", tol=0.0).solve(problem)
    assert seen and all("rows done" in s for s in seen)
    assert seen[-1].endswith(f"{problem.rows}/{problem.rows} rows done")  # every row retired at the end
    seen.clear()
    with reporting_to(seen.append, interval=0.0):
        get_method("sparsefw", iterations=5, rtol=0.0).solve(problem)
    assert any("Frank-Wolfe iteration" in s for s in seen)
    seen.clear()
    get_method("sparseswaps").solve(problem)  # outside the block: nothing reported
    assert not seen


def test_the_prune_stage_shows_the_method_layer_and_rows(monkeypatch):
    import maskopt.model.calibrate as calibrate
    import maskopt.solve.progress as progress
    from maskopt.config import PruneConfig
    from maskopt.run.job import prune

    shown: list[str] = []
    monkeypatch.setattr(calibrate.BlockWalker, "status", lambda self, text: shown.append(text))
    monkeypatch.setattr(progress, "INTERVAL", 0.0)
    model = tiny_model("llama")
    windows = torch.randint(0, VOCAB, (4, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        prune(model, windows, PruneConfig(method="sparseswaps", sparsity=0.5, method_options={"tol": 0.0}))
    assert any(s.startswith("sparseswaps: ") and "rows done" in s for s in shown)
    assert any(s.startswith("sparseswaps: ") and " done in " in s for s in shown)
