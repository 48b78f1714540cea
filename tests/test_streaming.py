"""StreamingLifter (torch backend, CPU): streaming output == whole-sequence output, lifecycle, errors, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastlift.fold import fold_lifter
from fastlift.reference import TemporalModelOptimized1f, lift_sequence
from fastlift.streaming import StreamingLifter, StreamOutput

import helpers
from helpers import write_reference_checkpoint

J_IN, J_OUT = 4, 3


def make_model(fw, causal=False, **kwargs):
    """:func:`helpers.make_model` with this module's defaults (4 joints in, 3 out, 16 channels, fp64)."""
    return helpers.make_model(fw, causal, **{"channels": 16, "dtype": torch.float64, "j_in": J_IN, "j_out": J_OUT,
                                             **kwargs})


def random_seq(t, seed, j=J_IN, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    # A random walk: neighbouring frames are correlated like real keypoint tracks.
    return (torch.randn(t, j, 2, generator=g, dtype=dtype) * 0.1).cumsum(0)


def snapshot(eng: StreamingLifter):
    return ([r.clone() for r in eng._rings], eng._count.copy(), eng._open.copy(), sorted(eng._free))


def assert_same_state(eng, snap):
    rings, count, opened, free = snap
    for a, b in zip(eng._rings, rings):
        assert torch.equal(a, b)
    assert np.array_equal(eng._count, count)
    assert np.array_equal(eng._open, opened)
    assert sorted(eng._free) == free


# ---------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("causal", [False, True], ids=["symmetric", "causal"])
@pytest.mark.parametrize("fw", [[3, 3, 3], [3, 3, 3, 3], [3, 3, 3, 3, 3]], ids=["27f", "81f", "243f"])
def test_streaming_equals_whole_sequence(fw, causal):
    m = make_model(fw, causal)
    rf = m.receptive_field()
    pad = (rf - 1) // 2
    eng = StreamingLifter(m, max_streams=3)
    assert eng.delay == (0 if causal else pad) and eng.receptive_field == rf
    # Shorter than the delay, around the receptive field, longer than it; run concurrently with
    # staggered starts so every push mixes streams at different times.
    lengths = [max(1, pad // 2), rf + 2, 1]
    starts = [0, 3, 7]
    seqs = [random_seq(n, 10 + i) for i, n in enumerate(lengths)]
    got = {i: {} for i in range(3)}
    slots, closed = {}, set()
    step = 0
    while len(closed) < 3:
        for i in range(3):
            if starts[i] == step:
                slots[i] = eng.open()
        live = [i for i in slots if i not in closed and 0 <= step - starts[i] < lengths[i]]
        out = eng.push(torch.tensor([slots[i] for i in live], dtype=torch.int64),
                       torch.stack([seqs[i][step - starts[i]] for i in live]) if live
                       else torch.zeros(0, J_IN, 2, dtype=torch.float64))
        by_slot = {slots[i]: i for i in live}
        for s, f, p in zip(out.slots.tolist(), out.frame_index.tolist(), out.poses):
            i = by_slot[s]
            assert f == step - starts[i] - eng.delay  # emitted exactly when its look-ahead arrived
            got[i][f] = p
        for i in live:
            if step - starts[i] == lengths[i] - 1:
                out = eng.close(slots[i])
                assert out.frame_index.tolist() == list(range(max(0, lengths[i] - eng.delay), lengths[i]))
                got[i].update(zip(out.frame_index.tolist(), out.poses))
                closed.add(i)
        step += 1
    for i, seq in enumerate(seqs):
        ref = lift_sequence(m, seq)
        assert sorted(got[i]) == list(range(lengths[i]))
        stream = torch.stack([got[i][f] for f in range(lengths[i])])
        torch.testing.assert_close(stream, ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("causal", [False, True], ids=["symmetric", "causal"])
@pytest.mark.parametrize("fw,dense", [([3, 3, 3], True), ([5, 3], False), ([3, 7], False), ([1, 3], False),
                                      ([3], False), ([1], False), ([7, 1, 3], False)],
                         ids=["dense27", "5-3", "3-7", "1-3", "3", "1", "7-1-3"])
def test_other_architectures(fw, dense, causal):
    m = make_model(fw, causal, dense=dense, channels=12)
    eng = StreamingLifter(m, 2)
    for t in (1, 2, m.receptive_field() + 3):
        seq = random_seq(t, t)
        torch.testing.assert_close(eng.stream_sequence(seq), lift_sequence(m, seq), rtol=1e-9, atol=1e-10)
    assert eng.num_active == 0


def test_fp32_17_joints_matches_reference():
    m = make_model([3, 3, 3], False, channels=64, dtype=torch.float32, j_in=17, j_out=17)
    eng = StreamingLifter(m, 2)
    assert eng.dtype == torch.float32
    seq = random_seq(60, 3, j=17, dtype=torch.float32)
    ref = lift_sequence(m, seq)
    torch.testing.assert_close(eng.stream_sequence(seq), ref, rtol=1e-4, atol=1e-5)


def test_cpu_fp32_onednn_and_addmm_paths_agree(monkeypatch):
    import fastlift.stream_backends.torch_backend as streaming  # the torch backend (fastlift/stream_backends)

    m = make_model([3, 3, 3], False, channels=512, dtype=torch.float32)  # big enough for oneDNN layers
    fast = StreamingLifter(m, 3)
    assert fast._onednn == streaming._onednn_linear_ok()
    if not fast._onednn:
        pytest.skip("oneDNN linear not available in this torch build")
    # the block convs take the oneDNN path, the small expand/shrink layers stay on addmm
    assert [op.onednn for op in fast._ops] == [False, True, True, True, True, False]
    monkeypatch.setattr(streaming, "_onednn_linear_ok", lambda: False)
    plain = StreamingLifter(m, 3)
    assert not plain._onednn
    seqs = [random_seq(30, i, dtype=torch.float32) * 3 for i in range(3)]
    for eng in (fast, plain):
        for _ in range(3):
            eng.open()
    for t in range(30):
        frames = torch.stack([s[t] for s in seqs])
        a, b = fast.push(torch.tensor([2, 0, 1]), frames), plain.push(torch.tensor([2, 0, 1]), frames)
        assert torch.equal(a.slots, b.slots) and torch.equal(a.frame_index, b.frame_index)
        torch.testing.assert_close(a.poses, b.poses, rtol=1e-4, atol=1e-5)
    for s in (1, 2, 0):
        torch.testing.assert_close(fast.close(s).poses, plain.close(s).poses, rtol=1e-4, atol=1e-5)


def test_fp64_engine_from_fp32_model_folds_in_fp64():
    m32 = make_model([3, 3], True, dtype=torch.float32)
    m64 = make_model([3, 3], True, dtype=torch.float64)
    eng = StreamingLifter(m32, 1, dtype=torch.float64)
    assert eng.dtype == torch.float64 and m32.expand_conv.weight.dtype == torch.float32  # model untouched
    seq = random_seq(20, 1)
    torch.testing.assert_close(eng.stream_sequence(seq), lift_sequence(m64, seq), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_1f_weights_and_folded_input_give_identical_results(causal):
    m = make_model([3, 3, 3], causal)
    m1f = make_model([3, 3, 3], causal, cls=TemporalModelOptimized1f, seed=99)
    m1f.load_state_dict(m.state_dict())
    seq = random_seq(40, 5)
    a = StreamingLifter(m, 1).stream_sequence(seq)
    b = StreamingLifter(m1f, 1).stream_sequence(seq)
    c = StreamingLifter(fold_lifter(m), 1).stream_sequence(seq)
    assert torch.equal(a, b) and torch.equal(a, c)
    torch.testing.assert_close(a, lift_sequence(m, seq), rtol=1e-9, atol=1e-10)


# ---------------------------------------------------------------------------- schedules
@st.composite
def schedules(draw):
    n = draw(st.integers(1, 6))
    return {
        "max_streams": draw(st.integers(1, 4)),
        "lengths": draw(st.lists(st.integers(1, 45), min_size=n, max_size=n)),
        "starts": draw(st.lists(st.integers(0, 25), min_size=n, max_size=n)),
        "close_lag": draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)),
        "skip_p": draw(st.sampled_from([0.0, 0.25, 0.5])),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def run_schedule(eng, model, sched, tol):
    """Drive ``eng`` through a schedule; check timing, bookkeeping and outputs against lift_sequence."""
    rng = np.random.default_rng(sched["seed"])
    n = len(sched["lengths"])
    seqs = [random_seq(t, sched["seed"] % 1000 + i) for i, t in enumerate(sched["lengths"])]
    waiting = sorted(range(n), key=lambda i: (sched["starts"][i], i))
    live = {}  # slot -> {job, t, done_step}
    got = {i: {} for i in range(n)}
    step = 0
    while waiting or live:
        while waiting and sched["starts"][waiting[0]] <= step and eng.num_active < eng.max_streams:
            job = waiting.pop(0)
            slot = eng.open()
            assert slot not in live
            live[slot] = {"job": job, "t": 0, "done": None}
        pushable = [s for s, v in live.items() if v["t"] < sched["lengths"][v["job"]]]
        rows = [s for s in pushable if rng.random() >= sched["skip_p"]]
        rng.shuffle(rows)
        before = snapshot(eng)
        out = eng.push(torch.tensor(rows, dtype=torch.int64),
                       torch.stack([seqs[live[s]["job"]][live[s]["t"]] for s in rows]) if rows
                       else torch.zeros(0, J_IN, 2, dtype=torch.float64))
        # Streams not listed are untouched.
        for s in live:
            if s not in rows:
                for r_now, r_before in zip(eng._rings, before[0]):
                    assert torch.equal(r_now[s], r_before[s])
        assert out.slots.shape == out.frame_index.shape == out.poses.shape[:1]
        for s, f, p in zip(out.slots.tolist(), out.frame_index.tolist(), out.poses):
            v = live[s]
            assert s in rows and f == v["t"] - eng.delay and f not in got[v["job"]]
            got[v["job"]][f] = p
        for s in rows:
            v = live[s]
            v["t"] += 1
            assert eng.frames_pushed(s) == v["t"]
            assert eng.pending(s) == (0 if eng.causal else min(v["t"], eng.pad))
            if v["t"] == sched["lengths"][v["job"]]:
                v["done"] = step
        for s in [s for s, v in live.items() if v["done"] is not None and step - v["done"] >= sched["close_lag"][v["job"]]]:
            v = live.pop(s)
            out = eng.close(s)
            assert (out.slots == s).all()
            length = sched["lengths"][v["job"]]
            assert out.frame_index.tolist() == list(range(max(0, length - eng.delay), length))
            got[v["job"]].update(zip(out.frame_index.tolist(), out.poses))
        step += 1
    assert eng.num_active == 0
    for i in range(n):
        assert sorted(got[i]) == list(range(sched["lengths"][i]))
        stream = torch.stack([got[i][f] for f in range(sched["lengths"][i])])
        torch.testing.assert_close(stream, lift_sequence(model, seqs[i]), **tol)


_MODELS = {}


def cached_model(key):
    if key not in _MODELS:
        fw, causal, dense = key
        _MODELS[key] = make_model(list(fw), causal, dense=dense, channels=8, seed=len(_MODELS))
    return _MODELS[key]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sched=schedules(), arch=st.sampled_from([((3, 3), False, False), ((3, 3), True, False),
                                                ((3, 3, 3), False, False), ((3, 3, 3), True, False),
                                                ((5, 3), False, True), ((3, 5), True, True)]))
def test_random_schedules_match_whole_sequence(sched, arch):
    model = cached_model(arch)
    eng = StreamingLifter(model, sched["max_streams"])
    run_schedule(eng, model, sched, dict(rtol=1e-9, atol=1e-10))


# ---------------------------------------------------------------------------- lifecycle
@pytest.mark.parametrize("causal", [False, True])
def test_emission_timing_and_pending(causal):
    m = make_model([3, 3], causal)
    pad = 4
    eng = StreamingLifter(m, 1)
    s = eng.open()
    seq = random_seq(12, 0)
    for t in range(12):
        out = eng.push([s], seq[t: t + 1])
        assert isinstance(out, StreamOutput)
        if causal:
            assert out.frame_index.tolist() == [t] and eng.pending(s) == 0
        else:
            assert out.frame_index.tolist() == ([t - pad] if t >= pad else [])
            assert eng.pending(s) == min(t + 1, pad)
        assert out.poses.shape == (len(out.frame_index), J_OUT, 3) and out.poses.dtype == torch.float64
    tail = eng.close(s)
    assert tail.frame_index.tolist() == ([] if causal else list(range(12 - pad, 12)))


def test_sequences_shorter_than_delay_emit_everything_at_close():
    m = make_model([3, 3, 3], False)  # pad 13
    eng = StreamingLifter(m, 2)
    for t in range(1, 13):
        seq = random_seq(t, t)
        s = eng.open()
        for i in range(t):
            assert eng.push(torch.tensor([s]), seq[i: i + 1]).poses.shape[0] == 0
        out = eng.close(s)
        assert out.frame_index.tolist() == list(range(t))
        torch.testing.assert_close(out.poses, lift_sequence(m, seq), rtol=1e-9, atol=1e-10)


def test_close_without_frames_and_reset():
    m = make_model([3, 3], False)
    eng = StreamingLifter(m, 2)
    a, b = eng.open(), eng.open()
    assert eng.close(a).poses.shape == (0, J_OUT, 3)
    eng.push([b], random_seq(3, 0)[:1])
    assert eng.active_slots.tolist() == [b]
    eng.reset()
    assert eng.num_active == 0 and all(int(r.abs().sum()) == 0 for r in eng._rings)
    assert [eng.open(), eng.open()] == [0, 1]


@pytest.mark.parametrize("causal", [False, True])
def test_reused_slot_shows_no_trace_of_previous_stream(causal):
    m = make_model([3, 3, 3], causal)
    eng = StreamingLifter(m, 2)
    other = eng.open()
    s = eng.open()
    big = random_seq(50, 1) * 50 + 7  # very different values, so any leak would show
    for t in range(50):
        eng.push(torch.tensor([s, other]), torch.stack([big[t], big[49 - t]]))
    eng.close(s)
    for r in eng._rings:
        assert int(r[s].abs().sum()) == 0  # zeroed on close
    assert eng.open() == s
    seq = random_seq(30, 2)
    got = []
    for t in range(30):
        got.append(eng.push(torch.tensor([s]), seq[t: t + 1]).poses)
    got.append(eng.close(s).poses)
    fresh = StreamingLifter(m, 1).stream_sequence(seq)
    assert torch.equal(torch.cat(got), fresh)  # bit-identical to a brand-new engine
    torch.testing.assert_close(fresh, lift_sequence(m, seq), rtol=1e-9, atol=1e-10)


def test_returned_poses_do_not_alias_engine_buffers():
    m = make_model([3, 3], True)
    eng = StreamingLifter(m, 2)
    s = eng.open()
    seq = random_seq(5, 0)
    first = eng.push([s], seq[:1]).poses
    kept = first.clone()
    eng.push([s], seq[1:2])
    assert torch.equal(first, kept)


def test_non_contiguous_and_other_float_frames_are_accepted():
    m = make_model([3, 3], False)
    eng = StreamingLifter(m, 2)
    a, b = eng.open(), eng.open()
    seq_a, seq_b = random_seq(20, 1), random_seq(20, 2)
    both = torch.stack([seq_a, seq_b], dim=1)  # (T, 2, J, 2): frames[t] is non-contiguous below
    wide = torch.zeros(20, 2, J_IN, 4, dtype=torch.float64)
    wide[..., ::2] = both
    outs = {a: {}, b: {}}
    for t in range(20):
        fr = wide[t, :, :, ::2]
        assert not fr.is_contiguous()
        o = eng.push(torch.tensor([a, b]), fr.float() if t % 2 else fr)
        for s, f, p in zip(o.slots.tolist(), o.frame_index.tolist(), o.poses):
            outs[s][f] = p
    for s, seq in ((a, seq_a), (b, seq_b)):
        o = eng.close(s)
        outs[s].update(zip(o.frame_index.tolist(), o.poses))
        got = torch.stack([outs[s][f] for f in range(20)])
        # odd frames went through float32: compare at float32 precision
        torch.testing.assert_close(got, lift_sequence(m, seq), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- errors
@pytest.fixture
def busy_engine():
    """An engine with two streams mid-sequence plus one closed slot, and its reference run."""
    m = make_model([3, 3], False)
    eng = StreamingLifter(m, 4)
    a, b, c = eng.open(), eng.open(), eng.open()
    eng.close(c)
    seqs = {a: random_seq(16, 1), b: random_seq(16, 2)}
    got = {a: {}, b: {}}
    for t in range(6):
        o = eng.push(torch.tensor([a, b]), torch.stack([seqs[a][t], seqs[b][t]]))
        for s, f, p in zip(o.slots.tolist(), o.frame_index.tolist(), o.poses):
            got[s][f] = p
    return m, eng, a, b, c, seqs, got


def _finish(m, eng, a, b, seqs, got):
    for t in range(6, 16):
        o = eng.push(torch.tensor([a, b]), torch.stack([seqs[a][t], seqs[b][t]]))
        for s, f, p in zip(o.slots.tolist(), o.frame_index.tolist(), o.poses):
            got[s][f] = p
    for s in (a, b):
        o = eng.close(s)
        got[s].update(zip(o.frame_index.tolist(), o.poses))
        torch.testing.assert_close(torch.stack([got[s][f] for f in range(16)]), lift_sequence(m, seqs[s]),
                                   rtol=1e-9, atol=1e-10)


def _bad_pushes(a, b, c):
    good = torch.zeros(2, J_IN, 2, dtype=torch.float64)
    nan = good.clone()
    nan[1, 2, 0] = float("nan")
    inf = good.clone()
    inf[0, 0, 1] = float("inf")
    return [
        (torch.tensor([a, c]), good, ValueError, f"[{c}] not open"),
        (torch.tensor([a, 3]), good, ValueError, "[3] not open"),
        (torch.tensor([a, 4]), good, ValueError, "in [0, 4), got [4]"),
        (torch.tensor([-1, a]), good, ValueError, "in [0, 4), got [-1]"),
        (torch.tensor([a, a]), good, ValueError, f"duplicates [{a}]"),
        (torch.tensor([a, b], dtype=torch.int32), good, TypeError, "int64"),
        (torch.tensor([[a, b]]), good, ValueError, "1-D"),
        (torch.tensor([a, b]).float(), good, TypeError, "int64"),
        ("01", good, TypeError, "slots"),
        ([a, True], good, TypeError, "integer slot"),
        (torch.tensor([a, b]), good[:1], ValueError, "expected shape (N=2, joints=4, features=2), got (1, 4, 2)"),
        (torch.tensor([a, b]), torch.zeros(2, J_IN + 1, 2, dtype=torch.float64), ValueError, "got (2, 5, 2)"),
        (torch.tensor([a, b]), torch.zeros(2, J_IN, 3, dtype=torch.float64), ValueError, "features=2"),
        (torch.tensor([a, b]), torch.zeros(2, J_IN, 2, dtype=torch.int64), TypeError, "floating-point"),
        (torch.tensor([a, b]), torch.zeros(2, J_IN, 2, dtype=torch.complex64), TypeError, "floating-point"),
        (torch.tensor([a, b]), good.numpy(), TypeError, "torch.Tensor"),
        (torch.tensor([a, b]), torch.zeros(2, J_IN, 2, device="meta"), ValueError, "engine's device cpu"),
        (torch.tensor([a, b]), nan, ValueError, f"NaN or infinite values for slots [{b}]"),
        (torch.tensor([b, a]), inf, ValueError, f"NaN or infinite values for slots [{b}]"),
    ]


@pytest.mark.parametrize("case", range(19))
def test_bad_push_raises_clearly_and_changes_nothing(busy_engine, case):
    m, eng, a, b, c, seqs, got = busy_engine
    slots, frames, exc, fragment = _bad_pushes(a, b, c)[case]
    snap = snapshot(eng)
    with pytest.raises(exc) as info:
        eng.push(slots, frames)
    assert fragment in str(info.value)
    assert_same_state(eng, snap)
    _finish(m, eng, a, b, seqs, got)  # the other streams carry on exactly


def test_bad_close_and_queries_change_nothing(busy_engine):
    m, eng, a, b, c, seqs, got = busy_engine
    snap = snapshot(eng)
    for bad, exc, fragment in [(c, ValueError, "not open"), (17, ValueError, "in [0, 4)"), (-1, ValueError, "in [0, 4)"),
                               ("a", TypeError, "integer slot"), (1.0, TypeError, "integer slot"),
                               (torch.tensor([a, b]), TypeError, "one integer slot")]:
        for fn in (eng.close, eng.pending, eng.frames_pushed):
            with pytest.raises(exc, match=fragment.replace("[", r"\[").replace(")", r"\)")):
                fn(bad)
    assert_same_state(eng, snap)
    # a second close of the same slot is an error too
    eng.close(a)
    with pytest.raises(ValueError, match="not open"):
        eng.close(a)
    eng.push([b], seqs[b][6:7])
    assert eng.frames_pushed(b) == 7 and eng.frames_pushed(torch.tensor(b)) == 7


def test_open_when_full():
    eng = StreamingLifter(make_model([3], False), 2)
    eng.open(), eng.open()
    snap = snapshot(eng)
    with pytest.raises(RuntimeError, match="all max_streams=2 slots are in use"):
        eng.open()
    assert_same_state(eng, snap)
    eng.close(1)
    assert eng.open() == 1


def test_empty_push_is_a_no_op():
    eng = StreamingLifter(make_model([3, 3], False), 2)
    eng.open()
    snap = snapshot(eng)
    out = eng.push(torch.zeros(0, dtype=torch.int64), torch.zeros(0, J_IN, 2, dtype=torch.float64))
    assert out.poses.shape == (0, J_OUT, 3) and out.slots.numel() == 0
    assert_same_state(eng, snap)


@pytest.mark.parametrize("kwargs,exc,fragment", [
    ({"max_streams": 0}, ValueError, "max_streams: expected a positive integer"),
    ({"max_streams": True}, ValueError, "max_streams"),
    ({"max_streams": 2, "dtype": torch.float16}, ValueError, "dtype: expected one of"),
    ({"max_streams": 2, "dtype": "float32"}, TypeError, "dtype: expected a torch.dtype"),
    ({"max_streams": 2, "backend": "cuda"}, ValueError, "backend: expected 'auto', 'torch' or 'triton'"),
])
def test_constructor_validation(kwargs, exc, fragment):
    with pytest.raises(exc, match=fragment):
        StreamingLifter(make_model([3], False), **kwargs)


def test_constructor_rejects_non_models():
    with pytest.raises(TypeError, match="model: expected a TemporalModel"):
        StreamingLifter(torch.nn.Linear(3, 3), 2)


def test_state_size_and_ring_lengths():
    m = make_model([3, 3, 3], False, channels=16)
    eng = StreamingLifter(m, 5)
    # input ring: span 2 (+1), block rings: spans 6 and 18 (+1), as the issue describes (2*d each).
    assert eng.ring_lengths == [3, 7, 19]
    assert eng.state_bytes == 6 * (3 * J_IN * 2 + (7 + 19) * 16) * 8
    dense = StreamingLifter(make_model([3, 3, 3], False, dense=True), 1)
    assert dense.ring_lengths == [3, 7, 19]


def test_warmup_is_a_no_op_without_cuda_graphs():
    eng = StreamingLifter(make_model([3], False), 2)
    assert not eng.cuda_graphs and eng.warmup() == [] and eng.warmup(2) == []
    with pytest.raises(ValueError, match="max_n: expected a positive integer"):
        eng.warmup(0)


def test_lazy_public_import():
    import fastlift

    assert fastlift.StreamingLifter is StreamingLifter


# ---------------------------------------------------------------------------- CLI
def _write_inputs(tmp_path, with_video_meta=True):
    rng = np.random.default_rng(0)
    pos = {
        "vid_a": {"custom": [rng.uniform(0, 640, (23, 17, 2)).astype(np.float32)]},
        "S9": {"Walk 1": [rng.uniform(0, 640, (9, 17, 2)).astype(np.float32), None,
                          rng.uniform(0, 640, (5, 17, 2)).astype(np.float32)]},
    }
    meta = {"layout_name": "coco", "num_joints": 17, "keypoints_symmetry": [[1, 3], [2, 4]]}
    if with_video_meta:
        meta["video_metadata"] = {"vid_a": {"w": 640, "h": 480}}
    path = tmp_path / "data_2d_custom_test.npz"
    np.savez_compressed(path, positions_2d=pos, metadata=meta)
    return path, pos


@pytest.mark.parametrize("causal,streams", [(False, 2), (True, 5)])
def test_stream_cli_writes_whole_sequence_equal_output(tmp_path, capsys, causal, streams):
    from fastlift.cli import main

    path, pos = _write_inputs(tmp_path)
    model = make_model([3, 3, 3], causal, channels=16, dtype=torch.float32, j_in=17, j_out=17)
    ckpt = tmp_path / "ckpt.bin"
    torch.save({"epoch": 3, "model_pos": model.state_dict()}, ckpt)
    out = tmp_path / "out.npz"
    argv = ["stream", "--input", str(path), "--output", str(out), "--model", str(ckpt), "--streams", str(streams),
            "--device", "cpu", "--json", "--resolution", "640", "480"] + (["--causal"] if causal else [])
    rc = main(argv)
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    summary = json.loads(stdout[stdout.index("{"):])
    assert summary["frames"] == 23 + 9 + 5 + (23 + 9 if streams == 5 else 0)
    assert summary["p50_us"] > 0 and summary["frames_per_s"] > 0 and summary["delay_frames"] == (0 if causal else 13)
    assert "p99" in stdout and "frames/s" in stdout
    res = np.load(out, allow_pickle=True)["positions_3d"].item()
    assert set(res) == {"vid_a", "S9"} and res["S9"]["Walk 1"][1] is None
    for subject, action, cam in [("vid_a", "custom", 0), ("S9", "Walk 1", 0), ("S9", "Walk 1", 2)]:
        x = pos[subject][action][cam]
        x = (x / 640 * 2 - np.array([1, 480 / 640])).astype(np.float32)  # VideoPose3D screen coords
        ref = lift_sequence(model, torch.from_numpy(x)).numpy()
        assert res[subject][action][cam].shape == ref.shape and res[subject][action][cam].dtype == np.float32
        # fp32 accumulation-order differences scale with the activations (pixel inputs are large)
        np.testing.assert_allclose(res[subject][action][cam], ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def test_stream_cli_loads_reference_checkpoints_without_trust(tmp_path, capsys):
    """Published VideoPose3D checkpoints pickle the data generator's numpy RandomState and (old
    PyTorch) lack BatchNorm num_batches_tracked; the shared safe loader reads them without
    --trust-checkpoint, as train and export do. Other pickled objects still need it."""
    from pathlib import Path

    from fastlift.cli import main

    path, pos = _write_inputs(tmp_path)
    model = make_model([3, 3], False, channels=16, dtype=torch.float32, j_in=17, j_out=17)
    out = tmp_path / "out.npz"
    x = (pos["S9"]["Walk 1"][0] / 640 * 2 - np.array([1, 480 / 640])).astype(np.float32)
    ref = lift_sequence(model, torch.from_numpy(x)).numpy()
    for legacy in (True, False):
        ckpt = write_reference_checkpoint(tmp_path / f"pretrained_{legacy}.bin", model,
                                          torch.optim.Adam(model.parameters(), amsgrad=True), 80, 1e-5,
                                          legacy_numpy=legacy)
        with pytest.raises(Exception):  # plain safe loading refuses the numpy objects
            torch.load(ckpt, weights_only=True)
        rc = main(["stream", "--input", str(path), "--output", str(out), "--model", str(ckpt), "--device", "cpu",
                   "--resolution", "640", "480", "--overwrite"])
        stdout, err = capsys.readouterr()
        assert rc == 0, err
        assert "randomly initialised" not in err
        res = np.load(out, allow_pickle=True)["positions_3d"].item()
        np.testing.assert_allclose(res["S9"]["Walk 1"][0], ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())

    evil = tmp_path / "objects.bin"
    torch.save({"model_pos": model.state_dict(), "args": Path("x")}, evil)
    argv = ["stream", "--input", str(path), "--output", str(out), "--model", str(evil), "--device", "cpu",
            "--resolution", "640", "480", "--overwrite"]
    rc = main(argv)
    assert rc == 2 and "--trust-checkpoint" in capsys.readouterr().err
    rc = main(argv + ["--trust-checkpoint"])
    assert rc == 0, capsys.readouterr().err


def test_stream_cli_random_model_warns_and_paces(tmp_path, capsys):
    from fastlift.cli import main

    path, _ = _write_inputs(tmp_path, with_video_meta=False)
    out = tmp_path / "o.npz"
    threads = torch.get_num_threads()
    try:
        rc = main(["stream", "--input", str(path), "--output", str(out), "-arc", "3,3", "-ch", "8", "--fps", "400",
                   "--limit-frames", "6", "--streams", "3", "--device", "cpu", "--threads", "1", "--resolution", "640",
                   "480"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    assert "randomly initialised" in err and "meaningless" in err
    assert "normalised by --resolution" in stdout and "paced at 400 fps" in stdout
    res = np.load(out, allow_pickle=True)["positions_3d"].item()
    assert res["vid_a"]["custom"][0].shape == (6, 17, 3) and res["S9"]["Walk 1"][2].shape == (5, 17, 3)


@pytest.mark.parametrize("extra,fragment", [
    (["--streams", "0"], "--streams: expected a positive integer"),
    (["--fps", "-3"], "--fps: expected a positive frame rate"),
    (["--threads", "0"], "--threads: expected a positive integer"),
    (["--model", "/nonexistent/ckpt.bin"], "--model: no such file"),
    (["-arc", "3,4"], "odd filter widths"),
])
def test_stream_cli_errors(tmp_path, capsys, extra, fragment):
    from fastlift.cli import main

    path, _ = _write_inputs(tmp_path)
    rc = main(["stream", "--input", str(path), "--output", str(tmp_path / "o.npz"), "-ch", "8", "--device", "cpu"] + extra)
    _, err = capsys.readouterr()
    assert rc == 2 and fragment in err


def test_stream_cli_bad_inputs(tmp_path, capsys):
    from fastlift.cli import main

    bad = tmp_path / "bad.npz"
    np.savez(bad, something=np.zeros(3))
    rc = main(["stream", "--input", str(bad), "-ch", "8"])
    assert rc == 2 and "no 'positions_2d' entry" in capsys.readouterr().err
    rc = main(["stream", "--input", str(tmp_path / "missing.npz")])
    assert rc == 2 and "--input: no such file" in capsys.readouterr().err
    nan = tmp_path / "nan.npz"
    arr = np.zeros((4, 17, 2), np.float32)
    arr[2, 3, 1] = np.nan
    meta = {"layout_name": "coco", "num_joints": 17, "keypoints_symmetry": [[1], [2]]}
    np.savez(nan, positions_2d={"S1": {"A": [arr]}}, metadata=meta)
    rc = main(["stream", "--input", str(nan), "-ch", "8"])
    err = capsys.readouterr().err
    assert rc == 2 and "S1/A" in err and "NaN" in err and "frame 2, joint 3" in err
    none = tmp_path / "none.npz"
    np.savez(none, positions_2d={"S1": {"A": [None]}}, metadata=meta)
    rc = main(["stream", "--input", str(none), "-ch", "8"])
    assert rc == 2 and "holds no keypoint arrays" in capsys.readouterr().err
    # a checkpoint for another joint count
    path, _ = _write_inputs(tmp_path)
    ckpt = tmp_path / "c.bin"
    torch.save({"model_pos": make_model([3], False, j_in=5, dtype=torch.float32).state_dict()}, ckpt)
    rc = main(["stream", "--input", str(path), "--model", str(ckpt), "--output", str(tmp_path / "o.npz"),
               "--resolution", "640", "480"])
    assert rc == 2 and "expects 10 input values per frame" in capsys.readouterr().err
