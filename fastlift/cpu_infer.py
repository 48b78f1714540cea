"""CPU executor for BN-folded lifters: oneDNN GEMMs on channels-last activations.

:class:`CpuExecutor` runs a :class:`~fastlift.fold.FoldedLifter` on CPU tensors the way the
hardware wants it (used by :func:`fastlift.fuse` modules on CPU; the Triton kernels serve CUDA):

* activations stay ``(batch, frames, channels)`` (channel-contiguous) from the input to the
  output; a width-``W`` conv with dilation ``d`` is one GEMM ``[B*T_out x W*C] . [W*C x C_out]``
  whose A operand is a strided view of the activations (``B == 1``, ``d == 1``) or one
  concatenation of the ``W`` row-shifted slices;
* the GEMMs go through oneDNN (``torch.ops.mkldnn._linear_pointwise``) with the bias and ReLU
  fused as post-ops; the residual is added in place; weights are converted once (bf16 weights
  prepacked into oneDNN's blocked layout) when the executor is built, never per call;
* ``bf16``: bf16 weights and activations, fp32 accumulation inside oneDNN, fp32 biases, and the
  shrink layer (the output) computed in fp32 from the bf16 activations, so the output is fp32.

``torch.ops.mkldnn._linear_pointwise`` is a private op: whether it exists and is exact is checked
once per dtype (:func:`onednn_linear_available`); without it every GEMM is ``torch.addmm`` (the
public path: MKL in fp32, still channels-last and prepared once).

The layer math itself is one function, :func:`linear_forward`, run by the executor (with its
prepared weights and GEMM) and traced, with :func:`addmm_linear`, by :func:`traceable_forward`:
the form ``torch.compile``/``torch.export`` see for fused CPU models (``fastlift export``'s CPU
package), where Inductor with ``freezing`` turns each constant-weight ``addmm`` into the same
prepacked oneDNN linear with the ReLU / residual add fused as post-ops.

Limitations: fp32 and bf16 only (fp64/fp16 models use :func:`fastlift.fold.run_folded_torch`);
inference only (no autograd); the concatenated A operand costs ``rows * W * C`` elements of
scratch per dilated layer, with ``rows <= MAX_ROWS`` (longer inputs run in overlapping time chunks).
"""
from __future__ import annotations

import functools

import torch

from fastlift.fold import FoldedLifter

__all__ = ["CpuExecutor", "onednn_linear_available", "linear_forward", "addmm_linear", "traceable_forward",
           "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16)

# Hint for oneDNN's bf16 weight packing (rows per GEMM); measured insensitive between 1 and 4096.
_PACK_ROWS_HINT = 512
# Output rows (batch * frames) per pass: longer inputs run in time chunks that overlap by
# receptive_field - 1 frames (1.5 % recomputed for 243f), so scratch and activations stay
# bounded (~250 MB fp32 at 1024 channels) however long the sequence is.
MAX_ROWS = 16384


@functools.lru_cache(maxsize=None)
def onednn_linear_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether oneDNN's fused linear (``mkldnn._linear_pointwise``, bias + ReLU post-op; bf16
    with a prepacked weight and an fp32 bias) exists in this torch build and matches ``addmm``.
    Checked once per dtype."""
    try:
        if not torch.backends.mkldnn.is_available() or dtype not in SUPPORTED_DTYPES:
            return False
        g = torch.Generator().manual_seed(0)
        a, w, b = torch.randn(5, 48, generator=g), torch.randn(48, 24, generator=g), torch.randn(24, generator=g)
        want = torch.relu(torch.addmm(b, a.to(dtype).float(), w.to(dtype).float()))
        y = torch.ops.mkldnn._linear_pointwise(a.to(dtype), _prepare_weight(w.to(dtype), True), b, "relu", [], "")
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        return bool(y.dtype == dtype and torch.allclose(y.float(), want, rtol=tol, atol=tol * 10))
    except (AttributeError, RuntimeError, TypeError, NotImplementedError):
        return False


def _prepare_weight(w_kn: torch.Tensor, onednn: bool) -> torch.Tensor:
    """A ``[K, N]`` folded weight as the GEMM wants it: oneDNN takes ``[N, K]`` (fp32: the
    transposed view, which oneDNN reads without a copy; bf16: packed once into its blocked
    layout); ``addmm`` takes ``[K, N]`` contiguous."""
    if not onednn:
        return w_kn.contiguous()
    if w_kn.dtype == torch.bfloat16:
        return torch.ops.mkldnn._reorder_linear_weight(w_kn.t().contiguous(), _PACK_ROWS_HINT)
    return w_kn.t()


def addmm_linear(a: torch.Tensor, w: torch.Tensor, b: torch.Tensor, relu: bool) -> torch.Tensor:
    """``relu?(a @ w + b)`` with public ops: ``a (rows, K)``, ``w (K, N)``, ``b (N,)``, one dtype."""
    y = torch.addmm(b, a, w)
    return y.relu_() if relu else y


def linear_forward(h: torch.Tensor, layers, shrink_w: torch.Tensor, shrink_b: torch.Tensor, linear,
                   *, strided_view: bool = True) -> torch.Tensor:
    """The folded lifter's math, channels-last: ``h (B, T, C_in)`` -> ``(B, T - RF + 1, C_out)`` fp32.

    ``h``: contiguous, in the compute dtype. ``layers``: per hidden layer ``(w, b, taps, dilation,
    relu, res_offset, span)`` with ``span = (taps - 1) * dilation``, where ``w``/``b`` are whatever
    ``linear(a (rows, taps * C), w, b, relu) -> (rows, C_out)`` takes. Each layer is one GEMM on the
    ``taps`` row-shifted slices concatenated along channels (im2col); a block's 1x1 layer adds the
    block input at ``res_offset`` in place. The shrink layer is ``addmm`` in fp32 on ``shrink_w
    (C, C_out)``, ``shrink_b (C_out,)``. ``strided_view``: for ``B == 1`` and a dense conv read the
    overlapping rows as a strided view instead of copying them (eager only: a traced graph must
    not branch on the batch size).
    """
    bsz = h.shape[0]
    block_in = None
    for i, (w, b, taps, dil, relu, res_off, span) in enumerate(layers):
        t_in, c = h.shape[1], h.shape[2]
        t_out = t_in - span
        if taps == 1:
            a = h.reshape(bsz * t_in, c)
        elif strided_view and bsz == 1 and dil == 1:
            # Rows t..t+taps-1 of one contiguous sequence are one contiguous span: no copy.
            a = h.as_strided((t_out, taps * c), (c, 1))
        else:
            a = torch.cat([h[:, k * dil: k * dil + t_out] for k in range(taps)], dim=2).reshape(bsz * t_out, taps * c)
        y = linear(a, w, b, relu).view(bsz, t_out, -1)
        if res_off is not None:
            y.add_(block_in[:, res_off: res_off + t_out])
        # A block's input is the expand layer's output or the previous block's 1x1 output.
        if i == 0 or res_off is not None:
            block_in = y
        h = y
    t = h.shape[1]
    out = torch.addmm(shrink_b, h.reshape(bsz * t, -1).to(torch.float32), shrink_w)
    return out.view(bsz, t, shrink_w.shape[1])


def traceable_forward(folded: FoldedLifter, x: torch.Tensor) -> torch.Tensor:
    """:func:`linear_forward` with :func:`addmm_linear` on ``folded``'s own tensors, for tracing.

    ``x (B, T, C_in)`` (edge padding is the caller's) -> ``(B, T - RF + 1, C_out)`` fp32, computed
    in the weights' dtype (fp32 or bf16; the shrink in fp32, as :class:`CpuExecutor`). No weight is
    converted ahead of time and no private op is called: under ``torch.export``/``torch.compile``
    with Inductor's ``freezing`` the weights are constants, so each ``addmm`` becomes a prepacked
    oneDNN linear (``mkldnn._linear_pointwise``) with the ReLU and residual add as post-ops.
    Limitation: no time chunking (the im2col scratch grows with ``B * T``, unlike the executor's).
    """
    layers = folded.layers
    dtype = layers[0].weight.dtype
    hidden = [(l.weight, l.bias.to(dtype), l.taps, l.dilation, l.relu, l.res_offset, l.span) for l in layers[:-1]]
    shrink = layers[-1]
    return linear_forward(x.to(dtype).contiguous(), hidden, shrink.weight.to(torch.float32),
                          shrink.bias.to(torch.float32), addmm_linear, strided_view=False)


class CpuExecutor:
    """Prepared CPU execution of a :class:`FoldedLifter` in ``dtype`` (fp32 or bf16).

    Build once (weights are converted/packed here) and call many times:
    ``executor(x)`` with ``x (B, T, J_in * F)`` (any float dtype, ``T >= receptive_field``;
    edge padding is the caller's) returns ``(B, T - RF + 1, J_out * 3)`` in fp32.
    ``use_onednn=None`` picks oneDNN where :func:`onednn_linear_available`; ``False`` forces the
    public ``addmm`` path (tests compare both).
    """

    def __init__(self, folded: FoldedLifter, dtype: torch.dtype = torch.float32, use_onednn: bool | None = None):
        if dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"dtype: the CPU executor runs float32 or bfloat16, got {dtype}")
        layers = folded.layers
        if len(layers) < 2 or layers[-1].relu or layers[-1].taps != 1 or layers[-1].res_offset is not None:
            raise ValueError(f"folded: expected expand, blocks, and a 1x1 shrink without ReLU; got {len(layers)} layers")
        if use_onednn is None:
            use_onednn = onednn_linear_available(dtype)
        self.dtype = dtype
        self.onednn = bool(use_onednn)
        self.receptive_field = folded.receptive_field
        self.c_in = layers[0].c_in
        self.c_out = layers[-1].c_out
        # (weight, bias, taps, dilation, relu, res_offset, span) per hidden layer, ready for the GEMM.
        self._layers = []
        with torch.no_grad():
            for l in layers[:-1]:
                w = _prepare_weight(l.weight.detach().to(dtype), self.onednn)
                # oneDNN takes an fp32 bias with bf16 operands; addmm needs the operands' dtype.
                b = l.bias.detach().to(torch.float32 if self.onednn else dtype).contiguous()
                self._layers.append((w, b, l.taps, l.dilation, l.relu, l.res_offset, l.span))
            shrink = layers[-1]
            # The output layer runs in fp32 (fp32 output; 1024 -> 3*J is a small GEMM).
            self._shrink_w = shrink.weight.detach().to(torch.float32).contiguous()
            self._shrink_b = shrink.bias.detach().to(torch.float32).contiguous()

    def _linear(self, a: torch.Tensor, w: torch.Tensor, b: torch.Tensor, relu: bool) -> torch.Tensor:
        if self.onednn:
            return torch.ops.mkldnn._linear_pointwise(a, w, b, "relu" if relu else "none", [], "")
        return addmm_linear(a, w, b, relu)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[2] != self.c_in:
            raise ValueError(f"x: expected (batch, frames, {self.c_in}), got {tuple(x.shape)}")
        if x.shape[1] < self.receptive_field:
            raise ValueError(f"x: {x.shape[1]} frames is shorter than the receptive field of {self.receptive_field}")
        if x.device.type != "cpu":
            raise ValueError(f"x: the CPU executor needs a CPU tensor, got {x.device}")
        rf = self.receptive_field
        t_out = x.shape[1] - rf + 1
        step = max(1, MAX_ROWS // x.shape[0])
        if t_out <= step:
            return self._run(x)
        return torch.cat([self._run(x[:, s: s + step + rf - 1]) for s in range(0, t_out, step)], dim=1)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        return linear_forward(x.to(self.dtype).contiguous(), self._layers, self._shrink_w, self._shrink_b, self._linear)
