"""CPU training path of the 1f model (fastlift.cpu_train): channels-last GEMMs with the
reference's semantics -- outputs, gradients and BatchNorm running statistics equal the
reference's (fp64), bf16 autocast stays within bf16 tolerance, impl='reference' is untouched."""
from __future__ import annotations

import pytest
import torch

import fastlift
from fastlift import reference as R

from helpers import one_thread_fixture, randomise_bn, rel_err

one_thread = one_thread_fixture()


def pair(fw, causal=False, dropout=0.0, impl="auto", channels=24):
    torch.manual_seed(0)
    ref = R.TemporalModelOptimized1f(5, 2, 4, list(fw), causal=causal, dropout=dropout, channels=channels)
    randomise_bn(ref)
    fus = fastlift.TemporalModelOptimized1f(5, 2, 4, list(fw), causal=causal, dropout=dropout, channels=channels,
                                           impl=impl)
    fus.load_state_dict(ref.state_dict())
    return ref.double(), fus.double()


@pytest.mark.parametrize("fw", [(3, 3, 3), (3, 5), (1, 3), (5,)])
@pytest.mark.parametrize("causal", [False, True])
def test_1f_gemm_path_matches_reference_train_and_eval(fw, causal):
    ref, fus = pair(fw, causal)
    rf = ref.receptive_field()
    x = torch.randn(3, 2 * rf, 5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for mode in ("train", "train", "eval"):  # two steps: running statistics accumulate
        getattr(ref, mode)()
        getattr(fus, mode)()
        a, b = ref(x), fus(x)
        assert b.shape == (3, 2, 4, 3)
        assert rel_err(b, a) < 1e-12
        g = torch.randn_like(a)
        (a * g).sum().backward()
        (b * g).sum().backward()
        for (n, p), q in zip(ref.named_parameters(), fus.parameters()):
            assert rel_err(q.grad, p.grad) < 1e-12, n
        ref.zero_grad()
        fus.zero_grad()
    sa, sb = ref.state_dict(), fus.state_dict()
    assert set(sa) == set(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]) if k.endswith("num_batches_tracked") else rel_err(sb[k], sa[k]) < 1e-12, k


def test_1f_gemm_path_bf16_autocast_and_dropout():
    ref, fus = pair((3, 3, 3), dropout=0.25, channels=64)
    ref.float()
    fus.float()
    x = torch.randn(8, 27, 5, 2, generator=torch.Generator().manual_seed(2))
    fus.eval()
    want = fus(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = fus(x)
    assert low.dtype == torch.bfloat16 and 0 < rel_err(low.float(), want) < 5e-2
    fus.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fus(x)
    y.float().square().mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
               for p in fus.parameters())
    assert fus.expand_bn.running_mean.dtype == torch.float32 and int(fus.expand_bn.num_batches_tracked) == 1
    # dropout is active in training (outputs differ from eval) and seeded by torch's generator
    torch.manual_seed(3)
    d1 = fus(x)
    torch.manual_seed(3)
    d2 = fus(x)
    assert torch.equal(d1, d2) and not torch.allclose(d1, want)


def test_impl_reference_keeps_the_reference_forward(monkeypatch):
    import fastlift.cpu_train as ct

    calls = []
    real = ct.forward_1f_channels_last
    monkeypatch.setattr(ct, "forward_1f_channels_last", lambda m, x: calls.append(1) or real(m, x))
    ref, fus = pair((3, 3), impl="reference")
    _, auto = pair((3, 3))
    x = torch.randn(2, 9, 5, 2, dtype=torch.float64)
    fus(x)
    assert calls == []
    auto(x)
    assert calls == [1]
    dil = fastlift.TemporalModel(5, 2, 4, [3, 3], channels=24).double().eval()
    dil(torch.randn(1, 9, 5, 2, dtype=torch.float64))  # the dilated model keeps the reference math
    assert calls == [1]
