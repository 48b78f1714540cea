"""The lifter plan: the one description of a VideoPose3D-class lifter's layer geometry.

Every executor reads its geometry from a :class:`LifterPlan` — the fused training/eval function
(:mod:`fastlift.kernels.lifter_autograd`), BN folding and whole-sequence inference
(:mod:`fastlift.fold`, :mod:`fastlift.model`), the streaming engine and its backends
(:mod:`fastlift.streaming`), export (:mod:`fastlift.export`) and checkpoint architecture
inference (:mod:`fastlift.checkpoint`). Only the reference (:mod:`fastlift.reference`, the
oracle) works its geometry out on its own, and ``tests/test_plan.py`` checks the two agree.

This module is pure Python: no torch, no model classes. A plan is built from the architecture
(:meth:`LifterPlan.build`), from a model object's public attributes (:meth:`LifterPlan.from_model`,
duck-typed) or from a state_dict's tensor shapes (:meth:`LifterPlan.from_state_dict`).

Layers, in execution order (``plan.layers``)::

    expand            taps w0, stride w0 (1f) or 1, BN + ReLU          J_in*F -> C
    block i: wide     taps w_i at dilation d_i (dilated), 2*pad_i+1 taps (dense),
                      or taps w_i at stride w_i (strided 1f);  BN + ReLU   C -> C
             point    1x1, BN + ReLU, + residual from the block input       C -> C
    shrink            1x1 with bias, no BN/ReLU                         C -> J_out*3

with ``d_0 = w0`` and ``d_{i+1} = d_i * w_i``. A conv's output frame ``t`` reads input frames
``t*stride + k*dilation`` for ``k < taps``; the residual of block ``i`` is input row
``t*res_row_stride + res_offset`` of the block input (the centre tap, or the newest tap for
causal models). Geometry facts: ``receptive_field = prod(filter_widths)``, ``pad = (RF - 1)//2``,
causal shift ``pad`` (0 if symmetric), streaming delay ``pad`` (0 if causal).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Optional, Sequence

__all__ = ["ConvGeom", "LayerPlan", "BlockPlan", "StreamRing", "StreamOp", "LifterPlan", "validate_filter_widths",
           "filter_widths_from_kernels"]


def validate_filter_widths(filter_widths) -> tuple:
    """Odd positive ints, at least one; returned as a tuple (``ValueError`` naming the bad entry)."""
    if isinstance(filter_widths, (str, bytes)) or not hasattr(filter_widths, "__iter__"):
        raise ValueError(f"filter_widths: expected a sequence of odd integers such as [3, 3, 3], got {filter_widths!r}")
    fw = list(filter_widths)
    if not fw:
        raise ValueError("filter_widths: expected at least one filter width, got an empty sequence")
    for i, w in enumerate(fw):
        if isinstance(w, bool) or not hasattr(w, "__index__"):
            raise ValueError(f"filter_widths[{i}]: expected an odd integer, got {w!r}")
        w = int(w)
        if w < 1 or w % 2 == 0:
            raise ValueError(f"filter_widths[{i}]: only odd filter widths >= 1 are supported, got {w}")
        fw[i] = w
    return tuple(fw)


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__") or int(value) < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def _dilations(fw: Sequence[int]) -> list:
    """Dilation of every block's wide conv in the dilated model: ``w0, w0*w1, ...``."""
    out, d = [], fw[0]
    for w in fw[1:]:
        out.append(d)
        d *= w
    return out


def filter_widths_from_kernels(kernel_widths: Sequence[int], dense: bool) -> tuple:
    """Filter widths from the stored conv kernel widths (expand first, then each block's wide conv).

    A dense kernel of width ``(w - 1) * d + 1`` at dilation ``d`` is filter width ``w``. Raises
    ``ValueError`` naming the conv when a dense kernel width does not fit its dilation.
    """
    kernel_widths = [int(k) for k in kernel_widths]
    fw, d = [kernel_widths[0]], kernel_widths[0]
    for i, k in enumerate(kernel_widths[1:]):
        if dense:
            if (k - 1) % d:
                raise ValueError(f"dense: layers_conv.{2 * i}.weight has kernel width {k}, which is not a dense "
                                 f"kernel at dilation {d}; drop --dense if the checkpoint is dilated")
            w = (k - 1) // d + 1
        else:
            w = k
        fw.append(w)
        d *= w
    return tuple(fw)


@dataclass(frozen=True)
class ConvGeom:
    """A temporal conv: output frame ``t`` reads input frames ``t*stride + k*dilation``, ``k < taps``."""

    taps: int
    dilation: int = 1
    stride: int = 1

    @property
    def span(self) -> int:
        """Input frames one output frame covers, minus one: ``(taps - 1) * dilation``."""
        return (self.taps - 1) * self.dilation

    def out_frames(self, t_in: int) -> int:
        """Output frames of a valid conv over ``t_in`` input frames (may be <= 0: too short)."""
        return (t_in - self.span - 1) // self.stride + 1


@dataclass(frozen=True)
class LayerPlan:
    """One conv of the network.

    Attributes:
        name: ``"expand"``, ``"blocks.{i}.wide"``, ``"blocks.{i}.point"`` or ``"shrink"``.
        conv: taps/dilation/stride of the executed conv.
        c_in, c_out: channels (``c_in`` of expand is ``J_in * F``; ``c_out`` of shrink ``J_out * 3``).
        bn: followed by BatchNorm (every layer but the shrink); relu likewise.
        bias: the conv has its own bias (only the shrink).
        param: state_dict prefix of the conv weight (``expand_conv``, ``layers_conv.{j}``, ``shrink``)
            and ``bn_param`` of its BatchNorm (``expand_bn``, ``layers_bn.{j}``, ``None``).
        res_offset / res_row_stride: for a block's 1x1 conv, output row ``t`` adds block-input
            row ``t*res_row_stride + res_offset``; ``None``/``0`` otherwise.
        frame_offset: network-input frame (valid convolution, stride 1) that the centre of this
            layer's output frame 0 corresponds to: the sum of the pads of this and earlier layers.
    """

    name: str
    conv: ConvGeom
    c_in: int
    c_out: int
    bn: bool
    relu: bool
    bias: bool
    param: str
    bn_param: Optional[str]
    res_offset: Optional[int] = None
    res_row_stride: int = 0
    frame_offset: int = 0

    @property
    def taps(self) -> int:
        return self.conv.taps

    @property
    def dilation(self) -> int:
        return self.conv.dilation

    @property
    def stride(self) -> int:
        return self.conv.stride

    @property
    def span(self) -> int:
        return self.conv.span

    @property
    def has_residual(self) -> bool:
        return self.res_offset is not None


@dataclass(frozen=True)
class BlockPlan:
    """A residual block: its wide conv, and where its residual is read from the block input
    (row ``t*res_row_stride + res_offset``). ``pad``: frames the block consumes on each side
    (dilation included); ``causal_shift``: how far the causal residual tap sits past the centre."""

    conv: ConvGeom
    res_row_stride: int
    res_offset: int
    pad: int
    causal_shift: int


@dataclass(frozen=True)
class StreamRing:
    """Per-stream history of one layer input: the last ``length = span + 1`` frames of ``channels``.

    Ring 0 holds the network input (read by the expand conv); ring ``r >= 1`` the input of block
    ``r - 1`` (read by its wide conv, and by its residual)."""

    channels: int
    length: int


@dataclass(frozen=True)
class StreamOp:
    """One layer of a streaming step (one output frame per stream per step).

    ``layer``: index into ``plan.layers``; ``src``/``dst``: ``("ring", r)`` or ``("buf", name)``
    with names ``"h"`` (a block's wide-conv output), ``"g"`` (a block output not kept in a ring:
    the last block's, or the expand's when there is no block) and ``"out"`` (the shrink's output).
    ``lags``: per tap ``k``, how many frames before the newest the tap reads (``(taps-1-k)*d``).
    ``res``: ``(ring, lag)`` of the residual (a block's 1x1 conv), else ``None``; ``res_tap``: the
    index of that residual among the taps the block's wide conv gathers from the same ring.
    """

    layer: int
    src: tuple
    dst: tuple
    lags: tuple = ()
    res: Optional[tuple] = None
    res_tap: Optional[int] = None


@dataclass(frozen=True)
class LifterPlan:
    """Geometry of a lifter (see the module docstring). Immutable and hashable: build it once.

    ``strided``: the single-frame training model (``TemporalModelOptimized1f``: strided convs,
    one output per receptive-field window); otherwise the dilated (or ``dense``) model.
    ``eps``: the BatchNorm epsilon.
    """

    joints_in: int
    in_features: int
    joints_out: int
    filter_widths: tuple
    channels: int
    causal: bool = False
    dense: bool = False
    strided: bool = False
    eps: float = 1e-5

    def __post_init__(self):
        object.__setattr__(self, "filter_widths", validate_filter_widths(self.filter_widths))
        for name in ("joints_in", "in_features", "joints_out", "channels"):
            object.__setattr__(self, name, _positive(name, getattr(self, name)))
        if self.dense and self.strided:
            raise ValueError("dense: the strided single-frame (1f) model has no dense variant")
        object.__setattr__(self, "causal", bool(self.causal))
        object.__setattr__(self, "dense", bool(self.dense))
        object.__setattr__(self, "strided", bool(self.strided))
        object.__setattr__(self, "eps", float(self.eps))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def build(cls, joints_in: int, in_features: int, joints_out: int, filter_widths: Sequence[int], *,
              channels: int = 1024, causal: bool = False, dense: bool = False, strided: bool = False,
              eps: float = 1e-5) -> "LifterPlan":
        """The plan of an architecture (the reference constructor's arguments)."""
        return cls(joints_in, in_features, joints_out, tuple(filter_widths), channels, causal, dense, strided, eps)

    @classmethod
    def from_model(cls, model) -> "LifterPlan":
        """The plan of a reference-compatible lifter object (reference or fastlift, dilated, dense
        or 1f), read from its public attributes only (``filter_widths``, ``causal``, ``dense``,
        ``channels``, joints, the convs' strides, ``expand_bn.eps``): no model class is imported."""
        strides = [model.expand_conv.stride[0]] + [c.stride[0] for c in list(model.layers_conv)[::2]]
        # With all widths 1 the strides do not show the 1f model; its class name (or fastlift's
        # marker attribute) does, without importing the class.
        one_f = (any(s != 1 for s in strides) or bool(getattr(model, "is_optimized_1f", False))
                 or any(c.__name__ == "TemporalModelOptimized1f" for c in type(model).__mro__))
        bn = getattr(model, "expand_bn", None)
        return cls(int(model.num_joints_in), int(model.in_features), int(model.num_joints_out),
                   tuple(model.filter_widths), int(model.expand_conv.weight.shape[0]), bool(model.causal),
                   bool(getattr(model, "dense", False)), one_f,
                   float(bn.eps) if bn is not None else 1e-5)

    @classmethod
    def from_state_dict(cls, sd: Mapping, *, in_features: int = 2, causal: bool = False, dense: bool = False,
                        strided: bool = False, eps: float = 1e-5) -> "LifterPlan":
        """The plan of a reference-layout state_dict (``expand_conv.weight``, ``layers_conv.{j}.weight``,
        ``shrink.weight``), from the tensors' shapes. ``causal``, ``dense``, ``strided`` and
        ``in_features`` are not visible in the weights and must be given. Raises ``ValueError``
        naming the tensor whose shape does not fit a lifter."""
        for key in ("expand_conv.weight", "shrink.weight"):
            if key not in sd:
                raise ValueError(f"checkpoint: the state_dict has no {key!r}; expected a VideoPose3D lifter "
                                 f"(expand_conv, layers_conv, layers_bn, shrink), got keys {sorted(sd)[:8]}...")
        ew = sd["expand_conv.weight"]
        if len(ew.shape) != 3:
            raise ValueError(f"checkpoint: expand_conv.weight should be [channels, joints*features, width], got "
                             f"{tuple(ew.shape)}")
        c, k0, w0 = (int(s) for s in ew.shape)
        in_features = _positive("in_features", in_features)
        if k0 % in_features:
            raise ValueError(f"in_features: the checkpoint takes {k0} values per frame, not a multiple of "
                             f"in_features={in_features}; give --joints-in/--in-features")
        j3 = int(sd["shrink.weight"].shape[0])
        if j3 % 3:
            raise ValueError(f"checkpoint: shrink.weight has {j3} output channels, not a multiple of 3")
        kernels = [w0]
        while f"layers_conv.{2 * (len(kernels) - 1)}.weight" in sd:
            kernels.append(int(sd[f"layers_conv.{2 * (len(kernels) - 1)}.weight"].shape[2]))
        fw = filter_widths_from_kernels(kernels, dense)
        return cls(k0 // in_features, in_features, j3 // 3, fw, c, causal, dense, strided, eps)

    def with_(self, **changes) -> "LifterPlan":
        """A copy with some fields changed (re-validated)."""
        return replace(self, **changes)

    def whole_sequence(self) -> "LifterPlan":
        """The dilated model's plan with the same weights: inference always runs the whole-sequence
        (dilated) geometry, also for a strided 1f model's weights."""
        return self.with_(strided=False) if self.strided else self

    # ------------------------------------------------------------------ global facts
    @property
    def receptive_field(self) -> int:
        """Input frames that influence one output frame: the product of the filter widths."""
        rf = 1
        for w in self.filter_widths:
            rf *= w
        return rf

    @property
    def pad(self) -> int:
        """Frames of context on each side of an output frame: ``(receptive_field - 1) // 2``."""
        return (self.receptive_field - 1) // 2

    @property
    def causal_shift(self) -> int:
        """Frames a causal model's input is shifted by: ``pad`` (0 for symmetric models)."""
        return self.pad if self.causal else 0

    @property
    def sequence_padding(self) -> tuple:
        """``(left, right)`` edge replication that gives one pose per input frame:
        ``(pad, pad)`` symmetric, ``(2*pad, 0)`` causal."""
        return self.pad + self.causal_shift, self.pad - self.causal_shift

    @property
    def delay(self) -> int:
        """Streaming delay: frames between a frame's arrival and its pose (``pad``; 0 if causal)."""
        return 0 if self.causal else self.pad

    @property
    def input_channels(self) -> int:
        return self.joints_in * self.in_features

    @property
    def output_channels(self) -> int:
        return self.joints_out * 3

    @property
    def num_blocks(self) -> int:
        return len(self.filter_widths) - 1

    @property
    def num_bn(self) -> int:
        return 1 + 2 * self.num_blocks

    @property
    def kernel_widths(self) -> tuple:
        """Stored kernel widths: expand, then every block's wide conv (dense kernels are wider)."""
        return (self.expand.taps,) + tuple(b.conv.taps for b in self.blocks)

    def out_frames(self, t_in: int) -> int:
        """Output frames for ``t_in`` input frames (valid convs): ``t - RF + 1`` for the dilated
        model, ``t // RF`` for the 1f model (whose input is a multiple of the receptive field)."""
        if self.strided:
            return t_in // self.receptive_field
        return t_in - self.receptive_field + 1

    # ------------------------------------------------------------------ per layer
    @property
    def expand(self) -> ConvGeom:
        w0 = self.filter_widths[0]
        return ConvGeom(w0, 1, w0 if self.strided else 1)

    @property
    def blocks(self) -> tuple:
        """Per block: wide conv, residual row stride/offset, pad, causal shift (a tuple of :class:`BlockPlan`)."""
        cached = self.__dict__.get("_blocks")
        if cached is not None:
            return cached
        out = []
        for w, d in zip(self.filter_widths[1:], _dilations(self.filter_widths)):
            pad = (w - 1) * d // 2
            if self.strided:
                shift = w // 2 if self.causal else 0
                out.append(BlockPlan(ConvGeom(w, 1, w), w, w // 2 + shift, pad, shift))
            else:
                shift = pad if self.causal else 0
                conv = ConvGeom(2 * pad + 1, 1, 1) if self.dense else ConvGeom(w, d, 1)
                out.append(BlockPlan(conv, 1, pad + shift, pad, shift))
        out = tuple(out)
        object.__setattr__(self, "_blocks", out)
        return out

    @property
    def layers(self) -> tuple:
        """Every conv in execution order: expand, per block (wide, point), shrink (:class:`LayerPlan`)."""
        cached = self.__dict__.get("_layers")
        if cached is not None:
            return cached
        c = self.channels
        off = self.filter_widths[0] // 2
        out = [LayerPlan("expand", self.expand, self.input_channels, c, True, True, False, "expand_conv", "expand_bn",
                         frame_offset=off)]
        for i, blk in enumerate(self.blocks):
            off += blk.pad
            out.append(LayerPlan(f"blocks.{i}.wide", blk.conv, c, c, True, True, False, f"layers_conv.{2 * i}",
                                 f"layers_bn.{2 * i}", frame_offset=off))
            out.append(LayerPlan(f"blocks.{i}.point", ConvGeom(1), c, c, True, True, False, f"layers_conv.{2 * i + 1}",
                                 f"layers_bn.{2 * i + 1}", res_offset=blk.res_offset,
                                 res_row_stride=blk.res_row_stride, frame_offset=off))
        out.append(LayerPlan("shrink", ConvGeom(1), c, self.output_channels, False, False, True, "shrink", None,
                             frame_offset=off))
        out = tuple(out)
        object.__setattr__(self, "_layers", out)
        return out

    def layer_out_frames(self, t_in: int) -> list:
        """Output frames of every layer (execution order) for ``t_in`` network input frames."""
        out, t = [], t_in
        for layer in self.layers:
            t = layer.conv.out_frames(t)
            out.append(t)
        return out

    # ------------------------------------------------------------------ streaming
    @property
    def stream_rings(self) -> tuple:
        """The per-stream ring buffers of the streaming step (:class:`StreamRing`, see there)."""
        plan = self.whole_sequence()
        rings = [StreamRing(plan.input_channels, plan.expand.span + 1)]
        rings += [StreamRing(plan.channels, blk.conv.span + 1) for blk in plan.blocks]
        return tuple(rings)

    @property
    def stream_program(self) -> tuple:
        """The streaming step as data (:class:`StreamOp` per layer), shared by every streaming
        executor: the engine's torch and Triton backends, its tail flush and the exported step.

        Each layer with temporal history (expand, every wide conv) reads the taps of its ring and
        its output is the next block's ring input; a block's 1x1 conv adds the residual, which is
        one of the taps its wide conv gathered (lag ``span - res_offset``)."""
        cached = self.__dict__.get("_stream_program")
        if cached is not None:
            return cached
        plan = self.whole_sequence()
        layers = plan.layers

        def lags(conv: ConvGeom) -> tuple:
            return tuple((conv.taps - 1 - k) * conv.dilation for k in range(conv.taps))

        ops = []
        nb = plan.num_blocks
        ops.append(StreamOp(0, ("ring", 0), ("ring", 1) if nb else ("buf", "g"), lags(layers[0].conv)))
        for i in range(nb):
            wide, point = layers[1 + 2 * i], layers[2 + 2 * i]
            lag = wide.span - point.res_offset
            if not (0 <= lag <= wide.span) or lag % wide.dilation:
                raise ValueError(f"plan: block {i} residual offset {point.res_offset} is not one of the wide conv's taps")
            ops.append(StreamOp(1 + 2 * i, ("ring", 1 + i), ("buf", "h"), lags(wide.conv)))
            dst = ("ring", 2 + i) if i + 1 < nb else ("buf", "g")
            ops.append(StreamOp(2 + 2 * i, ("buf", "h"), dst, (), (1 + i, lag),
                                wide.taps - 1 - lag // wide.dilation))
        ops.append(StreamOp(len(layers) - 1, ("buf", "g"), ("buf", "out")))
        out = tuple(ops)
        object.__setattr__(self, "_stream_program", out)
        return out

    # ------------------------------------------------------------------ misc
    def describe(self) -> str:
        """A short one-line summary (for messages and reprs)."""
        kind = "strided-1f" if self.strided else ("dense" if self.dense else "dilated")
        return (f"{self.joints_in}x{self.in_features} -> {self.joints_out}x3, filter widths "
                f"{list(self.filter_widths)} ({kind}, {'causal' if self.causal else 'symmetric'}), "
                f"{self.channels} channels, receptive field {self.receptive_field}")
