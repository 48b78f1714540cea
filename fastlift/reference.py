"""Faithful pure-PyTorch reference of the VideoPose3D temporal lifter.

This module is fastlift's oracle, CPU fallback and benchmark baseline. It is written from the
paper's description (Pavllo et al., CVPR 2019, section 3 and appendix A) and reproduces the
published model's behaviour and checkpoint layout exactly:

* parameters/buffers ``expand_conv.weight`` (no bias), ``expand_bn.*``,
  ``layers_conv.{i}.weight`` (no bias), ``layers_bn.{i}.*``, ``shrink.weight``, ``shrink.bias``;
* blocks of ``dilated conv -> BN -> ReLU -> dropout -> 1x1 conv -> BN -> ReLU -> dropout``
  around a residual that is sliced from the block input at the centre tap (symmetric) or the
  newest tap (causal);
* "valid" convolutions: an input of ``T`` frames gives ``T - receptive_field + 1`` poses. The
  sequence helper :func:`lift_sequence` replicates the edge frames so that ``T`` frames give
  ``T`` poses, exactly as the reference evaluation does.

Shapes: input ``(batch, frames, joints_in, in_features)``, output
``(batch, frames_out, joints_out, 3)``. Any floating dtype torch's ``conv1d`` supports.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

__all__ = [
    "TemporalModelBase",
    "TemporalModel",
    "TemporalModelOptimized1f",
    "validate_filter_widths",
    "lift_sequence",
    "edge_pad",
    "count_parameters",
    "flops_per_frame",
    "architecture_summary",
    "sequence_padding",
]


def validate_filter_widths(filter_widths: Sequence[int]) -> list[int]:
    """Check ``filter_widths`` (odd positive ints, at least one) and return them as a list."""
    if isinstance(filter_widths, (str, bytes)) or not hasattr(filter_widths, "__iter__"):
        raise ValueError(f"filter_widths: expected a sequence of odd integers such as [3, 3, 3], got {filter_widths!r}")
    fw = list(filter_widths)
    if len(fw) == 0:
        raise ValueError("filter_widths: expected at least one filter width, got an empty sequence")
    for i, w in enumerate(fw):
        if isinstance(w, bool) or not isinstance(w, int) and not (hasattr(w, "__index__")):
            raise ValueError(f"filter_widths[{i}]: expected an odd integer, got {w!r}")
        w = int(w)
        if w < 1 or w % 2 == 0:
            raise ValueError(f"filter_widths[{i}]: only odd filter widths >= 1 are supported, got {w}")
        fw[i] = w
    return fw


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__") or int(value) < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


class TemporalModelBase(nn.Module):
    """Shared constructor, attributes and input checks of both reference variants."""

    def __init__(self, num_joints_in, in_features, num_joints_out, filter_widths, causal, dropout, channels):
        super().__init__()
        self.num_joints_in = _check_positive_int("num_joints_in", num_joints_in)
        self.in_features = _check_positive_int("in_features", in_features)
        self.num_joints_out = _check_positive_int("num_joints_out", num_joints_out)
        self.filter_widths = validate_filter_widths(filter_widths)
        channels = _check_positive_int("channels", channels)
        if not (0.0 <= float(dropout) < 1.0):
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        self.causal = bool(causal)
        self.channels = channels
        self.dropout_p = float(dropout)

        self.drop = nn.Dropout(dropout)
        self.relu = nn.ReLU(inplace=True)
        # pad[i]: frames consumed on each side by layer i (dilation included).
        self.pad = [self.filter_widths[0] // 2]
        self.expand_bn = nn.BatchNorm1d(channels, momentum=0.1)
        self.shrink = nn.Conv1d(channels, num_joints_out * 3, 1)

    # ------------------------------------------------------------------ public API
    def set_bn_momentum(self, momentum: float) -> None:
        """Set the momentum of every BatchNorm layer (the recipe decays it 0.1 -> 0.001)."""
        self.expand_bn.momentum = momentum
        for bn in self.layers_bn:
            bn.momentum = momentum

    def receptive_field(self) -> int:
        """Number of input frames that influence one output frame (product of filter widths)."""
        return 1 + 2 * sum(self.pad)

    def total_causal_shift(self) -> int:
        """Frames by which a causal model's input must be shifted: ``pad`` if causal, else 0.

        The published implementation multiplies the already-dilated per-layer shifts by the
        dilation again and so over-counts; its training script never uses that value and shifts
        by ``pad = (receptive_field - 1) // 2`` instead, which is what fastlift returns.
        """
        return (self.receptive_field() - 1) // 2 if self.causal else 0

    def extra_repr(self) -> str:
        return (f"joints_in={self.num_joints_in}, in_features={self.in_features}, joints_out={self.num_joints_out}, "
                f"filter_widths={self.filter_widths}, causal={self.causal}, dropout={self.dropout_p}, "
                f"channels={self.channels}, receptive_field={self.receptive_field()}")

    # ------------------------------------------------------------------ checks
    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor of shape (batch, frames, {self.num_joints_in}, "
                            f"{self.in_features}), got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"x: expected 4 dimensions (batch, frames, joints={self.num_joints_in}, "
                             f"features={self.in_features}), got shape {tuple(x.shape)}")
        if x.shape[-2] != self.num_joints_in:
            raise ValueError(f"x: expected {self.num_joints_in} joints in dimension 2, got {x.shape[-2]} "
                             f"(shape {tuple(x.shape)})")
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected {self.in_features} features per joint in dimension 3, got {x.shape[-1]} "
                             f"(shape {tuple(x.shape)})")
        if not x.is_floating_point():
            raise TypeError(f"x: expected a floating-point tensor, got dtype {x.dtype}")
        if x.shape[0] == 0:
            raise ValueError(f"x: batch dimension is empty (shape {tuple(x.shape)})")

    def _check_frames(self, frames: int) -> None:
        rf = self.receptive_field()
        if frames < rf:
            raise ValueError(f"x: sequence of {frames} frames is shorter than the receptive field of {rf} frames; "
                             f"pad it (fastlift.reference.lift_sequence / edge_pad) or use a smaller model")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, J_in, F) -> (B, T_out, J_out, 3)``; see the subclass for ``T_out``."""
        self._check_input(x)
        self._check_frames(x.shape[1])
        b = x.shape[0]
        x = x.reshape(b, x.shape[1], -1).permute(0, 2, 1)
        x = self._forward_blocks(x)
        x = x.permute(0, 2, 1)
        return x.reshape(b, -1, self.num_joints_out, 3)


class TemporalModel(TemporalModelBase):
    """Dilated (or dense) temporal convolution lifter; the inference/evaluation model.

    Args:
        num_joints_in: input keypoints per frame (17 for Human3.6M/COCO, 15 for HumanEva).
        in_features: features per keypoint (2 for x, y).
        num_joints_out: output joints (3 coordinates each). The trajectory model uses 1.
        filter_widths: odd widths per layer, e.g. ``[3, 3, 3, 3, 3]`` for 243 frames.
        causal: use only past frames (the output pose is the newest input frame's).
        dropout: dropout probability after each ReLU.
        channels: hidden width (1024 in the paper).
        dense: dense (undilated, wide) kernels with the same receptive field instead of
            dilated width-``W`` kernels.

    ``T`` input frames give ``T - receptive_field() + 1`` output frames.
    """

    def __init__(self, num_joints_in, in_features, num_joints_out, filter_widths, causal=False, dropout=0.25,
                 channels=1024, dense=False):
        super().__init__(num_joints_in, in_features, num_joints_out, filter_widths, causal, dropout, channels)
        fw = self.filter_widths
        self.dense = bool(dense)
        self.expand_conv = nn.Conv1d(num_joints_in * in_features, channels, fw[0], bias=False)

        layers_conv, layers_bn = [], []
        self.causal_shift = [fw[0] // 2 if causal else 0]
        next_dilation = fw[0]
        for i in range(1, len(fw)):
            self.pad.append((fw[i] - 1) * next_dilation // 2)
            self.causal_shift.append((fw[i] // 2 * next_dilation) if causal else 0)
            layers_conv.append(nn.Conv1d(channels, channels, fw[i] if not dense else (2 * self.pad[-1] + 1),
                                         dilation=next_dilation if not dense else 1, bias=False))
            layers_bn.append(nn.BatchNorm1d(channels, momentum=0.1))
            layers_conv.append(nn.Conv1d(channels, channels, 1, dilation=1, bias=False))
            layers_bn.append(nn.BatchNorm1d(channels, momentum=0.1))
            next_dilation *= fw[i]
        self.layers_conv = nn.ModuleList(layers_conv)
        self.layers_bn = nn.ModuleList(layers_bn)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", dense=True" if self.dense else "")

    def _forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.relu(self.expand_bn(self.expand_conv(x))))
        for i in range(len(self.pad) - 1):
            pad = self.pad[i + 1]
            shift = self.causal_shift[i + 1]
            # Residual: the tap the block's output frame is centred on (newest tap if causal).
            res = x[:, :, pad + shift: x.shape[2] - pad + shift]
            x = self.drop(self.relu(self.layers_bn[2 * i](self.layers_conv[2 * i](x))))
            x = res + self.drop(self.relu(self.layers_bn[2 * i + 1](self.layers_conv[2 * i + 1](x))))
        return self.shrink(x)


class TemporalModelOptimized1f(TemporalModelBase):
    """Strided single-frame training model that shares its weights with :class:`TemporalModel`.

    Dilated convolutions are replaced by strided ones (stride = filter width), which skips the
    intermediate states a single output frame never uses. The state_dict is interchangeable
    with a :class:`TemporalModel` of the same arguments (``dense=False``).

    Input: ``(B, T, J_in, F)`` with ``T`` a positive multiple of ``receptive_field()`` (normally
    exactly the receptive field); output ``(B, T // receptive_field(), J_out, 3)``, one pose per
    disjoint receptive-field window.
    """

    def __init__(self, num_joints_in, in_features, num_joints_out, filter_widths, causal=False, dropout=0.25,
                 channels=1024):
        super().__init__(num_joints_in, in_features, num_joints_out, filter_widths, causal, dropout, channels)
        fw = self.filter_widths
        self.expand_conv = nn.Conv1d(num_joints_in * in_features, channels, fw[0], stride=fw[0], bias=False)

        layers_conv, layers_bn = [], []
        self.causal_shift = [fw[0] // 2 if causal else 0]
        next_dilation = fw[0]
        for i in range(1, len(fw)):
            self.pad.append((fw[i] - 1) * next_dilation // 2)
            self.causal_shift.append((fw[i] // 2) if causal else 0)
            layers_conv.append(nn.Conv1d(channels, channels, fw[i], stride=fw[i], bias=False))
            layers_bn.append(nn.BatchNorm1d(channels, momentum=0.1))
            layers_conv.append(nn.Conv1d(channels, channels, 1, dilation=1, bias=False))
            layers_bn.append(nn.BatchNorm1d(channels, momentum=0.1))
            next_dilation *= fw[i]
        self.layers_conv = nn.ModuleList(layers_conv)
        self.layers_bn = nn.ModuleList(layers_bn)

    def _check_frames(self, frames: int) -> None:
        super()._check_frames(frames)
        rf = self.receptive_field()
        if frames % rf != 0:
            raise ValueError(f"x: the single-frame model takes windows of exactly receptive_field={rf} frames "
                             f"(or a multiple of it), got {frames} frames")

    def _forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.relu(self.expand_bn(self.expand_conv(x))))
        for i in range(len(self.pad) - 1):
            res = x[:, :, self.causal_shift[i + 1] + self.filter_widths[i + 1] // 2:: self.filter_widths[i + 1]]
            x = self.drop(self.relu(self.layers_bn[2 * i](self.layers_conv[2 * i](x))))
            x = res + self.drop(self.relu(self.layers_bn[2 * i + 1](self.layers_conv[2 * i + 1](x))))
        return self.shrink(x)


# ---------------------------------------------------------------------- sequence helpers
def edge_pad(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Replicate the first frame ``left`` times and the last frame ``right`` times along dim 1.

    ``x``: ``(B, T, ...)``. Returns ``(B, left + T + right, ...)`` (a new tensor).
    """
    if x.dim() < 2 or x.shape[1] < 1:
        raise ValueError(f"x: expected (batch, frames, ...) with at least one frame, got shape {tuple(x.shape)}")
    if left < 0 or right < 0:
        raise ValueError(f"edge_pad: left/right must be >= 0, got left={left}, right={right}")
    parts = []
    if left:
        parts.append(x[:, :1].expand(x.shape[0], left, *x.shape[2:]))
    parts.append(x)
    if right:
        parts.append(x[:, -1:].expand(x.shape[0], right, *x.shape[2:]))
    return torch.cat(parts, dim=1) if len(parts) > 1 else x.clone()


def sequence_padding(model) -> tuple[int, int]:
    """(left, right) edge padding that makes ``model`` return one pose per input frame."""
    pad = (model.receptive_field() - 1) // 2
    shift = pad if model.causal else 0
    return pad + shift, pad - shift


@torch.no_grad()
def lift_sequence(model: nn.Module, keypoints, batch_frames: int | None = None) -> torch.Tensor:
    """Lift whole sequences: ``T`` frames in, ``T`` poses out, with the reference's edge padding.

    Args:
        model: a dilated :class:`TemporalModel` (reference or fastlift); evaluated as given
            (call ``model.eval()`` first for inference).
        keypoints: ``(T, J_in, F)`` or ``(B, T, J_in, F)`` tensor or numpy array (converted to
            the model's parameter dtype/device).
        batch_frames: optional cap on output frames per forward call (long sequences are
            processed in overlapping chunks with identical results).

    Returns:
        ``(T, J_out, 3)`` or ``(B, T, J_out, 3)`` matching the input's batch dimension.

    Symmetric models see ``pad`` replicated frames on each side; causal models see ``2 * pad``
    replicated frames on the left (so pose ``t`` depends only on frames ``<= t``).
    """
    if isinstance(model, TemporalModelOptimized1f) or getattr(model, "is_optimized_1f", False):
        raise TypeError("model: lift_sequence needs the dilated TemporalModel; load the 1f model's state_dict "
                        "into a TemporalModel of the same arguments")
    param = next(model.parameters())
    x = torch.as_tensor(keypoints)
    squeeze = x.dim() == 3
    if squeeze:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"keypoints: expected (frames, joints, features) or (batch, frames, joints, features), "
                         f"got shape {tuple(x.shape)}")
    if x.shape[1] < 1:
        raise ValueError("keypoints: the sequence has no frames")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise ValueError("keypoints: contains NaN or infinite values; fill missing detections before lifting")
    x = x.to(device=param.device, dtype=param.dtype)
    left, right = sequence_padding(model)
    rf = model.receptive_field()
    t = x.shape[1]
    xp = edge_pad(x, left, right)
    if batch_frames is None or batch_frames >= t:
        out = model(xp)
    else:
        if batch_frames < 1:
            raise ValueError(f"batch_frames: expected a positive integer, got {batch_frames}")
        outs = []
        for s in range(0, t, batch_frames):
            e = min(t, s + batch_frames)
            outs.append(model(xp[:, s:e + rf - 1]))
        out = torch.cat(outs, dim=1)
    return out[0] if squeeze else out


# ---------------------------------------------------------------------- cost model
def _check_sizes(num_joints_in, in_features, num_joints_out, channels) -> None:
    for name, value in (("num_joints_in", num_joints_in), ("in_features", in_features),
                        ("num_joints_out", num_joints_out), ("channels", channels)):
        _check_positive_int(name, value)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (16,952,371 for the 243-frame, 17-joint model)."""
    return sum(p.numel() for p in model.parameters())


def flops_per_frame(num_joints_in: int, in_features: int, num_joints_out: int, filter_widths: Sequence[int],
                    channels: int = 1024, dense: bool = False) -> int:
    """Amortised FLOPs per output frame of whole-sequence inference (1 MAC = 2 FLOPs).

    Counts the matrix multiplications only (as the paper's appendix A.2 does): the expand conv,
    each block's dilated (or dense) conv and 1x1 conv, and the shrink conv. 33,867,776 for the
    243-frame 17-joint model.
    """
    fw = validate_filter_widths(filter_widths)
    _check_sizes(num_joints_in, in_features, num_joints_out, channels)
    macs = fw[0] * num_joints_in * in_features * channels
    dilation = fw[0]
    for w in fw[1:]:
        width = w if not dense else (w - 1) * dilation + 1
        macs += width * channels * channels + channels * channels
        dilation *= w
    macs += channels * num_joints_out * 3
    return 2 * macs


def architecture_summary(num_joints_in: int = 17, in_features: int = 2, num_joints_out: int = 17,
                         filter_widths: Sequence[int] = (3, 3, 3, 3, 3), channels: int = 1024,
                         dense: bool = False, causal: bool = False) -> dict:
    """Parameters, FLOPs/frame, receptive field and weight bytes of an architecture (no model built)."""
    fw = validate_filter_widths(filter_widths)
    _check_sizes(num_joints_in, in_features, num_joints_out, channels)
    c = channels
    params = fw[0] * num_joints_in * in_features * c + 2 * c  # expand conv + expand BN affine
    dilation = fw[0]
    rf = fw[0]
    for w in fw[1:]:
        width = w if not dense else (w - 1) * dilation + 1
        params += width * c * c + 2 * c + c * c + 2 * c
        dilation *= w
        rf *= w
    params += c * num_joints_out * 3 + num_joints_out * 3
    bn_buffers = 2 * c * (1 + 2 * (len(fw) - 1))
    flops = flops_per_frame(num_joints_in, in_features, num_joints_out, fw, channels, dense)
    return {
        "filter_widths": fw,
        "receptive_field": rf,
        "pad": (rf - 1) // 2,
        "causal": causal,
        "dense": dense,
        "channels": c,
        "parameters": params,
        "flops_per_frame": flops,
        "weight_bytes_fp32": 4 * params,
        "weight_bytes_bf16": 2 * params,
        "bn_buffer_bytes_fp32": 4 * bn_buffers,
        "window_recompute_flops_per_frame": _window_flops(num_joints_in, in_features, num_joints_out, fw, c),
    }


def _window_flops(num_joints_in, in_features, num_joints_out, fw, c) -> int:
    """FLOPs of the strided 1f model on one receptive-field window (one output pose)."""
    rf = math.prod(fw)
    rows = rf // fw[0]
    macs = rows * fw[0] * num_joints_in * in_features * c
    for w in fw[1:]:
        rows //= w
        macs += rows * (w * c * c + c * c)
    macs += num_joints_out * 3 * c
    return 2 * macs
