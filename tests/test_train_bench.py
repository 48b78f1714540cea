"""bench/bench_sampler.py runs (smoke test at tiny sizes; timings are reported, never asserted)."""
from __future__ import annotations

import pytest
import torch

from fastlift.bench.bench_sampler import NumpyWindowBatches, run_epoch_breakdown, run_sampler_benchmark


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from fastlift.data import synthetic as syn

    d = tmp_path_factory.mktemp("synth")
    syn.write(d, seed=5, subjects=("S1", "S5"), actions=("Walking 1",), frames_per_action=100)
    return d


def test_sampler_benchmark_checks_windows_and_reports(data_dir):
    res = run_sampler_benchmark(batch=64, arc=(3, 3), rounds=2, batches_per_round=1, data_dir=data_dir)
    assert res["max_abs_window_difference"] == 0.0  # identical batches before any timing
    assert res["numpy_loop_ms_per_batch"] > 0 and res["window_sampler_ms_per_batch"] > 0
    assert res["speedup"] == pytest.approx(res["numpy_loop_ms_per_batch"] / res["window_sampler_ms_per_batch"])
    assert res["frames"] == 2 * 4 * 100 and res["machine"]["cpu_count"] >= 1


def test_numpy_baseline_batches_are_reference_windows():
    import numpy as np

    p2 = [np.arange(10 * 3 * 2, dtype=np.float32).reshape(10, 3, 2)]
    p3 = [np.arange(10 * 3 * 3, dtype=np.float32).reshape(10, 3, 3)]
    nb = NumpyWindowBatches(p2, p3, pad=2, batch_size=4, augment=True, kps_left=[1], kps_right=[2],
                            joints_left=[1], joints_right=[2])
    assert len(nb.items) == 20 and nb.num_batches == 5
    w, y = nb.item(0, 0, True)
    assert w.shape == (5, 3, 2) and np.array_equal(w[0], w[2])  # edge replication before frame 0
    assert w[2, 0, 0] == -p2[0][0, 0, 0] and w[2, 1, 1] == p2[0][0, 2, 1]  # mirrored: x negated, 1 <-> 2
    x, t = nb.batch(0)
    assert x.dtype == torch.float32 and x.shape == (4, 5, 3, 2) and (t[:, :, 0] == 0).all()


def test_epoch_breakdown_cpu_smoke(data_dir):
    if not torch.cuda.is_available():
        assert "skipped" in run_epoch_breakdown(data_dir=data_dir)
    res = run_epoch_breakdown(device="cpu", batch=32, arc=(3, 3), channels=16, steps=2, warmup=1, data_dir=data_dir,
                              allow_cpu=True)
    for side in ("reference", "fastlift"):
        assert set(res[side]) == {"data_ms", "forward_ms", "backward_ms", "optimizer_ms", "step_ms"}
    assert res["batches_per_epoch"] == -(-2 * 4 * 100 * 2 // 32) and res["speedup"] > 0
