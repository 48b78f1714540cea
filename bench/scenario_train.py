"""Scenario ``train-step``: the single-frame (1f) training model, forward + backward + optimizer.

Case ``step``: one training step of the strided 1f model on a batch of receptive-field windows
(the paper's recipe: batch 1024, dropout 0.25, Adam with amsgrad, MPJPE loss, BN in training
mode). Variants: ``reference-fp32`` (strict fp32), on CUDA ``reference-tf32`` and
``reference-autocast-bf16``, ``compile-reference-fp32`` (``torch.compile`` of the model; the
optimizer stays eager), and fastlift's drop-in ``TemporalModelOptimized1f`` (CUDA: the fused
Triton training kernels, ``fastlift-fp32`` / ``-tf32`` / ``-autocast-bf16``; CPU: ``impl="auto"``,
which runs the strided convs as channels-last GEMMs there (:mod:`fastlift.cpu_train`), fp32 and
bf16 autocast; with ``bf16`` requested on CPU also ``compile-reference-autocast-bf16``).

Check before timing: with dropout switched off, one forward + backward on a fixed batch must give
the reference fp32 output (relative max-abs error) and parameter gradients (relative L2 error of
all gradients concatenated) within the precision's tolerance; the optimizer is the same
``torch.optim.Adam`` for every variant. ``torch.compile`` is checked the same way (a dropout-free
compilation), then recompiled with dropout for timing: both compile times are recorded.

Case ``epoch slice``: ``slice_batches`` consecutive batches of a training epoch including the
data path, on synthetic sequences: the reference's host-side batching (per-example edge padding
and flip augmentation in numpy, as VideoPose3D's ``ChunkedGenerator`` does, then a host-to-device
copy) feeding the reference model, the same feeding fastlift's model, and — when
``fastlift.train.sampler.WindowSampler`` is available — the device-resident sampler feeding
fastlift's model. The data path is checked too: the windows a loader produces must equal the
reference windows of the same (sequence, frame, flip) exactly. ``extra`` holds the data-only
time per batch of each loader.

FLOPs per sample: forward of the 1f model on one window, plus twice that for backward (input and
weight gradients), minus the input-gradient GEMM of the expand layer that is never needed.
Element-wise work (BN, ReLU, dropout, optimizer) is not counted.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch

from fastlift import reference as R
from fastlift.bench.harness import (GRAD_TOLERANCES, TOLERANCES, BenchContext, Variant, make_reference, math_mode,
                                    measure_case, rel_err, rel_l2, sync, time_interleaved)

__all__ = ["run", "train_flops_per_sample", "ReferenceHostLoader", "mpjpe_loss"]

SCENARIO = "train-step"


def train_flops_per_sample(arc, channels: int, joints: int = 17, in_features: int = 2) -> int:
    arch = R.architecture_summary(joints, in_features, joints, list(arc), channels)
    fwd = arch["window_recompute_flops_per_frame"]
    expand_dgrad = 2 * arch["receptive_field"] * joints * in_features * channels
    return 3 * fwd - expand_dgrad


def mpjpe_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-joint position error (the training loss of the recipe), computed in fp32."""
    return (pred.float() - target.float()).norm(dim=-1).mean()


def _set_dropout(model: torch.nn.Module, p: float) -> None:
    model.drop.p = p
    if hasattr(model, "dropout_p"):
        model.dropout_p = p


def _grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.detach().reshape(-1).double() for p in model.parameters()])


class _Trainer:
    """Model + Adam(amsgrad) + optional autocast: ``step(x, y)`` is one optimizer step."""

    def __init__(self, model, forward=None, autocast_dtype=None, device=None):
        self.model = model
        self.forward = forward if forward is not None else model
        self.autocast_dtype = autocast_dtype
        self.device = device
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)

    def _fwd_loss(self, x, y):
        if self.autocast_dtype is not None:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                out = self.forward(x)
        else:
            out = self.forward(x)
        return out, mpjpe_loss(out, y)

    def step(self, x, y):
        self.opt.zero_grad(set_to_none=True)
        _, loss = self._fwd_loss(x, y)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def check_pass(self, x, y):
        """Dropout-free forward + backward; returns (output, gradients). Gradients are cleared after."""
        base = self.model
        p = base.drop.p
        _set_dropout(base, 0.0)
        try:
            base.zero_grad(set_to_none=True)
            out, loss = self._fwd_loss(x, y)
            loss.backward()
            grads = _grads(base)
            out = out.detach().float()
        finally:
            _set_dropout(base, p)
            base.zero_grad(set_to_none=True)
        return out, grads


def _epoch_slice(tr: _Trainer, loader, batches: int):
    """The timed call of an epoch-slice case: ``batches`` training steps, each on the next batch
    from ``loader`` (so batch construction is timed with the step); returns the last loss."""

    def epoch_slice():
        loss = None
        for _ in range(batches):
            bx, by = loader()
            loss = tr.step(bx, by)
        return loss
    return epoch_slice


def _model_variants(ctx: BenchContext, base_state: dict, arc, channels: int, x, y, ref_out, ref_grads,
                    loader=None, data_err: float | None = None) -> list[Variant]:
    """Variants of the training step. With ``loader`` (a callable giving (x, y) per batch), ``fn``
    runs ``ctx.plan.slice_batches`` batches from it instead of one step on (x, y)."""
    import fastlift

    dev = ctx.device
    cuda = ctx.is_cuda

    def build(kind: str):
        if kind == "reference":
            m = R.TemporalModelOptimized1f(17, 2, 17, list(arc), channels=channels, dropout=0.25)
        else:
            m = fastlift.TemporalModelOptimized1f(17, 2, 17, list(arc), channels=channels, dropout=0.25,
                                                  impl="triton" if cuda else "auto")
        m.load_state_dict(base_state)
        return m.to(dev).train()

    def variant(vid, family, precision, kind, autocast=None, compiled=False, baseline=False, label=""):
        info = {}

        def check(_out):
            return info["check"]

        def make():
            model = build(kind)
            fwd = None
            if compiled:  # a fresh wrapper per variant: its model is trained, not shared
                ctx.last_compile_fresh = True
                fwd = torch.compile(model, mode=None if ctx.compile_mode == "default" else ctx.compile_mode)
            tr = _Trainer(model, fwd, autocast, dev)
            if not cuda and kind == "fastlift" and model.uses_kernels(x):
                raise RuntimeError("refusing to benchmark the Triton CPU interpreter (TRITON_INTERPRET is set)")
            sync(dev)
            import time as _t
            t0 = _t.perf_counter()
            out, grads = tr.check_pass(x, y)
            sync(dev)
            if compiled:
                info["check_compile_s"] = _t.perf_counter() - t0
            out_err = rel_err(out, ref_out)
            grad_err = rel_l2(grads, ref_grads)
            tol_o, tol_g = TOLERANCES[precision], GRAD_TOLERANCES[precision]
            info["output_rel_err"] = out_err
            info["grad_rel_l2"] = grad_err
            info["grad_tolerance"] = tol_g
            # one number for the gate: the worse of the two, each scaled to its tolerance
            worst = max(out_err / tol_o, grad_err / tol_g) if math.isfinite(out_err + grad_err) else math.inf
            info["check"] = ("max(out_err/tol_out, grad_err/tol_grad)", worst, 1.0)
            if loader is not None:
                info["data_check_max_abs"] = data_err
                if data_err is None or data_err != 0.0:
                    info["check"] = ("max(out_err/tol_out, grad_err/tol_grad); data windows exact", math.inf, 1.0)
            if loader is None:
                return lambda: tr.step(x, y)
            return _epoch_slice(tr, loader, ctx.plan.slice_batches)

        return Variant(vid, family, precision, make, baseline=baseline, label=label or vid, check=check, info=info)

    vs = [variant("reference-fp32", "reference", "fp32", "reference", baseline=True, label="reference eager fp32")]
    if loader is not None:
        return vs  # the slice adds its fastlift variants itself (data path pairing)
    if cuda:
        vs.append(variant("reference-tf32", "reference", "tf32", "reference", baseline=True,
                          label="reference eager, TF32 on"))
        vs.append(variant("reference-autocast-bf16", "reference", "bf16", "reference", autocast=torch.bfloat16,
                          baseline=True, label="reference eager, autocast bf16"))
    for prec in ctx.precisions:
        if prec == "fp16":
            continue  # fp16 training needs loss scaling; the recipe's mixed precision is bf16
        if not cuda and prec not in ("fp32", "bf16"):
            continue
        vs.append(variant(f"fastlift-{prec}" if prec != "bf16" else "fastlift-autocast-bf16", "fastlift", prec,
                          "fastlift", autocast=torch.bfloat16 if prec == "bf16" else None,
                          label=f"fastlift TemporalModelOptimized1f "
                                f"({'Triton' if cuda else 'impl=auto: channels-last GEMMs on CPU'}) {prec}"))
    if ctx.compile:  # last: a skipped/slow compilation never costs the other variants
        vs.append(variant("compile-reference-fp32", "compile", "fp32", "reference", compiled=True, baseline=True,
                          label="torch.compile(reference 1f) fp32, eager Adam"))
        if not cuda and "bf16" in ctx.precisions:
            vs.append(variant("compile-reference-autocast-bf16", "compile", "bf16", "reference",
                              autocast=torch.bfloat16, compiled=True, baseline=True,
                              label="torch.compile(reference 1f) under autocast bf16, eager Adam"))
    return vs


# ------------------------------------------------------------------------------------ data path
def _synthetic_sequences(n_seq: int, frames: int, seed: int):
    rng = np.random.default_rng(seed)
    p2, p3 = [], []
    for i in range(n_seq):
        t = int(frames * rng.uniform(0.75, 1.25))
        steps = rng.normal(0, 0.01, (t, 17, 2)).astype(np.float32)
        p2.append((rng.uniform(-0.8, 0.8, (1, 17, 2)) + np.cumsum(steps, 0)).astype(np.float32))
        s3 = rng.normal(0, 0.01, (t, 17, 3)).astype(np.float32)
        p3.append((rng.uniform(-0.5, 0.5, (1, 17, 3)) + np.cumsum(s3, 0)).astype(np.float32))
    return p2, p3


class ReferenceHostLoader:
    """VideoPose3D's host-side batching for the 1f model (``ChunkedGenerator`` with
    ``chunk_length=1``), the data-path baseline: every epoch lists each frame of each sequence once
    as is and once flipped, shuffles that list, and builds each batch example by example in
    numpy (slice, edge padding at the borders, x negation and left/right swap when flipped), then
    copies the batch to the device and zeroes the root joint of the 3D targets."""

    def __init__(self, poses_2d, poses_3d, pad: int, batch_size: int, kps_left, kps_right, joints_left, joints_right,
                 device, seed: int = 0, augment: bool = True):
        self.p2, self.p3, self.pad, self.batch_size = poses_2d, poses_3d, pad, batch_size
        self.kl, self.kr = list(kps_left), list(kps_right)
        self.jl, self.jr = list(joints_left), list(joints_right)
        self.device = device
        pairs = [(i, t, False) for i, p in enumerate(poses_2d) for t in range(p.shape[0])]
        if augment:
            pairs += [(i, t, True) for i, t, _ in pairs]
        self.pairs = pairs
        self.rng = np.random.RandomState(seed)
        self.order = self.rng.permutation(len(pairs))
        self.pos = 0
        j = poses_2d[0].shape[1]
        self.batch_2d = np.empty((batch_size, 2 * pad + 1, j, poses_2d[0].shape[2]), dtype=np.float32)
        self.batch_3d = np.empty((batch_size, 1, poses_3d[0].shape[1], 3), dtype=np.float32)

    def window(self, i: int, t: int, flip: bool):
        seq = self.p2[i]
        start, end = t - self.pad, t + self.pad + 1
        low, high = max(start, 0), min(end, seq.shape[0])
        w = seq[low:high]
        if low - start or end - high:
            w = np.pad(w, ((low - start, end - high), (0, 0), (0, 0)), "edge")
        w = np.array(w, dtype=np.float32, copy=True)
        p3 = np.array(self.p3[i][t:t + 1], dtype=np.float32, copy=True)
        if flip:
            w[:, :, 0] *= -1
            w[:, self.kl + self.kr] = w[:, self.kr + self.kl]
            p3[:, :, 0] *= -1
            p3[:, self.jl + self.jr] = p3[:, self.jr + self.jl]
        return w, p3

    def next_batch(self):
        b = self.batch_size
        for k in range(b):
            if self.pos >= len(self.order):
                self.order = self.rng.permutation(len(self.pairs))
                self.pos = 0
            i, t, flip = self.pairs[self.order[self.pos]]
            self.pos += 1
            self.batch_2d[k], self.batch_3d[k] = self.window(i, t, flip)
        x = torch.from_numpy(self.batch_2d).to(self.device)
        y = torch.from_numpy(self.batch_3d).to(self.device)
        y[:, :, 0] = 0
        return x, y


def _window_sampler(p2, p3, pad, batch, skel, device, seed):
    """fastlift's device-resident sampler (train/sampler.py), or (None, reason) when unavailable."""
    try:
        from fastlift.train.sampler import WindowSampler
    except Exception as exc:  # not written yet / broken import: the slice runs without it
        return None, f"fastlift.train.sampler.WindowSampler unavailable ({type(exc).__name__}: {exc})"
    try:
        s = WindowSampler(p2, p3, chunk_length=1, pad=pad, batch_size=batch, augment=True,
                          kps_left=list(skel.joints_left), kps_right=list(skel.joints_right),
                          joints_left=list(skel.joints_left), joints_right=list(skel.joints_right),
                          shuffle=True, seed=seed, device=device)
    except Exception as exc:
        return None, f"WindowSampler construction failed ({type(exc).__name__}: {exc})"
    return s, None


def _sampler_batches(sampler):
    it = iter(())

    def next_batch():
        nonlocal it
        b = next(it, None)
        if b is None or b.inputs_2d.shape[0] != sampler.batch_size:
            it = sampler.epoch()
            b = next(it)
        return b.inputs_2d, b.poses_3d

    return next_batch


def _check_sampler_windows(sampler, host: ReferenceHostLoader, n: int = 64) -> float:
    """Max abs difference between the sampler's windows/targets and the reference windows of the
    same (sequence, frame, flip) items (0 when the data path is exact)."""
    b = next(sampler.epoch())
    worst = 0.0
    for k in range(min(n, b.inputs_2d.shape[0])):
        i, t, f = int(b.sequence[k]), int(b.start[k]), bool(b.flipped[k])
        w, p3 = host.window(i, t, f)
        p3 = p3.copy()
        p3[:, 0] = 0
        worst = max(worst, float(np.abs(b.inputs_2d[k].cpu().numpy() - w).max()),
                    float(np.abs(b.poses_3d[k].cpu().numpy() - p3).max()))
    return worst


def _check_host_windows(host: ReferenceHostLoader) -> float:
    """The host loader against an independent construction via :func:`fastlift.reference.edge_pad`."""
    worst = 0.0
    for i, t, f in (host.pairs[0], host.pairs[len(host.pairs) // 3], host.pairs[-1]):
        seq = torch.from_numpy(host.p2[i])[None]
        padded = R.edge_pad(seq, host.pad, host.pad)[0, t: t + 2 * host.pad + 1].numpy().copy()
        if f:
            padded[:, :, 0] *= -1
            padded[:, host.kl + host.kr] = padded[:, host.kr + host.kl]
        worst = max(worst, float(np.abs(host.window(i, t, f)[0] - padded).max()))
    return worst


def run(ctx: BenchContext, budget=None) -> list[dict]:
    from fastlift.skeleton import H36M_17

    budget = budget or ctx.budget
    plan = ctx.plan
    dev = ctx.device
    arc, ch = list(plan.train_arc), plan.train_channels or plan.channels
    cname = "" if ch == 1024 else f" C={ch}"
    arch = R.architecture_summary(17, 2, 17, arc, ch)
    rf, pad = arch["receptive_field"], arch["pad"]
    fps = train_flops_per_sample(arc, ch)
    base = make_reference(arc, ch, one_f=True, seed=ctx.seed, eval_mode=False)
    base_state = copy.deepcopy(base.state_dict())
    out = []

    # ---------------------------------------------------------------- case 1: the training step
    b = plan.train_batch
    case = f"{rf}f{cname} 1f step B={b}"
    params = {"arc": arc, "receptive_field": rf, "batch": b, "channels": ch, "mode": "training step (fwd+bwd+Adam)",
              "train_flops_per_sample": fps, "dropout": 0.25, "optimizer": "Adam(lr=1e-3, amsgrad=True)"}
    x = torch.randn(b, rf, 17, 2, generator=torch.Generator().manual_seed(ctx.seed)).to(dev)
    y = torch.randn(b, 1, 17, 3, generator=torch.Generator().manual_seed(ctx.seed + 1)).to(dev)
    ref_out = ref_grads = None
    if not budget.expired():
        ctx.log(f"train-step {case}: reference output and gradients ...")
        with math_mode("fp32"):
            ref_out, ref_grads = _Trainer(base.to(dev), device=dev).check_pass(x, y)
    variants = _model_variants(ctx, base_state, arc, ch, x, y, ref_out, ref_grads)
    recs = measure_case(ctx, SCENARIO, case, params, variants, frames_per_call=b, flops_per_call=float(b) * fps,
                        budget=budget)
    for r in recs:
        if r["status"] == "ok":
            ctx.log(f"  {r['variant']:<26} {r['us_per_step'] / 1e3:9.1f} ms/step {r['frames_per_s']:10.0f} samples/s"
                    + (f"  compile {r['extra'].get('check_compile_s', 0):.1f}+{r['compile_s']:.1f} s"
                       if r["compile_s"] else ""))
    out += recs
    del x, y

    # ---------------------------------------------------------------- case 2: data + train epoch slice
    sb, nb = plan.slice_batch, plan.slice_batches
    case = f"{rf}f{cname} epoch slice {nb}x{sb}"
    p2, p3 = _synthetic_sequences(plan.slice_sequences, plan.slice_frames, ctx.seed)
    params = {"arc": arc, "receptive_field": rf, "batch": sb, "batches": nb, "channels": ch,
              "sequences": len(p2), "frames": int(sum(p.shape[0] for p in p2)), "mode": "data + training epoch slice",
              "train_flops_per_sample": fps, "augment": "flip"}
    skel = H36M_17
    host = ReferenceHostLoader(p2, p3, pad, sb, skel.joints_left, skel.joints_right, skel.joints_left,
                               skel.joints_right, dev, seed=ctx.seed)
    host_err = _check_host_windows(host)
    sampler, why = _window_sampler(p2, p3, pad, sb, skel, dev, ctx.seed)
    sampler_err = _check_sampler_windows(sampler, host) if sampler is not None else None
    # a fixed batch from the reference loader for the model checks
    x, y = host.next_batch()
    x, y = x.clone(), y.clone()
    ref_out = ref_grads = None
    if not budget.expired():
        with math_mode("fp32"):
            ref_out, ref_grads = _Trainer(base.to(dev), device=dev).check_pass(x, y)
    variants = _model_variants(ctx, base_state, arc, ch, x, y, ref_out, ref_grads, loader=host.next_batch,
                               data_err=host_err)
    variants[0].id = "reference-fp32+host-loader"
    variants[0].label = "reference fp32 + reference host batching"
    best = "bf16" if (ctx.is_cuda and "bf16" in ctx.precisions) else "fp32"
    pairs = [("host-loader", host.next_batch, host_err)]
    if sampler is not None:
        pairs.append(("window-sampler", _sampler_batches(sampler), sampler_err))
    for name, loader, data_err in pairs:
        variants.append(_slice_fastlift_variant(ctx, base_state, arc, ch, x, y, ref_out, ref_grads, loader, best,
                                                name, data_err))
    recs = measure_case(ctx, SCENARIO, case, params, variants, frames_per_call=sb * nb,
                        flops_per_call=float(sb) * nb * fps, budget=budget)
    # data-only time per batch of each loader, same run
    loaders = {"host-loader": host.next_batch}
    if sampler is not None:
        loaders["window-sampler"] = _sampler_batches(sampler)
    if not budget.expired():
        samples = time_interleaved(loaders, dev, max(1, min(plan.rounds, 3)), {k: nb for k in loaders}, "data/")
        data_ms = {k: 1e3 * float(np.median(v)) for k, v in samples.items()}
        for r in recs:
            r["extra"]["data_ms_per_batch"] = data_ms
            if r["status"] == "ok":
                r["extra"]["step_ms_per_batch"] = r["us_per_step"] / 1e3 / nb
    if sampler is None:
        for r in recs:
            r["extra"]["window_sampler"] = why
    for r in recs:
        if r["status"] == "ok":
            ctx.log(f"  {r['variant']:<36} {r['frames_per_s']:10.0f} samples/s")
    out += recs
    checked = {r["variant"] for r in out if r["status"] == "ok"}
    out += _bench_sampler_cases(ctx, budget, arc, ch, checked)
    return out


# ------------------------------------------------------------------ bench/bench_sampler.py integration
def _bench_sampler_cases(ctx: BenchContext, budget, arc, ch, checked: set) -> list[dict]:
    """Batch construction (numpy loop vs WindowSampler) and, on CUDA, the per-phase epoch breakdown,
    measured by :mod:`fastlift.bench.bench_sampler` on the synthetic training split."""
    from fastlift.bench.harness import new_result

    plan = ctx.plan
    if not plan.sampler_bench:
        return []
    recs = []
    rf = R.architecture_summary(17, 2, 17, list(arc), ch)["receptive_field"]
    b = plan.sampler_batch
    case = f"{rf}f batch construction B={b}"
    params = {"arc": list(arc), "receptive_field": rf, "batch": b, "mode": "training batch construction",
              "data": "synthetic training split (S1, S5-S8)", "source": "bench_sampler.run_sampler_benchmark"}
    common = dict(scenario=SCENARIO, case=case, params=params, frames_per_call=b, flops_per_call=0.0)
    base = dict(variant="reference-numpy-batches", family="reference", precision="fp32", baseline=True,
                label="reference per-example numpy batching (+ float32 conversion)")
    fast = dict(variant="fastlift-window-sampler", family="fastlift", precision="fp32", baseline=False,
                label=f"fastlift WindowSampler on {ctx.device.type}")
    if budget.expired():
        recs += [new_result(**common, **v, status="skipped", reason="time budget exhausted") for v in (base, fast)]
    else:
        ctx.log(f"train-step {case}: bench_sampler.run_sampler_benchmark ...")
        try:
            from fastlift.bench.bench_sampler import run_sampler_benchmark

            sb = run_sampler_benchmark(batch=b, arc=tuple(arc), rounds=plan.sampler_rounds, device=str(ctx.device),
                                       seed=ctx.seed)
        except Exception as exc:
            why = f"bench_sampler unavailable or failed: {type(exc).__name__}: {str(exc)[:300]}"
            recs += [new_result(**common, **v, status="error", reason=why) for v in (base, fast)]
        else:
            t_np, t_dev = sb["numpy_loop_ms_per_batch"] / 1e3, sb["window_sampler_ms_per_batch"] / 1e3
            diff = sb["max_abs_window_difference"]
            timing = {"rounds": plan.sampler_rounds, "samples": [], "source": "bench_sampler (median over batches)"}
            recs.append(new_result(**common, **base, status="ok", check_metric="oracle",
                                   time_s=dict(timing, median=t_np), frames_per_s=b / t_np, us_per_step=t_np * 1e6,
                                   extra={"sequences": sb["sequences"], "frames": sb["frames"]}))
            check = dict(check_metric="max abs window difference vs numpy batches", check_error=diff,
                         check_tolerance=0.0, check_against="reference-numpy-batches")
            if diff == 0.0:
                recs.append(new_result(**common, **fast, status="ok", **check, time_s=dict(timing, median=t_dev),
                                       frames_per_s=b / t_dev, us_per_step=t_dev * 1e6))
            else:
                recs.append(new_result(**common, **fast, status="mismatch", **check,
                                       reason=f"sampler windows differ from the reference batches by {diff:.3g}: "
                                              f"no time reported"))
    if ctx.is_cuda:
        recs += _epoch_breakdown(ctx, budget, arc, ch, checked)
    from fastlift.bench.harness import add_speedups

    for case_name in dict.fromkeys(r["case"] for r in recs):
        add_speedups([r for r in recs if r["case"] == case_name])
    for r in recs:
        for k in ("p25", "p75", "iqr", "min", "max", "inner"):
            if r["time_s"] is not None:
                r["time_s"].setdefault(k, None)
        ctx.add(r)
    return recs


def _epoch_breakdown(ctx: BenchContext, budget, arc, ch, checked: set) -> list[dict]:
    """Phase times of a training step, reference recipe vs fastlift's (CUDA), for the precisions
    whose fastlift training step passed its check in this run."""
    from fastlift.bench.harness import new_result

    plan = ctx.plan
    rf = R.architecture_summary(17, 2, 17, list(arc), ch)["receptive_field"]
    b = plan.train_batch
    fps = train_flops_per_sample(arc, ch)
    recs = []
    for prec, gate in (("bf16", "fastlift-autocast-bf16"), ("fp32", "fastlift-fp32")):
        if prec not in ctx.precisions:
            continue
        case = f"{rf}f{'' if ch == 1024 else f' C={ch}'} epoch breakdown B={b} ({prec})"
        params = {"arc": list(arc), "receptive_field": rf, "batch": b, "channels": ch, "precision": prec,
                  "mode": "training step phases on the synthetic training split",
                  "source": "bench_sampler.run_epoch_breakdown", "train_flops_per_sample": fps}
        common = dict(scenario=SCENARIO, case=case, params=params, frames_per_call=b, flops_per_call=float(b) * fps)
        base = dict(variant="reference-fp32+numpy-batches", family="reference", precision="fp32", baseline=True,
                    label="reference eager fp32 + per-example numpy batching")
        fast = dict(variant=f"fastlift-{'autocast-bf16' if prec == 'bf16' else prec}+window-sampler",
                    family="fastlift", precision=prec, baseline=False, label=f"fastlift {prec} + WindowSampler")
        if gate not in checked:
            why = f"{gate} did not pass (or did not run) the train-step check in this run"
            recs += [new_result(**common, **v, status="skipped", reason=why) for v in (base, fast)]
            continue
        if budget.expired():
            recs += [new_result(**common, **v, status="skipped", reason="time budget exhausted") for v in (base, fast)]
            continue
        ctx.log(f"train-step {case}: bench_sampler.run_epoch_breakdown ...")
        try:
            from fastlift.bench.bench_sampler import run_epoch_breakdown

            eb = run_epoch_breakdown(device=ctx.device, batch=b, arc=tuple(arc), channels=ch,
                                     steps=plan.breakdown_steps, precision=prec, seed=ctx.seed)
        except Exception as exc:
            why = f"bench_sampler.run_epoch_breakdown failed: {type(exc).__name__}: {str(exc)[:300]}"
            recs += [new_result(**common, **v, status="error", reason=why) for v in (base, fast)]
            continue
        if "skipped" in eb:
            recs += [new_result(**common, **v, status="skipped", reason=eb["skipped"]) for v in (base, fast)]
            continue
        for v, key in ((base, "reference"), (fast, "fastlift")):
            step_s = eb[key]["step_ms"] / 1e3
            recs.append(new_result(
                **common, **v, status="ok",
                check_metric="gated: same model class/precision passed the train-step check" if key == "fastlift"
                else "oracle", check_against="reference-fp32",
                time_s={"median": step_s, "rounds": plan.breakdown_steps, "samples": [],
                        "source": "bench_sampler.run_epoch_breakdown (median of whole steps)"},
                extra={"phases_ms": {k: eb[key][k] for k in eb[key] if k.endswith("_ms")},
                       "epoch_s_estimate": eb[f"{key}_epoch_s"], "batches_per_epoch": eb["batches_per_epoch"]},
                **_derived(ctx, v["precision"], step_s, b, float(b) * fps)))
    return recs


def _derived(ctx, precision, median_s, frames, flops):
    from fastlift.bench.harness import derived

    return derived(ctx, precision, median_s, frames, flops)


def _slice_fastlift_variant(ctx, base_state, arc, ch, x, y, ref_out, ref_grads, loader, precision, data_name,
                            data_err) -> Variant:
    """fastlift's 1f model fed by ``loader`` (the host batching or the device sampler)."""
    import fastlift

    dev = ctx.device
    cuda = ctx.is_cuda
    info = {"data_path": data_name, "data_check_max_abs": data_err}
    autocast = torch.bfloat16 if precision == "bf16" else None

    def make():
        m = fastlift.TemporalModelOptimized1f(17, 2, 17, list(arc), channels=ch, dropout=0.25,
                                              impl="triton" if cuda else "auto")
        m.load_state_dict(base_state)
        m = m.to(dev).train()
        if not cuda and m.uses_kernels(x):
            raise RuntimeError("refusing to benchmark the Triton CPU interpreter (TRITON_INTERPRET is set)")
        tr = _Trainer(m, None, autocast, dev)
        out, grads = tr.check_pass(x, y)
        out_err, grad_err = rel_err(out, ref_out), rel_l2(grads, ref_grads)
        info.update(output_rel_err=out_err, grad_rel_l2=grad_err, grad_tolerance=GRAD_TOLERANCES[precision])
        worst = max(out_err / TOLERANCES[precision], grad_err / GRAD_TOLERANCES[precision])
        if data_err is None or data_err != 0.0 or not math.isfinite(worst):
            worst = math.inf
        info["check"] = ("max(out_err/tol_out, grad_err/tol_grad); data windows exact", worst, 1.0)
        return _epoch_slice(tr, loader, ctx.plan.slice_batches)

    vid = f"fastlift-{'autocast-bf16' if precision == 'bf16' else precision}+{data_name}"
    return Variant(vid, "fastlift", precision, make, label=f"fastlift {precision} + {data_name}",
                   check=lambda _out: info["check"], info=info)
