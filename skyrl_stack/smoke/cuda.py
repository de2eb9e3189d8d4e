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


# The CUDA libraries torch's wheel pins (nvidia-*-cu12 packages under site-packages/nvidia/).
_CUDA_LIBRARY = re.compile(
    r"(/\S*/(lib(?:cudart|cublas|cublasLt|cudnn\w*|nccl|cusparse|cusparseLt|cufft|curand|cusolver|nvrtc|"
    r"nvJitLink|cupti|nvToolsExt)\.so[.\d]*))$"
)


def loaded_cuda_libraries(maps: str) -> dict[str, str]:
    """Library file name -> path of each CUDA library mapped into this process (/proc/self/maps text)."""
    found = {}
    for line in maps.splitlines():
        match = _CUDA_LIBRARY.search(line.strip())
        if match:
            found[match.group(2)] = match.group(1)
    return dict(sorted(found.items()))


def foreign_libraries(loaded: dict[str, str], site_packages: str) -> dict[str, str]:
    """Those not from a pip wheel in this environment (e.g. /usr/local/cuda/lib64 through LD_LIBRARY_PATH)."""
    return {name: path for name, path in loaded.items() if not path.startswith(site_packages.rstrip("/") + "/")}


def check_torch_libraries(ctx) -> str:
    """Which CUDA libraries torch loaded: they must be the ones its wheel pins, not a CUDA toolkit's.

    A CUDA build of torch maps cudart, cuBLAS, cuDNN, NCCL... when imported (no
    GPU needed); the dynamic loader takes LD_LIBRARY_PATH before torch's RPATH,
    so a toolkit directory there would silently swap in other builds.
    """
    torch = import_torch(ctx)
    if torch.version.cuda is None:
        raise Skip(f"torch {torch.__version__} is a CPU-only build")
    site_packages = os.path.dirname(os.path.dirname(torch.__file__))
    with open("/proc/self/maps") as maps:
        loaded = loaded_cuda_libraries(maps.read())
    if not loaded:
        raise Fail(f"torch {torch.__version__} (CUDA {torch.version.cuda}) loaded no CUDA library")
    foreign = foreign_libraries(loaded, site_packages)
    if foreign:
        shown = ", ".join(f"{name} from {os.path.dirname(path)}" for name, path in foreign.items())
        raise Fail(f"torch loaded CUDA libraries not from its wheels: {shown} "
                   f"(LD_LIBRARY_PATH={os.environ.get('LD_LIBRARY_PATH', '')})")
    return f"{len(loaded)} CUDA libraries from {site_packages}/nvidia etc.: {', '.join(loaded)}"


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
    Check("cuda.torch-libraries", check_torch_libraries),
    Check("cuda.nvcc", check_nvcc),
    Check("cuda.libnuma", check_libnuma),
]
