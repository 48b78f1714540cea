"""fastlift.train.sampler.WindowSampler: the device-resident window gather against a per-example
construction with the reference generator's semantics."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastlift.train.sampler import WindowSampler, chunk_layout

KL, KR = [1, 4], [2, 5]
JL, JR = [1, 3], [2, 4]


def make_data(lengths, j2=6, j3=5, seed=0):
    rng = np.random.default_rng(seed)
    p2 = [rng.standard_normal((t, j2, 2)).astype(np.float32) for t in lengths]
    p3 = [rng.standard_normal((t, j3, 3)).astype(np.float32) for t in lengths]
    cams = [rng.standard_normal(9).astype(np.float32) for _ in lengths]
    return p2, p3, cams


def reference_pairs(lengths, L, augment):
    """The reference's chunk list: (sequence, start, end, flip), bounds centred on each sequence."""
    pairs = []
    for i, t in enumerate(lengths):
        n = (t + L - 1) // L
        offset = (n * L - t) // 2
        bounds = np.arange(n + 1) * L - offset
        for s, e in zip(bounds[:-1], bounds[1:]):
            pairs.append((i, int(s), int(e), False))
            if augment:
                pairs.append((i, int(s), int(e), True))
    return pairs


def naive_example(p2, p3, cams, seq, start, L, pad, shift, flip):
    """One example built per element: edge-replicated window, mirrored if flip."""
    def window(x, a, b):
        return x[np.clip(np.arange(a, b), 0, len(x) - 1)].copy()

    w = window(p2[seq], start - pad - shift, start + L + pad - shift)
    y = window(p3[seq], start, start + L)
    c = cams[seq].copy()
    if flip:
        w[..., 0] *= -1
        w[:, KL + KR] = w[:, KR + KL]
        y[..., 0] *= -1
        y[:, JL + JR] = y[:, JR + JL]
        c[2] *= -1
        c[7] *= -1
    traj = y[:, :1].copy()
    y[:, 0] = 0
    return w, y, traj, c


def sampler(p2, p3=None, cams=None, **kw):
    args = dict(kps_left=KL, kps_right=KR, joints_left=JL, joints_right=JR, augment=True, seed=3)
    args.update(kw)
    return WindowSampler(p2, p3, cams, **args)


@pytest.mark.parametrize("L,pad,causal", [(1, 4, False), (1, 4, True), (4, 2, False), (5, 3, True), (3, 0, False)])
def test_every_window_matches_the_per_example_construction(L, pad, causal):
    lengths = [5, 13, 1, 40, 8]
    p2, p3, cams = make_data(lengths)
    shift = pad if causal else 0
    s = sampler(p2, p3, cams, chunk_length=L, pad=pad, causal_shift=shift, batch_size=7)
    seen = []
    for b in s.epoch():
        assert b.inputs_2d.shape[1:] == (L + 2 * pad, 6, 2) and b.poses_3d.shape[1:] == (L, 5, 3)
        for k in range(b.inputs_2d.shape[0]):
            i, t, f = int(b.sequence[k]), int(b.start[k]), bool(b.flipped[k])
            w, y, traj, c = naive_example(p2, p3, cams, i, t, L, pad, shift, f)
            np.testing.assert_array_equal(b.inputs_2d[k].numpy(), w)
            np.testing.assert_array_equal(b.poses_3d[k].numpy(), y)
            np.testing.assert_array_equal(b.trajectory[k].numpy(), traj)
            np.testing.assert_array_equal(b.cameras[k].numpy(), c)
            seen.append((i, t, t + L, f))
    # Exactly the reference's chunk list, every chunk once as is and once flipped.
    assert sorted(seen) == sorted(reference_pairs(lengths, L, True))


def test_chunk_layout_is_the_reference_centring():
    n, off = chunk_layout([10, 11, 12, 1], 4)
    assert n.tolist() == [3, 3, 3, 1] and off.tolist() == [1, 0, 0, 1]


def test_epoch_size_batches_and_no_augmentation():
    p2, p3, _ = make_data([30, 17])
    s = sampler(p2, p3, chunk_length=2, pad=1, batch_size=8, augment=False)
    assert s.num_items == 15 + 9 and s.num_batches == 3
    sizes = [b.inputs_2d.shape[0] for b in s.epoch()]
    assert sizes == [8, 8, 8]
    s2 = sampler(p2, p3, chunk_length=2, pad=1, batch_size=10, augment=True)
    sizes = [b.inputs_2d.shape[0] for b in s2.epoch()]
    assert sizes == [10, 10, 10, 10, 8] and s2.frames_per_epoch == 2 * 24 * 2
    assert not any(bool(b.flipped.any()) for b in s.epoch())


def test_order_is_seeded_and_differs_between_epochs():
    p2, p3, _ = make_data([50, 60])

    def order(seed, epochs=2):
        s = sampler(p2, p3, pad=2, batch_size=16, seed=seed)
        return [torch.cat([torch.stack([b.sequence, b.start, b.flipped.long()], 1) for b in s.epoch()])
                for _ in range(epochs)]

    a, b, c = order(5), order(5), order(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], a[1])


def test_state_dict_resumes_the_same_order():
    p2, p3, _ = make_data([50, 60])
    s = sampler(p2, p3, pad=2, batch_size=16, seed=1)
    list(s.epoch())
    state = s.state_dict()
    expected = [b.start.clone() for b in s.epoch()]
    s2 = sampler(p2, p3, pad=2, batch_size=16, seed=99)
    s2.load_state_dict(state)
    got = [b.start.clone() for b in s2.epoch()]
    assert all(torch.equal(x, y) for x, y in zip(expected, got))
    with pytest.raises(ValueError, match="saved for .* items"):
        sampler(p2[:1], p3[:1], pad=2).load_state_dict(state)


def test_endless_stream_full_batches_wraps_and_resumes():
    p2, _, cams = make_data([9, 4])
    s = sampler(p2, None, cams, pad=1, batch_size=5, endless=True)
    assert s.num_items == 26
    items = []
    for _ in range(11):  # 55 items: two full passes and a bit
        b = s.next_batch()
        assert b.inputs_2d.shape[0] == 5 and b.poses_3d is None and b.cameras.shape == (5, 9)
        items += list(zip(b.sequence.tolist(), b.start.tolist(), b.flipped.tolist()))
    first, second = items[:26], items[26:52]
    assert len(set(first)) == 26 and sorted(first) == sorted(second) and first != second
    state = s.state_dict()
    nxt = [s.next_batch().start.clone() for _ in range(4)]
    s2 = sampler(p2, None, cams, pad=1, batch_size=5, endless=True, seed=42)
    s2.load_state_dict(state)
    assert all(torch.equal(a, s2.next_batch().start) for a in nxt)


def test_reuse_buffers_and_fresh_tensors():
    p2, p3, _ = make_data([20])
    s = sampler(p2, p3, pad=1, batch_size=4)
    it = s.epoch()
    a, b = next(it), next(it)
    assert a.inputs_2d.data_ptr() == b.inputs_2d.data_ptr()  # documented: valid until the next call
    s = sampler(p2, p3, pad=1, batch_size=4, reuse_buffers=False)
    it = s.epoch()
    a, b = next(it), next(it)
    assert a.inputs_2d.data_ptr() != b.inputs_2d.data_ptr()


def test_unshuffled_order_is_the_reference_order():
    lengths = [7, 3]
    p2, p3, _ = make_data(lengths)
    s = sampler(p2, p3, chunk_length=2, pad=1, batch_size=100, shuffle=False, augment=False)
    b = next(s.epoch())
    got = list(zip(b.sequence.tolist(), b.start.tolist()))
    assert got == [(i, st) for i, st, _, _ in reference_pairs(lengths, 2, False)]


@pytest.mark.parametrize("kw,match", [
    (dict(chunk_length=0), "chunk_length"),
    (dict(pad=-1), "pad"),
    (dict(pad=2, causal_shift=1), "causal_shift"),
    (dict(batch_size=0), "batch_size"),
    (dict(kps_left=None), "kps_left"),
    (dict(joints_right=None), "joints_left/joints_right"),
])
def test_bad_arguments(kw, match):
    p2, p3, _ = make_data([10])
    with pytest.raises(ValueError, match=match):
        sampler(p2, p3, **kw)


def test_bad_data():
    p2, p3, _ = make_data([10, 12])
    with pytest.raises(ValueError, match="poses_3d\\[1\\]: 11 frames"):
        sampler(p2, [p3[0], p3[1][:11]])
    with pytest.raises(ValueError, match="at least one sequence"):
        sampler([], None)
    with pytest.raises(ValueError, match="poses_2d\\[1\\]: expected shape"):
        sampler([p2[0], p2[1][:, :3]], None)
    with pytest.raises(ValueError, match="one per 2D sequence"):
        sampler(p2, p3[:1])
    with pytest.raises(ValueError, match="no frames"):
        sampler([p2[0], p2[1][:0]], None)


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(1, 30), min_size=1, max_size=4), L=st.integers(1, 6), pad=st.integers(0, 5),
       causal=st.booleans(), batch=st.integers(1, 9))
def test_property_windows_are_exact(lengths, L, pad, causal, batch):
    p2, p3, cams = make_data(lengths, seed=len(lengths))
    shift = pad if causal else 0
    s = sampler(p2, p3, cams, chunk_length=L, pad=pad, causal_shift=shift, batch_size=batch)
    count = 0
    for b in s.epoch():
        for k in range(b.inputs_2d.shape[0]):
            w, y, traj, c = naive_example(p2, p3, cams, int(b.sequence[k]), int(b.start[k]), L, pad, shift,
                                          bool(b.flipped[k]))
            assert np.array_equal(b.inputs_2d[k].numpy(), w)
            assert np.array_equal(b.poses_3d[k].numpy(), y)
            assert np.array_equal(b.cameras[k].numpy(), c)
            count += 1
    assert count == s.num_items == 2 * sum((t + L - 1) // L for t in lengths)
