"""fp32 precision policy of the kernels: TF32 like cuDNN by default, IEEE when TF32 is off, tf32x3 on
request; reading torch's settings never raises; per-precision tolerances against an fp64 reference.

On CPU the kernels run under the Triton interpreter, which computes every fp32 ``tl.dot`` exactly
(numpy), so the tolerance table is exercised with real TF32 numerics only on a GPU (same test);
on CPU it checks that each precision's path runs and meets its bound.
"""
import contextlib
import types

import pytest
import torch

import fastlift
from fastlift.kernels import _common
from fastlift.reference import TemporalModel
from helpers import randomise_bn, rel_err

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"


@pytest.fixture
def torch_precision_state():
    """Restore every TF32 setting this module touches (legacy and new APIs)."""
    new = (torch.backends.fp32_precision, torch.backends.cudnn.fp32_precision,
           torch.backends.cudnn.conv.fp32_precision, torch.backends.cudnn.rnn.fp32_precision,
           torch.backends.cuda.matmul.fp32_precision)
    yield
    (torch.backends.fp32_precision, torch.backends.cudnn.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
     torch.backends.cudnn.rnn.fp32_precision, torch.backends.cuda.matmul.fp32_precision) = new
    _common.set_fp32_precision("auto")


def test_default_follows_cudnn_tf32(torch_precision_state):
    assert torch.backends.cudnn.allow_tf32  # torch's default, the reference's convolutions use TF32
    assert _common.torch_conv_fp32_precision() == "tf32"
    assert _common.dot_precision(torch.float32) == "tf32"
    assert _common.dot_precision(torch.bfloat16) == _common.dot_precision(torch.float16) == "tf32"


def test_legacy_switch_turns_tf32_off(torch_precision_state):
    torch.backends.cudnn.allow_tf32 = False
    assert _common.dot_precision(torch.float32) == "ieee"
    torch.backends.cudnn.allow_tf32 = True
    assert _common.dot_precision(torch.float32) == "tf32"


def test_new_api_and_mixed_apis_never_raise(torch_precision_state):
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    with pytest.raises(RuntimeError):  # torch itself refuses the legacy getter in this state
        torch.backends.cudnn.allow_tf32
    assert _common.dot_precision(torch.float32) == "ieee"
    torch.backends.cudnn.conv.fp32_precision = "none"  # inherit: cudnn -> global
    torch.backends.cudnn.fp32_precision = "tf32"
    assert _common.dot_precision(torch.float32) == "tf32"
    torch.backends.cudnn.fp32_precision = "none"
    torch.backends.fp32_precision = "ieee"
    assert _common.dot_precision(torch.float32) == "ieee"
    # torch.backends.cuda.matmul settings do not change convolutions (the reference's convs use cuDNN).
    torch.backends.fp32_precision = "none"
    torch.backends.cudnn.conv.fp32_precision = "tf32"
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    assert _common.dot_precision(torch.float32) == "tf32"


def test_unreadable_settings_fall_back_to_cudnn_default(monkeypatch):
    class Raises:
        def __getattr__(self, name):
            raise RuntimeError("settings refuse to be read")

    monkeypatch.setattr(torch.backends, "cudnn", Raises())
    assert _common.torch_conv_fp32_precision() == "tf32"
    monkeypatch.setattr(torch.backends, "cudnn", types.SimpleNamespace(allow_tf32=False))
    assert _common.torch_conv_fp32_precision() == "ieee"


def test_explicit_modes(torch_precision_state):
    for mode in ("ieee", "tf32", "tf32x3"):
        with _common.fp32_precision(mode):
            assert _common.get_fp32_precision() == mode
            assert _common.dot_precision(torch.float32) == mode
            assert _common.dot_precision(torch.bfloat16) == "tf32"
    assert _common.get_fp32_precision() == "auto"
    with pytest.raises(ValueError, match="mode: expected one of .*got 'fp64'"):
        _common.set_fp32_precision("fp64")
    assert _common.get_fp32_precision() == "auto"


# ------------------------------------------------------------------------------------ tolerances
# Max |fused - fp64 reference| / max |reference| of the whole-sequence lifter (BN folded) and of a
# training forward. TF32 keeps 10 mantissa bits (2^-11 relative per input rounding); tf32x3
# recovers ~fp32 accuracy; bf16 has 8 bits, fp16 11, both accumulate in fp32.
TOLERANCE = {"ieee": 2e-5, "tf32x3": 5e-5, "tf32": 5e-3, "fp16": 5e-3, "bf16": 4e-2}


def _model(channels):
    torch.manual_seed(0)
    return randomise_bn(TemporalModel(17, 2, 17, [3, 3, 3], channels=channels, dropout=0.0)).eval()


@pytest.mark.parametrize("precision", list(TOLERANCE))
def test_precision_tolerance_table_vs_fp64_reference(precision, torch_precision_state):
    if precision == "bf16" and not HAS_CUDA:
        pytest.skip("bf16 is not supported by the Triton CPU interpreter")
    if not HAS_CUDA and not _common.interpreter_active():
        pytest.skip("needs CUDA or TRITON_INTERPRET=1")
    channels = 256 if HAS_CUDA else 32
    ref = _model(channels)
    x = torch.randn(2, 40, 17, 2).cumsum(1) * 0.1
    with torch.no_grad():
        expected = ref.double()(x.double())
    ref = ref.float()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    mode = precision if dtype == torch.float32 else "auto"
    with _common.fp32_precision(mode):
        fused = fastlift.fuse(ref, dtype=dtype, device=DEVICE, impl="triton")
        with torch.no_grad():
            got = fused(x.to(DEVICE)).double().cpu()
        # Training forward (eval-mode BN: the running statistics, so the reference is exact).
        train = fastlift.TemporalModel(17, 2, 17, [3, 3, 3], channels=channels, dropout=0.0, impl="triton")
        train.load_state_dict(ref.state_dict())
        train = train.to(DEVICE).eval()
        ctx = torch.autocast(DEVICE, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
        with torch.no_grad(), ctx:
            got_train = train(x.to(DEVICE)).double().cpu()
    tol = TOLERANCE[precision]
    assert rel_err(got, expected) <= tol, (precision, rel_err(got, expected))
    assert rel_err(got_train, expected) <= tol, (precision, rel_err(got_train, expected))
