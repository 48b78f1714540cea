"""The streaming step's definition, shared by every streaming executor.

* :class:`StepOp` — one layer of the step: the plan's :class:`~fastlift.kernels.plan.StreamOp`
  (source/destination ring or buffer, tap lags, residual tap) plus that layer's folded weight
  and bias in the engine dtype.
* :func:`layer` — the layer math ``act(a @ W + b)``, ``a (rows, taps*C_in)`` -> ``(rows, C_out)``.
* :func:`shift_register_step` — a pure-function statement of one step over shift registers
  (state tensors ``(N, L_r, C_r)``, oldest frame first), used by the exported step
  (:class:`fastlift.export.StreamStep`). The engine's backends run the same program over
  in-place ring buffers instead (:mod:`.torch_backend`, :mod:`.triton_backend`).
"""
from __future__ import annotations

import torch

__all__ = ["StepOp", "build_ops", "layer", "shift_register_step", "next_pow2"]


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


class StepOp:
    """One layer of the step (backend-neutral description plus its weights).

    ``conv``: the folded layer (taps, dilation, channels, relu); ``src``/``dst``/``res``/``res_tap``
    as in :class:`fastlift.kernels.plan.StreamOp`; ``w``: the ``(taps*C_in, C_out)`` weight in the
    engine dtype (a backend may replace it with a prepacked form and set ``onednn``); ``b``: bias
    in the engine dtype; ``w32_bias``: fp32 bias for the Triton kernel.
    """

    __slots__ = ("conv", "src", "dst", "lags", "res", "res_tap", "w", "b", "w32_bias", "onednn")

    def __init__(self, conv, src, dst, lags=(), res=None, res_tap=None):
        self.conv, self.src, self.dst, self.lags, self.res, self.res_tap = conv, src, dst, lags, res, res_tap
        self.onednn = False


def build_ops(plan, folded, device, dtype) -> list:
    """:class:`StepOp` per entry of ``plan.stream_program`` with ``folded``'s weights on
    ``device`` in ``dtype`` (biases also in fp32)."""
    ops = []
    for sop in plan.stream_program:
        conv = folded.layers[sop.layer]
        op = StepOp(conv, sop.src, sop.dst, sop.lags, sop.res, sop.res_tap)
        op.b = conv.bias.to(device=device, dtype=dtype).contiguous()
        op.w32_bias = conv.bias.to(device=device, dtype=torch.float32).contiguous()
        op.w = conv.weight.to(device=device, dtype=dtype).contiguous()
        ops.append(op)
    return ops


def layer(a: torch.Tensor, w: torch.Tensor, b: torch.Tensor, relu: bool, out: torch.Tensor | None = None):
    """``act(a @ w + b)`` with public torch ops: ``a (rows, K)``, ``w (K, C_out)``, ``b (C_out,)``."""
    y = torch.addmm(b, a, w, out=out) if out is not None else torch.addmm(b, a, w)
    return y.relu_() if relu else y


def shift_register_step(ops, x: torch.Tensor, fresh: torch.Tensor, state):
    """One step of ``N`` streams as a pure function (traceable by ``torch.export``).

    ``ops``: :class:`StepOp` list (``build_ops``); ``x (N, J_in*F)`` in the weights' dtype;
    ``fresh`` bool ``(N, 1, 1)``: the stream's first frame (its history becomes this frame's
    response, as edge replication does); ``state[r] (N, L_r, C_r)``: the last ``L_r`` inputs of
    ring ``r``, oldest first. Returns ``(out (N, C_out), new_state)``.
    """
    n = x.shape[0]
    new_state = list(state)
    pending = {0: x}  # ring -> the frame pushed into it this step
    bufs = {}
    for op in ops:
        if op.src[0] == "ring":
            r = op.src[1]
            ring = state[r]
            v = pending.pop(r).unsqueeze(1)
            ring = torch.where(fresh, v.expand(n, ring.shape[1], ring.shape[2]), torch.cat([ring[:, 1:], v], dim=1))
            new_state[r] = ring
            # tap k reads lag (taps-1-k)*d, i.e. shift-register position k*d
            d = op.lags[-2] - op.lags[-1] if len(op.lags) > 1 else 1
            a = ring[:, ::d].reshape(n, op.conv.taps * ring.shape[2])
        else:
            a = bufs[op.src[1]]
        y = layer(a, op.w, op.b, op.conv.relu)
        if op.res is not None:
            r, lag = op.res
            ring = new_state[r]
            y = y + ring[:, ring.shape[1] - 1 - lag]
        if op.dst[0] == "ring":
            pending[op.dst[1]] = y
        else:
            bufs[op.dst[1]] = y
    return bufs["out"], new_state
