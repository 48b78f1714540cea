"""BatchNorm folding (fastlift.fold) against the reference lifter's eval output."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fastlift.fold import fold_bn, fold_lifter, run_folded_torch
from fastlift.reference import TemporalModel, TemporalModelOptimized1f

from helpers import randomize


def make(fw, causal=False, dense=False, channels=8, seed=0, cls=TemporalModel):
    torch.manual_seed(seed)
    kw = {"dense": dense} if cls is TemporalModel else {}
    m = cls(5, 2, 4, fw, causal=causal, channels=channels, **kw)
    return randomize(m, seed).double().eval()


def rand_input(b, t, seed=1):
    return torch.randn(b, t, 5, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("fw", [[3, 3, 3], [3, 5], [5, 1, 3], [3, 3, 3, 3]])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dense", [False, True])
def test_folded_equals_reference_eval_fp64(fw, causal, dense):
    m = make(fw, causal, dense, seed=sum(fw) + causal + 2 * dense)
    folded = fold_lifter(m)
    assert folded.receptive_field == m.receptive_field() and folded.causal == causal
    assert folded.channels == 8 and folded.extra["dense"] == dense
    assert folded.pad == (m.receptive_field() - 1) // 2
    assert len(folded.layers) == 2 + 2 * (len(fw) - 1)
    assert all(l.weight.dtype == torch.float64 and l.bias.dtype == torch.float64 for l in folded.layers)
    x = rand_input(2, m.receptive_field() + 7)
    with torch.no_grad():
        ref = m(x)
    out = run_folded_torch(folded, x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_folded_layer_metadata():
    fw = [3, 3, 3]
    for causal in (False, True):
        f = fold_lifter(make(fw, causal))
        assert [l.taps for l in f.layers] == [3, 3, 1, 3, 1, 1]
        assert [l.dilation for l in f.layers] == [1, 3, 1, 9, 1, 1]
        assert [l.relu for l in f.layers] == [True] * 5 + [False]
        pads = [3, 9]
        expect = [None, None, (2 * pads[0] if causal else pads[0]), None, (2 * pads[1] if causal else pads[1]), None]
        assert [l.res_offset for l in f.layers] == expect
        assert [l.span for l in f.layers] == [2, 6, 0, 18, 0, 0]
        assert f.layers[0].c_in == 10 and f.layers[-1].c_out == 12
    fd = fold_lifter(make(fw, dense=True))
    assert [l.taps for l in fd.layers] == [3, 7, 1, 19, 1, 1]
    assert all(l.dilation == 1 for l in fd.layers)


@pytest.mark.parametrize("causal", [False, True])
def test_folding_the_1f_model_describes_the_dilated_model(causal):
    fw = [3, 3, 3]
    one = make(fw, causal, cls=TemporalModelOptimized1f, seed=4)
    dil = make(fw, causal, seed=5)
    dil.load_state_dict(one.state_dict())
    one.train()  # folding uses running statistics whatever the mode
    x = rand_input(1, 40)
    with torch.no_grad():
        ref = dil(x)
    torch.testing.assert_close(run_folded_torch(fold_lifter(one), x), ref, rtol=1e-10, atol=1e-10)


def test_fold_bn_without_bn_is_a_relayout():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 4, 3, generator=g)
    bias = torch.randn(6, generator=g)
    w, b = fold_bn(weight, None, bias)
    assert w.shape == (12, 6) and w.is_contiguous() and w.dtype == torch.float32
    for k in range(3):
        for c in range(4):
            torch.testing.assert_close(w[k * 4 + c], weight[:, c, k], rtol=0, atol=0)
    torch.testing.assert_close(b, bias, rtol=0, atol=0)
    w0, b0 = fold_bn(weight, None)
    torch.testing.assert_close(w0, w, rtol=0, atol=0)
    assert torch.equal(b0, torch.zeros(6))


def test_fold_bn_matches_conv_then_eval_bn():
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(6, 4, 3, generator=g, dtype=torch.float64)
    bn = randomize(torch.nn.BatchNorm1d(6).double(), seed=2).eval()
    x = torch.randn(2, 4, 11, generator=g, dtype=torch.float64)
    with torch.no_grad():
        ref = bn(F.conv1d(x, weight, dilation=2))
    w, b = fold_bn(weight, bn)
    assert w.dtype == b.dtype == torch.float64
    xt = x.permute(0, 2, 1)
    y = sum(xt[:, 2 * k: 2 * k + 7] @ w[4 * k: 4 * (k + 1)] for k in range(3)) + b
    torch.testing.assert_close(y.permute(0, 2, 1), ref, rtol=1e-12, atol=1e-12)
    # BN without affine parameters.
    bn2 = torch.nn.BatchNorm1d(6, affine=False).double().eval()
    bn2.running_mean.fill_(0.5)
    bn2.running_var.fill_(4.0)
    w2, b2 = fold_bn(weight, bn2)
    torch.testing.assert_close(w2[:4], weight[:, :, 0].T / math.sqrt(4.0 + bn2.eps))
    torch.testing.assert_close(b2, torch.full((6,), -0.5 / math.sqrt(4.0 + bn2.eps), dtype=torch.float64))
    with pytest.raises(ValueError, match="running statistics"):
        fold_bn(weight, torch.nn.BatchNorm1d(6, track_running_stats=False))


def test_fold_computes_in_fp32_for_half_models():
    m = make([3, 3]).to(torch.bfloat16)
    f = fold_lifter(m)
    assert all(l.weight.dtype == torch.float32 and l.bias.dtype == torch.float32 for l in f.layers)


def test_folded_lifter_to_casts_weights_and_keeps_fp32_biases():
    folded = fold_lifter(make([3, 3, 3]).float())
    half = folded.to(dtype=torch.float16)
    assert all(l.weight.dtype == torch.float16 and l.bias.dtype == torch.float32 for l in half.layers)
    assert half is not folded and folded.layers[0].weight.dtype == torch.float32  # original untouched
    bf = fold_lifter(make([3, 3, 3]), dtype=torch.bfloat16)
    assert all(l.weight.dtype == torch.bfloat16 and l.bias.dtype == torch.float32 for l in bf.layers)
    d = folded.to(dtype=torch.float64)
    assert all(l.weight.dtype == torch.float64 and l.bias.dtype == torch.float64 for l in d.layers)
    # Metadata survives the copy.
    for a, b in zip(folded.layers, half.layers):
        assert (a.taps, a.dilation, a.relu, a.res_offset) == (b.taps, b.dilation, b.relu, b.res_offset)
    assert (half.filter_widths, half.causal, half.receptive_field, half.channels, half.extra) == \
        (folded.filter_widths, folded.causal, folded.receptive_field, folded.channels, folded.extra)
    # fp16 weights still compute the model (to fp16 accuracy, with fp32 activations).
    x = rand_input(1, 30).float()
    torch.testing.assert_close(run_folded_torch(half, x), run_folded_torch(folded, x), rtol=2e-2, atol=2e-2)


def test_folded_lifter_to_device_only_keeps_dtypes():
    m = make([3, 3, 3])
    f = fold_lifter(m, device="cpu")
    assert all(l.bias.dtype == torch.float64 for l in f.layers)
    x = rand_input(1, 30)
    with torch.no_grad():
        torch.testing.assert_close(run_folded_torch(f, x), m(x), rtol=1e-10, atol=1e-10)


def test_conv_weight_cache_follows_in_place_weight_changes():
    """run_folded_torch caches the conv1d-layout weights; editing a folded weight in place (or
    replacing it) must not leave a stale copy behind."""
    m = make([3, 3], False, False, seed=5)
    folded = fold_lifter(m)
    x = rand_input(1, m.receptive_field() + 2)
    before = run_folded_torch(folded, x)
    layer = folded.layers[1]
    assert layer.conv_weight() is layer.conv_weight()  # cached
    layer.weight.mul_(2.0)
    changed = run_folded_torch(folded, x)
    assert not torch.allclose(changed, before)
    layer.weight = layer.weight / 2.0
    torch.testing.assert_close(run_folded_torch(folded, x), before, rtol=1e-10, atol=1e-10)
