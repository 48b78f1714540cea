"""Physical limits of known accelerators, for "% of peak" and the README's context lines.

Dense (no structured sparsity) throughput in TFLOP/s and memory bandwidth in GB/s, keyed by a
pattern matched against ``torch.cuda.get_device_name()``. NVIDIA's datasheets quote tensor-core
numbers "with sparsity"; those are halved here (the lifter's GEMMs are dense). Values are the
boost-clock datasheet figures; sustained clocks under load are lower, so 100 % is not reachable.

Sources (NVIDIA product datasheets / whitepapers):

* H100 SXM5 / PCIe / NVL: "NVIDIA H100 Tensor Core GPU" datasheet (2023) and the Hopper
  architecture whitepaper (table "H100 SXM5 / PCIe").
* H200 SXM / NVL: "NVIDIA H200 Tensor Core GPU" datasheet (2024): same compute as H100 SXM5
  (SXM) / H100 NVL (NVL), 141 GB HBM3e at 4.8 TB/s.
* A100 40/80 GB SXM4 / PCIe: "NVIDIA A100 Tensor Core GPU" datasheet (2021).
* L4, L40S, A10: the respective NVIDIA datasheets.
* V100, T4: "NVIDIA Tesla V100 GPU accelerator" and "NVIDIA T4" datasheets (no TF32/BF16).
* Quadro GP100 (the paper's card): Quadro GP100 datasheet (FP32 10.3, FP16 20.7 TFLOP/s, 717 GB/s).

A device that is not listed (or a MIG slice, whose share of the card is not known here) gets
``None``: callers report "unknown" rather than guessing.
"""
from __future__ import annotations

import re

__all__ = ["PEAKS", "lookup_peaks", "peak_tflops", "PRECISION_PEAK_KEY"]

# Which peak a measurement is compared with, by the precision it computes in.
PRECISION_PEAK_KEY = {"fp32": "fp32", "tf32": "tf32", "bf16": "bf16", "fp16": "fp16"}

#: (regex on the lower-cased device name, entry). Order matters: the first match wins, so the
#: specific variants (NVL, PCIe) come before the generic SXM names.
PEAKS: list[tuple[str, dict]] = [
    (r"\bh100\b.*\bnvl\b", dict(card="NVIDIA H100 NVL", fp32=60.0, tf32=417.5, bf16=835.5, fp16=835.5,
                                mem_gbs=3900.0, memory_gb=94)),
    (r"\bh100\b.*\bpcie\b", dict(card="NVIDIA H100 PCIe", fp32=51.0, tf32=378.0, bf16=756.0, fp16=756.0,
                                 mem_gbs=2000.0, memory_gb=80)),
    (r"\bh100\b.*(\bhbm3\b|\bsxm)", dict(card="NVIDIA H100 SXM5", fp32=67.0, tf32=494.5, bf16=989.5, fp16=989.5,
                                        mem_gbs=3350.0, memory_gb=80)),
    (r"\bh200\b.*\bnvl\b", dict(card="NVIDIA H200 NVL", fp32=60.0, tf32=417.5, bf16=835.5, fp16=835.5,
                                mem_gbs=4800.0, memory_gb=141)),
    (r"\bh200\b", dict(card="NVIDIA H200 SXM", fp32=67.0, tf32=494.5, bf16=989.5, fp16=989.5,
                       mem_gbs=4800.0, memory_gb=141)),
    (r"\ba100\b.*sxm4.*80", dict(card="NVIDIA A100 SXM4 80GB", fp32=19.5, tf32=156.0, bf16=312.0, fp16=312.0,
                                 mem_gbs=2039.0, memory_gb=80)),
    (r"\ba100\b.*80.*pcie", dict(card="NVIDIA A100 PCIe 80GB", fp32=19.5, tf32=156.0, bf16=312.0, fp16=312.0,
                                 mem_gbs=1935.0, memory_gb=80)),
    (r"\ba100\b.*(sxm4|pcie).*40", dict(card="NVIDIA A100 40GB", fp32=19.5, tf32=156.0, bf16=312.0, fp16=312.0,
                                        mem_gbs=1555.0, memory_gb=40)),
    (r"\bl40s\b", dict(card="NVIDIA L40S", fp32=91.6, tf32=183.0, bf16=362.05, fp16=362.05,
                       mem_gbs=864.0, memory_gb=48)),
    (r"\bl4\b", dict(card="NVIDIA L4", fp32=30.3, tf32=60.0, bf16=121.0, fp16=121.0, mem_gbs=300.0, memory_gb=24)),
    (r"\ba10\b", dict(card="NVIDIA A10", fp32=31.2, tf32=62.5, bf16=125.0, fp16=125.0, mem_gbs=600.0, memory_gb=24)),
    (r"\bv100\b.*sxm2", dict(card="NVIDIA V100 SXM2", fp32=15.7, tf32=None, bf16=None, fp16=125.0,
                             mem_gbs=900.0, memory_gb=None)),
    (r"\bv100\b.*pcie", dict(card="NVIDIA V100 PCIe", fp32=14.0, tf32=None, bf16=None, fp16=112.0,
                             mem_gbs=900.0, memory_gb=None)),
    (r"\bt4\b", dict(card="NVIDIA T4", fp32=8.1, tf32=None, bf16=None, fp16=65.0, mem_gbs=320.0, memory_gb=16)),
    (r"\bgp100\b", dict(card="NVIDIA Quadro GP100", fp32=10.3, tf32=None, bf16=None, fp16=20.7,
                        mem_gbs=717.0, memory_gb=16)),
]


def lookup_peaks(device_name: str | None) -> dict | None:
    """Peak table entry for a CUDA device name (``torch.cuda.get_device_name``), or None.

    None for unknown devices, MIG slices and CPUs (pass None or a CPU's name).
    """
    if not device_name:
        return None
    name = device_name.lower()
    if re.search(r"\bmig\b", name):
        return None
    for pattern, entry in PEAKS:
        if re.search(pattern, name):
            return dict(entry, matched=device_name)
    return None


def peak_tflops(peaks: dict | None, precision: str) -> float | None:
    """The dense peak (TFLOP/s) that a computation in ``precision`` (fp32/tf32/bf16/fp16) is held
    against, or None when unknown / not supported by the card."""
    if not peaks:
        return None
    key = PRECISION_PEAK_KEY.get(precision)
    return peaks.get(key) if key else None
