"""CPU training path of the single-frame (1f) lifter: channels-last GEMMs instead of strided convs.

In :class:`~fastlift.reference.TemporalModelOptimized1f` every conv has stride = width, so its
windows do not overlap: on activations laid out ``(batch, frames, channels)`` a width-``w``
strided conv is ``F.linear`` of the free view ``(batch, frames / w, w * channels)``, and the
1x1 convs are plain ``F.linear``. Backward is then two plain GEMMs per layer (oneDNN/MKL), where
torch's strided ``conv1d`` backward on CPU is several times slower than its forward; under
``torch.autocast("cpu", torch.bfloat16)`` the GEMMs run in bf16 (fp32 accumulation), BatchNorm
keeps fp32 running statistics and the master weights stay fp32 (autocast semantics).

The model's own modules do the rest, so the semantics are the reference's: ``expand_bn`` /
``layers_bn`` see ``(batch * frames, channels)`` (the same per-channel statistics as
``(batch, channels, frames)``, running-stat updates and ``num_batches_tracked`` included),
``drop``/``relu`` are the model's. The only difference from the reference's forward in training
mode is the layout in which dropout draws its mask (same distribution, different draw).

Limitations: the 1f model only (``T`` a multiple of the receptive field, as the reference
requires); pure torch, so it also traces under ``torch.compile``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["forward_1f_channels_last"]


def _strided_conv(h: torch.Tensor, conv: torch.nn.Conv1d) -> torch.Tensor:
    """``conv`` (stride = width, no padding/dilation) on channels-last ``h (B, T, C)``."""
    w = conv.weight  # (C_out, C_in, width)
    width = w.shape[2]
    b, t, c = h.shape
    a = h.reshape(b, t // width, width * c)  # frames t*width .. t*width+width-1 of a window: a free view
    # (C_out, C_in, width) -> (C_out, width * C_in), tap-major like the view's rows.
    wm = w[:, :, 0] if width == 1 else w.permute(0, 2, 1).reshape(w.shape[0], width * c)
    return F.linear(a, wm, conv.bias)


def _bn(h: torch.Tensor, bn: torch.nn.BatchNorm1d) -> torch.Tensor:
    b, t, c = h.shape
    return bn(h.reshape(b * t, c)).reshape(b, t, c)


def forward_1f_channels_last(model, x: torch.Tensor) -> torch.Tensor:
    """The 1f model's forward on ``x (B, k * RF, J_in, F)`` -> ``(B, k, J_out, 3)`` (inputs
    already checked by the caller), computed channels-last as GEMMs (module docstring)."""
    b, t = x.shape[:2]
    h = x.reshape(b, t, -1)
    h = model.drop(model.relu(_bn(_strided_conv(h, model.expand_conv), model.expand_bn)))
    fw = model.filter_widths
    for i in range(len(fw) - 1):
        w = fw[i + 1]
        # The residual is the window's centre frame (symmetric) or its newest frame (causal).
        res = h[:, model.causal_shift[i + 1] + w // 2:: w]
        h = model.drop(model.relu(_bn(_strided_conv(h, model.layers_conv[2 * i]), model.layers_bn[2 * i])))
        h = res + model.drop(model.relu(_bn(_strided_conv(h, model.layers_conv[2 * i + 1]), model.layers_bn[2 * i + 1])))
    y = _strided_conv(h, model.shrink)
    return y.reshape(b, y.shape[1], model.num_joints_out, 3)
