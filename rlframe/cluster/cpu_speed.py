"""Whether this CPU multiplies the model's dtype fast: bf16/fp16 are fast only with matrix instructions for them
(AVX512-BF16, AMX). On an AVX2-only CPU (a Zen 3 AMD EPYC) torch multiplied bf16 at 1.2 GFLOP/s against 52-87 in
float32 (one thread, 256^3), so a bf16 run there is correct but tens of times slower: `rlframe doctor` and `rlframe
train`'s preflight warn."""
from __future__ import annotations

import time


def matmul_gflops(dtype: str, n: int = 256, repeats: int = 3) -> float:
    """One thread's speed on an n x n x n matrix multiply in `dtype` (the best of `repeats`), in GFLOP/s."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = torch.randn(n, n).to(getattr(torch, dtype))
        best = float("inf")
        for _ in range(repeats + 1):   # the first call warms the kernel up
            t = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    return 2 * n ** 3 / max(best, 1e-9) / 1e9


def dtype_speed(dtype: str, cpu_roles: list[str]) -> tuple[str, str]:
    """(status, detail) for `model.dtype` on the roles that run on CPU: SKIP, PASS, or WARN naming the fix."""
    if dtype not in ("bfloat16", "float16") or not cpu_roles:
        return "SKIP", f"model.dtype={dtype}" + ("" if cpu_roles else ", no role on CPU")
    half, full = matmul_gflops(dtype), matmul_gflops("float32", repeats=10)
    speeds = f"{half:.1f} GFLOP/s in {dtype} against {full:.1f} in float32 (one thread, this machine)"
    if half >= full:
        return "PASS", speeds
    units = "AVX512-BF16 or AMX" if dtype == "bfloat16" else "AVX512-FP16 or AMX-FP16"
    return "WARN", (f"model.dtype={dtype}: {speeds}; this CPU has no {dtype} matrix instructions ({units}), so the "
                    f"matrix multiplies of the {' and '.join(cpu_roles)} on CPU run about {full / half:.0f}x slower "
                    f"than with model.dtype=float32")
