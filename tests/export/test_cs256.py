"""CS256 codec: exact round trips, quantized values, matmul from the format, refusals and corruption."""
import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maskopt.export import ExportFormatError, MaskFitError
from maskopt.export.cs256 import decode, encode, matmul, pad_mask, validate
from maskopt.solve.patterns import tile_counts


def _fitting(rows: int, d: int, g: int, density: float, seed: int, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, d, generator=gen).to(dtype)
    mask = pad_mask(torch.rand(rows, d, generator=gen) < density, g)
    return W, mask


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 5), d=st.integers(1, 700), g=st.sampled_from([2, 4, 8, 16]),
       density=st.floats(0.0, 1.0), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]))
def test_exact_round_trip(rows, d, g, density, seed, dtype):
    W, mask = _fitting(rows, d, g, density, seed, dtype)
    assert bool((tile_counts(mask) % g == 0).all()) or d % g  # pad_mask fits whenever g divides the widths
    if not bool((tile_counts(mask) % g == 0).all()):
        with pytest.raises(MaskFitError):
            encode(W, mask, g=g)
        return
    t = encode(W, mask, g=g)
    out = decode(t)
    assert out.dtype == dtype and torch.equal(out, W * mask)
    assert t.positions.dtype == torch.uint8 and t.counts.dtype == torch.uint8 and t.nnz == int(mask.sum())


def test_pad_mask_is_the_smallest_fitting_superset():
    mask = torch.rand(6, 520, generator=torch.Generator().manual_seed(1)) < 0.37
    full = pad_mask(mask, 8)
    assert (full | mask).equal(full) and (tile_counts(full) % 8 == 0).all()
    assert ((tile_counts(full) - tile_counts(mask)) < 8).all()


@pytest.mark.parametrize("quant,qmax", [("int8", 127), ("int4", 7)])
def test_quantized_values_error_bound_and_idempotence(quant, qmax):
    W, mask = _fitting(8, 600, 8, 0.4, 0)
    t = encode(W, mask, quant=quant, qgroup=32)
    assert t.values.numel() == (t.nnz if quant == "int8" else t.nnz // 2)
    out = decode(t)
    assert ((out != 0) <= mask).all()
    vals = W[mask]
    scale = t.scales.float().repeat_interleave(32)[: t.nnz]
    assert ((out[mask] - vals).abs() <= scale / 2 + 1e-6).all()  # round to nearest of a per-group grid
    assert (scale <= vals.abs().reshape(-1).max() / qmax * 1.001).all()
    again = decode(encode(out, mask, quant=quant, qgroup=32))  # the quantized grid re-encodes exactly
    assert torch.equal(again, out)


@pytest.mark.parametrize("quant", ["none", "int8", "int4"])
@pytest.mark.parametrize("equal_rows", [True, False])
def test_matmul_from_the_format(quant, equal_rows):
    W, mask = _fitting(12, 520, 8, 0.5, 3)
    if equal_rows:
        from maskopt.solve.patterns import Pattern

        mask = Pattern.parse("cs256").topk_mask(torch.rand(12, 520), 256)
    t = encode(W, mask, quant=quant)
    for x in (torch.randn(3, 4, 520), torch.randn(1, 520), torch.randn(520)):
        assert torch.allclose(matmul(x, t), x @ decode(t).T, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="features"):
        matmul(torch.randn(2, 519), t)


def test_refuses_masks_that_do_not_fit():
    W = torch.randn(4, 296)
    mask = torch.ones(4, 296, dtype=torch.bool)
    mask[2, 5] = False  # tile (2, 0) keeps 255
    with pytest.raises(MaskFitError, match="row 2 tile 0 keeps 255"):
        encode(W, mask)
    with pytest.raises(ValueError, match="shape"):
        encode(W, mask[:, :10])


def test_corrupted_or_truncated_tensors_are_errors():
    W, mask = _fitting(4, 600, 8, 0.5, 0)
    t = encode(W, mask)
    cases = {
        "truncated positions": dataclasses.replace(t, positions=t.positions[:-8]),
        "truncated values": dataclasses.replace(t, values=t.values[:-1]),
        "repeated position": dataclasses.replace(t, positions=torch.cat([t.positions[:1], t.positions[:-1]])),
        "count beyond the tile": dataclasses.replace(t, counts=torch.full_like(t.counts, 40)),
        "wrong counts shape": dataclasses.replace(t, counts=t.counts[:, :1]),
    }
    for name, bad in cases.items():
        with pytest.raises(ExportFormatError):
            decode(bad)
        with pytest.raises(ExportFormatError):
            validate(bad)
        if name != "repeated position":  # matmul checks counts and sizes; positions are validate()'s job
            with pytest.raises(ExportFormatError):
                matmul(torch.randn(1, 600), bad)
