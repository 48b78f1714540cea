"""The whole lifter as one differentiable fused operation (training and eval mode).

:class:`LifterFunction` runs the reference network — expand conv, blocks of (dilated or strided
conv -> BN -> ReLU -> dropout -> 1x1 conv -> BN -> ReLU -> dropout) + residual, shrink conv —
on the fused operators and writes its own backward, so BatchNorm, ReLU and dropout never
materialise their intermediate tensors:

forward (training)
  * every conv emits per-tile BN partials in its epilogue; ``bn_finalize`` turns them into
    ``scale/shift`` and updates the running statistics exactly as ``nn.BatchNorm1d``;
  * a block's inner activation ``dropout(relu(BN(z_d)))`` is applied in the 1x1 conv's prologue;
    a block output (consumed twice: next conv + residual) is materialised once by ``bn_act``;
  * the last block output is never materialised: the shrink conv's prologue rebuilds it.

backward
  * ``dgrad`` kernels apply the BN/ReLU/dropout backward of the layer they differentiate in their
    prologue (``G = dL/dz`` from ``dL/da`` and ``z``) and emit the BN reductions
    (``sum gu``, ``sum gu*zhat``) of the layer before them in their epilogue, plus the residual
    gradient;
  * ``wgrad`` kernels recompute their A operand (activation or block output) from the stored
    pre-BN ``z`` with the same dropout mask.

Saved for backward per BN layer: its pre-BN output ``z`` (and each materialised block input).
Dropout masks come from ``seed`` (a device int64 tensor) plus a per-layer salt and are never
stored.

Eval mode uses the running statistics (``m1 = m2 = 0`` in the BN backward) and no dropout, so
the same function gives exact gradients through a frozen-BN model too.
"""
import weakref
from typing import Optional, Sequence

import torch

from fastlift.kernels.bn_act import bn_act_materialize
from fastlift.kernels.bn_stats import bn_eval_coefficients, bn_finalize, bn_grad_coef
from fastlift.kernels.bn_sync import bn_finalize_synced, current_bn_sync
from fastlift.kernels.plan import ConvGeom, LifterPlan
from fastlift.kernels.tconv_dgrad import tconv_dgrad
from fastlift.kernels.tconv_fwd import stats_tile_rows, tconv_fwd
from fastlift.kernels.tconv_wgrad import tconv_wgrad

__all__ = ["ConvGeom", "LifterPlan", "LifterFunction", "layer_salt", "pack_weight", "packed_weight", "unpack_weight"]

# Per-layer dropout salts are far apart so that (seed + salt) never collides across layers for
# any realistic number of training steps (the module advances the seed by 1 per step).
_SALT_STRIDE = 1 << 40


def layer_salt(bn_index: int) -> int:
    """Salt added to the dropout seed for the activation after BatchNorm layer ``bn_index``
    (0 = expand_bn, 1 + 2*i = block i's dilated conv, 2 + 2*i = block i's 1x1 conv)."""
    return (bn_index + 1) * _SALT_STRIDE


def pack_weight(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Conv1d weight ``[C_out, C_in, K]`` -> kernel layout ``[K*C_in, C_out]`` in ``dtype``."""
    c_out, c_in, k = w.shape
    return w.detach().to(dtype).permute(2, 1, 0).reshape(k * c_in, c_out).contiguous()


_PACKED: dict = {}  # id(parameter) -> (key, packed); entries die with their parameter (weakref.finalize)


def packed_weight(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """:func:`pack_weight`, cached per parameter and repacked only when the parameter changed (its
    version counter, storage or the dtype): forwards without an optimizer step in between (eval
    loops, gradient accumulation) do not repack. Not cached while tracing."""
    if torch.compiler.is_compiling() or not isinstance(w, torch.nn.Parameter):
        return pack_weight(w, dtype)
    key = (w._version, w.data_ptr(), dtype, w.device)
    hit = _PACKED.get(id(w))
    if hit is not None and hit[0] == key:
        return hit[1]
    packed = pack_weight(w, dtype)
    if hit is None:
        weakref.finalize(w, _PACKED.pop, id(w), None)
    _PACKED[id(w)] = (key, packed)
    return packed


def unpack_weight(dw: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Kernel-layout gradient ``[K*C_in, C_out]`` -> Conv1d layout of ``like``."""
    c_out, c_in, k = like.shape
    return dw.reshape(k, c_in, c_out).permute(2, 1, 0).contiguous().to(like.dtype)


class _BN:
    """Per-BN-layer state carried from forward to backward.

    The activation is applied centred, ``relu((z - mean)*scale + shift)`` with ``shift = beta``:
    the folded form ``z*scale + (beta - mean*scale)`` loses precision when ``|mean| >> std``
    (e.g. BatchNorm over few rows), where torch's BatchNorm does not.
    """

    __slots__ = ("z", "mean", "invstd", "scale", "shift", "salt", "gcoef")

    def ecoef(self) -> torch.Tensor:
        return torch.stack([self.scale, self.shift, self.mean, self.invstd])


def _split_params(plan: LifterPlan, params: Sequence[torch.Tensor]):
    """Flat parameter list -> (conv weights, BN tuples, shrink weight, shrink bias).

    Order: expand_w, expand_bn(w, b, rm, rv, nbt), per block [conv_w, bn(5), pw_w, bn(5)], shrink_w, shrink_b.
    """
    expect = 1 + 5 + len(plan.blocks) * 12 + 2
    if len(params) != expect:
        raise ValueError(f"params: expected {expect} tensors for {len(plan.blocks)} blocks, got {len(params)}")
    convs = [params[0]]
    bns = [tuple(params[1:6])]
    i = 6
    for _ in plan.blocks:
        convs.append(params[i])
        bns.append(tuple(params[i + 1:i + 6]))
        convs.append(params[i + 6])
        bns.append(tuple(params[i + 7:i + 12]))
        i += 12
    return convs, bns, params[i], params[i + 1]


def _geoms(plan: LifterPlan) -> list:
    """ConvGeom of every BN-followed conv in execution order (expand, then per block wide + 1x1)."""
    return [layer.conv for layer in plan.layers[:-1]]


def _shrink_input(plan: LifterPlan, block_inputs) -> dict:
    """Prologue arguments that rebuild the last block's output (the shrink conv's input) from the
    last BN layer's ``z`` plus the residual taken from the last block's input."""
    if not plan.blocks:
        return {}
    blk = plan.blocks[-1]
    return dict(pro_residual=block_inputs[-1], pres_row_stride=blk.res_row_stride, pres_offset=blk.res_offset)


class LifterFunction(torch.autograd.Function):
    """``y = lifter(x)`` on the fused operators.

    ``apply(plan, training, momenta, p, seed, x, *params)``:
      * ``x``: ``(B, T, J_in*F)`` activations in the compute dtype (fp32/fp16/bf16);
      * ``momenta``: per-BN momentum (float or None) used when ``training``;
      * ``p``: dropout probability (ignored unless ``training``); ``seed``: int64 ``[1]`` tensor;
      * ``params``: see :func:`_split_params` (running stats are updated in place in training).
    Returns ``(B, T_out, J_out*3)`` in the compute dtype.
    """

    @staticmethod
    def forward(ctx, plan: LifterPlan, training: bool, momenta, p: float, seed: torch.Tensor, x: torch.Tensor,
                *params):
        convs, bns, shrink_w, shrink_b = _split_params(plan, params)
        act = x.dtype
        p_eff = float(p) if training else 0.0
        seed_used = seed.detach().clone()
        geoms = _geoms(plan)
        weights = [packed_weight(w, act) for w in convs]
        ws = packed_weight(shrink_w, act)
        bias = shrink_b.detach().float()
        states = []
        # Synced BatchNorm (fastlift.kernels.bn_sync): statistics of the whole process group's batch.
        sync = current_bn_sync() if training else None

        def conv_bn(l, inp, pro: Optional[_BN]):
            g = geoms[l]
            z, psum, pm2, _ = tconv_fwd(
                inp, weights[l], taps=g.taps, dilation=g.dilation, stride=g.stride,
                pro_scale=pro.scale if pro is not None else None, pro_shift=pro.shift if pro is not None else None,
                pro_mean=pro.mean if pro is not None else None,
                seed=seed_used, p=p_eff if pro is not None else 0.0, salt=pro.salt if pro is not None else 0,
                stats=training)
            gamma, beta, rm, rv, nbt = bns[l]
            st = _BN()
            st.z, st.salt = z, layer_salt(l)
            if training:
                m = z.shape[0] * z.shape[1]
                tile = stats_tile_rows(m, z.shape[2], inp.shape[2] * g.taps, act, z.device)
                finalize = bn_finalize if sync is None else lambda *a: bn_finalize_synced(sync, *a)
                st.mean, st.invstd, st.scale, _ = finalize(
                    psum, pm2, m, tile, gamma.detach(), beta.detach(), rm, rv, nbt, momenta[l], plan.eps)
            else:
                st.mean, st.invstd, st.scale, _ = bn_eval_coefficients(gamma, beta, rm, rv, plan.eps)
            st.shift = beta.detach().float() if beta is not None else torch.zeros_like(st.mean)
            states.append(st)
            return st

        s0 = conv_bn(0, x, None)
        block_inputs = []
        xb = (bn_act_materialize(s0.z, s0.scale, s0.shift, mean=s0.mean, seed=seed_used, p=p_eff, salt=s0.salt)
              if plan.blocks else None)
        for i, blk in enumerate(plan.blocks):
            block_inputs.append(xb)
            sd = conv_bn(1 + 2 * i, xb, None)
            sp = conv_bn(2 + 2 * i, sd.z, sd)
            if i + 1 < len(plan.blocks):
                xb = bn_act_materialize(sp.z, sp.scale, sp.shift, mean=sp.mean, residual=xb, res_row_stride=blk.res_row_stride,
                                        res_offset=blk.res_offset, seed=seed_used, p=p_eff, salt=sp.salt)
        last = states[-1]
        y, _, _, _ = tconv_fwd(last.z, ws, taps=1, bias=bias, pro_scale=last.scale, pro_shift=last.shift,
                               pro_mean=last.mean,
                               seed=seed_used, p=p_eff, salt=last.salt, **_shrink_input(plan, block_inputs))

        # Only tensors handed to save_for_backward cross into backward (torch.compile-friendly).
        ctx.plan, ctx.training, ctx.p, ctx.bn_sync = plan, training, p_eff, sync
        ctx.n_blocks_in = len(block_inputs)
        ctx.save_for_backward(x, seed_used, ws, *block_inputs, *weights,
                              *[t for st in states for t in (st.z, st.mean, st.invstd, st.scale, st.shift)], *params)
        return y

    @staticmethod
    def backward(ctx, gy):
        plan, p, training, sync = ctx.plan, ctx.p, ctx.training, ctx.bn_sync
        saved = ctx.saved_tensors
        x, seed, ws = saved[0], saved[1], saved[2]
        nb, nl = ctx.n_blocks_in, plan.num_bn
        block_inputs = saved[3:3 + nb]
        weights = saved[3 + nb:3 + nb + nl]
        flat = saved[3 + nb + nl:3 + nb + nl + 5 * nl]
        params = saved[3 + nb + nl + 5 * nl:]
        convs, bns, shrink_w, shrink_b = _split_params(plan, params)
        states = []
        for l in range(nl):
            st = _BN()
            st.z, st.mean, st.invstd, st.scale, st.shift = flat[5 * l:5 * l + 5]
            st.salt = layer_salt(l)
            states.append(st)
        shrink_kw = _shrink_input(plan, block_inputs)
        geoms = _geoms(plan)
        act = x.dtype
        gy = gy.contiguous().to(act)

        param_grads: list = [None] * len(params)
        dW = [None] * len(convs)
        dgamma = [None] * plan.num_bn
        dbeta = [None] * plan.num_bn

        def reduce(l, psu, psz):
            # One launch: dbeta = sum gu, dgamma = sum gu*zhat, and the BN-backward coefficients
            # [scale, shift, mean, invstd, m1, m2] (m1 = m2 = 0 in eval mode: constant statistics).
            st = states[l]
            n = st.z.shape[0] * st.z.shape[1]
            if sync is None:
                st.gcoef, dgamma[l], dbeta[l] = bn_grad_coef(psu, psz, n, st.scale, st.shift, st.mean, st.invstd,
                                                             training)
                return
            # Synced BatchNorm (training only): batch means over every rank's rows; dgamma/dbeta stay
            # local (DDP sums them).
            sgu, sguz = psu.sum(0), psz.sum(0)
            dbeta[l], dgamma[l] = sgu, sguz
            sgu, sguz, nt = sync.reduce_sums(sgu, sguz, torch.tensor(float(n), device=sgu.device))
            st.gcoef = torch.stack([st.scale, st.shift, st.mean, st.invstd, sgu / nt, sguz / nt])

        last_l = plan.num_bn - 1
        last = states[last_l]
        dws = tconv_wgrad(last.z, gy, taps=1, pro_scale=last.scale, pro_shift=last.shift, pro_mean=last.mean, a_p=p,
                          a_salt=last.salt, seed=seed, **shrink_kw)
        db = gy.float().sum((0, 1))
        gX, psu, psz = tconv_dgrad(gy, ws, taps=1, t_in=last.z.shape[1], zprev=last.z, ecoef=last.ecoef(), e_p=p,
                                   e_salt=last.salt, seed=seed)
        reduce(last_l, psu, psz)
        for i in reversed(range(len(plan.blocks))):
            blk = plan.blocks[i]
            ld, lp, lprev = 1 + 2 * i, 2 + 2 * i, 2 * i
            sd, sp, sprev = states[ld], states[lp], states[lprev]
            dW[lp] = tconv_wgrad(sd.z, gX, taps=1, pro_scale=sd.scale, pro_shift=sd.shift, pro_mean=sd.mean, a_p=p,
                                 a_salt=sd.salt, z=sp.z, gcoef=sp.gcoef, g_p=p, g_salt=sp.salt, seed=seed)
            g_ad, psu, psz = tconv_dgrad(gX, weights[lp], taps=1, t_in=sd.z.shape[1], z=sp.z, gcoef=sp.gcoef, g_p=p,
                                         g_salt=sp.salt, zprev=sd.z, ecoef=sd.ecoef(), e_p=p, e_salt=sd.salt, seed=seed)
            reduce(ld, psu, psz)
            xb = block_inputs[i]
            g = geoms[ld]
            dW[ld] = tconv_wgrad(xb, g_ad, taps=g.taps, dilation=g.dilation, stride=g.stride, z=sd.z, gcoef=sd.gcoef,
                                 g_p=p, g_salt=sd.salt, seed=seed)
            gX, psu, psz = tconv_dgrad(g_ad, weights[ld], taps=g.taps, t_in=xb.shape[1], dilation=g.dilation,
                                       stride=g.stride, z=sd.z, gcoef=sd.gcoef, g_p=p, g_salt=sd.salt, gres=gX,
                                       gres_row_stride=blk.res_row_stride, gres_offset=blk.res_offset,
                                       zprev=sprev.z, ecoef=sprev.ecoef(), e_p=p, e_salt=sprev.salt, seed=seed)
            reduce(lprev, psu, psz)
        s0, g0 = states[0], geoms[0]
        dW[0] = tconv_wgrad(x, gX, taps=g0.taps, dilation=g0.dilation, stride=g0.stride, z=s0.z, gcoef=s0.gcoef,
                            g_p=p, g_salt=s0.salt, seed=seed)
        gx_in = None
        if ctx.needs_input_grad[5]:
            gx_in, _, _ = tconv_dgrad(gX, weights[0], taps=g0.taps, t_in=x.shape[1], dilation=g0.dilation,
                                      stride=g0.stride, z=s0.z, gcoef=s0.gcoef, g_p=p, g_salt=s0.salt, seed=seed)

        # Scatter into the flat parameter order of _split_params.
        param_grads[0] = unpack_weight(dW[0], convs[0])
        param_grads[1], param_grads[2] = dgamma[0].to(bns[0][0].dtype), dbeta[0].to(bns[0][1].dtype)
        k = 6
        for i in range(len(plan.blocks)):
            for l, off in ((1 + 2 * i, 0), (2 + 2 * i, 6)):
                param_grads[k + off] = unpack_weight(dW[l], convs[l])
                param_grads[k + off + 1] = dgamma[l].to(bns[l][0].dtype)
                param_grads[k + off + 2] = dbeta[l].to(bns[l][1].dtype)
            k += 12
        param_grads[k] = dws.t().reshape(shrink_w.shape).to(shrink_w.dtype)
        param_grads[k + 1] = db.to(shrink_b.dtype)
        return (None, None, None, None, None, gx_in, *param_grads)
