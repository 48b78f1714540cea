"""Kernel-level tests: every Triton launcher against its torch twin, and the twins against
independent torch formulations (conv1d / autograd / BatchNorm1d).

Runs under the Triton CPU interpreter (small channel counts, odd sizes); see conftest.py.
"""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from fastlift.kernels._common import dropout_mask_torch, dropout_threshold, fp32_precision
from fastlift.kernels.bn_act import bn_act_launch, bn_act_reference
from fastlift.kernels.bn_stats import bn_finalize_launch, bn_finalize_reference, bn_grad_coef_launch, bn_grad_coef_reference
from fastlift.kernels.tconv_dgrad import tconv_dgrad_launch, tconv_dgrad_reference
from fastlift.kernels.tconv_fwd import conv_out_frames, stats_tile_rows, tconv_fwd_launch, tconv_fwd_reference
from fastlift.kernels.tconv_wgrad import tconv_wgrad_launch, tconv_wgrad_reference
from helpers import rel_err

# Every launcher test runs on each available device: the CPU under the Triton interpreter (CI)
# and CUDA (the GPU tier), where bf16 joins the dtype sweeps. A test body builds its inputs on the
# CPU; run() moves them to the device, and results (and in-place updates) back.
DEVICES = [pytest.param("cpu", marks=pytest.mark.interpreter, id="interp"),
           pytest.param("cuda", marks=pytest.mark.gpu, id="cuda")]
SEED = torch.tensor([1234567], dtype=torch.int64)


def run(device, launcher, fp32="ieee"):
    """``launcher`` called on ``device``: tensor arguments moved there (strides kept, so non-contiguous
    inputs stay non-contiguous), outputs returned on the CPU, in-place updates of arguments (running
    statistics) copied back; fp32 dots in ``fp32`` precision (IEEE: the tolerances below are fp32's)."""

    def call(*args, **kwargs):
        moved = []

        def to_dev(v):
            if isinstance(v, torch.Tensor) and v.device.type != device:
                d = v.to(device)
                moved.append((v, d))
                return d
            return v

        args = [to_dev(v) for v in args]
        kwargs = {k: to_dev(v) for k, v in kwargs.items()}
        with fp32_precision(fp32):
            out = launcher(*args, **kwargs)
        for orig, d in moved:
            orig.copy_(d)
        if isinstance(out, torch.Tensor):
            return out.cpu()
        if isinstance(out, (tuple, list)):
            return type(out)(o.cpu() if isinstance(o, torch.Tensor) else o for o in out)
        return out

    return call


def half_dtypes(device):
    """fp16 everywhere; bf16 only on CUDA (the interpreter has no bf16)."""
    return (torch.float16,) if device == "cpu" else (torch.float16, torch.bfloat16)


def close(a, b, tol=2e-5):
    assert a.shape == b.shape, (a.shape, b.shape)
    if a.numel() == 0:
        return
    scale = b.float().abs().max().clamp_min(1.0)
    err = (a.float() - b.float()).abs().max() / scale
    assert err <= tol, f"max rel err {err:.3e} > {tol}"


def rand_bn(c, gen=None):
    return (torch.rand(c, generator=gen) + 0.5, torch.randn(c, generator=gen) * 0.3)


# ------------------------------------------------------------------------------------ forward
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("taps,dil,stride", [(3, 1, 1), (3, 3, 1), (5, 2, 1), (3, 1, 3), (1, 1, 1), (7, 1, 1)])
def test_fwd_matches_twin_and_conv1d(taps, dil, stride, device):
    g = torch.Generator().manual_seed(taps * 100 + dil * 10 + stride)
    b, c_in, c_out = 2, 19, 37
    t_out = 5
    t_in = (t_out - 1) * stride + (taps - 1) * dil + 1
    x = torch.randn(b, t_in, c_in, generator=g)
    w = torch.randn(taps * c_in, c_out, generator=g)
    bias = torch.randn(c_out, generator=g)
    y, psum, pm2, _ = run(device, tconv_fwd_launch)(x, w, taps=taps, dilation=dil, stride=stride, bias=bias, relu=True,
                                                    stats=True)
    y2, psum2, pm22, _ = tconv_fwd_reference(x, w, taps=taps, dilation=dil, stride=stride, bias=bias, relu=True,
                                             stats=True)
    close(y, y2)
    close(psum, psum2)
    close(pm2, pm22, 1e-4)
    # Independent formulation: torch conv1d in (B, C, T) layout.
    wt = w.reshape(taps, c_in, c_out).permute(2, 1, 0)
    ref = torch.relu(F.conv1d(x.transpose(1, 2).double(), wt.double(), bias.double(), stride=stride,
                              dilation=dil)).transpose(1, 2)
    close(y, ref)


@pytest.mark.parametrize("device", DEVICES)
def test_fwd_stats_combine_to_batch_moments(device):
    x = torch.randn(3, 41, 12)
    w = torch.randn(3 * 12, 20)
    y, psum, pm2, _ = run(device, tconv_fwd_launch)(x, w, taps=3, dilation=2, stats=True)
    m = y.shape[0] * y.shape[1]
    tile = stats_tile_rows(m, 20, 36, x.dtype, torch.device(device))
    mean, invstd, _, _ = bn_finalize_reference(psum, pm2, m, tile, None, None, None, None, None, 0.1, 0.0)
    flat = y.reshape(-1, 20).double()
    close(mean, flat.mean(0))
    close(invstd, flat.var(0, unbiased=False).rsqrt(), 1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_fwd_edge_padding_equals_explicit_padding(device):
    x = torch.randn(2, 9, 10)
    w = torch.randn(3 * 10, 16)
    y, *_ = run(device, tconv_fwd_launch)(x, w, taps=3, dilation=4, edge_left=8, edge_right=3)
    xp = torch.cat([x[:, :1].expand(2, 8, 10), x, x[:, -1:].expand(2, 3, 10)], 1)
    y2, *_ = run(device, tconv_fwd_launch)(xp, w, taps=3, dilation=4)
    close(y, y2, 1e-6)
    assert y.shape[1] == conv_out_frames(9, 3, 4, 1, 8, 3) == 9 + 11 - 8


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["bn_act", "bn_act_res"])
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_fwd_prologue_and_residual_epilogue(mode, p, device):
    g = torch.Generator().manual_seed(7)
    b, t, c_in, c_out = 2, 13, 21, 21
    z = torch.randn(b, t, c_in, generator=g)
    w = torch.randn(c_in, c_out, generator=g)
    sc, sh = rand_bn(c_in, g)
    res = torch.randn(b, 3 * t + 2, c_out, generator=g)
    kw = dict(taps=1, pro_scale=sc, pro_shift=sh, seed=SEED, p=p, salt=11, residual=res, res_row_stride=3, res_offset=2,
              bias=torch.randn(c_out, generator=g), relu=True)
    if mode == "bn_act_res":
        kw.update(pro_residual=torch.randn(b, 2 * t + 1, c_in, generator=g), pres_row_stride=2, pres_offset=1)
    out = run(device, tconv_fwd_launch)(z, w, **kw)
    ref = tconv_fwd_reference(z, w, **kw)
    close(out[0], ref[0])
    # Independent: explicit mask, activation, GEMM, epilogue.
    a = torch.relu(z * sc + sh)
    if p > 0:
        keep = dropout_mask_torch(int(SEED) + 11, z.shape, dropout_threshold(p))
        a = torch.where(keep, a / (1 - p), torch.zeros(()))
    if mode == "bn_act_res":
        a = a + kw["pro_residual"][:, 1::2][:, :t]
    expect = torch.relu(a @ w + kw["bias"]) + res[:, 2::3][:, :t]
    close(out[0], expect)


@pytest.mark.parametrize("device", DEVICES)
def test_centred_prologue_is_accurate_when_mean_dominates(device):
    """BatchNorm over few rows can have |mean| >> std; the centred prologue
    ``relu((z - mean)*scale + beta)`` must stay accurate there (the folded ``z*scale + shift``
    loses ~log10(|mean|/std) digits). Every consumer of the prologue takes ``pro_mean``/``mean``."""
    g = torch.Generator().manual_seed(3)
    b, t, c = 2, 9, 20
    mean = 500.0 + torch.randn(c, generator=g, dtype=torch.float64)
    std = 0.05 + 0.01 * torch.rand(c, generator=g, dtype=torch.float64)
    z64 = mean + std * torch.randn(b, t, c, generator=g, dtype=torch.float64)
    z = z64.float()
    scale, beta = (1.0 / std).float(), 0.3 * torch.randn(c, generator=g)
    m32 = mean.float()
    exact = torch.relu((z.double() - m32.double()) * scale.double() + beta.double())
    w = torch.randn(c, 24, generator=g)
    y = run(device, tconv_fwd_launch)(z, w, taps=1, pro_scale=scale, pro_shift=beta, pro_mean=m32)[0]
    close(y, exact.float() @ w, 2e-6)
    close(y, tconv_fwd_reference(z, w, taps=1, pro_scale=scale, pro_shift=beta, pro_mean=m32)[0], 2e-6)
    close(run(device, bn_act_launch)(z, scale, beta, mean=m32), exact, 2e-6)
    close(bn_act_reference(z, scale, beta, mean=m32), exact, 2e-6)
    # The folded form really is worse here (so the test above is meaningful).
    folded = torch.relu(z * scale + (beta - m32 * scale))
    assert rel_err(folded, exact) > 20 * rel_err(run(device, bn_act_launch)(z, scale, beta, mean=m32), exact)
    gy = torch.randn(b, t, 24, generator=g)
    kw = dict(taps=1, pro_scale=scale, pro_shift=beta, pro_mean=m32, a_p=0.25, a_salt=4, seed=SEED)
    close(run(device, tconv_wgrad_launch)(z, gy, **kw), tconv_wgrad_reference(z, gy, **kw), 1e-5)
    with pytest.raises(ValueError, match="pro_mean"):
        run(device, tconv_fwd_launch)(z, w, taps=1, pro_mean=m32)
    with pytest.raises(ValueError, match="pro_mean"):
        run(device, tconv_wgrad_launch)(z, gy, taps=1, pro_scale=scale, pro_shift=beta, pro_mean=m32[:3])


@pytest.mark.parametrize("device", DEVICES)
def test_fwd_shrink_epilogue_and_store_y_off(device):
    b, t, c = 2, 11, 40
    x = torch.randn(b, t, c)
    w = torch.randn(c, c)
    sw = torch.randn(c, 51)
    bias = torch.randn(c)
    y, _, _, s = run(device, tconv_fwd_launch)(x, w, taps=1, bias=bias, relu=True, shrink_w=sw, store_y=True)
    close(s, y @ sw, 1e-5)
    y2, _, _, s2 = run(device, tconv_fwd_launch)(x, w, taps=1, bias=bias, relu=True, shrink_w=sw, store_y=False)
    assert y2.numel() == 0
    close(s2, s, 1e-6)


HALF_TOL = {torch.float16: 5e-3, torch.bfloat16: 3e-2}


@pytest.mark.parametrize("device", DEVICES)
def test_fwd_half_precision_and_noncontiguous(device):
    x = torch.randn(2, 17, 23).transpose(1, 2)  # (2, 23, 17) with channel stride 23
    assert not x.is_contiguous()
    w = torch.randn(3 * 17, 24)
    ref = tconv_fwd_reference(x.contiguous(), w, taps=3, dilation=2)[0]
    close(run(device, tconv_fwd_launch)(x, w, taps=3, dilation=2)[0], ref)
    for dt in half_dtypes(device):
        xh, wh = x.to(dt), w.to(dt)
        assert not xh.is_contiguous()
        yh = run(device, tconv_fwd_launch)(xh, wh, taps=3, dilation=2)[0]
        assert yh.dtype == dt
        close(yh, tconv_fwd_reference(xh.float(), wh.float(), taps=3, dilation=2)[0], HALF_TOL[dt])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("taps,dil,stride", [(3, 3, 1), (3, 1, 3), (1, 1, 1)])
def test_half_precision_sweep_backward_and_bn_act(taps, dil, stride, device):
    """dgrad, wgrad (with the BN-backward prologue and dropout) and bn_act in fp16 (and bf16 on
    CUDA) against the fp32 twins on the same rounded inputs."""
    g = torch.Generator().manual_seed(21)
    b, c_in, c_out, t_out = 2, 20, 24, 7
    t_in = (t_out - 1) * stride + (taps - 1) * dil + 1
    for dt in half_dtypes(device):
        gy = torch.randn(b, t_out, c_out, generator=g).to(dt)
        z = torch.randn(b, t_out, c_out, generator=g).to(dt)
        w = (torch.randn(taps * c_in, c_out, generator=g) / (taps * c_in) ** 0.5).to(dt)
        x = torch.randn(b, t_in, c_in, generator=g).to(dt)
        gcoef = torch.stack([torch.rand(c_out, generator=g) + .5, torch.randn(c_out, generator=g) * .3,
                             torch.randn(c_out, generator=g) * .2, torch.rand(c_out, generator=g) + .5,
                             torch.randn(c_out, generator=g) * .1, torch.randn(c_out, generator=g) * .1])
        tol = 2 * HALF_TOL[dt]
        gx = run(device, tconv_dgrad_launch)(gy, w, taps=taps, t_in=t_in, dilation=dil, stride=stride)[0]
        want = tconv_dgrad_reference(gy.float(), w.float(), taps=taps, t_in=t_in, dilation=dil, stride=stride)[0]
        close(gx, want, tol)
        kw = dict(taps=taps, dilation=dil, stride=stride, z=z, gcoef=gcoef, g_p=0.25, g_salt=3, seed=SEED)
        dw = run(device, tconv_wgrad_launch)(x, gy, **kw)
        close(dw, tconv_wgrad_reference(x.float(), gy.float(), **{**kw, "z": z.float()}), tol)
        sc, sh = rand_bn(c_out, g)
        a = run(device, bn_act_launch)(z, sc, sh, seed=SEED, p=0.25, salt=5)
        assert a.dtype == dt
        close(a, bn_act_reference(z.float(), sc, sh, seed=SEED, p=0.25, salt=5), tol)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=12, deadline=None)
@given(b=st.integers(1, 3), t_out=st.integers(1, 9), c_in=st.integers(1, 40), c_out=st.integers(1, 40),
       taps=st.sampled_from([1, 3, 5]), dil=st.integers(1, 4), strided=st.booleans())
def test_fwd_hypothesis_shapes(b, t_out, c_in, c_out, taps, dil, strided, device):
    stride = taps if strided else 1
    dil = 1 if strided else dil
    t_in = (t_out - 1) * stride + (taps - 1) * dil + 1
    x = torch.randn(b, t_in, c_in)
    w = torch.randn(taps * c_in, c_out)
    out = run(device, tconv_fwd_launch)(x, w, taps=taps, dilation=dil, stride=stride, stats=True)
    ref = tconv_fwd_reference(x, w, taps=taps, dilation=dil, stride=stride, stats=True)
    assert out[0].shape == (b, t_out, c_out)
    close(out[0], ref[0])
    close(out[1], ref[1])


# ------------------------------------------------------------------------------------ backward
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("taps,dil,stride", [(3, 3, 1), (3, 1, 3), (1, 1, 1), (5, 1, 1)])
def test_dgrad_wgrad_plain_equal_autograd_of_conv1d(taps, dil, stride, device):
    g = torch.Generator().manual_seed(3)
    b, c_in, c_out, t_out = 2, 18, 26, 6
    t_in = (t_out - 1) * stride + (taps - 1) * dil + 1
    x = torch.randn(b, t_in, c_in, generator=g, dtype=torch.float64)
    w = torch.randn(taps * c_in, c_out, generator=g, dtype=torch.float64)
    gy = torch.randn(b, t_out, c_out, generator=g, dtype=torch.float64)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = F.conv1d(xr.transpose(1, 2), wr.reshape(taps, c_in, c_out).permute(2, 1, 0), stride=stride, dilation=dil)
    y.transpose(1, 2).backward(gy)
    gx, _, _ = run(device, tconv_dgrad_launch)(gy.float(), w.float(), taps=taps, t_in=t_in, dilation=dil, stride=stride)
    dw = run(device, tconv_wgrad_launch)(x.float(), gy.float(), taps=taps, dilation=dil, stride=stride)
    close(gx, xr.grad)
    close(dw, wr.grad)
    # The twins agree with autograd too (they are the CPU operator implementations).
    close(tconv_dgrad_reference(gy, w, taps=taps, t_in=t_in, dilation=dil, stride=stride)[0], xr.grad, 1e-12)
    close(tconv_wgrad_reference(x, gy, taps=taps, dilation=dil, stride=stride), wr.grad, 1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("taps,dil,stride", [(3, 3, 1), (3, 1, 3), (1, 1, 1)])
@pytest.mark.parametrize("p", [0.0, 0.25])
def test_dgrad_wgrad_fused_prologue_epilogue_match_twins(taps, dil, stride, p, device):
    g = torch.Generator().manual_seed(11)
    b, c_in, c_out, t_out = 2, 20, 24, 7
    t_in = (t_out - 1) * stride + (taps - 1) * dil + 1
    gy = torch.randn(b, t_out, c_out, generator=g)
    z = torch.randn(b, t_out, c_out, generator=g)
    gcoef = torch.stack([torch.rand(c_out, generator=g) + .5, torch.randn(c_out, generator=g) * .3,
                         torch.randn(c_out, generator=g) * .2, torch.rand(c_out, generator=g) + .5,
                         torch.randn(c_out, generator=g) * .1, torch.randn(c_out, generator=g) * .1])
    w = torch.randn(taps * c_in, c_out, generator=g)
    gres = torch.randn(b, 5, c_in, generator=g)
    zprev = torch.randn(b, t_in, c_in, generator=g)
    ecoef = torch.stack([torch.rand(c_in, generator=g) + .5, torch.randn(c_in, generator=g) * .3,
                         torch.randn(c_in, generator=g) * .1, torch.rand(c_in, generator=g) + .5])
    kw = dict(taps=taps, dilation=dil, stride=stride, t_in=t_in, z=z, gcoef=gcoef, g_p=p, g_salt=3, gres=gres,
              gres_row_stride=2, gres_offset=1, zprev=zprev, ecoef=ecoef, e_p=p, e_salt=5, seed=SEED)
    for a, r in zip(run(device, tconv_dgrad_launch)(gy, w, **kw), tconv_dgrad_reference(gy, w, **kw)):
        close(a, r, 5e-5)
    x = torch.randn(b, t_in, c_in, generator=g)
    kw = dict(taps=taps, dilation=dil, stride=stride, pro_scale=ecoef[0], pro_shift=ecoef[1],
              pro_residual=torch.randn(b, t_in + 3, c_in, generator=g), pres_row_stride=1, pres_offset=3, a_p=p,
              a_salt=9, z=z, gcoef=gcoef, g_p=p, g_salt=3, seed=SEED)
    ref = tconv_wgrad_reference(x, gy, **kw)
    close(run(device, tconv_wgrad_launch)(x, gy, **kw), ref, 5e-5)
    close(run(device, tconv_wgrad_launch)(x, gy, split=3, **kw), ref, 5e-5)


# ------------------------------------------------------------------------------------ BatchNorm
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("momentum", [0.1, 0.003, None])
def test_bn_finalize_matches_batchnorm1d(momentum, device):
    g = torch.Generator().manual_seed(5)
    c, m = 33, 77
    data = torch.randn(m, c, generator=g) * 3 + 1.5
    tile = 16
    n_tiles = (m + tile - 1) // tile
    psum = torch.stack([data[i * tile:(i + 1) * tile].sum(0) for i in range(n_tiles)])
    pm2 = torch.stack([((data[i * tile:(i + 1) * tile] - data[i * tile:(i + 1) * tile].mean(0)) ** 2).sum(0)
                       for i in range(n_tiles)])
    bn = torch.nn.BatchNorm1d(c, momentum=momentum)
    bn.weight.data = torch.rand(c, generator=g) + 0.5
    bn.bias.data = torch.randn(c, generator=g)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    rm, rv, nbt = bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone() + 3
    bn.num_batches_tracked += 3
    y_ref = bn.train()(data)
    mean, invstd, scale, shift = run(device, bn_finalize_launch)(psum, pm2, m, tile, bn.weight.data, bn.bias.data, rm,
                                                                 rv, nbt,
                                                    momentum, bn.eps)
    close(data * scale + shift, y_ref, 1e-5)
    close(rm, bn.running_mean, 1e-6)
    close(rv, bn.running_var, 1e-6)
    assert int(nbt) == int(bn.num_batches_tracked)
    # Twin agrees.
    rm2, rv2 = rm.clone(), rv.clone()
    out2 = bn_finalize_reference(psum, pm2, m, tile, bn.weight.data, bn.bias.data, rm2, rv2, None, 0.5, bn.eps)
    close(out2[0], mean, 1e-6)
    close(out2[1], invstd, 1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("training", [True, False])
def test_bn_grad_coef_matches_twin(training, device):
    g = torch.Generator().manual_seed(5)
    psu, psz = torch.randn(7, 45, generator=g), torch.randn(7, 45, generator=g)
    coefs = [torch.randn(45, generator=g) for _ in range(4)]
    got = run(device, bn_grad_coef_launch)(psu, psz, 201, *coefs, training)
    want = bn_grad_coef_reference(psu, psz, 201, *coefs, training)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    gcoef, dgamma, dbeta = got
    torch.testing.assert_close(dbeta, psu.sum(0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(dgamma, psz.sum(0), rtol=1e-6, atol=1e-6)
    m1 = psu.sum(0) / 201 if training else torch.zeros(45)
    torch.testing.assert_close(gcoef[4], m1, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gcoef[:4], torch.stack(coefs))
    with pytest.raises(ValueError, match="scale: expected fp32 \\[45\\]"):
        run(device, bn_grad_coef_launch)(psu, psz, 201, torch.zeros(3), *coefs[1:], training)


@pytest.mark.parametrize("device", DEVICES)
def test_bn_finalize_rejects_single_row(device):
    psum = torch.zeros(1, 4)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        run(device, bn_finalize_launch)(psum, psum.clone(), 1, 16, None, None, torch.zeros(4), torch.ones(4), None, 0.1,
                                        1e-5)


# ------------------------------------------------------------------------------------ dropout
@pytest.mark.parametrize("device", DEVICES)
def test_bn_act_kernel_matches_twin_and_mask_statistics(device):
    z = torch.randn(4, 37, 45)
    sc, sh = rand_bn(45)
    res = torch.randn(4, 40, 45)
    for p in (0.0, 0.25, 0.6):
        kw = dict(residual=res, res_row_stride=1, res_offset=3, seed=SEED, p=p, salt=17)
        close(run(device, bn_act_launch)(z, sc, sh, **kw), bn_act_reference(z, sc, sh, **kw), 1e-6)
    # Mask statistics: the drop rate of a large mask is p within sampling error, and roughly
    # uniform over channels and frames (no striping from the index hash).
    keep = dropout_mask_torch(987654321, (64, 81, 256), dropout_threshold(0.25))
    rate = 1 - keep.float().mean().item()
    assert abs(rate - 0.25) < 0.005
    per_channel = 1 - keep.float().mean((0, 1))
    assert (per_channel - 0.25).abs().max() < 0.05
    per_frame = 1 - keep.float().mean((0, 2))
    assert (per_frame - 0.25).abs().max() < 0.03


@pytest.mark.parametrize("device", DEVICES)
def test_dropout_deterministic_by_seed_and_salt(device):
    z = torch.randn(2, 17, 30)
    sc, sh = torch.ones(30), torch.full((30,), 5.0)  # all positive before dropout
    a = run(device, bn_act_launch)(z, sc, sh, seed=SEED, p=0.5, salt=1)
    b = run(device, bn_act_launch)(z, sc, sh, seed=SEED.clone(), p=0.5, salt=1)
    assert torch.equal(a, b)
    c = run(device, bn_act_launch)(z, sc, sh, seed=SEED, p=0.5, salt=2)
    d = run(device, bn_act_launch)(z, sc, sh, seed=SEED + 1, p=0.5, salt=1)
    mask_a, mask_c, mask_d = a != 0, c != 0, d != 0
    assert not torch.equal(mask_a, mask_c) and not torch.equal(mask_a, mask_d)
    # Independent masks agree on about half the elements (p = 0.5).
    agree = (mask_a == mask_c).float().mean().item()
    assert 0.4 < agree < 0.6
    # Kept values are scaled by 1/(1-p).
    kept = mask_a
    close(a[kept], 2 * (z * sc + sh)[kept], 1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_dropout_p_zero_is_exact(device):
    z = torch.randn(2, 9, 12)
    sc, sh = rand_bn(12)
    close(run(device, bn_act_launch)(z, sc, sh, seed=SEED, p=0.0), torch.relu(z * sc + sh), 1e-7)


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("device", DEVICES)
def test_launcher_validation_errors(device):
    x = torch.randn(2, 10, 8)
    w = torch.randn(24, 16)
    bn_in = dict(pro_scale=torch.ones(8), pro_shift=torch.zeros(8))
    with pytest.raises(ValueError, match="rows for taps=3"):
        run(device, tconv_fwd_launch)(x, torch.randn(23, 16), taps=3)
    with pytest.raises(ValueError, match="expected \\(batch, frames, channels\\)"):
        run(device, tconv_fwd_launch)(x[0], w, taps=3)
    with pytest.raises(TypeError, match="expected dtype"):
        run(device, tconv_fwd_launch)(x, w.double(), taps=3)
    with pytest.raises(TypeError, match="expected dtype in"):
        run(device, tconv_fwd_launch)(x.double(), w.double(), taps=3)
    with pytest.raises(ValueError, match="fewer than the 21 frames"):
        run(device, tconv_fwd_launch)(x, w, taps=3, dilation=10)
    with pytest.raises(ValueError, match="residual: needs at least"):
        run(device, tconv_fwd_launch)(x, torch.randn(8, 8), taps=1, residual=torch.randn(2, 10, 8), res_offset=4)
    with pytest.raises(ValueError, match="seed"):
        run(device, tconv_fwd_launch)(x, torch.randn(8, 8), taps=1, **bn_in, p=0.5)
    with pytest.raises(ValueError, match="p: expected a dropout probability"):
        run(device, tconv_fwd_launch)(x, torch.randn(8, 8), taps=1, **bn_in, p=1.0,
                         seed=SEED)
    if device == "cpu":
        with pytest.raises(TypeError, match="bfloat16 is not supported by the Triton CPU interpreter"):
            run(device, tconv_fwd_launch)(x.bfloat16(), w.bfloat16(), taps=3)


def test_kernel_device_check_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="need a CUDA tensor"):
        tconv_fwd_launch(torch.randn(1, 5, 4), torch.randn(12, 4), taps=3)
