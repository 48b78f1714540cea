"""The drop-in fused lifters against the reference: outputs, gradients, running statistics,
dropout, checkpoints, BN folding, dtype handling and bad input.

Kernel paths run under the Triton CPU interpreter with small channel counts (see conftest.py).
"""
import copy

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fastlift
from fastlift import reference as R

from helpers import masked_reference_forward, randomise_bn, rel_err

J_IN, F_IN, J_OUT = 5, 2, 4


def pair(kind="dilated", widths=(3, 3, 3), channels=24, dropout=0.0, **kw):
    """A reference model (fp64) and a fused copy (fp32, impl='triton') with identical weights."""
    torch.manual_seed(0)
    if kind == "1f":
        ref = R.TemporalModelOptimized1f(J_IN, F_IN, J_OUT, list(widths), dropout=dropout, channels=channels, **kw)
        fus = fastlift.TemporalModelOptimized1f(J_IN, F_IN, J_OUT, list(widths), dropout=dropout, channels=channels,
                                               impl="triton", **kw)
    else:
        ref = R.TemporalModel(J_IN, F_IN, J_OUT, list(widths), dropout=dropout, channels=channels, **kw)
        fus = fastlift.TemporalModel(J_IN, F_IN, J_OUT, list(widths), dropout=dropout, channels=channels, impl="triton",
                                     **kw)
    randomise_bn(ref)
    fus.load_state_dict(ref.state_dict())
    return ref.double(), fus


def compare_training(ref, fus, x, steps=2, p=0.0, tol=2e-5):
    """Train ``ref`` (fp64), an fp32 copy of it and ``fus`` (fp32 kernels) side by side.

    Everything must match the fp64 reference within ``tol`` (``5*tol`` for parameter gradients)
    or within 10x the error of the fp32 reference itself, whichever is larger. The second bound
    only matters for ill-conditioned problems (BatchNorm over a handful of rows amplifies fp32
    rounding in any implementation, and two fp32 implementations that round differently then
    differ by several times their own error). A real bug is orders of magnitude above either bound.
    """

    def ok(a, b, b32, t):
        return rel_err(a, b) < max(t, 10 * rel_err(b32, b))

    ref32 = copy.deepcopy(ref).float()
    xr = x.double().clone().requires_grad_()
    x32 = x.float().clone().requires_grad_()
    xf = x.float().clone().requires_grad_()
    for m in (ref, ref32, fus):
        m.train()
    for step in range(steps):
        if p > 0:
            fus.set_dropout_seed(1000 + step)
            yr = masked_reference_forward(ref, xr, 1000 + step, p)
            y32 = masked_reference_forward(ref32, x32, 1000 + step, p)
        else:
            yr, y32 = ref(xr), ref32(x32)
        yf = fus(xf)
        assert yf.shape == yr.shape
        assert ok(yf, yr, y32, tol)
        w = torch.linspace(-1, 1, yr.numel(), dtype=torch.float64).reshape(yr.shape) * (1 + step)
        (yr * w).sum().backward()
        (y32 * w.float()).sum().backward()
        (yf * w.float()).sum().backward()
    assert ok(xf.grad, xr.grad, x32.grad, tol)
    for (name, pr), (_, p32), (_, pf) in zip(ref.named_parameters(), ref32.named_parameters(), fus.named_parameters()):
        assert ok(pf.grad, pr.grad, p32.grad, 5 * tol), name
    sr, s32, sf = ref.state_dict(), ref32.state_dict(), fus.state_dict()
    for k in sr:
        if "running" in k:
            assert ok(sf[k], sr[k], s32[k], tol), k
        if "num_batches_tracked" in k:
            assert int(sf[k]) == int(sr[k]) == steps


# ------------------------------------------------------------------------------------ layout
def test_state_dict_layout_and_cross_loading():
    ref = R.TemporalModel(17, 2, 17, [3, 3, 3], channels=32)
    fus = fastlift.TemporalModel(17, 2, 17, [3, 3, 3], channels=32)
    assert list(fus.state_dict().keys()) == list(ref.state_dict().keys())
    assert "_dropout_seed" not in fus.state_dict()
    fus.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(fus.state_dict(), strict=True)
    one_f = fastlift.TemporalModelOptimized1f(17, 2, 17, [3, 3, 3], channels=32)
    one_f.load_state_dict(fus.state_dict(), strict=True)
    for attr in ("pad", "causal_shift", "filter_widths"):
        assert getattr(fus, attr) == getattr(ref, attr)
    assert fus.receptive_field() == 27 and fus.total_causal_shift() == 0


def test_impl_selection_and_errors(monkeypatch):
    with pytest.raises(ValueError, match="impl: expected one of"):
        fastlift.TemporalModel(5, 2, 4, [3], impl="cuda")
    m = fastlift.TemporalModel(5, 2, 4, [3, 3], channels=8, impl="auto")
    x = torch.randn(1, 9, 5, 2)
    assert not m.uses_kernels(x)  # CPU tensors use the reference math in auto mode
    r = R.TemporalModel(5, 2, 4, [3, 3], channels=8)
    r.load_state_dict(m.state_dict())
    m.eval(), r.eval()
    assert torch.equal(m(x), r(x))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    t = fastlift.TemporalModel(5, 2, 4, [3, 3], channels=8, impl="triton")
    with pytest.raises(ValueError, match="impl='triton'"):
        t(x)


def test_bad_input_errors():
    m = fastlift.TemporalModel(5, 2, 4, [3, 3], channels=8, impl="triton")
    with pytest.raises(ValueError, match="expected 5 joints"):
        m(torch.randn(1, 9, 6, 2))
    with pytest.raises(ValueError, match="shorter than the receptive field of 9"):
        m(torch.randn(1, 8, 5, 2))
    with pytest.raises(ValueError, match="4 dimensions"):
        m(torch.randn(9, 5, 2))
    with pytest.raises(TypeError, match="floating-point"):
        m(torch.zeros(1, 9, 5, 2, dtype=torch.int64))
    one_f = fastlift.TemporalModelOptimized1f(5, 2, 4, [3, 3], channels=8, impl="triton")
    with pytest.raises(ValueError, match="exactly receptive_field=9"):
        one_f(torch.randn(1, 10, 5, 2))
    with pytest.raises(TypeError, match="fp64"):
        m.double()(torch.randn(1, 9, 5, 2, dtype=torch.float64))


# ------------------------------------------------------------------------------------ training
@pytest.mark.interpreter
@pytest.mark.parametrize("kind,kw,frames", [
    ("dilated", {}, 31),
    ("dilated", {"causal": True}, 29),
    ("dilated", {"dense": True}, 28),
    ("1f", {}, 27),
    ("1f", {"causal": True}, 54),
])
def test_training_matches_reference(kind, kw, frames):
    ref, fus = pair(kind, **kw)
    x = torch.randn(3, frames, J_IN, F_IN, generator=torch.Generator().manual_seed(1))
    compare_training(ref, fus, x, steps=2)


@pytest.mark.interpreter
@pytest.mark.parametrize("kind,frames", [("dilated", 30), ("1f", 27)])
def test_training_with_dropout_matches_masked_reference(kind, frames):
    ref, fus = pair(kind, dropout=0.25)
    x = torch.randn(2, frames, J_IN, F_IN, generator=torch.Generator().manual_seed(2))
    compare_training(ref, fus, x, steps=2, p=0.25)


@pytest.mark.interpreter
def test_dropout_reproducible_by_seed_and_advances():
    _, fus = pair("1f", dropout=0.5)
    x = torch.randn(2, 27, J_IN, F_IN)
    fus.train()
    fus.set_dropout_seed(5)
    a = fus(x)
    fus.set_dropout_seed(5)
    b = fus(x)
    assert torch.equal(a, b)
    c = fus(x)  # the seed advanced after the previous step
    assert not torch.equal(b, c)
    # Default: seeds come from torch's generator, so torch.manual_seed reproduces the masks.
    fus.set_dropout_seed(None)
    torch.manual_seed(3)
    d = fus(x)
    e = fus(x)
    torch.manual_seed(3)
    assert torch.equal(fus(x), d)
    assert not torch.equal(d, e)


@pytest.mark.interpreter
def test_eval_mode_outputs_and_gradients():
    ref, fus = pair("dilated", widths=(3, 3))
    ref.eval(), fus.eval()
    x = torch.randn(2, 14, J_IN, F_IN)
    xr, xf = x.double().requires_grad_(), x.clone().requires_grad_()
    yr, yf = ref(xr), fus(xf)
    assert rel_err(yf, yr) < 2e-5
    yr.sum().backward(), yf.sum().backward()
    assert rel_err(xf.grad, xr.grad) < 2e-5
    for (n, pr), (_, pf) in zip(ref.named_parameters(), fus.named_parameters()):
        assert rel_err(pf.grad, pr.grad) < 1e-4, n
    assert int(fus.expand_bn.num_batches_tracked) == 0  # eval mode never touches running stats


@pytest.mark.interpreter
def test_set_bn_momentum_reaches_the_kernels():
    ref, fus = pair("1f", widths=(3, 3))
    ref.set_bn_momentum(0.5)
    fus.set_bn_momentum(0.5)
    x = torch.randn(4, 9, J_IN, F_IN)
    compare_training(ref, fus, x, steps=1)


@pytest.mark.interpreter
def test_half_precision_and_fp16_autocast():
    ref, fus = pair("1f", widths=(3, 3))
    ref.eval()
    x = torch.randn(2, 9, J_IN, F_IN)
    expect = ref(x.double())
    half = copy.deepcopy(fus).half().eval()
    y = half(x.half())
    assert y.dtype == torch.float16
    assert rel_err(y, expect) < 5e-3
    fus.eval()
    with torch.autocast("cpu", dtype=torch.float16):
        y2 = fus(x)
    assert y2.dtype == torch.float16
    assert rel_err(y2, expect) < 5e-3


@pytest.mark.interpreter
@settings(max_examples=6, deadline=None)
@given(widths=st.lists(st.sampled_from([1, 3, 5]), min_size=1, max_size=3), channels=st.integers(8, 24),
       causal=st.booleans(), extra=st.integers(0, 4), batch=st.integers(1, 2))
def test_hypothesis_architectures_eval_and_train(widths, channels, causal, extra, batch):
    # The last layer sees batch*(extra+1) rows. One row: training BatchNorm raises (in the
    # reference too). Two rows: normalised values are +-1, so the BN input gradient
    # g - mean(g) - zhat*mean(g*zhat) is ~eps/var, pure cancellation noise in *any* fp32
    # implementation -- not a meaningful comparison.
    assume(batch * (extra + 1) >= 3)
    ref, fus = pair("dilated", widths=tuple(widths), channels=channels, causal=causal)
    rf = ref.receptive_field()
    x = torch.randn(batch, rf + extra, J_IN, F_IN)
    compare_training(ref, fus, x, steps=1)
    ref.eval(), fus.eval()
    assert rel_err(fus(x), ref(x.double())) < 2e-5


# ------------------------------------------------------------------------------------ folding
@pytest.mark.parametrize("impl", ["reference", pytest.param("triton", marks=pytest.mark.interpreter)])
@pytest.mark.parametrize("kw", [{}, {"causal": True}, {"dense": True}])
def test_fuse_folds_bn_exactly(impl, kw):
    ref, _ = pair("dilated", **kw)
    ref.eval()
    f = fastlift.fuse(ref, dtype=torch.float32, impl=impl)
    x = torch.randn(2, 35, J_IN, F_IN, dtype=torch.float64)
    assert rel_err(f(x), ref(x)) < 2e-6
    seq = x[0]
    whole = R.lift_sequence(ref, seq)
    assert f.lift(seq).shape == (35, J_OUT, 3)
    assert rel_err(f.lift(seq), whole) < 2e-6
    assert rel_err(f.lift(x, batch_frames=8), R.lift_sequence(ref, x)) < 2e-6
    assert rel_err(fastlift.lift_sequence(f, seq), whole) < 2e-6


@pytest.mark.interpreter
def test_fuse_from_1f_model_and_fp16():
    ref1f, _ = pair("1f")
    dil = R.TemporalModel(J_IN, F_IN, J_OUT, [3, 3, 3], channels=24).double()
    dil.load_state_dict(ref1f.state_dict())
    dil.eval()
    x = torch.randn(50, J_IN, F_IN, dtype=torch.float64)
    f16 = fastlift.fuse(ref1f, dtype=torch.float16, impl="triton")
    assert f16.dtype == torch.float16
    assert rel_err(f16.lift(x), R.lift_sequence(dil, x)) < 3e-3


def test_fused_cpu_path_cache_tracks_weights_and_stays_out_of_pickles():
    """The CPU path caches the folded layers between calls; replacing, casting or editing a
    weight in place must invalidate it, and pickles/deep copies must not carry it."""
    import io
    import pickle

    ref, _ = pair("dilated")
    ref.eval()
    f = fastlift.fuse(ref, dtype=torch.float32, impl="reference")
    x = torch.randn(1, 30, J_IN, F_IN)
    y0 = f(x)
    assert f.folded() is f.folded()
    with torch.no_grad():
        f.weights[1].mul_(2.0)
    y1 = f(x)
    assert not torch.allclose(y0, y1)
    with torch.no_grad():
        f.weights[1].div_(2.0)
    torch.testing.assert_close(f(x), y0)
    assert "_folded_cache" in f.__dict__
    assert "_folded_cache" not in copy.deepcopy(f).__dict__
    assert "_folded_cache" not in pickle.loads(pickle.dumps(f)).__dict__
    buf = io.BytesIO()
    torch.save(f, buf)
    buf.seek(0)
    g = torch.load(buf, weights_only=False)
    torch.testing.assert_close(g(x), y0)
    torch.testing.assert_close(f.double()(x.double()), y0, rtol=1e-5, atol=1e-6)  # cast: cache rebuilt


def test_fuse_errors():
    with pytest.raises(TypeError, match="VideoPose3D-style lifter"):
        fastlift.fuse(torch.nn.Linear(3, 3))
    ref, _ = pair("dilated")
    f = fastlift.fuse(ref.float().eval(), impl="reference")
    with pytest.raises(ValueError, match="NaN"):
        f.lift(torch.full((30, J_IN, F_IN), float("nan")))
    with pytest.raises(ValueError, match="expected 5 joints x 2 features"):
        f.lift(torch.randn(30, 6, 2))
    with pytest.raises(ValueError, match="shorter than the receptive field"):
        f(torch.randn(1, 5, J_IN, F_IN))
