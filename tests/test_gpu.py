"""GPU tier: full-size fused kernels against the reference, registered-op checks, torch.compile,
torch.export and a short convergence run. Skipped without CUDA (see conftest.py).

Per-dtype tolerances (max abs error relative to the reference output's max magnitude):
fp32 (exact fp32 dot products, TF32 off) 2e-5; fp16 5e-3; bf16 4e-2 (inference); training with
dropout per precision in ``TRAIN_TOL``.
"""
import copy

import pytest
import torch

import fastlift
from fastlift import reference as R

from helpers import masked_reference_forward, randomise_bn, rel_err

pytestmark = pytest.mark.gpu

TOL = {torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 4e-2}


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def full_pair(one_f=False, causal=False, channels=1024, widths=(3, 3, 3, 3, 3)):
    torch.manual_seed(0)
    cls_r = R.TemporalModelOptimized1f if one_f else R.TemporalModel
    cls_f = fastlift.TemporalModelOptimized1f if one_f else fastlift.TemporalModel
    ref = randomise_bn(cls_r(17, 2, 17, list(widths), causal=causal, channels=channels, dropout=0.0)).cuda()
    fus = cls_f(17, 2, 17, list(widths), causal=causal, channels=channels, dropout=0.0, impl="triton").cuda()
    fus.load_state_dict(ref.state_dict())
    return ref, fus


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_full_size_inference_per_dtype(causal, dtype):
    ref, _ = full_pair(causal=causal)
    ref.eval()
    seq = torch.randn(2, 1500, 17, 2, device="cuda")
    expect = R.lift_sequence(ref.double(), seq.double())
    f = fastlift.fuse(ref, dtype=dtype, impl="triton")
    assert rel_err(f.lift(seq), expect) < TOL[dtype]


@pytest.mark.parametrize("one_f", [False, True])
def test_full_size_training_step_matches_reference(one_f):
    ref, fus = full_pair(one_f=one_f)
    ref = ref.double()
    frames = 243 if one_f else 243 + 30
    x = torch.randn(64, frames, 17, 2, device="cuda")
    ref.train(), fus.train()
    xr, xf = x.double().requires_grad_(), x.clone().requires_grad_()
    yr, yf = ref(xr), fus(xf)
    assert rel_err(yf, yr) < 1e-4
    w = torch.randn_like(yr)
    (yr * w).sum().backward()
    (yf * w.float()).sum().backward()
    assert rel_err(xf.grad, xr.grad) < 1e-4
    for (n, pr), (_, pf) in zip(ref.named_parameters(), fus.named_parameters()):
        assert rel_err(pf.grad, pr.grad) < 1e-3, n
    for k, v in ref.state_dict().items():
        if "running" in k:
            assert rel_err(fus.state_dict()[k], v) < 1e-4, k


# Per-precision training tolerances (outputs; gradients 5x): the fused step must be within this of the
# fp64 reference, or within 4x the error of the reference itself run in that precision, whichever
# is larger (cuDNN in TF32 / autocast is the yardstick of what the precision allows).
TRAIN_TOL = {"tf32": 5e-3, "fp16": 1e-2, "bf16": 6e-2}


@pytest.mark.parametrize("precision", ["tf32", "fp16", "bf16"])
def test_training_step_with_dropout_per_precision(precision):
    """A 243f 1f training step at 1,024 channels with dropout 0.25 in TF32, fp16 and bf16 (autocast)
    against the fp64 reference with the kernels' dropout masks: outputs, input and parameter
    gradients, running statistics."""
    import contextlib

    from fastlift.kernels._common import dot_precision, fp32_precision

    ref, fus = full_pair(one_f=True)
    fus.dropout_p = 0.25
    fus.set_dropout_seed(77)
    ref64, ref_lp = copy.deepcopy(ref).double(), ref.float()
    stack = contextlib.ExitStack()
    if precision == "tf32":
        # cuDNN's default for the reference (the fixture restores it); the kernels pinned to TF32 for
        # forward and backward (their "auto" policy is tested with torch's flags elsewhere).
        torch.backends.cudnn.allow_tf32 = True
        stack.enter_context(fp32_precision("tf32"))
        assert dot_precision(torch.float32) == "tf32"
        ctx = contextlib.nullcontext
    else:
        dt = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        ctx = lambda: torch.autocast("cuda", dtype=dt)  # noqa: E731
    tol = TRAIN_TOL[precision]

    def ok(a, b, low, t):
        return rel_err(a, b) < max(t, 4 * rel_err(low, b))

    with stack:  # TF32 for the kernels' forward and backward launches
        x = torch.randn(24, 243, 17, 2, device="cuda")
        xr, xl, xf = (x.double().requires_grad_(), x.clone().requires_grad_(), x.clone().requires_grad_())
        for m in (ref64, ref_lp, fus):
            m.train()
        yr = masked_reference_forward(ref64, xr, 77, 0.25)
        with ctx():
            yl = masked_reference_forward(ref_lp, xl, 77, 0.25)
            yf = fus(xf)
        assert yf.shape == yr.shape and ok(yf, yr, yl, tol), (rel_err(yf, yr), rel_err(yl, yr))
        w = torch.randn_like(yr)
        (yr * w).sum().backward()
        (yl.float() * w.float()).sum().backward()
        (yf.float() * w.float()).sum().backward()
    assert ok(xf.grad, xr.grad, xl.grad, 5 * tol), (rel_err(xf.grad, xr.grad), rel_err(xl.grad, xr.grad))
    for (n, pr), (_, pl), (_, pf) in zip(ref64.named_parameters(), ref_lp.named_parameters(), fus.named_parameters()):
        assert ok(pf.grad, pr.grad, pl.grad, 5 * tol), (n, rel_err(pf.grad, pr.grad), rel_err(pl.grad, pr.grad))
    sr, sl, sf = ref64.state_dict(), ref_lp.state_dict(), fus.state_dict()
    for k in sr:
        if "running" in k:
            assert ok(sf[k], sr[k], sl[k], tol), k


def test_dropout_mask_on_gpu_matches_torch_twin():
    from fastlift.kernels._common import dropout_mask_torch, dropout_threshold
    from fastlift.kernels.bn_act import bn_act_launch

    z = torch.randn(8, 81, 256, device="cuda")
    one, big = torch.ones(256, device="cuda"), torch.full((256,), 10.0, device="cuda")
    seed = torch.tensor([2**40 + 12345], device="cuda")
    y = bn_act_launch(z, one, big, seed=seed, p=0.25, salt=7)
    keep = dropout_mask_torch(2**40 + 12345 + 7, z.shape, dropout_threshold(0.25), device="cuda")
    assert torch.equal(y != 0, keep)


def _op_samples():
    from fastlift.kernels.bn_stats import bn_finalize_launch  # noqa: F401 (registers the op)
    from fastlift.kernels.tconv_dgrad import tconv_dgrad_launch  # noqa: F401
    from fastlift.kernels.tconv_fwd import tconv_fwd_launch  # noqa: F401
    from fastlift.kernels.tconv_wgrad import tconv_wgrad_launch  # noqa: F401
    import fastlift.kernels.bn_act  # noqa: F401

    d = "cuda"
    x = torch.randn(2, 29, 48, device=d)
    w = torch.randn(3 * 48, 64, device=d)
    z = torch.randn(2, 25, 64, device=d)
    seed = torch.tensor([3], device=d)
    sc, sh = torch.rand(48, device=d) + 0.5, torch.randn(48, device=d)
    gcoef = torch.randn(6, 64, device=d)
    ecoef = torch.stack([sc, sh, torch.randn(48, device=d), torch.rand(48, device=d) + 0.5])
    ops = torch.ops.fastlift
    return [
        (ops.tconv_fwd.default, (x, w, 3), dict(dilation=2, stats=True)),
        (ops.tconv_fwd.default, (x, torch.randn(48, 48, device=d), 1),
         dict(pro_scale=sc, pro_shift=sh, pro_mean=torch.randn(48, device=d), seed=seed, p=0.2,
              residual=torch.randn(2, 30, 48, device=d), res_offset=1)),
        (ops.tconv_dgrad.default, (z, w, 3, 29), dict(dilation=2, z=z.clone(), gcoef=gcoef,
                                                       zprev=torch.randn(2, 29, 48, device=d), ecoef=ecoef, seed=seed,
                                                       g_p=0.1, e_p=0.1)),
        (ops.tconv_wgrad.default, (x, z, 3), dict(dilation=2, pro_scale=sc, pro_shift=sh, pro_mean=ecoef[2],
                                                   z=z.clone(), gcoef=gcoef, seed=seed, a_p=0.1)),
        (ops.bn_act.default, (z, torch.rand(64, device=d), torch.randn(64, device=d)),
         dict(mean=torch.randn(64, device=d), seed=seed, p=0.3)),
        (ops.bn_finalize.default, (torch.randn(3, 64, device=d), torch.rand(3, 64, device=d), 40, 16,
                                   torch.ones(64, device=d), torch.zeros(64, device=d), torch.zeros(64, device=d),
                                   torch.ones(64, device=d), torch.zeros(1, dtype=torch.int64, device=d), 0.1, 1e-5), {}),
    ]


@pytest.mark.parametrize("i", range(6))
def test_opcheck_registered_ops(i):
    op, args, kwargs = _op_samples()[i]
    torch.library.opcheck(op, args, kwargs, test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


def test_torch_compile_fullgraph_train_and_eval():
    ref, fus = full_pair(one_f=True, channels=256, widths=(3, 3, 3))
    x = torch.randn(32, 27, 17, 2, device="cuda")
    eager = copy.deepcopy(fus)
    compiled = torch.compile(fus, fullgraph=True)
    fus.set_dropout_seed(1)
    eager.set_dropout_seed(1)
    y_c, y_e = compiled(x), eager(x)
    assert rel_err(y_c, y_e) < 1e-5
    y_c.sum().backward()
    y_e.sum().backward()
    for (n, a), (_, b) in zip(fus.named_parameters(), eager.named_parameters()):
        assert rel_err(a.grad, b.grad) < 1e-4, n
    fus.eval()
    dil = fastlift.TemporalModel(17, 2, 17, [3, 3, 3], channels=256, impl="triton").cuda().eval()
    dil.load_state_dict(fus.state_dict())
    xs = torch.randn(2, 100, 17, 2, device="cuda")
    assert rel_err(torch.compile(dil, fullgraph=True)(xs), dil(xs)) < 1e-5


def test_torch_export_inference_with_dynamic_length():
    ref, _ = full_pair(channels=128, widths=(3, 3, 3))
    f = fastlift.fuse(ref.eval(), dtype=torch.float16, impl="triton")
    x = torch.randn(2, 200, 17, 2, device="cuda")
    t = torch.export.Dim("frames", min=27, max=100000)
    ep = torch.export.export(f, (x,), dynamic_shapes={"x": {1: t}})
    x2 = torch.randn(1, 333, 17, 2, device="cuda")
    assert rel_err(ep.module()(x2), f(x2)) < 1e-3


def test_short_convergence_fused_vs_reference():
    """A few hundred Adam steps on a fixed synthetic mapping: the loss curves of the fused and the
    reference implementation (same init, no dropout) stay together and both converge."""
    torch.manual_seed(0)
    ref = R.TemporalModelOptimized1f(17, 2, 17, [3, 3, 3], channels=256, dropout=0.0).cuda()
    fus = fastlift.TemporalModelOptimized1f(17, 2, 17, [3, 3, 3], channels=256, dropout=0.0, impl="triton").cuda()
    fus.load_state_dict(ref.state_dict())
    proj = torch.randn(34, 51, device="cuda") / 6
    opt_r = torch.optim.Adam(ref.parameters(), lr=1e-3, amsgrad=True)
    opt_f = torch.optim.Adam(fus.parameters(), lr=1e-3, amsgrad=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    curves = ([], [])
    for step in range(300):
        x = torch.randn(256, 27, 17, 2, device="cuda", generator=g)
        target = torch.tanh(x[:, 13].reshape(256, 34) @ proj).reshape(256, 1, 17, 3)
        for model, opt, curve in ((ref, opt_r, curves[0]), (fus, opt_f, curves[1])):
            opt.zero_grad()
            loss = (model(x) - target).norm(dim=-1).mean()
            loss.backward()
            opt.step()
            curve.append(loss.item())
    r, f = torch.tensor(curves[0]), torch.tensor(curves[1])
    assert r[-20:].mean() < 0.5 * r[:20].mean()
    assert f[-20:].mean() < 0.5 * f[:20].mean()
    assert ((r - f).abs() / r).max() < 0.05
