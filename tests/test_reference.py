"""Tests of the pure-PyTorch reference lifter (fastlift.reference).

The reference is the oracle every fast path is compared with, so these tests check it against
facts of the published VideoPose3D model (parameter count, checkpoint layout, receptive field)
and against independent re-implementations written here (frame-aligned dilated convolution,
hand-built residual check, explicit edge padding, torch BatchNorm semantics).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastlift.reference import (
    TemporalModel,
    TemporalModelOptimized1f,
    architecture_summary,
    count_parameters,
    edge_pad,
    flops_per_frame,
    lift_sequence,
    sequence_padding,
    validate_filter_widths,
)

from helpers import randomize

ARCHS = {27: [3, 3, 3], 81: [3, 3, 3, 3], 243: [3, 3, 3, 3, 3]}
PADS = {27: [1, 3, 9], 81: [1, 3, 9, 27], 243: [1, 3, 9, 27, 81]}


# ---------------------------------------------------------------------- helpers
def make(fw, causal=False, channels=8, joints_in=5, features=2, joints_out=4, dense=False, cls=TemporalModel,
         seed=0, dtype=torch.float64):
    kwargs = dict(causal=causal, dropout=0.25, channels=channels)
    if cls is TemporalModel:
        kwargs["dense"] = dense
    torch.manual_seed(seed)
    m = cls(joints_in, features, joints_out, fw, **kwargs)
    return randomize(m, seed).to(dtype).eval()


def rand_input(b, t, j=5, f=2, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, j, f, generator=g, dtype=dtype)


def independent_forward(model: TemporalModel, x: torch.Tensor) -> torch.Tensor:
    """Frame-aligned re-implementation of the dilated model's eval forward.

    Every activation is indexed by absolute input frame. A layer's output at frame ``a`` reads
    its input at ``a + (k - W // 2) * d`` (symmetric) or ``a - (W - 1 - k) * d`` (causal) for
    taps ``k``; the residual of a block is simply the block input *at the same frame*. This
    never uses the reference's slicing, so it checks it independently.
    """
    fw = model.filter_widths
    b, t = x.shape[:2]
    h = {a: x[:, a].reshape(b, -1) for a in range(t)}  # frame -> (B, C)

    def conv_layer(h, weight, width, dilation):
        out = {}
        for a in h:
            if model.causal:
                taps = [a - (width - 1 - k) * dilation for k in range(width)]
            else:
                taps = [a + (k - width // 2) * dilation for k in range(width)]
            if all(s in h for s in taps):
                out[a] = sum(h[s] @ weight[:, :, k].T for k, s in enumerate(taps))
        return out

    def bn_relu(h, bn):
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return {a: torch.relu((v - bn.running_mean) * scale + bn.bias) for a, v in h.items()}

    h = bn_relu(conv_layer(h, model.expand_conv.weight, fw[0], 1), model.expand_bn)
    dilation = fw[0]
    for i in range(1, len(fw)):
        conv = model.layers_conv[2 * (i - 1)]
        if model.dense:
            width = conv.weight.shape[2]
            y = conv_layer(h, conv.weight, width, 1)
        else:
            y = conv_layer(h, conv.weight, fw[i], dilation)
        y = bn_relu(y, model.layers_bn[2 * (i - 1)])
        y = conv_layer(y, model.layers_conv[2 * (i - 1) + 1].weight, 1, 1)
        y = bn_relu(y, model.layers_bn[2 * (i - 1) + 1])
        h = {a: h[a] + v for a, v in y.items()}
        dilation *= fw[i]
    frames = sorted(h)
    out = torch.stack([h[a] @ model.shrink.weight[:, :, 0].T + model.shrink.bias for a in frames], dim=1)
    return out.reshape(b, len(frames), model.num_joints_out, 3), frames


# ---------------------------------------------------------------------- architecture facts
@pytest.mark.parametrize("rf", [27, 81, 243])
@pytest.mark.parametrize("causal", [False, True])
def test_receptive_field_pad_and_shift(rf, causal):
    fw = ARCHS[rf]
    for cls in (TemporalModel, TemporalModelOptimized1f):
        m = cls(17, 2, 17, fw, causal=causal, channels=4)
        assert m.receptive_field() == rf
        assert m.pad == PADS[rf]
        assert m.total_causal_shift() == ((rf - 1) // 2 if causal else 0)
        assert sequence_padding(m) == ((rf - 1, 0) if causal else ((rf - 1) // 2, (rf - 1) // 2))
    dil = TemporalModel(17, 2, 17, fw, causal=causal, channels=4)
    one = TemporalModelOptimized1f(17, 2, 17, fw, causal=causal, channels=4)
    # Per-layer residual shifts (published layout): dilated in frames, 1f in strided steps.
    assert dil.causal_shift == (PADS[rf] if causal else [0] * len(fw))
    assert one.causal_shift == ([1] * len(fw) if causal else [0] * len(fw))
    s = architecture_summary(filter_widths=fw, channels=4, causal=causal)
    assert s["receptive_field"] == rf and s["pad"] == (rf - 1) // 2


@pytest.mark.parametrize("rf", [27, 81, 243])
@pytest.mark.parametrize("causal", [False, True])
def test_output_shapes(rf, causal):
    fw = ARCHS[rf]
    m = make(fw, causal, channels=4, dtype=torch.float32)
    for extra in (0, 1, 6):
        y = m(rand_input(2, rf + extra, dtype=torch.float32))
        assert y.shape == (2, extra + 1, 4, 3)
        assert y.dtype == torch.float32
    one = make(fw, causal, channels=4, cls=TemporalModelOptimized1f, dtype=torch.float32)
    assert one(rand_input(1, rf, dtype=torch.float32)).shape == (1, 1, 4, 3)
    assert one(rand_input(3, 2 * rf, dtype=torch.float32)).shape == (3, 2, 4, 3)


def test_non_contiguous_input():
    m = make([3, 3], causal=True)
    x = rand_input(2, 13)
    xt = x.permute(1, 0, 3, 2).contiguous().permute(1, 0, 3, 2)  # same values, other strides
    assert not xt.is_contiguous()
    torch.testing.assert_close(m(xt), m(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lift_sequence(m, xt[:, ::2]), lift_sequence(m, x[:, ::2].contiguous()),
                               rtol=1e-12, atol=1e-12)


def test_published_243f_parameter_count_flops_and_checkpoint_layout():
    m = TemporalModel(17, 2, 17, [3, 3, 3, 3, 3], causal=False, dropout=0.25, channels=1024)
    assert count_parameters(m) == 16_952_371
    assert flops_per_frame(17, 2, 17, [3, 3, 3, 3, 3], channels=1024) == 33_867_776
    s = architecture_summary()
    assert s["parameters"] == 16_952_371 and s["flops_per_frame"] == 33_867_776
    assert s["receptive_field"] == 243 and s["weight_bytes_fp32"] == 4 * 16_952_371

    expected = {"expand_conv.weight": (1024, 34, 3)}
    bn_shapes = lambda p: {f"{p}.weight": (1024,), f"{p}.bias": (1024,), f"{p}.running_mean": (1024,),
                           f"{p}.running_var": (1024,), f"{p}.num_batches_tracked": ()}
    expected.update(bn_shapes("expand_bn"))
    for i in range(8):
        expected[f"layers_conv.{i}.weight"] = (1024, 1024, 3 if i % 2 == 0 else 1)
        expected.update(bn_shapes(f"layers_bn.{i}"))
    expected["shrink.weight"] = (51, 1024, 1)
    expected["shrink.bias"] = (51,)
    sd = m.state_dict()
    assert set(sd) == set(expected), set(sd) ^ set(expected)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    assert sd["expand_bn.num_batches_tracked"].dtype == torch.long
    # Dilations of the published model.
    assert [c.dilation[0] for c in m.layers_conv[0::2]] == [3, 9, 27, 81]
    assert all(c.dilation[0] == 1 and c.kernel_size[0] == 1 for c in m.layers_conv[1::2])
    # The 1f model has exactly the same checkpoint layout.
    one = TemporalModelOptimized1f(17, 2, 17, [3, 3, 3, 3, 3], channels=1024)
    assert {k: tuple(v.shape) for k, v in one.state_dict().items()} == expected
    assert [c.stride[0] for c in one.layers_conv[0::2]] == [3, 3, 3, 3] and one.expand_conv.stride[0] == 3


@pytest.mark.parametrize("fw,dense", [([3, 3, 3], False), ([3, 5], False), ([5, 3, 1, 3], False),
                                      ([3, 3, 3], True), ([3, 5, 3], True), ([1, 3], False)])
def test_cost_model_matches_built_models(fw, dense):
    # Independent counts from the built module: parameters and 2 * (sum of conv weight sizes).
    m = TemporalModel(7, 3, 5, fw, channels=12, dense=dense)
    s = architecture_summary(7, 3, 5, fw, channels=12, dense=dense)
    assert s["parameters"] == count_parameters(m)
    conv_macs = sum(mod.weight.numel() for mod in m.modules() if isinstance(mod, torch.nn.Conv1d))
    assert flops_per_frame(7, 3, 5, fw, channels=12, dense=dense) == 2 * conv_macs
    assert s["receptive_field"] == m.receptive_field() == math.prod(fw)
    bn = sum(mod.running_mean.numel() + mod.running_var.numel() for mod in m.modules()
             if isinstance(mod, torch.nn.BatchNorm1d))
    assert s["bn_buffer_bytes_fp32"] == 4 * bn


def test_window_recompute_flops_matches_1f_model():
    # FLOPs of the strided model on one window = 2 * sum over convs of (outputs * weight size).
    fw = [3, 5, 3]
    one = TemporalModelOptimized1f(7, 2, 6, fw, channels=8)
    rows = math.prod(fw)
    macs = 0
    for conv in [one.expand_conv, *one.layers_conv, one.shrink]:
        rows = rows // conv.stride[0] if conv.kernel_size[0] > 1 else rows
        macs += rows * conv.weight.numel()
    assert architecture_summary(7, 2, 6, fw, channels=8)["window_recompute_flops_per_frame"] == 2 * macs


@pytest.mark.parametrize("fw,kernels", [([3, 3, 3], [7, 19]), ([3, 3, 3, 3, 3], [7, 19, 55, 163]),
                                        ([5, 3], [11]), ([3, 5, 3], [13, 31])])
def test_dense_kernel_sizes(fw, kernels):
    m = TemporalModel(17, 2, 17, fw, channels=4, dense=True)
    assert [c.kernel_size[0] for c in m.layers_conv[0::2]] == kernels
    assert all(c.dilation[0] == 1 for c in m.layers_conv)
    assert m.receptive_field() == math.prod(fw)
    assert m.pad == TemporalModel(17, 2, 17, fw, channels=4).pad


@pytest.mark.parametrize("causal", [False, True])
def test_dense_with_dilated_taps_equals_dilated(causal):
    # A dense model whose wide kernels are zero except at the dilated taps computes the dilated model.
    fw = [3, 3, 3]
    dil = make(fw, causal, seed=3)
    dense = make(fw, causal, dense=True, seed=4)
    sd = dil.state_dict()
    dense_sd = {}
    for k, v in sd.items():
        dense_sd[k] = v
    d = fw[0]
    for i in range(1, len(fw)):
        w = sd[f"layers_conv.{2 * (i - 1)}.weight"]
        wide = torch.zeros(w.shape[0], w.shape[1], (fw[i] - 1) * d + 1, dtype=w.dtype)
        wide[:, :, ::d] = w
        dense_sd[f"layers_conv.{2 * (i - 1)}.weight"] = wide
        d *= fw[i]
    dense.load_state_dict(dense_sd, strict=True)
    x = rand_input(2, 40)
    torch.testing.assert_close(dense(x), dil(x), rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------- residual slicing
@pytest.mark.parametrize("fw", [[3, 3], [3, 3, 3], [5, 3], [3, 1, 5]])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dense", [False, True])
def test_forward_matches_frame_aligned_reimplementation(fw, causal, dense):
    m = make(fw, causal, channels=6, dense=dense, seed=11)
    t = m.receptive_field() + 4
    x = rand_input(2, t, seed=12)
    expected, frames = independent_forward(m, x)
    rf = m.receptive_field()
    pad = (rf - 1) // 2
    # Output j is centred on input frame j + pad (symmetric) or ends at frame j + 2 pad (causal).
    assert frames == (list(range(2 * pad, t)) if causal else list(range(pad, t - pad)))
    with torch.no_grad():
        torch.testing.assert_close(m(x), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_residual_slicing_hand_built(causal):
    """Tiny model (1 input channel, 4 hidden) whose blocks reduce to the residual path.

    The expand conv copies one tap of the input; every block conv is zero, so each block returns
    its residual; BN is identity up to eps. The output is therefore the input at the frame the
    residual slicing selects: the window centre (symmetric) or the newest frame (causal).
    """
    fw = [3, 3, 3]
    m = TemporalModel(1, 1, 1, fw, causal=causal, dropout=0.0, channels=4).double().eval()
    tap = 2 if causal else 1  # newest / centre tap of the expand conv's 3-frame window
    with torch.no_grad():
        for conv in m.layers_conv:
            conv.weight.zero_()
        m.expand_conv.weight.zero_()
        m.expand_conv.weight[0, 0, tap] = 1.0
        m.shrink.weight.zero_()
        m.shrink.weight[:, 0, 0] = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
        m.shrink.bias.copy_(torch.tensor([0.0, 0.5, 0.0], dtype=torch.float64))
    t = 40
    ramp = torch.arange(1, t + 1, dtype=torch.float64).reshape(1, t, 1, 1)  # positive: survives ReLU
    y = m(ramp)
    assert y.shape == (1, t - 26, 1, 3)
    s = 1.0 / math.sqrt(1.0 + m.expand_bn.eps)  # eval BN with default stats
    frame = torch.arange(t - 26, dtype=torch.float64) + (26 if causal else 13)  # selected frame
    value = (frame + 1) * s
    expected = torch.stack([value, 2 * value + 0.5, -value], dim=-1).reshape(1, t - 26, 1, 3)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)

    # Same in the strided 1f model on one window.
    one = TemporalModelOptimized1f(1, 1, 1, fw, causal=causal, dropout=0.0, channels=4).double().eval()
    one.load_state_dict(m.state_dict())
    torch.testing.assert_close(one(ramp[:, :27]), expected[:, :1], rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------- 1f <-> dilated weight sharing
@pytest.mark.parametrize("rf", [27, 81])
@pytest.mark.parametrize("causal", [False, True])
def test_1f_and_dilated_share_weights(rf, causal):
    fw = ARCHS[rf]
    dil = make(fw, causal, seed=5)
    one = make(fw, causal, cls=TemporalModelOptimized1f, seed=6)
    x = rand_input(3, rf, seed=7)
    assert not torch.allclose(dil(x), one(x))  # different random weights: the check below is not trivial
    one.load_state_dict(dil.state_dict(), strict=True)
    torch.testing.assert_close(one(x), dil(x), rtol=1e-10, atol=1e-10)
    # And the other way round.
    one2 = make(fw, causal, cls=TemporalModelOptimized1f, seed=8)
    dil.load_state_dict(one2.state_dict(), strict=True)
    torch.testing.assert_close(dil(x), one2(x), rtol=1e-10, atol=1e-10)

    # k disjoint windows in the 1f model == the dilated model on each window.
    k = 3
    xs = rand_input(2, k * rf, seed=9)
    y1 = one2(xs)
    assert y1.shape == (2, k, 4, 3)
    for w in range(k):
        torch.testing.assert_close(y1[:, w:w + 1], dil(xs[:, w * rf:(w + 1) * rf]), rtol=1e-10, atol=1e-10)
    # ... which are every rf-th output of the dilated model on the whole input.
    torch.testing.assert_close(y1, dil(xs)[:, ::rf], rtol=1e-10, atol=1e-10)


def test_1f_and_dilated_share_weights_243_float32():
    fw = ARCHS[243]
    dil = make(fw, True, channels=8, seed=1, dtype=torch.float32)
    one = TemporalModelOptimized1f(5, 2, 4, fw, causal=True, channels=8).eval()
    one.load_state_dict(dil.state_dict(), strict=True)
    x = rand_input(2, 243, seed=2, dtype=torch.float32)
    torch.testing.assert_close(one(x), dil(x), rtol=1e-5, atol=1e-5)


def test_dense_state_dict_does_not_load_into_1f():
    dense = make([3, 3], dense=True)
    one = make([3, 3], cls=TemporalModelOptimized1f)
    with pytest.raises(RuntimeError, match="size mismatch"):
        one.load_state_dict(dense.state_dict(), strict=True)


# ---------------------------------------------------------------------- lift_sequence / edge_pad
def explicit_pad(x, left, right):
    first = x[:, :1].repeat(1, left, 1, 1)
    last = x[:, -1:].repeat(1, right, 1, 1)
    return torch.cat([first, x, last], dim=1)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("t", [1, 5, 27, 64])
def test_lift_sequence_equals_explicitly_padded_model(causal, t):
    m = make([3, 3, 3], causal, seed=21)
    x = rand_input(2, t, seed=22)
    y = lift_sequence(m, x)
    assert y.shape == (2, t, 4, 3)
    pad = 13
    xp = explicit_pad(x, 2 * pad, 0) if causal else explicit_pad(x, pad, pad)
    with torch.no_grad():
        torch.testing.assert_close(y, m(xp), rtol=0, atol=0)
    # Unbatched input and numpy input.
    y0 = lift_sequence(m, x[0])
    assert y0.shape == (t, 4, 3)
    torch.testing.assert_close(y0, y[0], rtol=1e-12, atol=1e-12)
    yn = lift_sequence(m, x[1].numpy().astype(np.float32))
    assert yn.dtype == torch.float64 and yn.shape == (t, 4, 3)
    torch.testing.assert_close(yn, y[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("batch_frames", [1, 7, 30, 52, 53, 1000])
def test_lift_sequence_chunked_equals_unchunked(causal, batch_frames):
    m = make([3, 3, 3], causal, seed=23)
    x = rand_input(2, 53, seed=24)
    full = lift_sequence(m, x)
    chunked = lift_sequence(m, x, batch_frames=batch_frames)
    assert chunked.shape == full.shape == (2, 53, 4, 3)
    torch.testing.assert_close(chunked, full, rtol=1e-12, atol=1e-12)


def test_lift_sequence_causality():
    t, cut = 60, 30
    x = rand_input(1, t, seed=25)
    x2 = x.clone()
    x2[:, cut + 1:] += torch.randn_like(x2[:, cut + 1:])
    causal = make([3, 3, 3], True, seed=26)
    a, b = lift_sequence(causal, x), lift_sequence(causal, x2)
    torch.testing.assert_close(a[:, :cut + 1], b[:, :cut + 1], rtol=0, atol=0)
    assert (a[:, cut + 1:] - b[:, cut + 1:]).abs().amax(dim=(2, 3)).min() > 0
    # The symmetric model sees pad future frames, so the same change reaches back pad frames.
    sym = make([3, 3, 3], False, seed=26)
    a, b = lift_sequence(sym, x), lift_sequence(sym, x2)
    torch.testing.assert_close(a[:, :cut + 1 - 13], b[:, :cut + 1 - 13], rtol=0, atol=0)
    assert not torch.allclose(a[:, cut + 1 - 13:cut + 1], b[:, cut + 1 - 13:cut + 1])


def test_lift_sequence_uses_model_dtype_and_rejects_1f():
    m = make([3, 3], dtype=torch.float32)
    y = lift_sequence(m, rand_input(1, 10, dtype=torch.float64))
    assert y.dtype == torch.float32 and y.shape == (1, 10, 4, 3)
    with pytest.raises(TypeError, match="dilated TemporalModel"):
        lift_sequence(make([3, 3], cls=TemporalModelOptimized1f), rand_input(1, 10))


def test_edge_pad():
    x = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    y = edge_pad(x, 2, 3)
    assert y.shape == (2, 9, 3)
    torch.testing.assert_close(y[:, :3], x[:, :1].expand(2, 3, 3))
    torch.testing.assert_close(y[:, 2:6], x)
    torch.testing.assert_close(y[:, 5:], x[:, -1:].expand(2, 4, 3))
    z = edge_pad(x, 0, 0)
    assert torch.equal(z, x) and z.data_ptr() != x.data_ptr()
    x4 = rand_input(1, 3)
    torch.testing.assert_close(edge_pad(x4, 1, 0), explicit_pad(x4, 1, 0))
    with pytest.raises(ValueError, match=">= 0"):
        edge_pad(x, -1, 0)
    with pytest.raises(ValueError, match="at least one frame"):
        edge_pad(torch.zeros(2, 0, 3), 1, 1)
    with pytest.raises(ValueError, match="batch, frames"):
        edge_pad(torch.zeros(5), 1, 1)


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize("fw,fragment", [([3, 2, 3], "only odd filter widths"), ([0], "only odd"),
                                         ([-3], "only odd"), ([], "at least one"), ("333", "sequence of odd"),
                                         ([3, 3.0], "expected an odd integer"), ([True], "odd integer"),
                                         (3, "sequence of odd")])
def test_bad_filter_widths(fw, fragment):
    with pytest.raises(ValueError, match=fragment):
        validate_filter_widths(fw)
    with pytest.raises(ValueError, match=fragment):
        TemporalModel(17, 2, 17, fw, channels=4)
    with pytest.raises(ValueError, match=fragment):
        flops_per_frame(17, 2, 17, fw)


@pytest.mark.parametrize("kwargs,fragment", [(dict(channels=0), "channels"), (dict(channels=-4), "channels"),
                                             (dict(num_joints_in=0), "num_joints_in"),
                                             (dict(in_features=0), "in_features"),
                                             (dict(num_joints_out=-1), "num_joints_out")])
def test_cost_model_rejects_non_positive_sizes(kwargs, fragment):
    args = dict(num_joints_in=17, in_features=2, num_joints_out=17, filter_widths=[3, 3], channels=8)
    args.update(kwargs)
    with pytest.raises(ValueError, match=fragment):
        flops_per_frame(**args)
    with pytest.raises(ValueError, match=fragment):
        architecture_summary(**args)


def test_filter_widths_accept_numpy_ints():
    assert validate_filter_widths(np.array([3, 5])) == [3, 5]
    assert validate_filter_widths((1, 3)) == [1, 3]


@pytest.mark.parametrize("kwargs,fragment", [(dict(channels=0), "channels"), (dict(dropout=1.0), "dropout"),
                                             (dict(dropout=-0.1), "dropout"), (dict(num_joints_in=0), "num_joints_in")])
def test_bad_constructor_args(kwargs, fragment):
    args = dict(num_joints_in=17, in_features=2, num_joints_out=17, filter_widths=[3, 3], channels=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=fragment):
        TemporalModel(**args)


def test_forward_validation_errors():
    m = make([3, 3, 3], channels=4, dtype=torch.float32)  # 5 joints, 2 features, RF 27
    with pytest.raises(ValueError, match="expected 5 joints"):
        m(torch.zeros(1, 30, 17, 2))
    with pytest.raises(ValueError, match="expected 2 features per joint"):
        m(torch.zeros(1, 30, 5, 3))
    with pytest.raises(ValueError, match="expected 4 dimensions"):
        m(torch.zeros(30, 5, 2))
    with pytest.raises(ValueError, match="receptive field of 27 frames"):
        m(torch.zeros(1, 26, 5, 2))
    with pytest.raises(TypeError, match="floating-point"):
        m(torch.zeros(1, 30, 5, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        m(np.zeros((1, 30, 5, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="batch dimension is empty"):
        m(torch.zeros(0, 30, 5, 2))
    one = make([3, 3, 3], channels=4, cls=TemporalModelOptimized1f, dtype=torch.float32)
    with pytest.raises(ValueError, match="receptive_field=27"):
        one(torch.zeros(1, 28, 5, 2))
    with pytest.raises(ValueError, match="receptive field of 27"):
        one(torch.zeros(1, 20, 5, 2))


def test_lift_sequence_validation_errors():
    m = make([3, 3], channels=4)
    x = rand_input(1, 12)
    bad = x.clone()
    bad[0, 4, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        lift_sequence(m, bad)
    bad[0, 4, 1, 0] = float("inf")
    with pytest.raises(ValueError, match="infinite"):
        lift_sequence(m, bad)
    with pytest.raises(ValueError, match="frames, joints, features"):
        lift_sequence(m, torch.zeros(12, 10))
    with pytest.raises(ValueError, match="no frames"):
        lift_sequence(m, torch.zeros(1, 0, 5, 2))
    with pytest.raises(ValueError, match="batch_frames"):
        lift_sequence(m, x, batch_frames=0)
    with pytest.raises(ValueError, match="expected 5 joints"):
        lift_sequence(m, torch.zeros(12, 4, 2))


# ---------------------------------------------------------------------- BatchNorm handling
def bns(model):
    return [mod for mod in model.modules() if isinstance(mod, torch.nn.BatchNorm1d)]


@pytest.mark.parametrize("cls", [TemporalModel, TemporalModelOptimized1f])
def test_set_bn_momentum(cls):
    m = cls(5, 2, 4, [3, 3, 3], channels=4)
    assert len(bns(m)) == 5 and all(bn.momentum == 0.1 for bn in bns(m))
    m.set_bn_momentum(0.0123)
    assert all(bn.momentum == 0.0123 for bn in bns(m))


@pytest.mark.parametrize("cls", [TemporalModel, TemporalModelOptimized1f])
def test_training_mode_updates_running_stats_like_torch_bn(cls):
    torch.manual_seed(0)
    m = cls(5, 2, 4, [3, 3], channels=6, dropout=0.0).double()
    randomize(m, seed=31)
    m.set_bn_momentum(0.3)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = rand_input(4, 9, seed=32)
    m.train()
    m(x)
    after = m.state_dict()
    for name, bn in m.named_modules():
        if isinstance(bn, torch.nn.BatchNorm1d):
            assert after[f"{name}.num_batches_tracked"] == before[f"{name}.num_batches_tracked"] + 1
            assert not torch.allclose(after[f"{name}.running_mean"], before[f"{name}.running_mean"])
            assert not torch.allclose(after[f"{name}.running_var"], before[f"{name}.running_var"])
    # expand_bn statistics, computed independently from the expand conv output.
    h = F.conv1d(x.reshape(4, 9, 10).permute(0, 2, 1), m.expand_conv.weight, stride=m.expand_conv.stride)
    mean = h.mean(dim=(0, 2))
    var = h.var(dim=(0, 2), unbiased=True)
    torch.testing.assert_close(after["expand_bn.running_mean"], 0.7 * before["expand_bn.running_mean"] + 0.3 * mean)
    torch.testing.assert_close(after["expand_bn.running_var"], 0.7 * before["expand_bn.running_var"] + 0.3 * var)
    # Eval mode leaves the statistics alone.
    m.eval()
    snapshot = {k: v.clone() for k, v in m.state_dict().items()}
    m(x)
    for k, v in m.state_dict().items():
        assert torch.equal(v, snapshot[k]), k


def test_dropout_active_in_training_only():
    m = make([3, 3], channels=16, dtype=torch.float32)
    assert m.dropout_p == 0.25
    x = rand_input(2, 12, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(m(x), m(x))
        m.train()
        torch.manual_seed(1)
        a = m(x)
        torch.manual_seed(2)
        b = m(x)
    assert not torch.allclose(a, b)


# ---------------------------------------------------------------------- property tests
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fw=st.lists(st.sampled_from([1, 3, 5]), min_size=1, max_size=3), channels=st.integers(4, 16),
       extra=st.integers(0, 6), causal=st.booleans(), batch=st.integers(1, 2), seed=st.integers(0, 2**16))
def test_property_output_length_and_1f_agreement(fw, channels, extra, causal, batch, seed):
    dil = make(fw, causal, channels=channels, joints_in=3, joints_out=2, seed=seed)
    rf = dil.receptive_field()
    assert rf == math.prod(fw)
    x = rand_input(batch, rf + extra, j=3, seed=seed + 1)
    with torch.no_grad():
        y = dil(x)
        assert y.shape == (batch, extra + 1, 2, 3)
        one = TemporalModelOptimized1f(3, 2, 2, fw, causal=causal, channels=channels).double().eval()
        one.load_state_dict(dil.state_dict(), strict=True)
        torch.testing.assert_close(one(x[:, :rf]), y[:, :1], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(one(x[:, extra:extra + rf]), y[:, extra:extra + 1], rtol=1e-9, atol=1e-9)
