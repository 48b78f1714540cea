"""CPU whole-sequence executor (fastlift.cpu_infer) and precision handling (fastlift.precision).

fp32 must match the reference to the fp32 folding tolerance, on the oneDNN path and on the
public addmm fallback; bf16 must stay within bf16 tolerances of fp32 and return fp32.
"""
from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest
import torch

import fastlift
from fastlift import precision as P
from fastlift import reference as R
from fastlift.cpu_infer import CpuExecutor, onednn_linear_available
from fastlift.fold import fold_lifter

from helpers import make_model, one_thread_fixture, rel_err

one_thread = one_thread_fixture()

J_IN, J_OUT = 5, 4


def model(fw=(3, 3, 3), channels=32, **kw):
    return make_model(list(fw), channels=channels, j_in=J_IN, j_out=J_OUT, dtype=torch.float32, **kw)


def walk(b, t, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, t, J_IN, 2, generator=g) * 0.1).cumsum(1)


ARCHS = [((3, 3, 3), {}), ((3, 3, 3), {"causal": True}), ((3, 3), {"dense": True}), ((1, 3, 5), {}), ((3,), {})]


@pytest.mark.parametrize("fw,kw", ARCHS)
@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("b,t", [(1, 61), (3, 29), (2, 27)])
def test_executor_fp32_matches_reference(fw, kw, onednn, b, t):
    if onednn and not onednn_linear_available(torch.float32):
        pytest.skip("oneDNN linear not available in this torch build")
    ref = model(fw, **kw)
    rf = ref.receptive_field()
    t = max(t, rf)  # T just above (or equal to) the receptive field
    x = walk(b, t)
    ex = CpuExecutor(fold_lifter(ref), torch.float32, use_onednn=onednn)
    assert ex.onednn == onednn
    got = ex(x.reshape(b, t, -1))
    assert got.dtype == torch.float32 and got.shape == (b, t - rf + 1, J_OUT * 3)
    assert rel_err(got.reshape(b, -1, J_OUT, 3), ref(x)) < 2e-6


def test_executor_chunks_long_inputs_exactly(monkeypatch):
    import fastlift.cpu_infer as ci

    ref = model()
    x = walk(2, 90).reshape(2, 90, -1)
    ex = CpuExecutor(fold_lifter(ref))
    whole = ex(x)
    monkeypatch.setattr(ci, "MAX_ROWS", 2 * 7)  # 7 output frames per chunk and sequence, ragged tail
    chunked = ex(x)
    assert chunked.shape == whole.shape == (2, 64, J_OUT * 3)
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)
    assert rel_err(chunked.reshape(2, -1, J_OUT, 3), ref(x.reshape(2, 90, J_IN, 2))) < 2e-6


@pytest.mark.parametrize("onednn", [True, False])
def test_executor_non_contiguous_input(onednn):
    if onednn and not onednn_linear_available(torch.float32):
        pytest.skip("oneDNN linear not available")
    ref = model()
    x = walk(2, 40).transpose(0, 1).contiguous().transpose(0, 1)  # non-contiguous batch stride
    assert not x.is_contiguous()
    ex = CpuExecutor(fold_lifter(ref), use_onednn=onednn)
    assert rel_err(ex(x.reshape(2, 40, -1)).reshape(2, -1, J_OUT, 3), ref(x)) < 2e-6


@pytest.mark.parametrize("fw,kw", ARCHS[:3])
def test_fuse_cpu_fp32_and_its_executor_match_reference(fw, kw):
    # fuse() runs fp32 through run_folded_torch (faster than the executor's fp32 GEMMs on the
    # measured CPU); the executor still serves fp32 when asked (cpu_executor()) and must match.
    ref = model(fw, **kw)
    f = fastlift.fuse(ref)
    x = walk(2, 45)
    want = R.lift_sequence(ref, x)
    assert rel_err(f.lift(x), want) < 2e-6
    assert rel_err(f.lift(x, batch_frames=7), want) < 2e-6
    assert isinstance(f.cpu_executor(), CpuExecutor) and f.cpu_executor() is f.cpu_executor()
    with torch.no_grad():  # the executor on an already padded input == the reference's valid outputs
        got = f.cpu_executor()(x.reshape(x.shape[0], x.shape[1], -1)).reshape(x.shape[0], -1, J_OUT, 3)
        assert rel_err(got, ref.eval()(x)) < 2e-6


@pytest.mark.parametrize("fw,kw", ARCHS[:3])
@pytest.mark.parametrize("onednn", [True, False])
def test_bf16_within_bf16_tolerance_of_fp32(fw, kw, onednn):
    if onednn and not onednn_linear_available(torch.bfloat16):
        pytest.skip("oneDNN bf16 linear not available")
    ref = model(fw, channels=64, **kw)
    x = walk(2, 50)
    want = fastlift.fuse(ref).lift(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # emulated-bf16 warning on CPUs without avx512_bf16
        fb = fastlift.fuse(ref, dtype=torch.bfloat16)
    assert fb.dtype == torch.bfloat16
    fb.__dict__["_cpu_exec_cache"] = (fb.folded(), CpuExecutor(fb.folded(), torch.bfloat16, use_onednn=onednn))
    got = fb.lift(x)
    assert got.dtype == torch.float32  # fp32 output layer
    err = rel_err(got, want)
    assert 0 < err < 1e-2  # bf16 really ran (not fp32), and stayed within bf16 tolerance


def test_executor_cache_follows_weights_and_stays_out_of_pickles():
    ref = model()
    f = fastlift.fuse(ref)
    x = walk(1, 40)
    y0 = f.lift(x)
    ex = f.cpu_executor()
    with torch.no_grad():
        f.weights[2].mul_(2.0)
    assert f.cpu_executor() is not ex
    assert not torch.allclose(f.lift(x), y0)
    with torch.no_grad():
        f.weights[2].div_(2.0)
    torch.testing.assert_close(f.lift(x), y0)
    assert "_cpu_exec_cache" in f.__dict__
    assert "_cpu_exec_cache" not in copy.deepcopy(f).__dict__
    assert "_cpu_exec_cache" not in pickle.loads(pickle.dumps(f)).__dict__
    torch.testing.assert_close(pickle.loads(pickle.dumps(f)).lift(x), y0)


def test_onednn_unavailable_falls_back_to_addmm(monkeypatch):
    import fastlift.cpu_infer as ci

    ref = model()
    x = walk(1, 40)
    want = R.lift_sequence(ref, x)

    def broken(*a, **k):
        raise RuntimeError("no oneDNN here")

    ci.onednn_linear_available.cache_clear()
    try:
        monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", broken, raising=False)
        assert not ci.onednn_linear_available(torch.float32)
        f = fastlift.fuse(ref, dtype=torch.bfloat16)
        assert f.cpu_executor().onednn is False  # the lift below runs the addmm fallback
        assert rel_err(f.lift(x), want) < 1e-2
    finally:
        monkeypatch.undo()
        ci.onednn_linear_available.cache_clear()


def test_executor_bad_input():
    ref = model()
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        CpuExecutor(fold_lifter(ref), torch.float16)
    ex = CpuExecutor(fold_lifter(ref))
    with pytest.raises(ValueError, match=r"expected \(batch, frames, 10\)"):
        ex(torch.randn(1, 40, 7))
    with pytest.raises(ValueError, match="shorter than the receptive field of 27"):
        ex(torch.randn(1, 20, 10))


# ------------------------------------------------------------------------------ precision
def test_parse_precision_lists_valid_names():
    assert P.parse_precision("BF16") == "bf16" and P.parse_precision("bfloat16") == "bf16"
    with pytest.raises(ValueError, match=r"--precision: expected one of fp32, tf32, bf16, fp16, auto, got 'fp8'"):
        P.parse_precision("fp8")
    with pytest.raises(ValueError, match="dtype: expected one of fp32, tf32, bf16, fp16, got 'int8'"):
        fastlift.fuse(model(), dtype="int8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert fastlift.fuse(model(), dtype="bf16").dtype == torch.bfloat16


def test_bf16_request_on_float64_model_names_its_dtype(monkeypatch):
    """A half-precision request for a float64 model is probably a mistake: it says which dtype the
    model has (once), then folds in float64 and casts -- the existing fp64 -> fp16 use of fuse."""
    monkeypatch.setattr(P, "_warned", set())
    m = model().double()
    with pytest.warns(RuntimeWarning, match="bf16 requested, but the model's parameters are torch.float64"):
        f = fastlift.fuse(m, dtype=torch.bfloat16)
    assert f.dtype == torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastlift.fuse(m, dtype=torch.bfloat16)  # once per process
        assert fastlift.fuse(m).dtype == torch.float64  # fp64 stays fp64, no warning


def test_emulated_bf16_warns_once(monkeypatch):
    """Simulate a CPU without avx512_bf16/amx_bf16: bf16 still runs, with one warning."""
    monkeypatch.setattr(P, "cpu_native", lambda dt: dt in (torch.float32, torch.float64))
    monkeypatch.setattr(P, "_warned", set())
    ref = model()
    with pytest.warns(RuntimeWarning, match=r"bf16 on this CPU is emulated \(no avx512_bf16 or amx_bf16\)"):
        f = fastlift.fuse(ref, dtype=torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastlift.fuse(ref, dtype=torch.bfloat16)  # second time: silent
        fastlift.fuse(ref)  # fp32: never warns
    assert f.lift(walk(1, 30)).dtype == torch.float32
    assert P.resolve_precision("auto", "cpu") == "fp32"


def test_emulated_fp16_on_cpu_says_so_in_one_line(monkeypatch):
    monkeypatch.setattr(P, "cpu_native", lambda dt: dt != torch.float16)
    monkeypatch.setattr(P, "_warned", set())
    with pytest.warns(RuntimeWarning) as rec:
        fastlift.fuse(model(), dtype="fp16")
    msgs = [str(r.message) for r in rec]
    assert len(msgs) == 1 and "\n" not in msgs[0] and "fp16 on this CPU is emulated" in msgs[0]


def test_native_detection_and_auto(monkeypatch):
    monkeypatch.setattr(P, "_torch_says_native", lambda dt: False)
    monkeypatch.setattr(P, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16"}))
    assert P.cpu_native(torch.bfloat16) and not P.cpu_native(torch.float16)
    assert P.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(P, "cpu_flags", lambda: frozenset({"avx512f"}))
    assert not P.cpu_native(torch.bfloat16)
    assert P.resolve_precision("auto", "cpu") == "fp32"
    assert P.resolve_precision("FP32", "cpu") == "fp32"
    assert P.cpu_native(torch.float32)


# ------------------------------------------------------------------------------ streaming bf16
@pytest.mark.parametrize("causal", [False, True])
def test_streaming_bf16_equals_whole_sequence_bf16(causal):
    from fastlift import StreamingLifter

    ref = model((3, 3, 3), channels=128, causal=causal)  # 128 channels: the block layers take oneDNN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        eng = StreamingLifter(ref, 2, dtype=torch.bfloat16)
        whole = fastlift.fuse(ref, dtype=torch.bfloat16)
    assert eng.dtype == torch.bfloat16 and all(r.dtype == torch.bfloat16 for r in eng._rings)
    assert all(op.w.dtype == torch.bfloat16 for op in eng._ops)
    assert any(op.onednn for op in eng._ops) == onednn_linear_available(torch.bfloat16)
    seq = walk(1, 40, seed=3)[0]
    got = eng.stream_sequence(seq)
    assert got.dtype == torch.bfloat16
    want_bf16 = whole.lift(seq)
    want_fp32 = R.lift_sequence(ref, seq)
    assert rel_err(got, want_bf16) < 1e-2
    assert 0 < rel_err(got, want_fp32) < 1e-2


def test_streaming_bf16_for_float64_model_names_its_dtype(monkeypatch):
    from fastlift import StreamingLifter

    monkeypatch.setattr(P, "_warned", set())
    with pytest.warns(RuntimeWarning, match="bf16 requested, but the model's parameters are torch.float64"):
        eng = StreamingLifter(model().double(), 1, dtype=torch.bfloat16)
    assert eng.dtype == torch.bfloat16


# ------------------------------------------------------------------------------ accuracy table
def test_precision_accuracy_table_streams_every_sequence_like_whole_sequence():
    from fastlift.bench.precision_accuracy import accuracy_table, format_markdown, stream_all

    ref = model((3, 3), channels=64)
    g = torch.Generator().manual_seed(5)
    x = [walk(1, t, seed=t)[0].numpy() for t in (12, 30, 23)]  # one shorter than the receptive field's delay
    gt = [torch.randn(len(s), J_OUT, 3, generator=g).numpy() * 0.2 for s in x]
    from fastlift import StreamingLifter

    eng = StreamingLifter(ref, 3)
    got = stream_all(eng, x)
    want = torch.cat([R.lift_sequence(ref, torch.from_numpy(s)) for s in x])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="max_streams >= 3"):
        stream_all(StreamingLifter(ref, 2), x)

    tab = accuracy_table(ref, x, gt, ("fp32", "bf16"))
    assert set(tab) == {"reference-fp32", "fastlift-fp32", "fastlift-stream-fp32", "fastlift-bf16",
                        "fastlift-stream-bf16"}
    assert tab["reference-fp32"]["diff_max_mm"] == 0 and tab["reference-fp32"]["mpjpe_delta_mm"] == 0
    assert tab["fastlift-fp32"]["diff_max_mm"] < 1e-3 and tab["fastlift-stream-fp32"]["diff_max_mm"] < 1e-3
    assert 0 < tab["fastlift-bf16"]["diff_mean_mm"] <= tab["fastlift-bf16"]["diff_max_mm"]
    # independent MPJPE of the reference output (root joint zeroed in the target)
    tgt = torch.from_numpy(np.concatenate(gt)).double()
    tgt[:, 0] = 0
    mpjpe = (want.double() - tgt).norm(dim=-1).mean().item() * 1000
    assert tab["reference-fp32"]["mpjpe_mm"] == pytest.approx(mpjpe, rel=1e-6)
    assert "| fastlift-stream-bf16 |" in format_markdown(tab)
