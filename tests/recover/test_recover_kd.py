"""PERP with loss='kd': distillation from the dense model — the KL it minimises, zero at the teacher, gradient
accumulation that equals the whole batch, masks kept, the dense model loaded for it by the CLI."""
import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_LLAMA, SHARED, needs_shared
from test_recover_common import assert_mask_kept, masks_of, pruned_pair, windows  # noqa: F401

from maskopt.recover import PERPConfig
from maskopt.recover.perp import batch_loss, perp_retrain

pytestmark = pytest.mark.usefixtures("one_thread")


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_kd_loss_is_the_mean_token_kl_and_mixes_with_lm():
    dense, pruned, _ = pruned_pair("llama")
    x = windows(4, 12, seed=3)
    with torch.no_grad():
        for tau in (1.0, 2.0):
            pt = F.softmax(dense(input_ids=x).logits.double() / tau, -1)
            ps = F.softmax(pruned(input_ids=x).logits.double() / tau, -1)
            kl = (pt * (pt.log() - ps.log())).sum(-1).mean() * tau**2
            got = batch_loss(pruned, x, PERPConfig(loss="kd", temperature=tau), dense)
            torch.testing.assert_close(got.double(), kl, rtol=1e-4, atol=1e-6)
        lm = pruned(input_ids=x, labels=x).loss
        mixed = batch_loss(pruned, x, PERPConfig(loss="kd", lm_weight=0.25), dense)
        kd = batch_loss(pruned, x, PERPConfig(loss="kd"), dense)
        torch.testing.assert_close(mixed, 0.75 * kd + 0.25 * lm)
        assert float(batch_loss(dense, x, PERPConfig(loss="kd"), copy.deepcopy(dense))) == pytest.approx(0, abs=1e-6)


def test_kd_from_itself_changes_nothing_and_kd_from_dense_lowers_the_kl():
    dense, pruned, _ = pruned_pair("llama")
    train = windows(16, 16, seed=1)
    twin = copy.deepcopy(dense)
    loss = batch_loss(twin, train[:8], PERPConfig(loss="kd"), dense)  # at the teacher: KL 0 and its gradient 0
    loss.backward()
    assert float(loss.detach()) < 1e-6
    assert max(float(p.grad.abs().max()) for p in twin.parameters() if p.grad is not None) < 1e-5
    masks = masks_of(pruned)
    teacher_state = _state(dense)
    res = perp_retrain(pruned, train, PERPConfig(mode="masklora", loss="kd", lr=1e-2, steps=20, batch_size=8, r=4,
                                                 alpha=8), progress=False, teacher=dense)
    assert res["loss_last"] < 0.8 * res["loss_first"], res
    assert_mask_kept(pruned, masks)
    assert all(torch.equal(v, _state(dense)[k]) for k, v in teacher_state.items())  # the teacher is never trained


@pytest.mark.parametrize("loss", ["lm", "kd"])
def test_micro_batches_give_the_whole_batch_gradient(loss):
    dense, pruned, _ = pruned_pair("llama")
    train = windows(8, 16, seed=2)
    out = []
    for micro in (0, 3):
        model = copy.deepcopy(pruned)
        res = perp_retrain(model, train, PERPConfig(mode="norms_biases", loss=loss, lr=1e-2, steps=2, batch_size=8,
                                                    micro_batch=micro), progress=False, teacher=dense)
        out.append((_state(model), res["losses"]))
    (a, la), (b, lb) = out
    assert la == pytest.approx(lb, rel=1e-5)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.parametrize("bad,msg", [
    (dict(loss="ce"), "loss must be"), (dict(loss="kd", lm_weight=1.5), "lm_weight"),
    (dict(lm_weight=0.5), "lm_weight"), (dict(loss="kd", temperature=0), "temperature"),
    (dict(micro_batch=-1), "micro_batch"), (dict(hidden_weight=1.0), "hidden_weight"),
    (dict(loss="kd", hidden_weight=-1.0), "hidden_weight"),
])
def test_bad_kd_settings(bad, msg):
    with pytest.raises(ValueError, match=msg):
        PERPConfig(**bad)


def test_kd_needs_a_teacher_other_than_the_model():
    _, pruned, _ = pruned_pair("llama")
    with pytest.raises(ValueError, match="dense model"):
        perp_retrain(pruned, windows(), PERPConfig(loss="kd", steps=1), progress=False)
    with pytest.raises(ValueError, match="teacher is the model"):
        perp_retrain(pruned, windows(), PERPConfig(loss="kd", steps=1), progress=False, teacher=pruned)


@needs_shared
def test_cli_distils_from_the_dense_model(tmp_path):
    from typer.testing import CliRunner

    from maskopt.cli import app

    calib = str(SHARED / "data" / "wikitext-2" / "valid.txt")
    common = ["--calib", calib, "--nsamples", "8", "--seqlen", "32", "--no-eval", "-q", "--threads", "1"]
    r = CliRunner().invoke(app, ["prune", str(TINY_LLAMA), "--method", "wanda", "--recover",
                                 "masklora:loss=kd,steps=2,batch_size=4", "-o", str(tmp_path / "a"), *common])
    assert r.exit_code == 0, r.output
    import json
    rep = json.loads((tmp_path / "a" / "maskopt_report.json").read_text())
    assert rep["recovery"]["masklora"]["steps"] == 2, rep["recovery"]
    r = CliRunner().invoke(app, ["recover", str(tmp_path / "a"), "--recover", "masklora:loss=kd,steps=2,batch_size=4",
                                 "-o", str(tmp_path / "b"), *[c for c in common if c != "--no-eval"]])
    assert r.exit_code == 0, r.output


def test_default_lr_follows_the_loss_and_an_explicit_lr_wins():
    """lr unset: LM_LR for the LM loss, KD_LR (chosen on the tuning text) for distillation, FULL_KD_LR for distillation
    of every kept weight (mode 'full'); a given lr is kept, also through the stage's option parser."""
    from maskopt.recover.config import FULL_KD_LR, KD_LR, LM_LR
    from maskopt.stages import make_stage

    assert PERPConfig().lr == LM_LR and PERPConfig(loss="kd").lr == KD_LR and KD_LR != LM_LR
    assert PERPConfig(loss="kd", lr=1e-4).lr == 1e-4 and PERPConfig(lr=1e-3).lr == 1e-3
    assert make_stage("masklora:loss=kd", "recover").options.lr == KD_LR
    assert make_stage("masklora:loss=kd,lr=3e-4", "recover").options.lr == 3e-4
    assert make_stage("masklora", "recover").options.lr == LM_LR
    assert PERPConfig(mode="full", loss="kd").lr == FULL_KD_LR and FULL_KD_LR != KD_LR
    assert make_stage("full:loss=kd", "recover").options.lr == FULL_KD_LR
    assert make_stage("full", "recover").options.lr == LM_LR
    assert make_stage("full:loss=kd,lr=1e-5", "recover").options.lr == 1e-5


def test_hidden_distillation_is_the_mean_relative_block_error_and_zero_at_the_teacher():
    """hidden_weight adds (1/L) Σ_l mean_t ‖h_l − h*_l‖²/‖h*_l‖², over the block outputs captured here by hooks."""
    from maskopt.recover.perp import hidden_loss

    dense, pruned, _ = pruned_pair("llama")
    x = windows(3, 10, seed=4)
    outs = {}
    hooks = [blk.register_forward_hook(lambda mod, i, o, key=(name, k): outs.__setitem__(key, o[0] if isinstance(o, tuple) else o))
             for name, model in (("t", dense), ("s", pruned)) for k, blk in enumerate(model.model.layers)]
    with torch.no_grad():
        kd = batch_loss(pruned, x, PERPConfig(loss="kd"), dense)
        got = batch_loss(pruned, x, PERPConfig(loss="kd", hidden_weight=0.5), dense)
    for h in hooks:
        h.remove()
    n = len(dense.model.layers)
    expect = []
    for k in range(n):
        s, t = outs["s", k].double(), outs["t", k].double()
        if k == n - 1:  # transformers reports the last block's output after the final norm
            s, t = pruned.model.norm(outs["s", k]).double(), dense.model.norm(outs["t", k]).double()
        expect.append(((s - t).pow(2).sum(-1) / t.pow(2).sum(-1)).mean().detach())
    expect = torch.stack(expect).mean()
    assert float(expect) > 1e-3  # the pruned model's blocks do differ
    torch.testing.assert_close((got - kd).double(), 0.5 * expect, rtol=1e-4, atol=1e-7)
    twin = copy.deepcopy(dense)
    with torch.no_grad():
        assert float(batch_loss(twin, x, PERPConfig(loss="kd", hidden_weight=1.0), dense)) == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="hidden states"):
        hidden_loss((x.float(),) * 3, (x.float(),) * 2)


def test_hidden_distillation_trains_towards_the_dense_blocks():
    """Retraining with hidden_weight lowers the block-output error more than distillation of the logits alone."""
    from maskopt.recover.perp import hidden_loss

    dense, pruned, _ = pruned_pair("llama")
    train, held = windows(16, 16, seed=5), windows(4, 16, seed=6)

    def block_err(model):
        with torch.no_grad():
            return float(hidden_loss(model(input_ids=held, output_hidden_states=True).hidden_states,
                                     dense(input_ids=held, output_hidden_states=True).hidden_states))

    errs = {"before": block_err(pruned)}
    for w in (0.0, 10.0):
        model = copy.deepcopy(pruned)
        masks = masks_of(model)
        perp_retrain(model, train, PERPConfig(mode="masklora", loss="kd", lr=1e-2, steps=20, batch_size=8, r=4,
                                              alpha=8, hidden_weight=w), progress=False, teacher=dense)
        assert_mask_kept(model, masks)
        errs[w] = block_err(model)
    assert errs[10.0] < 0.9 * errs[0.0] < errs["before"], errs
