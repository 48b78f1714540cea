"""Shared pieces of fastlift's Triton kernels: device-side helpers and launcher utilities.

Device helpers (``@triton.jit``, inlined into the kernels that call them):

* :func:`dropout_keep` — counter-based dropout mask: Philox keyed by ``seed`` (a value loaded
  from a device tensor, plus a per-layer salt) and the element's logical index. Identical in the
  forward kernels and when backward recomputes it; never materialised as a tensor.
* :func:`bn_act` — BatchNorm scale/shift + ReLU + dropout applied to a loaded tile (the
  "prologue" that applies the previous layer's BatchNorm inside the next GEMM).

Launcher helpers: interpreter detection, dtype checks, dot precision, and the tile table (every
tile choice takes an explicit :class:`~fastlift.kernels.target.Target`, never the device type).
"""
from __future__ import annotations

import contextlib
import os

import torch
import triton
import triton.language as tl

from fastlift.kernels.target import Target, resolve

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Prologue modes of the GEMM kernels (applied to the A operand as it is loaded).
PRO_NONE = 0  # A = x
PRO_BN_ACT = 1  # A = dropout(relu((x - mean) * scale + shift))
PRO_BN_ACT_RES = 2  # A = res + dropout(relu((x - mean) * scale + shift))  (a block output, recomputed)

# Prologue modes of the gradient operand of dgrad/wgrad.
GPRO_NONE = 0  # G = g (gradient w.r.t. the conv output itself)
GPRO_BN_BWD = 1  # G = dL/dz recomputed from dL/da, z and the BN/ReLU/dropout of this layer


def interpreter_active() -> bool:
    """True when fastlift's Triton kernels run under the CPU interpreter (``TRITON_INTERPRET=1``).

    Triton decides per ``@triton.jit`` decoration, at import time: if ``triton.language`` (or this
    module) was imported before ``TRITON_INTERPRET=1`` was set, its functions stay compiled and
    the interpreter cannot run them, so this checks the decorations as well as the variable.
    """
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        return False
    return type(_fmix32).__name__ == "InterpretedFunction" and type(tl.max).__name__ == "InterpretedFunction"


def kernels_available(device: torch.device) -> bool:
    """Whether Triton kernels can run on tensors of ``device``: CUDA, CPU under the interpreter,
    or any device inside a compile-only session (:func:`fastlift.kernels.launch.compile_only`)."""
    device = torch.device(device)
    if device.type == "cuda":
        return True
    from fastlift.kernels.launch import compile_only_active

    return device.type == "cpu" and (interpreter_active() or compile_only_active())


def check_kernel_device(name: str, t: torch.Tensor) -> None:
    if not kernels_available(t.device):
        raise ValueError(
            f"{name}: the Triton kernels need a CUDA tensor (or TRITON_INTERPRET=1 for CPU tensors), "
            f"got a tensor on {t.device}; use impl='reference' (or 'auto') on this device")


def check_dtype(name: str, t: torch.Tensor, allowed=SUPPORTED_DTYPES) -> None:
    if t.dtype not in allowed:
        raise TypeError(f"{name}: expected dtype in {[str(d) for d in allowed]}, got {t.dtype}")
    if interpreter_active() and t.device.type == "cpu" and t.dtype == torch.bfloat16:
        raise TypeError(f"{name}: bfloat16 is not supported by the Triton CPU interpreter; use float32/float16 there")


def check_same_device(ref_name: str, ref: torch.Tensor, **others) -> None:
    for n, t in others.items():
        if t is not None and t.device != ref.device:
            raise ValueError(f"{n}: expected a tensor on {ref.device} (the device of {ref_name}), got {t.device}")


# ---------------------------------------------------------------------------------- fp32 precision policy
# fp32 convolutions of the reference run through cuDNN, which uses TF32 tensor cores unless the user
# turns TF32 off. The kernels follow the same switch, so "fp32" means what the reference gets.
FP32_PRECISIONS = ("auto", "ieee", "tf32", "tf32x3")
_FP32_MODE: list[str] = ["auto"]


def torch_conv_fp32_precision() -> str:
    """What torch's settings ask of fp32 convolutions: ``"tf32"`` or ``"ieee"``. Never raises.

    The newer ``fp32_precision`` settings are read most specific first
    (``torch.backends.cudnn.conv`` -> ``torch.backends.cudnn`` -> ``torch.backends``; ``"none"``
    inherits), then the legacy ``torch.backends.cudnn.allow_tf32`` (whose getter raises when the
    two APIs were mixed); cuDNN's default (TF32) if nothing can be read.
    """
    getters = (lambda: torch.backends.cudnn.conv.fp32_precision, lambda: torch.backends.cudnn.fp32_precision,
               lambda: torch.backends.fp32_precision)
    for get in getters:
        try:
            v = get()
        except Exception:  # an older torch without the setting, or a getter that refuses
            continue
        if v in ("tf32", "ieee"):
            return v
    try:
        return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"
    except Exception:
        return "tf32"


def set_fp32_precision(mode: str) -> None:
    """How fp32 GEMMs of the kernels use the tensor cores:

    * ``"auto"`` (default): follow torch's setting for cuDNN convolutions, as the reference does
      (TF32 by default; exact IEEE when the user turns TF32 off);
    * ``"ieee"``: exact fp32 FMAs (no tensor cores);
    * ``"tf32"``: TF32 tensor cores (10-bit mantissa inputs, fp32 accumulation);
    * ``"tf32x3"``: three TF32 products per multiply (split hi/lo), close to fp32 accuracy on
      tensor cores at about 3x the tensor-core work.
    """
    if mode not in FP32_PRECISIONS:
        raise ValueError(f"mode: expected one of {FP32_PRECISIONS}, got {mode!r}")
    _FP32_MODE[0] = mode


def get_fp32_precision() -> str:
    """The mode set by :func:`set_fp32_precision` (``"auto"`` unless changed)."""
    return _FP32_MODE[0]


@contextlib.contextmanager
def fp32_precision(mode: str):
    """:func:`set_fp32_precision` for the duration of a ``with`` block."""
    old = _FP32_MODE[0]
    set_fp32_precision(mode)
    try:
        yield
    finally:
        _FP32_MODE[0] = old


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision for operands of ``dtype``: for fp32 the policy above
    (``"ieee"``, ``"tf32"`` or ``"tf32x3"``; always ``"ieee"`` on ROCm); fp16/bf16 operands always
    use the tensor cores' native precision with fp32 accumulation (``"tf32"`` is Triton's default
    value there and has no effect)."""
    if dtype != torch.float32:
        return "tf32"
    mode = _FP32_MODE[0]
    if mode == "auto":
        mode = torch_conv_fp32_precision()
    if torch.version.hip is not None:
        return "ieee"
    return mode


# ---------------------------------------------------------------------------------- tile table
# Every tile choice of the kernels lives here and takes a Target (see fastlift.kernels.target):
# the interpreter executes each program in Python, so it gets tiny tiles; GPUs get tiles sized for
# their tensor cores. None of these depend on timing: they are the deterministic fallback that
# fastlift.kernels.tuning may override on a GPU after a warm-up (only keywords that change neither
# output shapes nor reduction groupings), and what `fastlift kernels check` holds to no spills.


def _gemm_tiles(m: int, n: int, k: int, dtype: torch.dtype) -> tuple[int, int, int]:
    """BLOCK_M x BLOCK_N x BLOCK_K of the GEMM kernels on a GPU. BLOCK_K is the per-step reduction
    width: 64 for 2-byte operands, 32 for TF32, 16 for IEEE fp32 (lowered to FFMA, whose operand
    fragments for the whole BLOCK_K step sit in registers: at 32 the fp32 kernels spilled)."""
    m, n, k = static_int(m, 1 << 20), static_int(n, 1024), static_int(k, 1024)
    big = dtype in (torch.float16, torch.bfloat16)
    block_n = 128 if n >= 128 else max(16, triton.next_power_of_2(n))
    block_m = 128 if m >= 4096 else 64 if m >= 64 else max(16, triton.next_power_of_2(m))
    ieee = dtype == torch.float32 and dot_precision(dtype) == "ieee"
    base_k = 64 if big else (16 if ieee else 32)
    block_k = min(base_k, max(16, triton.next_power_of_2(k)))
    return block_m, block_n, block_k


def gemm_config(m: int, n: int, k: int, dtype: torch.dtype, target: "Target | torch.device") -> dict:
    """Tile sizes and launch options of the forward conv GEMM (``[m x k] . [k x n]``).

    ``target``: a :class:`Target` or a device (resolved with :func:`fastlift.kernels.target.resolve`).
    ``BLOCK_M`` depends only on ``m`` (and whether the target is a GPU): it is also the row tiling of
    the BatchNorm partial statistics (:func:`fastlift.kernels.tconv_fwd.stats_tile_rows`), so neither
    the precision policy nor autotuning (:mod:`fastlift.kernels.tuning`) may change it.

    Eight warps: the compile check (sm_80) measured 8 B spills at 64 x 128 tiles with four warps in
    the BN-prologue specialisations (TF32, bf16, fp16); with eight none of them spill.
    """
    target = resolve(target)
    if not target.gpu:
        return dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=4, num_warps=1, num_stages=1)
    big = dtype in (torch.float16, torch.bfloat16)
    block_m, block_n, block_k = _gemm_tiles(m, n, k, dtype)
    stages = _fit_stages(4 if big else 3, (block_m * block_k + block_k * block_n) * (2 if big else 4), target)
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=8, num_warps=8, num_stages=stages)


def dgrad_config(m: int, n: int, k: int, dtype: torch.dtype, target: "Target | torch.device") -> dict:
    """Tile sizes and launch options of the input-gradient GEMM (``m`` input rows, ``n = C_in``,
    ``k = taps * C_out``).

    Its prologue recomputes dL/dz from dL/da, z and six per-channel BatchNorm coefficients (plus the
    dropout hash) on every ``BLOCK_M x BLOCK_K`` operand tile, and its epilogue reloads the previous
    layer's z for the BN-backward reductions: at 128-row tiles (or 4 warps, or 4 stages) this spilled
    up to 1.4 KB on sm_90 and 4.6 KB on sm_80 in the compile check. 64 rows, 8 warps and 3 stages
    spill nowhere (registers 160-230 on sm_90/sm_80 for bf16, fp16 and TF32).
    """
    target = resolve(target)
    if not target.gpu:
        return dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=4, num_warps=1, num_stages=1)
    big = dtype in (torch.float16, torch.bfloat16)
    block_m, block_n, block_k = _gemm_tiles(m, n, k, dtype)
    block_m = min(block_m, 64)
    stages = _fit_stages(3, (block_m * block_k + block_k * block_n) * (2 if big else 4), target)
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=8, num_warps=8, num_stages=stages)


def _fit_stages(stages: int, stage_bytes: int, target: Target) -> int:
    """Fewer pipeline stages until the operand buffers (``stage_bytes`` per stage) fit in 3/4 of the
    target's shared memory; the rest is left for the epilogue's layout conversions. The compile
    check measured the need: the bf16 dgrad at 128x128x64 with 4 stages takes 168,448 B, over an
    A100's 166,912 B (4 x 32 KB of operands + 37 KB of epilogue scratch)."""
    while stages > 2 and stages * stage_bytes > target.shared_bytes * 3 // 4:
        stages -= 1
    return stages


def wgrad_config(m: int, c_in: int, c_out: int, taps: int, dtype: torch.dtype, target) -> dict:
    """Tiles of the weight-gradient kernel and its split of the row reduction (``SPLIT``)."""
    target = resolve(target)
    if target.gpu:
        bc = 128 if c_in >= 128 else max(16, triton.next_power_of_2(c_in))
        bn = 128 if c_out >= 128 else max(16, triton.next_power_of_2(c_out))
        # 32-row steps: the A and G prologues (BN, ReLU, dropout hash, BN backward) work on
        # BLOCK_R x BLOCK_C/N register tiles; at 64 rows the half-precision kernels spilled.
        br = 32
        # Two stages and eight warps: with three stages (bf16/fp16) or four warps the compile check
        # measured 8-64 B spills in the specialisations with both prologues and dropout.
        warps, stages = 8, 2
        if dtype == torch.float32 and dot_precision(dtype) == "ieee":
            # IEEE fp32 lowers the dot to FFMA, which holds a BLOCK_R-deep slice of both operands
            # in registers: at 128 x 128 x 32 ptxas gave up (32 registers, 6.3-6.8 KB of stack).
            bc, br = min(bc, 64), 16
        waves = 4 * target.sm_count  # aim for ~4 waves of programs ...
    else:
        bc, bn, br, warps, stages = 32, 32, 32, 1, 1
        waves = 2
    tiles = taps * triton.cdiv(c_in, bc) * triton.cdiv(c_out, bn)
    # ... but keep >= 8 row blocks per program.
    split = max(1, min(triton.cdiv(waves, tiles), triton.cdiv(static_int(m, 1 << 20), 8 * br)))
    return dict(BLOCK_C=bc, BLOCK_N=bn, BLOCK_R=br, num_warps=warps, num_stages=stages, SPLIT=split)


def rowwise_config(target) -> dict:
    """Tiles of the element-wise BN-activation kernel (``BLOCK_M`` rows x ``BLOCK_C`` channels)."""
    if resolve(target).gpu:
        return dict(BLOCK_M=64, BLOCK_C=128, num_warps=4)
    return dict(BLOCK_M=16, BLOCK_C=32, num_warps=1)


def finalize_config(target) -> dict:
    """Channel tile of the BN-finalize kernel."""
    return dict(BLOCK_C=128 if resolve(target).gpu else 32)


def stream_config(n_rows: int, c_out: int, dtype: torch.dtype, target, c_in: "int | None" = None, taps: int = 1,
                  split_k: "int | None" = None) -> dict:
    """Tiles of the streaming-step kernel for ``n_rows`` streams, and its split of the reduction (``SPLIT_K``).

    Few streams make the layer a weight-streaming GEMV, so narrow column tiles spread the weight
    read over more programs; many streams get taller tiles for weight reuse. ``tl.dot`` needs every
    tile dimension >= 16 (the interpreter too, so it gets the same tiles: its cost is per program).

    Split-K (needs ``c_in``; ``taps`` is the layer's kernel width): the reduction over the
    ``taps * cdiv(c_in, BLOCK_K)`` K blocks is cut into ``SPLIT_K`` slices, one program each, so that
    the grid reaches ``target.sm_count`` programs -- at N = 1 a 1,024-channel layer has only 32
    column tiles, a quarter of an H100's SMs, for a step bound by reading the weights. The slices'
    fp32 partial sums are added in a fixed order (deterministic; see the kernel). ``SPLIT_K`` is the
    smallest count that fills the SMs, at most one slice per K block, and only while the partials'
    traffic (``SPLIT_K x rows x 8`` B per output column, written and read once) stays under a quarter
    of the weight read (``taps x c_in x itemsize`` B per column): many streams do not split. When even
    one slice per K block cannot fill the SMs (the small expand and shrink layers), ``BLOCK_C`` and
    then ``BLOCK_K`` halve (down to 16). On a one-SM target (the interpreter) ``SPLIT_K`` is 1.
    ``split_k`` forces a count (clamped to the K blocks): tests exercise the split on small shapes.
    """
    target = resolve(target)
    n = static_int(n_rows, 1 << 20)
    block_n = 16 if n <= 16 else (32 if n <= 32 else 64)
    if n <= 16:
        block_c = 32
    elif n <= 128:
        block_c = 64
    else:
        block_c = 128
    block_c = max(16, min(block_c, triton.next_power_of_2(c_out)))
    block_k = 32 if dtype == torch.float32 else 64
    split = 1
    if c_in is not None:
        k_blocks = lambda bk: taps * triton.cdiv(c_in, bk)  # noqa: E731
        if split_k is not None:
            if int(split_k) < 1:
                raise ValueError(f"split_k: expected a positive integer, got {split_k}")
            split = min(int(split_k), k_blocks(block_k))
        else:
            col_weight_bytes = taps * c_in * dtype.itemsize

            def plan(bc, bk):
                tiles = triton.cdiv(max(n, 1), block_n) * triton.cdiv(c_out, bc)
                s = min(triton.cdiv(target.sm_count, tiles), k_blocks(bk))
                while s > 1 and 4 * s * max(n, 1) * 8 > col_weight_bytes:
                    s -= 1
                return s, tiles * s

            split, programs = plan(block_c, block_k)
            while programs < target.sm_count and split == k_blocks(block_k):
                if block_c > 16:
                    block_c //= 2
                elif block_k > 16:
                    block_k //= 2
                else:
                    break
                split, programs = plan(block_c, block_k)
    # 8 warps from 64 x 64 tiles up; for a K loop of <= 2 steps per tap (the expand layer, C_in = 34)
    # no software pipelining and 8 warps at every tile size. Measured by the compile check: at 4 warps
    # / 3 stages the expand layer spilled 96-520 B on sm_90, and at 4 warps its 16 x 16 tiles 16 B
    # on sm_80 (N = 2).
    short_k = c_in is not None and triton.cdiv(c_in, block_k) <= 2
    num_warps = 8 if block_n * block_c >= 4096 or short_k else 4
    cfg = dict(BLOCK_N=block_n, BLOCK_C=block_c, BLOCK_K=block_k, SPLIT_K=split, num_warps=num_warps)
    if target.gpu and short_k:
        cfg["num_stages"] = 1
    return cfg


def tl_dtype(dtype: torch.dtype):
    return {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16,
            torch.float64: tl.float64}[dtype]


# ---------------------------------------------------------------------------------- dropout RNG
# A counter-based hash (two rounds of the murmur3 32-bit finaliser with the key injected between
# rounds). It is implemented identically in Triton and in torch (below), so the CPU operator
# implementations, the kernels and the tests all see bit-identical dropout masks. An element is
# kept iff its 24-bit draw is >= round(p * 2**24); the effective rate is that threshold / 2**24.
_M32 = 0xFFFFFFFF


def dropout_threshold(p: float) -> int:
    """Integer threshold of the 24-bit draw for dropout probability ``p`` in [0, 1)."""
    if not (0.0 <= p < 1.0):
        raise ValueError(f"p: expected a dropout probability in [0, 1), got {p}")
    return int(round(p * (1 << 24)))


def _fmix32_torch(h: torch.Tensor) -> torch.Tensor:
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & _M32
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def _key_hash(seed: int) -> tuple[int, int]:
    seed &= (1 << 64) - 1
    lo, hi = seed & _M32, seed >> 32
    t = torch.tensor([(hi + 0x632BE5AB) & _M32], dtype=torch.int64)
    k1 = _fmix32_torch(torch.tensor([lo], dtype=torch.int64) ^ _fmix32_torch(t))
    k2 = _fmix32_torch(k1 ^ 0x5BD1E995)
    return int(k1), int(k2)


def dropout_keep_torch(seed: int, idx: torch.Tensor, threshold: int) -> torch.Tensor:
    """Torch twin of :func:`dropout_keep`: bool keep-mask for int64 logical indices ``idx``."""
    k1, k2 = _key_hash(int(seed))
    idx = idx.to(torch.int64)
    lo = idx & _M32
    hi = (idx >> 32) & _M32
    h = _fmix32_torch(lo ^ k1)
    h = _fmix32_torch((h + (hi * 0x9E3779B1 & _M32) + k2) & _M32)
    return (h >> 8) >= threshold


def dropout_mask_torch(seed: int, shape, threshold: int, device=None) -> torch.Tensor:
    """Keep-mask for a contiguous tensor of ``shape`` (logical index = flat index)."""
    n = 1
    for s in shape:
        n *= int(s)
    idx = torch.arange(n, dtype=torch.int64, device=device)
    return dropout_keep_torch(seed, idx, threshold).reshape(tuple(shape))


def dropout_apply_torch(a: torch.Tensor, seed, salt: int, p: float) -> torch.Tensor:
    """Inverted dropout of a contiguous-layout tensor ``a`` with the kernels' mask (logical index =
    flat index of ``a``, key ``seed[0] + salt``); identity when ``p`` is 0."""
    thr = dropout_threshold(p)
    if thr == 0:
        return a
    idx = torch.arange(a.numel(), device=a.device, dtype=torch.int64).reshape(a.shape)
    keep = dropout_keep_torch(int(seed.reshape(-1)[0]) + salt, idx, thr)
    return torch.where(keep, a / (1.0 - p), torch.zeros((), dtype=a.dtype, device=a.device))


def tile_column_sums(rows: torch.Tensor, tile_m: int) -> torch.Tensor:
    """Column sums of ``rows`` ``[M, C]`` per consecutive tile of ``tile_m`` rows -> ``[tiles, C]``
    (the per-program partials the kernels write)."""
    m, c = rows.shape
    n_tiles = (m + tile_m - 1) // tile_m
    padded = torch.cat([rows, rows.new_zeros(n_tiles * tile_m - m, c)])
    return padded.reshape(n_tiles, tile_m, c).sum(1)


# ---------------------------------------------------------------------------------- device helpers
@triton.jit
def _fmix32(h):
    h ^= h >> 16
    h *= 0x85EBCA6B
    h ^= h >> 13
    h *= 0xC2B2AE35
    h ^= h >> 16
    return h


@triton.jit
def dropout_key(seed):
    """Two 32-bit round keys from an int64 seed (scalar); see :func:`dropout_keep`."""
    s = seed.to(tl.uint64)
    lo = (s & 0xFFFFFFFF).to(tl.uint32)
    hi = (s >> 32).to(tl.uint32)
    k1 = _fmix32(lo ^ _fmix32(hi + 0x632BE5AB))
    k2 = _fmix32(k1 ^ 0x5BD1E995)
    return k1, k2


@triton.jit
def dropout_keep(k1, k2, idx, threshold):
    """Keep-mask for elements with logical int64 indices ``idx`` (pure function of the key)."""
    i = idx.to(tl.uint64)
    lo = (i & 0xFFFFFFFF).to(tl.uint32)
    hi = (i >> 32).to(tl.uint32)
    h = _fmix32(lo ^ k1)
    h = _fmix32(h + hi * 0x9E3779B1 + k2)
    return (h >> 8).to(tl.int32) >= threshold


@triton.jit
def bn_act(z, mean, scale, shift, k1, k2, idx, threshold, inv_keep, DROPOUT: tl.constexpr):
    """``dropout(relu((z - mean) * scale + shift))`` on an fp32 tile; mean/scale/shift broadcast per
    channel (``mean`` may be the scalar 0). Centring first keeps BatchNorm accurate when
    ``|mean| >> std``: ``z*scale + (beta - mean*scale)`` would cancel catastrophically there."""
    a = tl.maximum((z - mean) * scale + shift, 0.0)
    if DROPOUT:
        a = tl.where(dropout_keep(k1, k2, idx, threshold), a * inv_keep, 0.0)
    return a


@triton.jit
def swizzle(pid, num_m, num_n, GROUP_M: tl.constexpr):
    """Grouped program ordering so consecutive programs share B tiles in L2."""
    width = GROUP_M * num_n
    group = pid // width
    first_m = group * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % size_m
    pid_n = (pid % width) // size_m
    return pid_m, pid_n


@triton.jit
def load_activation(x_ptr, bi, r, ci, amask, ci_ok, sxb, sxt, sxc,
                    pscale_ptr, pshift_ptr, pmean_ptr, pres_ptr, spb, spt, spc, pres_row_stride, pres_offset,
                    T_in, C_in, k1, k2, threshold, inv_keep,
                    PRO: tl.constexpr, DROPOUT: tl.constexpr, CENTRED: tl.constexpr):
    """Load an A tile ``[rows, channels]`` of a conv input and apply the prologue (fp32 result).

    ``bi``/``r``: batch and frame of each row (int); ``ci``: channels. With ``PRO != 0`` the
    stored tensor holds the previous layer's pre-BN output ``z`` and the tile becomes
    ``dropout(relu((z - mean)*scale + shift))`` (+ the block residual for ``PRO == 2``; ``mean`` is
    read from ``pmean_ptr`` when ``CENTRED``, else 0). The dropout index
    is the element's logical index in ``z`` (shape ``(B, T_in, C_in)``).
    """
    r64 = r.to(tl.int64)
    a = tl.load(x_ptr + bi[:, None] * sxb + r64[:, None] * sxt + ci[None, :] * sxc, mask=amask, other=0.0)
    a = a.to(tl.float32)
    if PRO != 0:
        sc = tl.load(pscale_ptr + ci, mask=ci_ok, other=0.0)
        sh = tl.load(pshift_ptr + ci, mask=ci_ok, other=0.0)
        idx = (bi[:, None] * T_in + r64[:, None]) * C_in + ci[None, :]
        if CENTRED:
            mu = tl.load(pmean_ptr + ci, mask=ci_ok, other=0.0)[None, :]
        else:
            mu = 0.0
        a = bn_act(a, mu, sc[None, :], sh[None, :], k1, k2, idx, threshold, inv_keep, DROPOUT)
        if PRO == 2:
            pr = (r * pres_row_stride + pres_offset).to(tl.int64)
            a += tl.load(pres_ptr + bi[:, None] * spb + pr[:, None] * spt + ci[None, :] * spc,
                         mask=amask, other=0.0).to(tl.float32)
        # Masked lanes would otherwise carry relu(shift).
        a = tl.where(amask, a, 0.0)
    return a


@triton.jit
def load_output_grad(g_ptr, z_ptr, gcoef_ptr, bi, t, n, gmask, n_ok, T_out, C_out, k1, k2, threshold, inv_keep,
                     GPRO: tl.constexpr, DROPOUT: tl.constexpr):
    """Load a tile of dL/dz of a conv's output ``z`` ``(B, T_out, C_out)`` (contiguous), fp32.

    ``GPRO == 0``: ``g`` already is dL/dz. ``GPRO == 1``: ``g`` is dL/da for
    ``a = dropout(relu(BN(z)))`` and the BatchNorm backward is applied on the fly:
    ``gu = g * keep/(1-p) * [(z - mean)*scale + shift > 0]`` (the forward's centred BN activation),
    ``zhat = (z - mean) * invstd`` and
    ``dL/dz = scale * (gu - m1 - zhat*m2)`` with the per-channel coefficients
    ``gcoef = [scale, shift, mean, invstd, m1, m2]`` (``m1 = mean(gu)``, ``m2 = mean(gu*zhat)`` over
    the batch; ``m1 = m2 = 0`` for eval-mode BN). The centred form matches the reference's
    rounding when ``|mean| >> std``.
    """
    off = (bi.to(tl.int64)[:, None] * T_out + t.to(tl.int64)[:, None]) * C_out + n[None, :]
    g = tl.load(g_ptr + off, mask=gmask, other=0.0).to(tl.float32)
    if GPRO == 1:
        z = tl.load(z_ptr + off, mask=gmask, other=0.0).to(tl.float32)
        sc = tl.load(gcoef_ptr + n, mask=n_ok, other=0.0)[None, :]
        sh = tl.load(gcoef_ptr + C_out + n, mask=n_ok, other=0.0)[None, :]
        mean = tl.load(gcoef_ptr + 2 * C_out + n, mask=n_ok, other=0.0)[None, :]
        invstd = tl.load(gcoef_ptr + 3 * C_out + n, mask=n_ok, other=0.0)[None, :]
        m1 = tl.load(gcoef_ptr + 4 * C_out + n, mask=n_ok, other=0.0)[None, :]
        m2 = tl.load(gcoef_ptr + 5 * C_out + n, mask=n_ok, other=0.0)[None, :]
        gu = tl.where((z - mean) * sc + sh > 0.0, g, 0.0)
        if DROPOUT:
            gu = tl.where(dropout_keep(k1, k2, off, threshold), gu * inv_keep, 0.0)
        g = tl.where(gmask, sc * (gu - m1 - (z - mean) * invstd * m2), 0.0)
    return g


def launchable(kernel):
    """``kernel`` wrapped with ``torch.library.wrap_triton`` so registered ``triton_op`` bodies trace
    under torch.compile / torch.export; the bare interpreted kernel under ``TRITON_INTERPRET=1``
    (wrap_triton only accepts compiled JIT functions). Launchers go through
    :func:`fastlift.kernels.launch.launch`, which calls this."""
    if interpreter_active():
        return kernel
    return torch.library.wrap_triton(kernel)


def use_launcher(t: torch.Tensor) -> bool:
    """Call the Triton launcher directly (CPU tensor under the interpreter, or in a compile-only
    session) instead of the registered operator (which dispatches to the Triton kernel on CUDA and
    to the torch twin on CPU)."""
    if t.device.type != "cpu":
        return False
    from fastlift.kernels.launch import compile_only_active

    return interpreter_active() or compile_only_active()


_PLACEHOLDERS: dict = {}


def placeholder(device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A one-element tensor for pointer arguments a specialisation does not use (or reads without
    using the value, e.g. an unused dropout seed), cached per device and dtype so launchers allocate
    nothing per launch besides their outputs. Never written. Not cached while tracing (fake tensors
    must not leak into eager calls)."""
    key = (torch.device(device), dtype)
    t = _PLACEHOLDERS.get(key)
    if t is not None and not _tracing():
        return t
    t = torch.empty(1, device=device, dtype=dtype)
    if type(t) is torch.Tensor and not _tracing():
        _PLACEHOLDERS[key] = t
    return t


def _tracing() -> bool:
    if torch.compiler.is_compiling():
        return True
    try:
        return torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.FAKE) is not None
    except (AttributeError, RuntimeError):  # private API moved: never cache
        return True


def static_int(v, default: int) -> int:
    """``v`` if it is a plain int, else ``default`` (a symbolic size during torch.export/compile
    tracing must not pick code paths, or the traced graph would be specialised to it)."""
    return v if isinstance(v, int) else default
