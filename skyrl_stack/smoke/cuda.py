"""CUDA userspace tier: torch's CUDA build, the CUDA toolkit (nvcc), libnuma. No GPU needed."""
from __future__ import annotations

import ctypes.util
import os
import re
import shutil
import subprocess

from skyrl_stack.smoke.suite import Check, Fail, Skip

NVCC_FALLBACK = "/usr/local/cuda/bin/nvcc"


def wanted_cuda(ctx) -> str:
    if ctx.variant is not None and "torch_cuda" in ctx.variant.expect:
        return ctx.variant.expect["torch_cuda"]
    if ctx.pins is not None:
        return ctx.pins.cuda
    raise Skip("no pins to compare with")


def import_torch(ctx):
    """torch, or Skip/Fail depending on whether the variant promises it."""
    return ctx.import_promised("torch")


def check_torch_cuda(ctx) -> str:
    torch = import_torch(ctx)
    wanted = wanted_cuda(ctx)
    actual = torch.version.cuda
    if actual is None:
        raise Fail(f"torch {torch.__version__} is a CPU-only build, pins say CUDA {wanted}")
    if actual != wanted:
        raise Fail(f"torch {torch.__version__} is built for CUDA {actual}, pins say {wanted}")
    return f"torch {torch.__version__}, CUDA {actual}"


def nvcc_release(output: str) -> str | None:
    """'Cuda compilation tools, release 12.8, V12.8.93' -> '12.8'."""
    match = re.search(r"release (\d+\.\d+)", output)
    return match.group(1) if match else None


def check_nvcc(ctx) -> str:
    nvcc = shutil.which("nvcc") or (NVCC_FALLBACK if os.access(NVCC_FALLBACK, os.X_OK) else None)
    if ctx.variant is not None and not ctx.variant.gpu:
        raise Skip("not in this variant")
    if nvcc is None:
        if ctx.variant is None:
            raise Skip("nvcc not found (variant unknown)")
        raise Fail("nvcc not found: the CUDA toolkit is missing (deepspeed and flashinfer's JIT need it)")
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60, check=False)
    release = nvcc_release(out.stdout)
    wanted = wanted_cuda(ctx)
    if release != wanted:
        raise Fail(f"{nvcc} is CUDA {release or 'unknown'}, pins say {wanted}")
    return f"{nvcc}: CUDA {release}"


def find_libnuma() -> str | None:
    found = ctypes.util.find_library("numa")
    if found:
        return found
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=60, check=False).stdout
    except OSError:
        return None
    match = re.search(r"(libnuma\.so[.\d]*)", out)
    return match.group(1) if match else None


def check_libnuma(ctx) -> str:
    found = find_libnuma()
    if found:
        return found
    if ctx.variant is None:
        raise Skip("libnuma not found on this host (variant unknown)")
    raise Fail("libnuma not found (apt install libnuma-dev; SkyRL#196)")


CHECKS = [
    Check("cuda.torch-cuda", check_torch_cuda),
    Check("cuda.nvcc", check_nvcc),
    Check("cuda.libnuma", check_libnuma),
]
