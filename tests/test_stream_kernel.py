"""The fused streaming step kernel (fastlift.kernels.stream_step).

CPU: the kernel runs under the Triton interpreter (``TRITON_INTERPRET=1`` must be set before
triton is first imported; this module sets it when there is no CUDA device). If triton was
already imported in compiled mode by an earlier test module, the in-process interpreter tests
skip and ``test_interpreter_suite_in_subprocess`` re-runs this file in a fresh interpreter.
GPU tier (``-m gpu``): the compiled kernel and the CUDA-graph engine, skipped without CUDA.
"""
from __future__ import annotations

import os
import subprocess
import sys

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

triton = pytest.importorskip("triton")
from fastlift.kernels import stream_step as ks  # noqa: E402
from fastlift.reference import TemporalModel, lift_sequence  # noqa: E402
from fastlift.streaming import StreamingLifter  # noqa: E402

INTERP = ks.interpreter_active()
HAS_CUDA = torch.cuda.is_available()
interp_only = pytest.mark.skipif(not INTERP, reason="Triton interpreter not active in this process (triton was "
                                                    "imported before TRITON_INTERPRET=1, or CUDA is present)")
gpu = [pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")]


def _devices():
    devs = []
    if INTERP:
        devs.append(pytest.param("cpu", marks=pytest.mark.interpreter))
    devs.append(pytest.param("cuda", marks=gpu))
    return devs


# ---------------------------------------------------------------------------- kernel vs oracle
def oracle(layer: ks.StreamLayer, meta: torch.Tensor, n_rows: int):
    """Row-by-row float64 statement of what one launch must do; returns (src_after, dst_after)."""
    src = layer.src.double().clone()
    dst = layer.dst.double().clone()
    w = layer.weight.double()
    c_in = w.shape[0] // layer.taps
    reads = layer.src.double()  # taps are read before the launch's own input-ring write
    for row in range(n_rows):
        slot, t, fresh = (int(v) for v in meta[:, row])
        y = layer.bias.double().clone()
        for k in range(layer.taps):
            lag = (layer.taps - 1 - k) * layer.dilation
            if not layer.src_ring:
                v = reads[row]
            elif layer.x is not None and (fresh or lag == 0):
                v = layer.x[row].double()
            else:
                v = reads[slot, (t - lag) % layer.src.shape[1]]
            y = y + v @ w[k * c_in:(k + 1) * c_in]
        if layer.relu:
            y = torch.relu(y)
        if layer.res is not None:
            y = y + layer.res.double()[slot, (t - layer.res_lag) % layer.res.shape[1]]
        if layer.dst_ring:
            if fresh:
                dst[slot, :] = y
            dst[slot, t % layer.dst.shape[1]] = y
        else:
            dst[row] = y
        if layer.x is not None:
            if fresh:
                src[slot, :] = layer.x[row].double()
            src[slot, t % layer.src.shape[1]] = layer.x[row].double()
    return src, dst


CASES = {
    # name: (taps, dilation, c_in, c_out, src ring length or None, dst ring length or None, x, res lag or None, relu)
    "expand": (3, 1, 10, 40, 3, 7, True, None, True),
    "expand_long_ring": (3, 1, 34, 24, 5, 19, True, None, True),
    "dilated": (3, 3, 40, 24, 7, None, False, None, True),
    "pointwise_res_centre": (1, 1, 24, 24, None, 19, False, 3, True),
    "pointwise_res_newest": (1, 1, 24, 24, None, None, False, 0, True),
    "shrink": (1, 1, 24, 9, None, None, False, None, False),
    "dense": (7, 1, 16, 40, 7, None, False, None, True),
    "pointwise_wide": (1, 1, 70, 24, None, 19, False, 3, True),  # 3 K blocks of 32 in one tap
}


def build_case(name, n_rows, device, dtype=torch.float32, seed=0):
    taps, dil, c_in, c_out, l_src, l_dst, with_x, res_lag, relu = CASES[name]
    g = torch.Generator().manual_seed(seed)
    slots_total = n_rows + 3  # some slots are never touched by the launch
    mk = lambda *shape: torch.randn(*shape, generator=g).to(device=device, dtype=dtype)  # noqa: E731
    src = mk(slots_total, l_src, c_in) if l_src else mk(n_rows, c_in)
    dst = mk(slots_total, l_dst, c_out) if l_dst else mk(n_rows, c_out)
    res = mk(slots_total, 7, c_out) if res_lag is not None else None
    x = mk(n_rows, c_in) if with_x else None
    w = (torch.randn(taps * c_in, c_out, generator=g) / (taps * c_in) ** 0.5).to(device=device, dtype=dtype)
    b = torch.randn(c_out, generator=g).to(device=device, dtype=torch.float32)
    meta = torch.zeros(3, n_rows + 5, dtype=torch.int64)  # wider than n_rows: the row stride is not n_rows
    meta[0, :n_rows] = torch.randperm(slots_total, generator=g)[:n_rows]
    meta[1, :n_rows] = torch.randint(0, 60, (n_rows,), generator=g)  # t < lag wraps around the ring
    meta[2, :n_rows] = (torch.rand(n_rows, generator=g) < 0.3).long()
    layer = ks.StreamLayer(weight=w, bias=b, taps=taps, dilation=dil, src=src, src_ring=l_src is not None, dst=dst,
                           dst_ring=l_dst is not None, relu=relu, x=x, res=res, res_lag=res_lag or 0)
    return layer, meta.to(device)


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("n_rows", [1, 7, 67])
@pytest.mark.parametrize("name", list(CASES))
def test_kernel_matches_oracle(name, n_rows, device):
    layer, meta = build_case(name, n_rows, device, seed=n_rows)
    exp_src, exp_dst = oracle(layer, meta.cpu(), n_rows)
    src_before = layer.src.clone()
    ks.stream_layer(layer, meta, n_rows)
    torch.testing.assert_close(layer.dst.double().cpu(), exp_dst, rtol=1e-5, atol=1e-5)
    if layer.x is not None:
        torch.testing.assert_close(layer.src.double().cpu(), exp_src, rtol=0, atol=0)
    else:
        assert torch.equal(layer.src, src_before)  # sources are read-only


@pytest.mark.parametrize("device", _devices())
def test_kernel_fp16(device):
    layer, meta = build_case("expand", 7, device, dtype=torch.float16, seed=3)
    exp_src, exp_dst = oracle(layer, meta.cpu(), 7)
    ks.stream_layer(layer, meta, 7)
    torch.testing.assert_close(layer.dst.double().cpu(), exp_dst, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(layer.src.double().cpu(), exp_src, rtol=0, atol=0)


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("n_rows,split", [(1, 2), (1, 3), (7, 5), (23, 4), (1, 64)])
@pytest.mark.parametrize("name", ["expand", "expand_long_ring", "dilated", "pointwise_wide", "dense", "shrink"])
def test_split_k_matches_oracle_and_is_deterministic(name, n_rows, split, device):
    """Split-K (forced at small sizes): partial sums + last-arrival reduction == the oracle, the
    counters are re-armed (a second launch with the same scratch gives the same bits), and the
    result does not depend on whether a scratch was passed."""
    layer, meta = build_case(name, n_rows, device, seed=100 + n_rows + split)
    cfg = ks.launch_config(layer, n_rows, split_k=split)
    k_blocks = layer.taps * -(-(layer.weight.shape[0] // layer.taps) // cfg["cfg"]["BLOCK_K"])
    assert cfg["grid"][2] == cfg["cfg"]["SPLIT_K"] == min(split, k_blocks)
    exp_src, exp_dst = oracle(layer, meta.cpu(), n_rows)
    src0, dst0 = layer.src.clone(), layer.dst.clone()
    scratch = ks.StreamScratch(device, cfg["partial_elems"], cfg["tiles"])
    ks.stream_layer(layer, meta, n_rows, scratch=scratch, split_k=split)
    torch.testing.assert_close(layer.dst.double().cpu(), exp_dst, rtol=1e-5, atol=1e-5)
    if layer.x is not None:
        torch.testing.assert_close(layer.src.double().cpu(), exp_src, rtol=0, atol=0)
    assert int(scratch.counters.abs().sum()) == 0  # re-armed for the next launch
    first = layer.dst.clone()
    for use_scratch in (scratch, None):
        layer.src.copy_(src0)
        layer.dst.copy_(dst0)
        ks.stream_layer(layer, meta, n_rows, scratch=use_scratch, split_k=split)
        assert torch.equal(layer.dst, first)


def test_split_k_plan_fills_the_sms_at_one_stream():
    """At N = 1 every layer of the 243f model (1,024 channels) launches >= one program per SM on
    H100/H200 (132) and A100 (108), in every dtype; many streams do not split (reuse of the weight tile)."""
    from fastlift.kernels._common import stream_config
    from fastlift.kernels.target import INTERPRETER, cuda_target

    shapes = [(3, 34, 1024), (3, 1024, 1024), (1, 1024, 1024), (1, 1024, 51)]  # expand, dilated, 1x1, shrink
    for arch in (90, 80):
        target = cuda_target(arch)
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for taps, c_in, c_out in shapes:
                cfg = stream_config(1, c_out, dtype, target, c_in=c_in, taps=taps)
                programs = -(-c_out // cfg["BLOCK_C"]) * cfg["SPLIT_K"]
                assert programs >= target.sm_count, (arch, dtype, taps, c_in, c_out, cfg)
                assert cfg["SPLIT_K"] <= taps * -(-c_in // cfg["BLOCK_K"])  # no empty slice
                assert min(cfg["BLOCK_N"], cfg["BLOCK_C"], cfg["BLOCK_K"]) >= 16
                big = stream_config(256, c_out, dtype, target, c_in=c_in, taps=taps)
                assert big["SPLIT_K"] == 1 and big["BLOCK_N"] == 64
    assert stream_config(1, 1024, torch.float32, INTERPRETER, c_in=1024, taps=3)["SPLIT_K"] == 1
    assert stream_config(1, 1024, torch.float32, cuda_target(90))["SPLIT_K"] == 1  # no c_in: no split
    with pytest.raises(ValueError, match="split_k: expected a positive integer, got 0"):
        stream_config(1, 1024, torch.float32, INTERPRETER, c_in=1024, split_k=0)


@interp_only
@pytest.mark.interpreter
def test_launcher_validation():
    layer, meta = build_case("pointwise_res_centre", 4, "cpu")
    bad = [
        (dict(weight=layer.weight.double()), "weight: expected dtype in"),
        (dict(bias=layer.bias.half()), "bias: expected a contiguous fp32"),
        (dict(taps=5), "taps/dilation"),
        (dict(dst=layer.dst[:, :, :8]), "dst: expected a contiguous tensor"),
        (dict(res=layer.dst, res_lag=0), "res: the residual ring must not be the destination"),
        (dict(res_lag=7), "res: expected a torch.float32 ring"),
        (dict(src=layer.src[:, :5].contiguous()), "src: expected a (>= 4, 24) row buffer"),
        (dict(dst=layer.dst.half()), "dst: expected dtype torch.float32"),
    ]
    for change, fragment in bad:
        kwargs = dict(layer.__dict__)
        kwargs.update(change)
        with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            ks.stream_layer(ks.StreamLayer(**kwargs), meta, 4)
    bad_meta = meta.clone()
    bad_meta[0, 1] = 99
    with pytest.raises(ValueError, match=r"meta\[0\]: expected slot indices in \[0, 7\)"):
        ks.stream_layer(layer, bad_meta, 4)
    with pytest.raises(ValueError, match="meta: expected an int64"):
        ks.stream_layer(layer, meta.int(), 4)
    dilated, m2 = build_case("dilated", 4, "cpu")
    with pytest.raises(ValueError, match="src: expected a ring of length >= span"):
        ks.stream_layer(ks.StreamLayer(**{**dilated.__dict__, "dilation": 4}), m2, 4)


def test_stream_config_respects_tl_dot_minimums():
    from fastlift.kernels._common import stream_config
    from fastlift.kernels.target import INTERPRETER, cuda_target

    for target in (INTERPRETER, cuda_target(80), cuda_target(90)):
        for n in (1, 3, 16, 17, 64, 65, 4096):
            for c in (9, 51, 1024):
                cfg = stream_config(n, c, torch.float32, target)
                assert min(cfg["BLOCK_N"], cfg["BLOCK_C"], cfg["BLOCK_K"]) >= 16 and cfg["num_warps"] in (4, 8)
                assert cfg["BLOCK_N"] >= min(n, 64)  # up to 64 streams fit one row tile


@pytest.mark.parametrize("name", list(CASES))
def test_torch_twin_matches_oracle(name):
    """The registered op's CPU implementation (the torch twin) does what one launch must do."""
    layer, meta = build_case(name, 7, "cpu", seed=11)
    exp_src, exp_dst = oracle(layer, meta, 7)
    torch.ops.fastlift.stream_layer(layer.src, layer.x, layer.weight, layer.bias, layer.res, layer.dst, meta, 7,
                                    layer.taps, layer.dilation, layer.res_lag, layer.src_ring, layer.dst_ring,
                                    layer.relu)
    torch.testing.assert_close(layer.dst.double(), exp_dst, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.src.double(), exp_src, rtol=0, atol=0)


# ---------------------------------------------------------------------------- engine (triton backend)
def make_model(fw, causal, channels=16, dense=False, seed=0, j_in=4, j_out=3):
    torch.manual_seed(seed)
    m = TemporalModel(j_in, 2, j_out, fw, causal=causal, channels=channels, dense=dense)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.normal_(0, 0.3)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.normal_(1, 0.5)
                mod.bias.normal_(0, 0.2)
    return m.eval()


def drive_pair(model, device, schedule, seqs, max_streams, compare_state=True, **engine_kwargs):
    """Run the same schedule on a triton-backend engine and a torch-backend engine.

    ``schedule``: list of steps, each a list of ("open", job) / ("push", [jobs]) / ("close", job).
    Checks after every call that outputs and ring state agree; returns the triton engine's
    per-job poses ordered by frame.
    """
    tri = StreamingLifter(model, max_streams, device=device, backend="triton", **engine_kwargs)
    ref = StreamingLifter(model, max_streams, device=device, backend="torch")
    slot_of, got = {}, {}
    for step in schedule:
        for op, arg in step:
            if op == "open":
                s = tri.open()
                assert ref.open() == s
                slot_of[arg], got[arg] = s, {}
                continue
            if op == "push":
                slots = torch.tensor([slot_of[j] for j in arg], dtype=torch.int64)
                frames = torch.stack([seqs[j][tri.frames_pushed(slot_of[j])] for j in arg]).to(device)
                o_t, o_r = tri.push(slots, frames), ref.push(slots, frames)
            else:
                o_t, o_r = tri.close(slot_of[arg]), ref.close(slot_of[arg])
            assert torch.equal(o_t.slots, o_r.slots) and torch.equal(o_t.frame_index, o_r.frame_index)
            torch.testing.assert_close(o_t.poses, o_r.poses, rtol=1e-4, atol=1e-5)
            job_of = {s: j for j, s in slot_of.items()}
            for s, f, p in zip(o_t.slots.tolist(), o_t.frame_index.tolist(), o_t.poses):
                got[job_of[s]][f] = p
            if compare_state:
                for a, b in zip(tri._rings, ref._rings):
                    torch.testing.assert_close(a[:max_streams], b[:max_streams], rtol=1e-4, atol=1e-5)
    return {j: torch.stack([g[f] for f in sorted(g)]) for j, g in got.items()}


def staggered_schedule(lengths, starts, reuse_after=None):
    """Streams start at ``starts`` and push every step until done, then close."""
    steps, t = [], 0
    n = len(lengths)
    done = set()
    pos = [0] * n
    while len(done) < n:
        step = [("open", j) for j in range(n) if starts[j] == t]
        live = [j for j in range(n) if starts[j] <= t and j not in done]
        if live:
            step.append(("push", live))
        for j in live:
            pos[j] += 1
            if pos[j] == lengths[j]:
                step.append(("close", j))
                done.add(j)
        steps.append(step)
        t += 1
    return steps


@interp_only
@pytest.mark.interpreter
@pytest.mark.parametrize("causal", [False, True], ids=["symmetric", "causal"])
def test_engine_triton_backend_matches_torch_backend_and_whole_sequence(causal):
    model = make_model([3, 3], causal)  # receptive field 9, pad 4
    lengths, starts = [11, 3, 7, 6], [0, 1, 2, 5]  # job 1 is shorter than the delay; job 3 reuses job 1's slot
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randn(n, 4, 2, generator=g).cumsum(0) * 0.2 for n in lengths]
    # max_streams=3 -> buckets up to 4: three live streams pad one dummy row.
    got = drive_pair(model, "cpu", staggered_schedule(lengths, starts), seqs, max_streams=3)
    for j, seq in enumerate(seqs):
        torch.testing.assert_close(got[j], lift_sequence(model, seq), rtol=1e-4, atol=1e-5)


@interp_only
@pytest.mark.interpreter
@pytest.mark.parametrize("fw,dense,causal", [([3, 3], True, False), ([5, 3], False, True), ([1], False, False)])
def test_engine_triton_backend_other_architectures(fw, dense, causal):
    model = make_model(fw, causal, dense=dense)
    eng = StreamingLifter(model, 2, backend="triton")
    seq = torch.randn(model.receptive_field() + 2, 4, 2).cumsum(0) * 0.2
    torch.testing.assert_close(eng.stream_sequence(seq), lift_sequence(model, seq), rtol=1e-4, atol=1e-5)
    # the padding slot absorbed the bucket's dummy rows; real slots only hold this stream's state
    assert eng.num_active == 0 and all(int(r[:2].abs().sum()) == 0 for r in eng._rings)


@interp_only
@pytest.mark.interpreter
def test_engine_split_k_matches_whole_sequence():
    """The engine end to end with split-K on every multi-block layer: the interpreter poses as a
    48-SM target, so few streams split the reduction (the scratch is shared by layers and buckets)."""
    from fastlift.kernels.launch import record_launches
    from fastlift.kernels.target import Target, override

    model = make_model([3, 3], False, channels=40)
    lengths, starts = [12, 4, 9], [0, 1, 3]
    g = torch.Generator().manual_seed(5)
    seqs = [torch.randn(n, 4, 2, generator=g).cumsum(0) * 0.2 for n in lengths]
    with override(Target("interpreter", 0, sm_count=48, shared_bytes=1 << 30, name="interpreter posing as 48 SMs")):
        with record_launches() as log:
            got = drive_pair(model, "cpu", staggered_schedule(lengths, starts), seqs, max_streams=3)
    splits = [r.meta["SPLIT_K"] for r in log if r.kernel == "stream_layer"]
    assert max(splits) >= 3 and all(r.grid[2] == r.meta["SPLIT_K"] for r in log if r.kernel == "stream_layer")
    for j, seq in enumerate(seqs):
        torch.testing.assert_close(got[j], lift_sequence(model, seq), rtol=1e-4, atol=1e-5)


def test_triton_backend_on_cpu_requires_interpreter(monkeypatch):
    monkeypatch.setattr(ks, "interpreter_active", lambda: False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        StreamingLifter(make_model([3], False), 2, backend="triton")


@pytest.mark.skipif(INTERP or HAS_CUDA, reason="the in-process interpreter tests ran (or CUDA is present)")
def test_interpreter_suite_in_subprocess():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                           "not subprocess"], env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


# ---------------------------------------------------------------------------- GPU tier
@pytest.fixture
def ieee_fp32():
    """Exact fp32 on both sides: the kernels follow cuDNN's TF32 switch, the reference uses cuDNN."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("graphs", [True, False])
def test_gpu_engine_matches_torch_path(causal, graphs, ieee_fp32):
    model = make_model([3, 3, 3, 3], causal, channels=64, j_in=17, j_out=17).cuda()
    lengths = [90, 20, 130, 5, 60, 61]
    starts = [0, 2, 3, 4, 30, 31]
    seqs = [torch.randn(n, 17, 2).cumsum(0) * 0.05 for n in lengths]
    got = drive_pair(model, "cuda", staggered_schedule(lengths, starts), seqs, max_streams=5, cuda_graphs=graphs)
    for j, seq in enumerate(seqs):
        torch.testing.assert_close(got[j], lift_sequence(model, seq.cuda()), rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 5e-2), (torch.float16, 1e-2)])
def test_gpu_half_precision_engine(dtype, tol):
    model = make_model([3, 3, 3, 3, 3], False, channels=128, j_in=17, j_out=17).cuda()
    eng = StreamingLifter(model, 37, dtype=dtype)
    assert eng.backend == "triton" and eng.cuda_graphs
    assert eng.warmup(8) == [1, 2, 4, 8]
    seq = torch.randn(300, 17, 2, device="cuda").cumsum(0) * 0.02
    ref = lift_sequence(model, seq)
    out = eng.stream_sequence(seq.to(dtype)).float()
    assert (out - ref).abs().max() <= tol * ref.abs().max()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_gpu_many_streams_buckets_and_slot_reuse(ieee_fp32):
    model = make_model([3, 3, 3], False, channels=32, j_in=17, j_out=17).cuda()
    n = 150  # not a power of two: the top bucket (256) pads dummy rows
    eng = StreamingLifter(model, n)
    slots = [eng.open() for _ in range(n)]
    seqs = torch.randn(n, 60, 17, 2, device="cuda").cumsum(1) * 0.05
    sizes = [1, 3, 17, 150, 64, 150, 2, 150, 129, 150]  # many graph buckets, replayed repeatedly
    got = {s: {} for s in slots}

    def collect(o):
        for s, f, p in zip(o.slots.tolist(), o.frame_index.tolist(), o.poses):
            got[s][f] = p

    for step in range(40):
        k = sizes[step % len(sizes)]
        t = torch.tensor([eng.frames_pushed(s) for s in range(k)], device="cuda")
        collect(eng.push(torch.arange(k), seqs[torch.arange(k, device="cuda"), t]))
    counts = [eng.frames_pushed(s) for s in slots]
    for s in slots:
        collect(eng.close(s))
    for s in (0, 2, 16, 63, 77, 128, 149):
        torch.testing.assert_close(torch.stack([got[s][f] for f in range(counts[s])]),
                                   lift_sequence(model, seqs[s, :counts[s]]), rtol=1e-4, atol=1e-4)
    # a reused slot starts clean
    s = eng.open()
    fresh = seqs[5, :30]
    out = []
    for t in range(30):
        out.append(eng.push(torch.tensor([s]), fresh[t:t + 1]).poses)
    out.append(eng.close(s).poses)
    torch.testing.assert_close(torch.cat(out), lift_sequence(model, fresh), rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)])
def test_gpu_streaming_1024_channels_split_k(dtype, tol, ieee_fp32):
    """The 243f model at its real width (1,024 channels): one stream (split-K on every layer, CUDA
    graphs) and 5 streams equal whole-sequence inference, and a replay of the same frames gives the
    same bits (the split-K reduction is deterministic whatever order the slices arrive in)."""
    from fastlift.kernels.launch import record_launches

    model = make_model([3, 3, 3, 3, 3], False, channels=1024, j_in=17, j_out=17).cuda()
    eng = StreamingLifter(model, 5, dtype=dtype)
    assert eng.backend == "triton" and eng.cuda_graphs
    with record_launches() as log:
        eng.warmup(1)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    grids = [r.grid for r in log if r.kernel == "stream_layer"]
    assert grids and all(g[0] * g[1] * g[2] >= sms for g in grids[:len(grids) // 3]), grids
    seq = torch.randn(300, 17, 2, device="cuda").cumsum(0) * 0.02
    ref = lift_sequence(model, seq)
    outs = []
    for _ in range(2):
        outs.append(eng.stream_sequence(seq.to(dtype)).float())
    assert torch.equal(outs[0], outs[1])
    assert (outs[0] - ref).abs().max() <= tol * ref.abs().max()
    seqs = torch.randn(5, 200, 17, 2, device="cuda").cumsum(1) * 0.02
    slots = [eng.open() for _ in range(5)]
    got = [[] for _ in range(5)]
    for t in range(200):
        o = eng.push(torch.tensor(slots), seqs[:, t].to(dtype))
        for s, p in zip(o.slots.tolist(), o.poses):
            got[slots.index(s)].append(p.float())
    for i, s in enumerate(slots):
        got[i] += list(eng.close(s).poses.float())
        want = lift_sequence(model, seqs[i])
        assert (torch.stack(got[i]) - want).abs().max() <= tol * want.abs().max()


_GRID_SCRIPT = """
import json, torch
from fastlift.reference import TemporalModel
from fastlift.streaming import StreamingLifter
from fastlift.kernels.launch import compile_only, record_launches
from fastlift.kernels.target import cuda_target

torch.manual_seed(0)
model = TemporalModel(17, 2, 17, [3, 3, 3, 3, 3], channels=1024).eval()
out = {}
for arch in (90, 80):
    t = cuda_target(arch)
    for dt in (torch.float32, torch.bfloat16):
        with compile_only(t), record_launches() as log:
            eng = StreamingLifter(model, max_streams=256, dtype=dt, device="cpu", backend="triton", check_finite=False)
            for n in (1, 256):
                slots = [eng.open() for _ in range(n)]
                eng.push(slots, torch.randn(n, 17, 2))
                eng.reset()
        out[f"{arch}-{dt}"] = [[list(r.grid), r.meta["SPLIT_K"]] for r in log if r.kernel == "stream_layer"]
print(json.dumps(out))
"""


@pytest.mark.slow  # ~10-25 s: builds four 1,024-channel engines in a subprocess
def test_launch_report_one_stream_fills_every_sm():
    """The launches the engine really makes (compile-only mode, nothing compiled): at N = 1 every
    layer of the 243f model launches >= one program per SM of an H100/H200 (132) and an A100 (108);
    at N = 256 nothing splits."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", _GRID_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = __import__("json").loads(proc.stdout.strip().splitlines()[-1])
    for key, launches in out.items():
        sms = 132 if key.startswith("90") else 108
        assert len(launches) == 20, key  # 10 layers (expand, 4 blocks x 2, shrink) at N = 1, then at N = 256
        for grid, split in launches[:10]:
            assert grid[0] * grid[1] * grid[2] >= sms and grid[2] == split, (key, grid)
        assert all(split == 1 for _, split in launches[10:]), key
