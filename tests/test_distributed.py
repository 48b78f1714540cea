"""Data-parallel training (torchrun / DDP, gloo on CPU, 2 processes): synced BatchNorm equals one
process with the same global batch, sharded evaluation equals one process, checkpoints move
between world sizes, elastic restarts after a killed worker, two "nodes" on loopback, bad input.

The multi-process runs are real torchrun launches in subprocesses (bounded by timeouts); the
one-process baselines run in this process.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fastlift.checkpoint import load_checkpoint  # fastlift checkpoints hold numpy RandomState objects (run.py -r)

from fastlift.cli import main
from fastlift.train.args import parse_args
from fastlift.train.runner import main as run_main
from fastlift.train.sampler import WindowSampler

from helpers import one_thread_fixture, synthetic_data

ROOT = Path(__file__).resolve().parents[1]
one_thread = one_thread_fixture()

# Tiny runs: 2 training subjects x 2 actions x 4 cameras x 200 frames, 30 % subset, 2 epochs of
# 4 global batches of 256 examples (the last one smaller, so uneven shares are exercised).
TRAIN = ["-str", "S1,S5", "-ste", "S9", "-arc", "3,3", "-ch", "16", "-b", "256", "--subset", "0.3",
         "--checkpoint-frequency", "1", "--no-eval", "-drop", "0"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return synthetic_data(tmp_path_factory, seed=0, subjects=("S1", "S5", "S9"), actions=("Walking 1", "Jogging 1"),
                          frames_per_action=200)


def base(data_dir, ck, *extra):
    return ["-d", "synthetic", "--data-dir", str(data_dir), "-c", str(ck), "--no-progress", *extra]


def env(**extra):
    e = dict(os.environ, OMP_NUM_THREADS="1", FASTLIFT_DIST_TIMEOUT="120", **extra)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return e


def torchrun(args, nproc=2, extra_torchrun=(), timeout=240, **env_extra):
    """``torchrun --standalone --nproc-per-node nproc -m fastlift <args>``; returns the CompletedProcess."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           *extra_torchrun, "-m", "fastlift", *args]
    return subprocess.run(cmd, env=env(**env_extra), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def quiet_run(argv, mode="train"):
    lines = []
    res = run_main(parse_args(argv), mode, log=lines.append)
    res["log"] = lines
    return res


def weights(path):
    return load_checkpoint(path)["model_pos"]


def max_rel_diff(a, b):
    return max(float((a[k].double() - b[k].double()).abs().max() / (a[k].double().abs().max() + 1e-12))
               for k in a if a[k].is_floating_point())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_process(data_dir, tmp_path_factory):
    """The baseline: 2 epochs in one process (checkpoints after each)."""
    ck = tmp_path_factory.mktemp("one")
    quiet_run(base(data_dir, ck, *TRAIN, "-e", "2"))
    return ck


# ----------------------------------------------------------------------------------------- sampler
def _items(batch, s):
    # Recover item indices (chunk + flip) from a batch's sequence/start/flip: unique per item.
    return [(int(q), int(t), bool(f)) for q, t, f in zip(batch.sequence, batch.start, batch.flipped)]


@pytest.mark.parametrize("n_items_len,batch", [((37, 20, 11), 16), ((50, 9), 8), ((33,), 7)])
def test_rank_shares_are_disjoint_and_cover_every_window_once(n_items_len, batch):
    rng = np.random.default_rng(0)
    p2 = [rng.standard_normal((t, 4, 2)).astype(np.float32) for t in n_items_len]
    p3 = [rng.standard_normal((t, 3, 3)).astype(np.float32) for t in n_items_len]
    kw = dict(chunk_length=1, pad=2, batch_size=batch, augment=True, kps_left=[1], kps_right=[2], joints_left=[1],
              joints_right=[2], seed=5, reuse_buffers=False)
    one = WindowSampler(p2, p3, **kw)
    for world in (2, 3):
        ranks = [WindowSampler(p2, p3, rank=r, world_size=world, **kw) for r in range(world)]
        assert len({s.num_batches for s in ranks}) == 1
        for _ in range(2):  # two epochs: the order is global and advances identically
            single = [_items(b, one) for b in one.epoch()]
            shares = [[_items(b, s) for b in s.epoch()] for s in ranks]
            flat_single = [it for b in single for it in b]
            flat_ranks = [it for step in zip(*shares) for share in step for it in share]
            # Every item exactly once per epoch, in the single-process order, each rank >= 2 examples.
            assert flat_ranks == flat_single
            assert len(set(flat_ranks)) == one.num_items
            assert all(len(share) >= 2 for step in zip(*shares) for share in step)
        one = WindowSampler(p2, p3, **kw)


def test_sampler_state_is_global_across_world_sizes():
    rng = np.random.default_rng(1)
    p2 = [rng.standard_normal((t, 4, 2)).astype(np.float32) for t in (40, 23)]
    kw = dict(chunk_length=1, pad=1, batch_size=8, seed=3, reuse_buffers=False)
    two = [WindowSampler(p2, rank=r, world_size=2, **kw) for r in range(2)]
    for s in two:
        list(s.epoch())
    one = WindowSampler(p2, **kw)
    one.load_state_dict(two[0].state_dict())
    ref = WindowSampler(p2, **kw)
    list(ref.epoch())
    nxt = [b.start.tolist() for b in one.epoch()]
    assert nxt == [b.start.tolist() for b in ref.epoch()]
    # The endless stream: each rank gets its half of the same full global batch.
    endless = [WindowSampler(p2, endless=True, rank=r, world_size=2, **kw) for r in range(2)]
    solo = WindowSampler(p2, endless=True, **kw)
    for _ in range(5):
        both = [b.start.tolist() for b in (e.next_batch() for e in endless)]
        assert both[0] + both[1] == solo.next_batch().start.tolist()


def test_sampler_rank_arguments_are_checked():
    p2 = [np.zeros((10, 4, 2), np.float32)]
    with pytest.raises(ValueError, match="rank: expected 0 <= rank < world_size=2, got 2"):
        WindowSampler(p2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size: expected an integer >= 1, got 0"):
        WindowSampler(p2, world_size=0)


# ----------------------------------------------------------------------------------------- sync BN
def test_sync_bn_two_ranks_equal_one_process_and_checkpoints_move_between_world_sizes(data_dir, one_process,
                                                                                       tmp_path):
    two = tmp_path / "two"
    r = torchrun(["train", *base(data_dir, two, *TRAIN, "-e", "2", "--sync-bn")])
    assert r.returncode == 0, r.stderr[-3000:]
    # One log (rank 0): one line per epoch with the global loss and throughput.
    assert r.stdout.count("[2] time") == 1 and "frames/s" in r.stdout
    assert "2 processes (gloo)" in r.stdout and "synced over the global batch" in r.stdout
    ref1, ref2 = weights(one_process / "epoch_1.bin"), weights(one_process / "epoch_2.bin")
    # Measured ~1e-6 (fp32 rounding of the DDP gradient average); without --sync-bn it is ~1e-1.
    assert max_rel_diff(ref1, weights(two / "epoch_1.bin")) < 2e-5
    assert max_rel_diff(ref2, weights(two / "epoch_2.bin")) < 2e-5
    ck = load_checkpoint(two / "epoch_2.bin")
    assert ck["fastlift"]["distributed"]["world_size"] == 2 and len(ck["fastlift"]["distributed"]["rng_ranks"]) == 2
    h1 = json.loads((one_process / "history.json").read_text())
    h2 = json.loads((two / "history.json").read_text())
    assert np.allclose(h1["loss_3d_train"], h2["loss_3d_train"], rtol=1e-5)  # the logged loss is global

    # The 2-rank checkpoint of epoch 1 resumed on 1 process continues to the same epoch 2.
    res = quiet_run(base(data_dir, tmp_path / "to1", *TRAIN, "-e", "2", "-r", str(two / "epoch_1.bin")))
    assert any("written by a run of 2 process(es); continuing on 1" in line for line in res["log"])
    assert max_rel_diff(ref2, weights(tmp_path / "to1" / "epoch_2.bin")) < 2e-5
    # And the 1-process checkpoint resumed on 2 ranks.
    r = torchrun(["train", *base(data_dir, tmp_path / "to2", *TRAIN, "-e", "2", "--sync-bn", "-r",
                                 str(one_process / "epoch_1.bin"))])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "written by a run of 1 process(es); continuing on 2" in r.stdout
    assert max_rel_diff(ref2, weights(tmp_path / "to2" / "epoch_2.bin")) < 2e-5


def test_without_sync_bn_ranks_normalise_with_their_own_share(data_dir, one_process, tmp_path):
    ck = tmp_path / "nosync"
    r = subprocess.run([sys.executable, "-m", "fastlift", "train", *base(data_dir, ck, *TRAIN, "-e", "1"),
                        "--nproc-per-node", "2"], env=env(), capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "BatchNorm per process" in r.stdout
    # Per-rank batch statistics (half the batch each) give a different, equally valid, step:
    # measured ~1e-1 relative weight difference after one epoch, against ~1e-6 with --sync-bn.
    d = max_rel_diff(weights(one_process / "epoch_1.bin"), weights(ck / "epoch_1.bin"))
    assert 1e-3 < d < 1.0, d
    assert load_checkpoint(ck / "epoch_1.bin")["fastlift"]["distributed"]["sync_bn"] is False


@pytest.mark.slow
@pytest.mark.interpreter
def test_fused_kernels_sync_bn_two_ranks_equal_one_process(data_dir, tmp_path):
    # The Triton path (TRITON_INTERPRET=1, set by conftest and inherited): per-tile BN partials
    # merged across ranks before finalisation, batch means all-reduced in backward.
    flags = ["-str", "S1", "-ste", "S9", "-a", "Walking", "-arc", "3,3", "-ch", "8", "-b", "128", "--subset", "0.3",
             "-e", "1", "--no-eval", "-drop", "0", "--impl", "triton"]
    quiet_run(base(data_dir, tmp_path / "one", *flags))
    r = torchrun(["train", *base(data_dir, tmp_path / "two", *flags, "--sync-bn")], TRITON_INTERPRET="1")
    assert r.returncode == 0, r.stderr[-3000:]
    d = max_rel_diff(weights(tmp_path / "one" / "epoch_1.bin"), weights(tmp_path / "two" / "epoch_1.bin"))
    assert d < 2e-5, d  # measured ~2e-6


# ----------------------------------------------------------------------------------------- evaluation
def test_evaluation_on_two_ranks_equals_one_process(data_dir, one_process, tmp_path):
    flags = ["-ste", "S9", "-arc", "3,3", "-ch", "16", "--eval-frames", "700", "--evaluate",
             str(one_process / "epoch_2.bin"), "--by-subject"]
    quiet_run(base(data_dir, tmp_path / "e1", *flags, "--output-json", str(tmp_path / "one.json")), "evaluate")
    r = torchrun(["evaluate", *base(data_dir, tmp_path / "e2", *flags, "--output-json", str(tmp_path / "two.json"))])
    assert r.returncode == 0, r.stderr[-3000:]
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    for k in ("actions", "action_mean", "all_frames", "by_subject"):
        assert one[k] == two[k], k  # identical numbers, not just close
    assert r.stdout.count("Protocol #1") == 2  # rank 0 alone prints (table per subject + all subjects)


# ----------------------------------------------------------------------------------------- faults
def _children(pid):
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with open(task / "children") as f:
            out += [int(c) for c in f.read().split()]
    return out


def _communicate(proc, timeout):
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(proc)
        out, err = proc.communicate()
        return out, err + f"\n(timed out after {timeout} s)"


def _stop(proc):
    """SIGTERM (torchrun forwards it to its workers), then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_killed_worker_restarts_the_group_from_the_last_checkpoint(data_dir, tmp_path):
    ck = tmp_path / "elastic"
    flags = base(data_dir, ck, *TRAIN, "-e", "4", "--subset", "1", "-b", "64")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--max-restarts",
           "1", "--monitor-interval", "0.2", "-m", "fastlift", "train", *flags]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.time() + 180
        while not (ck / "epoch_1.bin").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before the fault could be injected"
        time.sleep(0.3)  # into epoch 2
        workers = _children(proc.pid)
        assert len(workers) == 2, workers
        os.kill(workers[-1], signal.SIGKILL)
        out, err = _communicate(proc, 240)
    finally:
        _stop(proc)
    assert proc.returncode == 0, (out[-2000:], err[-4000:])
    assert "Elastic restart 1: resuming from" in out, out[-2000:]
    ckpt = load_checkpoint(ck / "epoch_4.bin")
    assert ckpt["epoch"] == 4 and len(ckpt["fastlift"]["history"]["loss_3d_train"]) == 4
    assert not [p.name for p in ck.iterdir() if p.name.startswith(".")]  # no temporary (half-written) files
    res = quiet_run(base(data_dir, tmp_path / "ev", "-ste", "S9", "-arc", "3,3", "-ch", "16", "--evaluate",
                         str(ck / "epoch_4.bin")), "evaluate")
    assert np.isfinite(res["report"]["action_mean"]["mpjpe"])


@pytest.mark.slow
def test_two_nodes_on_loopback_with_c10d_rendezvous(data_dir, one_process, tmp_path):
    port = free_port()
    ck = tmp_path / "nodes"
    common = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
              "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "fastlift-test",
              "--local-addr", "127.0.0.1"]
    tail = ["-m", "fastlift", "train", *base(data_dir, ck, *TRAIN, "-e", "1", "--sync-bn")]
    nodes = [subprocess.Popen(common + ["--rdzv-conf", f"is_host={int(i == 0)},join_timeout=60"] + tail, env=env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT) for i in range(2)]
    try:
        outs = [_communicate(n, 240) for n in nodes]
    finally:
        for n in nodes:
            _stop(n)
    assert [n.returncode for n in nodes] == [0, 0], [o[1][-2000:] for o in outs]
    assert sum("2 processes (gloo)" in o[0] for o in outs) == 1  # one log for the whole job
    assert max_rel_diff(weights(one_process / "epoch_1.bin"), weights(ck / "epoch_1.bin")) < 2e-5


# ----------------------------------------------------------------------------------------- bad input
def test_bad_process_counts_and_batches_are_refused_before_launch(data_dir, tmp_path, capsys):
    assert main(["train", *base(data_dir, tmp_path, "--nproc-per-node", "0")]) == 2
    assert "--nproc-per-node: expected a positive number of processes, got 0" in capsys.readouterr().err
    assert main(["train", *base(data_dir, tmp_path, "--nproc-per-node", "2", "-b", "255")]) == 2
    err = capsys.readouterr().err
    assert "-b/--batch-size: the global batch (255 frames = 255 examples of -s 1) must split evenly over " \
           "--nproc-per-node 2" in err
    assert main(["train", *base(data_dir, tmp_path, "--nproc-per-node", "2", "--nnodes", "2")]) == 2
    assert "--rdzv-endpoint: a multi-node run" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_indivisible_batch_under_torchrun_fails_on_every_rank(data_dir, tmp_path):
    r = torchrun(["train", *base(data_dir, tmp_path / "ck", *TRAIN, "-e", "1", "-b", "255")], timeout=120)
    assert r.returncode != 0
    assert r.stderr.count("-b/--batch-size: the global batch (255 frames = 255 examples of -s 1) must split evenly "
                          "over the 2 processes; use a multiple of 2 frames, e.g. -b 254") == 2


def test_mismatched_flags_between_ranks_are_refused(data_dir, tmp_path):
    # Two workers started by hand with torchrun's variables, rank 1 with another learning rate.
    port = free_port()
    procs = []
    for rank, lr in ((0, "0.001"), (1, "0.002")):
        e = env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, "-m", "fastlift", "train",
                                       *base(data_dir, tmp_path / "ck", *TRAIN, "-e", "1", "-lr", lr)],
                                      env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT))
    try:
        outs = [_communicate(p, 120) for p in procs]
    finally:
        for p in procs:
            _stop(p)
    assert [p.returncode for p in procs] == [2, 2]
    for _, err in outs:
        assert "--learning-rate: every process must get the same flags; rank 0 has 0.001, rank 1 has 0.002" in err
    assert not (tmp_path / "ck").exists()


def test_semi_supervised_training_runs_data_parallel(data_dir, tmp_path):
    # Labelled S1 + unlabelled S5 (both models under DDP, synced BN over labelled + unlabelled rows).
    ck = tmp_path / "semi"
    flags = ["-str", "S1", "-sun", "S5", "-ste", "S9", "-a", "Walking", "-arc", "3,3", "-ch", "16", "-e", "2",
             "--warmup", "1", "-b", "64", "--subset", "0.5", "--sync-bn"]
    r = torchrun(["train", *base(data_dir, ck, *flags)])
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = load_checkpoint(ck / "epoch_2.bin")
    assert ckpt["model_traj"] is not None and ckpt["random_state_semi"] is not None
    h = ckpt["fastlift"]["history"]
    assert all(np.isfinite(h["loss_2d_train_unlabeled"])) and h["loss_2d_train_unlabeled"][1] > 0
    assert r.stdout.count("2d_train_unsup") == 2


def test_nproc_per_node_inside_torchrun_is_refused(data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", *base(data_dir, tmp_path, "--nproc-per-node", "2")]) == 2
    assert "--nproc-per-node: this process already runs under torchrun (WORLD_SIZE=2)" in capsys.readouterr().err
