"""Drop-in fused lifters: the reference's constructor, attributes and state_dict, fused kernels inside.

* :class:`TemporalModel` / :class:`TemporalModelOptimized1f` subclass the reference modules, so
  ``load_state_dict`` of a VideoPose3D checkpoint's ``model_pos`` works with ``strict=True``,
  ``train()/eval()``, ``.to()``, ``.half()``, ``set_bn_momentum`` and DataParallel/DDP behave
  exactly as for the reference. The extra keyword ``impl`` picks the implementation:

  - ``"auto"`` (default): Triton kernels for CUDA inputs, the reference math elsewhere (on CPU
    the 1f model runs it as channels-last GEMMs, :mod:`fastlift.cpu_train`);
  - ``"triton"``: always the kernels (CUDA, or CPU tensors under ``TRITON_INTERPRET=1``);
  - ``"reference"``: always the reference math.

  On the kernel path the whole network — BN with batch statistics and running-stat updates,
  ReLU, dropout, residuals — runs as one fused autograd function
  (:class:`fastlift.kernels.lifter_autograd.LifterFunction`); under ``torch.autocast`` the
  kernels compute in the autocast dtype (e.g. bf16) with fp32 accumulation and fp32 BN statistics.

* :func:`fuse` folds BatchNorm into the conv weights (in fp32, then cast) and returns a
  :class:`FusedInferenceLifter` for inference, with :meth:`FusedInferenceLifter.lift` for whole
  sequences (edge replication done inside the expand kernel, shrink fused into the last conv).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from fastlift import reference as _ref
from fastlift.fold import FoldedLifter, fold_lifter, run_folded_torch

# Whole-sequence dtypes of the prepared CPU executor (fastlift.cpu_infer); others run run_folded_torch.
# fp32 stays on run_folded_torch (conv1d through oneDNN on cached conv-layout weights): on an idle
# 2-core EPYC (2026-12-02, 243f, T=4000, interleaved) it ran at 1.09x the reference against 0.95x
# for the executor's fp32 GEMMs, while bf16 is where the executor wins (2.1x the reference fp32).
_CPU_DTYPES = (torch.bfloat16,)

__all__ = ["TemporalModel", "TemporalModelOptimized1f", "FusedInferenceLifter", "fuse", "lift_sequence", "IMPLS"]

IMPLS = ("auto", "triton", "reference")


def _check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl: expected one of {IMPLS}, got {impl!r}")
    return impl


def _kernels_usable(device: torch.device) -> bool:
    try:
        from fastlift.kernels._common import kernels_available
    except ImportError:  # triton missing: only the reference path exists
        return False
    return kernels_available(device)


class _FusedMixin:
    """Kernel dispatch shared by both fused lifters (mixed into the reference classes)."""

    def _init_fused(self, impl: str) -> None:
        self.impl = _check_impl(impl)
        # Optional fixed dropout seed (see set_dropout_seed): a device tensor, not part of the
        # state_dict so checkpoints stay byte-compatible with the reference layout.
        self.register_buffer("_dropout_seed", torch.zeros(1, dtype=torch.int64), persistent=False)
        self._fixed_dropout_seed = False

    def set_dropout_seed(self, seed: int | None) -> None:
        """Pin the kernels' dropout masks to ``seed`` (advanced by one per training step).

        By default (``None``) every training step draws its seed from torch's generator of the
        input's device, so masks follow ``torch.manual_seed`` (and checkpointed RNG states), and
        DataParallel replicas on different devices draw independent masks.
        """
        if seed is None:
            self._fixed_dropout_seed = False
            return
        self._dropout_seed.fill_(int(seed))
        self._fixed_dropout_seed = True

    def _step_seed(self, x: torch.Tensor) -> torch.Tensor:
        if self._fixed_dropout_seed:
            return self._dropout_seed
        # A device-side draw: no host sync, and capturable in CUDA graphs.
        return torch.randint(0, 2**62, (1,), dtype=torch.int64, device=x.device)

    def uses_kernels(self, x: torch.Tensor) -> bool:
        """Whether ``forward(x)`` runs the fused kernels (per ``impl`` and ``x.device``)."""
        if self.impl == "reference":
            return False
        if self.impl == "auto":
            return x.device.type == "cuda" and _kernels_usable(x.device)
        if not _kernels_usable(x.device):
            raise ValueError(f"impl='triton': the Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 for CPU "
                             f"tensors); got x on {x.device}. Use impl='auto' or 'reference' on this device")
        return True

    def _compute_dtype(self, x: torch.Tensor) -> torch.dtype:
        if torch.is_autocast_enabled(x.device.type):
            dt = torch.get_autocast_dtype(x.device.type)
            if dt in (torch.float16, torch.bfloat16):
                return dt
        dt = self.expand_conv.weight.dtype
        if dt not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"impl='triton': parameters must be fp32/fp16/bf16 for the kernels, got {dt}; use "
                            f"impl='reference' for fp64")
        return dt

    def _flat_params(self) -> list[torch.Tensor]:
        def bn(m):
            return [m.weight, m.bias, m.running_mean, m.running_var, m.num_batches_tracked]

        out = [self.expand_conv.weight, *bn(self.expand_bn)]
        for i in range(len(self.layers_conv) // 2):
            out += [self.layers_conv[2 * i].weight, *bn(self.layers_bn[2 * i]),
                    self.layers_conv[2 * i + 1].weight, *bn(self.layers_bn[2 * i + 1])]
        return out + [self.shrink.weight, self.shrink.bias]

    def _bn_modules(self):
        return [self.expand_bn, *self.layers_bn]

    @property
    def plan(self):
        """This model's :class:`~fastlift.kernels.plan.LifterPlan` (built once; rebuilt only when
        an architecture attribute -- filter widths, causal, dense, BN eps -- is changed)."""
        from fastlift.kernels.plan import LifterPlan

        key = (tuple(self.filter_widths), bool(self.causal), bool(getattr(self, "dense", False)),
               float(self.expand_bn.eps))
        cached = self.__dict__.get("_plan_cache")
        if cached is None or cached[0] != key:
            cached = (key, LifterPlan.from_model(self))
            self.__dict__["_plan_cache"] = cached
        return cached[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        self._check_frames(x.shape[1])
        if not self.uses_kernels(x):
            if self.impl == "auto" and getattr(self, "is_optimized_1f", False) and x.device.type == "cpu":
                # CPU: the strided convs as channels-last GEMMs (fastlift.cpu_train), several
                # times faster to train than torch's strided conv1d backward, same semantics.
                from fastlift.cpu_train import forward_1f_channels_last

                return forward_1f_channels_last(self, x)
            return super().forward(x)
        from fastlift.kernels.lifter_autograd import LifterFunction

        for bn in self._bn_modules():
            if bn.running_mean is None or not bn.affine:
                raise ValueError("the fused kernels need affine BatchNorm layers with running statistics")
        if x.device != self.expand_conv.weight.device:
            raise ValueError(f"x: expected a tensor on {self.expand_conv.weight.device} (the model's device), got {x.device}")
        b, t = x.shape[:2]
        dt = self._compute_dtype(x)
        x3 = x.reshape(b, t, -1).to(dt)
        plan = self.plan
        momenta = tuple(bn.momentum for bn in self._bn_modules())
        training = self.training
        dropout = training and self.dropout_p > 0
        seed = self._step_seed(x) if dropout else self._dropout_seed
        y = LifterFunction.apply(plan, training, momenta, self.dropout_p, seed, x3, *self._flat_params())
        if dropout and self._fixed_dropout_seed:
            with torch.no_grad():
                self._dropout_seed.add_(1)
        return y.reshape(b, y.shape[1], self.num_joints_out, 3)


class TemporalModel(_FusedMixin, _ref.TemporalModel):
    """Fused drop-in for the reference dilated :class:`fastlift.reference.TemporalModel`.

    Same arguments plus ``impl`` (``"auto"`` | ``"triton"`` | ``"reference"``). Input
    ``(B, T, J_in, F)`` with ``T >= receptive_field()``; output ``(B, T - RF + 1, J_out, 3)``.
    """

    def __init__(self, num_joints_in, in_features, num_joints_out, filter_widths, causal=False, dropout=0.25,
                 channels=1024, dense=False, impl: str = "auto"):
        _ref.TemporalModel.__init__(self, num_joints_in, in_features, num_joints_out, filter_widths, causal, dropout,
                                    channels, dense)
        self._init_fused(impl)


class TemporalModelOptimized1f(_FusedMixin, _ref.TemporalModelOptimized1f):
    """Fused drop-in for the strided single-frame training model (weights shared with
    :class:`TemporalModel`). Input ``(B, k*RF, J_in, F)``; output ``(B, k, J_out, 3)``."""

    is_optimized_1f = True

    def __init__(self, num_joints_in, in_features, num_joints_out, filter_widths, causal=False, dropout=0.25,
                 channels=1024, impl: str = "auto"):
        _ref.TemporalModelOptimized1f.__init__(self, num_joints_in, in_features, num_joints_out, filter_widths, causal,
                                               dropout, channels)
        self._init_fused(impl)


# ---------------------------------------------------------------------------------- inference
class FusedInferenceLifter(nn.Module):
    """BN-folded inference lifter (no training state).

    Built by :func:`fuse`. ``forward(x)``: ``(B, T, J_in, F) -> (B, T - RF + 1, J_out, 3)`` like the
    reference in eval mode; :meth:`lift`: ``T`` frames -> ``T`` poses with the reference's edge
    padding. Weights are stored in ``dtype`` (fp32/fp16/bf16 for the kernels, fp64 on the
    reference path); biases in fp32. Inputs are cast to ``dtype``; outputs are fp32 (the shrink
    accumulates in fp32).

    Limitations: inference only (no autograd through the kernel path's fused shrink); the 1f
    model's weights are run as the dilated model (whole-sequence semantics).
    """

    def __init__(self, folded: FoldedLifter, impl: str = "auto"):
        super().__init__()
        self.impl = _check_impl(impl)
        self.num_joints_in = folded.num_joints_in
        self.in_features = folded.in_features
        self.num_joints_out = folded.num_joints_out
        self.filter_widths = list(folded.filter_widths)
        self.causal = folded.causal
        self._rf = folded.receptive_field
        #: The layer geometry every path of this module reads (:class:`fastlift.kernels.plan.LifterPlan`).
        self.plan = folded.plan
        self.weights = nn.ParameterList([nn.Parameter(l.weight, requires_grad=False) for l in folded.layers])
        for i, l in enumerate(folded.layers):
            self.register_buffer(f"bias_{i}", l.bias)
        self.extra = dict(folded.extra)

    def __getstate__(self):
        # The folded-layer cache is derived data (aliases + conv-layout copies of the weights):
        # keep it out of pickles and deep copies.
        state = dict(self.__dict__)
        state.pop("_folded_cache", None)
        state.pop("_cpu_exec_cache", None)
        return state

    # -- reference-compatible attributes
    def receptive_field(self) -> int:
        return self._rf

    @property
    def pad(self) -> int:
        return self.plan.pad

    @property
    def dtype(self) -> torch.dtype:
        return self.weights[0].dtype

    def folded(self) -> FoldedLifter:
        """The layers as a :class:`FoldedLifter` aliasing this module's tensors.

        Cached between calls (its layers cache their conv1d-layout weights for the CPU path) and
        rebuilt when a weight or bias is replaced, moved, cast or modified in place."""
        from fastlift.fold import FoldedConv

        n = len(self.plan.layers)
        tensors = [*self.weights, *(getattr(self, f"bias_{i}") for i in range(n))]
        tracing = torch.compiler.is_compiling()  # fake tensors have no data pointers
        key = None if tracing else tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
        cached = self.__dict__.get("_folded_cache")
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        layers = [FoldedConv(w, getattr(self, f"bias_{i}"), lp.taps, lp.dilation, lp.relu, lp.res_offset)
                  for i, (w, lp) in enumerate(zip(self.weights, self.plan.layers))]
        folded = FoldedLifter(layers, self.num_joints_in, self.in_features, self.num_joints_out, self.filter_widths,
                              self.causal, self._rf, self.weights[0].shape[1], dict(self.extra), self.plan)
        if key is not None:
            self.__dict__["_folded_cache"] = (key, folded)
        return folded

    def cpu_executor(self):
        """The prepared :class:`fastlift.cpu_infer.CpuExecutor` for this lifter's dtype (fp32 or
        bf16; ``lift``/``forward`` on CPU use it for bf16), rebuilt together with :meth:`folded`
        (i.e. when a weight or bias changes)."""
        from fastlift.cpu_infer import CpuExecutor

        folded = self.folded()
        cached = self.__dict__.get("_cpu_exec_cache")
        if cached is None or cached[0] is not folded:
            cached = (folded, CpuExecutor(folded, self.dtype))
            self.__dict__["_cpu_exec_cache"] = cached
        return cached[1]

    def uses_kernels(self, x: torch.Tensor) -> bool:
        return _FusedMixin.uses_kernels(self, x)

    def _check(self, x: torch.Tensor, need_frames: int) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"x: expected (batch, frames, {self.num_joints_in}, {self.in_features}), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if x.shape[2] != self.num_joints_in or x.shape[3] != self.in_features:
            raise ValueError(f"x: expected {self.num_joints_in} joints x {self.in_features} features, got "
                             f"{x.shape[2]} x {x.shape[3]} (shape {tuple(x.shape)})")
        if not x.is_floating_point():
            raise TypeError(f"x: expected a floating-point tensor, got {x.dtype}")
        if x.shape[1] < need_frames:
            raise ValueError(f"x: sequence of {x.shape[1]} frames is shorter than the receptive field of {self._rf} "
                             f"frames; use lift() for whole sequences (it pads the edges)")
        if x.device != self.weights[0].device:
            raise ValueError(f"x: expected a tensor on {self.weights[0].device} (the model's device), got {x.device}")

    def _run(self, x: torch.Tensor, edge_left: int, edge_right: int) -> torch.Tensor:
        b, t = x.shape[:2]
        x3 = x.reshape(b, t, -1).to(self.dtype)
        if not self.uses_kernels(x):
            if edge_left or edge_right:
                x3 = _ref.edge_pad(x3, edge_left, edge_right)
            if x3.device.type == "cpu" and self.dtype in _CPU_DTYPES:
                if torch.compiler.is_compiling():
                    # The executor's math in traceable form (export / torch.compile on CPU).
                    from fastlift.cpu_infer import traceable_forward

                    return traceable_forward(self.folded(), x3).reshape(b, -1, self.num_joints_out, 3)
                return self.cpu_executor()(x3).reshape(b, -1, self.num_joints_out, 3)
            return run_folded_torch(self.folded(), x3.reshape(b, x3.shape[1], self.num_joints_in, self.in_features)).float()
        from fastlift.kernels.tconv_fwd import tconv_fwd

        h = x3
        block_in = None
        n = len(self.plan.layers)
        for i, (w, lp) in enumerate(zip(self.weights, self.plan.layers)):
            taps, dil, relu, res_off = lp.taps, lp.dilation, lp.relu, lp.res_offset
            bias = getattr(self, f"bias_{i}")
            if i == n - 2:
                # Last block's 1x1 conv with the shrink fused into its epilogue.
                shrink_w, shrink_b = self.weights[n - 1], getattr(self, f"bias_{n - 1}")
                _, _, _, out = tconv_fwd(h, w, taps=taps, dilation=dil, bias=bias, relu=relu, residual=block_in,
                                         res_offset=res_off or 0, shrink_w=shrink_w, store_y=False,
                                         edge_left=edge_left if i == 0 else 0, edge_right=edge_right if i == 0 else 0)
                out = out + shrink_b
                break
            y, _, _, _ = tconv_fwd(h, w, taps=taps, dilation=dil, bias=bias, relu=relu,
                                   residual=block_in if res_off is not None else None, res_offset=res_off or 0,
                                   edge_left=edge_left if i == 0 else 0, edge_right=edge_right if i == 0 else 0)
            if i == 0 or res_off is not None:
                block_in = y
            h = y
        return out.reshape(b, out.shape[1], self.num_joints_out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x, self._rf)
        return self._run(x, 0, 0)

    def forward_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """Whole-sequence forward ``(B, T, J_in, F) -> (B, T, J_out, 3)`` with the reference's edge
        padding, for any ``T >= 1``. Shape/dtype/device checks only — no NaN scan and no host
        synchronisation, so it traces under ``torch.export``/``torch.compile``; :meth:`lift` is the
        checked, convenient entry point."""
        self._check(x, 1)
        left, right = self.plan.sequence_padding
        return self._run(x, left, right)

    @torch.no_grad()
    def lift(self, keypoints, batch_frames: Optional[int] = None) -> torch.Tensor:
        """``(T, J, F)`` or ``(B, T, J, F)`` -> ``T`` poses per sequence (reference edge padding).

        Symmetric models replicate ``pad`` frames on each side, causal ones ``2*pad`` on the left.
        ``batch_frames`` caps the output frames per call (chunks overlap by ``RF - 1`` input frames).
        """
        x = torch.as_tensor(keypoints)
        squeeze = x.dim() == 3
        if squeeze:
            x = x.unsqueeze(0)
        if x.dim() != 4 or x.shape[1] < 1:
            raise ValueError(f"keypoints: expected (frames, joints, features) or (batch, frames, joints, features) "
                             f"with at least one frame, got shape {tuple(x.shape)}")
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise ValueError("keypoints: contains NaN or infinite values; fill missing detections before lifting")
        x = x.to(self.weights[0].device)
        t = x.shape[1]
        if batch_frames is None or batch_frames >= t:
            out = self.forward_sequence(x)
        else:
            self._check(x, 1)
            left, right = self.plan.sequence_padding
            if batch_frames < 1:
                raise ValueError(f"batch_frames: expected a positive integer, got {batch_frames}")
            xp = _ref.edge_pad(x, left, right)
            out = torch.cat([self._run(xp[:, s:min(t, s + batch_frames) + self._rf - 1], 0, 0)
                             for s in range(0, t, batch_frames)], dim=1)
        return out[0] if squeeze else out


def fuse(model: nn.Module, dtype: Optional[torch.dtype] = None, device=None, impl: str = "auto") -> FusedInferenceLifter:
    """BN-folded inference module from a trained lifter (reference or fastlift, dilated/dense or 1f).

    Folding happens in fp32 (fp64 for fp64 models) using the running statistics; the weights
    are then cast to ``dtype`` (default: the model's parameter dtype). The source model is not
    modified. ``dtype`` may also be a precision name (``"fp32"``, ``"bf16"``, ``"fp16"``).

    On CPU, fp32 and bf16 run the prepared oneDNN executor (:mod:`fastlift.cpu_infer`; bf16 with
    fp32 accumulation and an fp32 output layer). bf16/fp16 on a CPU that only emulates them
    warn once (:func:`fastlift.precision.warn_if_emulated`); a bf16/fp16 request for a float64
    model warns once, naming the model's dtype (it folds in float64, then casts).
    """
    from fastlift.precision import check_model_dtype, parse_precision, precision_dtype, warn_if_emulated

    for name in ("expand_conv", "expand_bn", "layers_conv", "layers_bn", "shrink"):
        if not hasattr(model, name):
            raise TypeError(f"model: expected a VideoPose3D-style lifter (missing {name!r}), got {type(model).__name__}")
    if isinstance(dtype, str):
        dtype = precision_dtype(parse_precision(dtype, "dtype", ("fp32", "tf32", "bf16", "fp16")))
    if dtype is None:
        dtype = model.expand_conv.weight.dtype
    if dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise TypeError(f"dtype: expected fp32/fp16/bf16 (or fp64 for the reference path), got {dtype}")
    check_model_dtype(model.expand_conv.weight.dtype, dtype)
    device = device if device is not None else model.expand_conv.weight.device
    warn_if_emulated(dtype, device)
    folded = fold_lifter(model, dtype=dtype, device=device)
    return FusedInferenceLifter(folded, impl=impl)


def lift_sequence(model: nn.Module, keypoints, batch_frames: Optional[int] = None) -> torch.Tensor:
    """Whole-sequence lifting (``T`` frames -> ``T`` poses) for any fastlift or reference lifter."""
    if isinstance(model, FusedInferenceLifter):
        return model.lift(keypoints, batch_frames)
    return _ref.lift_sequence(model, keypoints, batch_frames)
