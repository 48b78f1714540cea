"""BatchNorm folding: turn a trained lifter's state into inference-ready GEMM operands.

Every fastlift inference path (fused whole-sequence kernels, the streaming engine, export)
consumes a :class:`FoldedLifter`: each conv with its following eval-mode BatchNorm folded into
a weight and a bias, computed in fp32 and cast once at the end.

Weight layout (the kernels' B operand): ``[taps * C_in, C_out]`` row-major, tap-major along
rows, i.e. ``w[k * C_in + c, o] = conv.weight[o, c, k] * bn_scale[o]``. A width-``W`` conv
with dilation ``d`` over activations ``x[t, c]`` (time-major, channel-contiguous) is then
``y[t] = sum_k x[t + k*d] @ w[k*C_in:(k+1)*C_in]``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from fastlift.kernels.plan import LifterPlan

__all__ = ["FoldedConv", "FoldedLifter", "fold_bn", "fold_lifter", "run_folded_torch"]


@dataclass
class FoldedConv:
    """One conv layer with BN folded in.

    Attributes:
        weight: ``[taps * c_in, c_out]`` (see module docstring).
        bias: ``[c_out]`` fp32 or the target dtype.
        taps: kernel width (number of row-shifted loads).
        dilation: frame spacing between taps of the dilated model.
        relu: apply ReLU in the epilogue.
        res_offset: for a block's 1x1 conv, the row offset (in the block input) of the residual
            tap, i.e. ``pad`` for symmetric and ``2 * pad`` (the newest tap) for causal models;
            ``None`` when there is no residual.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    taps: int
    dilation: int
    relu: bool
    res_offset: int | None = None
    _conv_cache: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def conv_weight(self) -> torch.Tensor:
        """``weight`` in ``F.conv1d`` layout ``[c_out, c_in, taps]`` (contiguous; cached until
        ``weight`` is replaced or modified in place)."""
        w = self.weight.detach()
        if torch.compiler.is_compiling():  # traced (compile/export): no data pointers, no caching
            return w.reshape(self.taps, self.c_in, self.c_out).permute(2, 1, 0).contiguous()
        key = (w.data_ptr(), w._version, w.dtype, w.device)
        if self._conv_cache is None or self._conv_cache[0] != key:
            self._conv_cache = (key, w.reshape(self.taps, self.c_in, self.c_out).permute(2, 1, 0).contiguous())
        return self._conv_cache[1]

    @property
    def c_in(self) -> int:
        return self.weight.shape[0] // self.taps

    @property
    def c_out(self) -> int:
        return self.weight.shape[1]

    @property
    def span(self) -> int:
        """Input frames consumed per output frame minus one: ``(taps - 1) * dilation``."""
        return (self.taps - 1) * self.dilation


@dataclass
class FoldedLifter:
    """BN-folded layers of a lifter, in execution order.

    ``layers[0]`` is the expand conv; then, per block, the dilated (or dense) conv followed by
    the 1x1 conv whose epilogue adds the residual; ``layers[-1]`` is the shrink conv (no ReLU).
    """

    layers: list[FoldedConv]
    num_joints_in: int
    in_features: int
    num_joints_out: int
    filter_widths: list[int]
    causal: bool
    receptive_field: int
    channels: int
    extra: dict = field(default_factory=dict)
    plan: LifterPlan | None = field(default=None, compare=False)

    def __post_init__(self):
        # The layers' geometry must be the plan's (built from the other fields when not given):
        # a FoldedLifter assembled by hand cannot silently disagree with the executors' plan.
        if self.plan is None:
            self.plan = LifterPlan.build(self.num_joints_in, self.in_features, self.num_joints_out, self.filter_widths,
                                         channels=self.channels, causal=self.causal,
                                         dense=bool(self.extra.get("dense", False)))
        plan = self.plan
        if plan.strided:
            raise ValueError("plan: a FoldedLifter describes whole-sequence inference; pass plan.whole_sequence()")
        if len(self.layers) != len(plan.layers):
            raise ValueError(f"layers: expected {len(plan.layers)} folded convs for {plan.describe()}, "
                             f"got {len(self.layers)}")
        for i, (got, want) in enumerate(zip(self.layers, plan.layers)):
            if (got.taps, got.dilation, got.relu, got.res_offset) != (want.taps, want.dilation, want.relu,
                                                                       want.res_offset):
                raise ValueError(f"layers[{i}] ({want.name}): expected taps={want.taps}, dilation={want.dilation}, "
                                 f"relu={want.relu}, res_offset={want.res_offset} from the plan, got taps={got.taps}, "
                                 f"dilation={got.dilation}, relu={got.relu}, res_offset={got.res_offset}")
        if self.receptive_field != plan.receptive_field:
            raise ValueError(f"receptive_field: the plan's is {plan.receptive_field}, got {self.receptive_field}")

    @property
    def pad(self) -> int:
        return self.plan.pad

    def to(self, device=None, dtype=None) -> "FoldedLifter":
        """Copy with weights (and biases) moved/cast; biases stay fp32 unless ``dtype`` is fp64."""
        layers = []
        for l in self.layers:
            if dtype is None:
                bias_dtype = l.bias.dtype
            else:
                bias_dtype = torch.float64 if dtype == torch.float64 else torch.float32
            layers.append(FoldedConv(l.weight.to(device=device, dtype=dtype), l.bias.to(device=device, dtype=bias_dtype),
                                     l.taps, l.dilation, l.relu, l.res_offset))
        return FoldedLifter(layers, self.num_joints_in, self.in_features, self.num_joints_out, list(self.filter_widths),
                            self.causal, self.receptive_field, self.channels, dict(self.extra), self.plan)


def fold_bn(weight: torch.Tensor, bn: torch.nn.BatchNorm1d | None, conv_bias: torch.Tensor | None = None):
    """Fold an eval-mode BatchNorm into a conv weight ``[C_out, C_in, K]``.

    Returns ``(w [K*C_in, C_out], b [C_out])`` in fp32 (computed in fp32, or fp64 when the
    weight is fp64).
    """
    acc = torch.float64 if weight.dtype == torch.float64 else torch.float32
    w = weight.detach().to(acc)
    c_out, c_in, k = w.shape
    b = conv_bias.detach().to(acc) if conv_bias is not None else torch.zeros(c_out, dtype=acc, device=w.device)
    if bn is not None:
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError("fold_bn: BatchNorm has no running statistics (track_running_stats=False); cannot fold")
        scale = torch.ones(c_out, dtype=acc, device=w.device) if bn.weight is None else bn.weight.detach().to(acc)
        shift = torch.zeros(c_out, dtype=acc, device=w.device) if bn.bias is None else bn.bias.detach().to(acc)
        inv = torch.rsqrt(bn.running_var.detach().to(acc) + bn.eps)
        scale = scale * inv
        w = w * scale[:, None, None]
        b = (b - bn.running_mean.detach().to(acc)) * scale + shift
    w = w.permute(2, 1, 0).reshape(k * c_in, c_out).contiguous()
    return w, b


def fold_lifter(model: torch.nn.Module, dtype: torch.dtype | None = None, device=None) -> FoldedLifter:
    """Fold a dilated/dense or 1f lifter (reference or fastlift) into a :class:`FoldedLifter`.

    The 1f model's weights are the dilated model's, so its layers are described with the
    dilated model's dilations: the folded result always describes whole-sequence inference.
    BN uses the running statistics (eval semantics) whatever ``model.training`` is.
    """
    plan = LifterPlan.from_model(model).whole_sequence()
    layers = []
    for lp in plan.layers:
        conv = model.get_submodule(lp.param)
        w, b = fold_bn(conv.weight, model.get_submodule(lp.bn_param) if lp.bn_param else None,
                       conv.bias if lp.bias else None)
        if w.shape != (lp.taps * lp.c_in, lp.c_out):
            raise ValueError(f"model: {lp.param}.weight has shape {tuple(conv.weight.shape)}, expected "
                             f"({lp.c_out}, {lp.c_in}, {lp.taps}) for {plan.describe()}")
        layers.append(FoldedConv(w, b, lp.taps, lp.dilation, lp.relu, lp.res_offset))
    folded = FoldedLifter(layers, plan.joints_in, plan.in_features, plan.joints_out, list(plan.filter_widths),
                          plan.causal, plan.receptive_field, plan.channels, {"dense": plan.dense}, plan)
    if dtype is not None or device is not None:
        folded = folded.to(device=device, dtype=dtype)
    return folded


def run_folded_torch(folded: FoldedLifter, x: torch.Tensor) -> torch.Tensor:
    """Pure-torch execution of a :class:`FoldedLifter` on ``(B, T, J_in, F)`` (valid convs).

    Returns ``(B, T - receptive_field + 1, J_out, 3)`` in ``x``'s dtype (weights are cast to it).
    Used as the CPU path of fused inference and as a readable specification of what the kernels
    compute: per layer ``y = conv(h) + bias``, ReLU, and for a block's 1x1 conv the residual taken
    from the block input at ``res_offset``. Runs channels-first through ``F.conv1d`` (oneDNN on
    CPU), in place where it can, so the BN-free folded model is never slower than the reference.
    """
    b, t = x.shape[:2]
    h = x.reshape(b, t, -1).transpose(1, 2)  # (B, C, T)
    block_in = None
    for i, layer in enumerate(folded.layers):
        y = F.conv1d(h, layer.conv_weight().to(h.dtype), layer.bias.to(h.dtype), dilation=layer.dilation)
        if layer.relu:
            y.relu_()
        if layer.res_offset is not None:
            y.add_(block_in[:, :, layer.res_offset: layer.res_offset + y.shape[2]])
        # A block's input is the output of the expand layer or of the previous block's 1x1 conv.
        if i == 0 or layer.res_offset is not None:
            block_in = y
        h = y
    return h.transpose(1, 2).reshape(b, h.shape[2], folded.num_joints_out, 3)
