"""Helpers shared by several test modules: plain functions, imported with ``from helpers import ...``.

pytest's default (``prepend``) import mode puts this folder on ``sys.path`` (it has no
``__init__.py``), so test modules import it as a top-level module. Fixtures stay in the test
modules (or ``conftest.py``); :func:`one_thread_fixture` builds the one fixture several modules
share, so each module still gets its own module-scoped instance.
"""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from fastlift.reference import TemporalModel


# ---------------------------------------------------------------------------- fixtures and data
def one_thread_fixture():
    """A module-scoped autouse fixture running the module's tests with one torch thread.

    Use as ``one_thread = one_thread_fixture()`` at module level. Tiny models: one thread is as
    fast and immune to oversubscription on a busy machine; it also makes in-process and
    subprocess runs use the same CPU kernels (bit-identical results).
    """

    @pytest.fixture(scope="module", autouse=True)
    def one_thread():
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(n)

    return one_thread


def synthetic_data(tmp_path_factory, **generate_kwargs):
    """A fresh folder holding the synthetic data set (:func:`fastlift.data.synthetic.write` with
    ``generate_kwargs``: ``seed``, ``subjects``, ``actions``, ``frames_per_action``)."""
    from fastlift.data import synthetic as syn

    d = tmp_path_factory.mktemp("synth")
    syn.write(d, **generate_kwargs)
    return d


# ---------------------------------------------------------------------------- models
def make_model(fw, causal=False, *, channels, j_in, j_out, dtype, dense=False, seed=0, cls=TemporalModel):
    """A reference lifter with non-trivial BatchNorm statistics and affine parameters (so folding
    matters), in eval mode."""
    torch.manual_seed(seed)
    kwargs = {"dense": dense} if cls is TemporalModel else {}
    m = cls(j_in, 2, j_out, fw, causal=causal, channels=channels, **kwargs)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.3)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.weight.copy_(torch.randn(mod.num_features, generator=g) * 0.5 + 1)
                mod.bias.copy_(torch.randn(mod.num_features, generator=g) * 0.2)
    return m.to(dtype).eval()


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random fp64 conv weights (variance-preserving) and BN affine params / running stats, in place."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv1d):
                fan_in = m.weight.shape[1] * m.weight.shape[2]
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=torch.float64) / math.sqrt(fan_in))
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g, dtype=torch.float64))
            elif isinstance(m, torch.nn.BatchNorm1d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g, dtype=torch.float64))
                m.bias.copy_(0.2 * torch.randn(c, generator=g, dtype=torch.float64))
                m.running_mean.copy_(0.3 * torch.randn(c, generator=g, dtype=torch.float64))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g, dtype=torch.float64))
    return model


def randomise_bn(model: torch.nn.Module, gen_seed: int = 0) -> torch.nn.Module:
    """Random BN affine params and running stats (fp32 draws), in place; conv weights untouched."""
    g = torch.Generator().manual_seed(gen_seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def rel_err(got, want) -> float:
    """max |got - want| / max |want| in fp64 (tensors or array-likes)."""
    got, want = torch.as_tensor(got).double(), torch.as_tensor(want).double()
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-12)).item()


def masked_reference_forward(ref, x, seed, p):
    """The reference network with dropout replaced by the kernels' counter-hash masks (train-mode BN);
    works on any device and dtype (the masks are built on ``x``'s device)."""
    from fastlift import reference as R
    from fastlift.kernels._common import dropout_mask_torch, dropout_threshold
    from fastlift.kernels.lifter_autograd import layer_salt

    thr = dropout_threshold(p)

    def drop(a, l):
        b, c, t = a.shape
        keep = dropout_mask_torch(seed + layer_salt(l), (b, t, c), thr, device=a.device).permute(0, 2, 1)
        return torch.where(keep, a / (1 - p), torch.zeros((), dtype=a.dtype))

    one_f = isinstance(ref, R.TemporalModelOptimized1f)
    b = x.shape[0]
    h = x.reshape(b, x.shape[1], -1).permute(0, 2, 1)
    h = drop(torch.relu(ref.expand_bn(ref.expand_conv(h))), 0)
    for i in range(len(ref.pad) - 1):
        if one_f:
            res = h[:, :, ref.causal_shift[i + 1] + ref.filter_widths[i + 1] // 2:: ref.filter_widths[i + 1]]
        else:
            pad, shift = ref.pad[i + 1], ref.causal_shift[i + 1]
            res = h[:, :, pad + shift: h.shape[2] - pad + shift]
        h = drop(torch.relu(ref.layers_bn[2 * i](ref.layers_conv[2 * i](h))), 1 + 2 * i)
        h = res + drop(torch.relu(ref.layers_bn[2 * i + 1](ref.layers_conv[2 * i + 1](h))), 2 + 2 * i)
    return ref.shrink(h).permute(0, 2, 1).reshape(b, -1, ref.num_joints_out, 3)


# ---------------------------------------------------------------------------- checkpoints
class LegacyRandomState:
    """Pickles like a numpy < 1.17 RandomState (the published checkpoints' ``random_state``)."""

    def __init__(self, seed):
        self.state = np.random.RandomState(seed).get_state()

    def __reduce__(self):
        return getattr(np.random, "__RandomState_ctor"), (), self.state


def write_reference_checkpoint(path, model_pos, optimizer, epoch, lr, legacy_numpy=True):
    """A checkpoint as VideoPose3D's run.py writes it with the PyTorch/numpy of its time: legacy (non-zip)
    serialization, numpy RandomState objects with numpy 1.x module names, no num_batches_tracked.
    With ``legacy_numpy=False``: today's zip format and numpy's own RandomState pickle."""
    sd = {k: v for k, v in model_pos.state_dict().items() if not k.endswith("num_batches_tracked")}
    state = {"epoch": epoch, "lr": lr, "random_state": LegacyRandomState(1234) if legacy_numpy else
             np.random.RandomState(1234), "optimizer": optimizer.state_dict(), "model_pos": sd, "model_traj": None,
             "random_state_semi": None}
    buf = io.BytesIO()
    torch.save(state, buf, _use_new_zipfile_serialization=not legacy_numpy)
    raw = buf.getvalue()
    if legacy_numpy:
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(raw)
    return path


# ---------------------------------------------------------------------------- CLI
def run_cli(capsys, *argv):
    """``fastlift`` with ``argv`` (converted to strings) in-process: ``(exit status, stdout, stderr)``."""
    from fastlift.cli import main

    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err
