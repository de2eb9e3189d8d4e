"""GPU tier (only where a GPU is visible): driver, count, bf16 matmul, NCCL all-reduce, flash-attn.

The numerical and multi-process logic is written against a `device` and a
`backend` so unit tests run it on the CPU (gloo) and the GPU code paths are
exercised without a GPU. torch and flash-attn are imported inside functions:
the suite itself is standard library only.
"""
from __future__ import annotations

import math
import re
import shutil
import socket
import subprocess
import time

from skyrl_stack.smoke.cuda import import_torch, wanted_cuda
from skyrl_stack.smoke.suite import Check, Fail, Skip, last_line

# Which driver a CUDA release needs, from NVIDIA's CUDA Toolkit release notes
# (https://docs.nvidia.com/cuda/archive/12.8.0/cuda-toolkit-release-notes/,
# "CUDA Driver"): Table 3 gives the driver each toolkit release ships with and
# is fully supported on (CUDA 12.8 GA: >= 570.26 on Linux x86_64); Table 2
# gives the minimum driver for CUDA minor-version compatibility (any CUDA 12.x
# application runs on >= 525.60.13 on Linux, without PTX JIT of newer PTX and
# without features that need a newer driver). So torch cu128 runs on
# SkyPilot's default AWS GPU image (driver 535, skypilot#9406), with a warning.
FULL_COMPAT_DRIVER = {"12.8": (570, 26)}
MINOR_COMPAT_DRIVER = {"12": (525, 60, 13)}
# bf16 keeps 8 bits of mantissa: a 1024-long dot product of rounded inputs lands
# within ~0.4% of the fp32 result; a broken kernel or bad memory is far off.
MATMUL_TOLERANCE = 1e-2
ATTENTION_TOLERANCE = 2e-2
NCCL_TIMEOUT_S = 180


def parse_nvidia_smi(output: str) -> list[dict]:
    """Rows of `nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader`."""
    gpus = []
    for line in output.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 4:
            gpus.append({"index": parts[0], "name": parts[1], "driver": parts[2], "memory": parts[3]})
    return gpus


def driver_tuple(version: str) -> tuple[int, ...]:
    """'570.124.06' -> (570, 124, 6)."""
    return tuple(int(n) for n in re.findall(r"\d+", version)[:3])


def dotted(numbers: tuple[int, ...]) -> str:
    return ".".join(f"{n:02d}" if i == 2 else str(n) for i, n in enumerate(numbers))


def driver_requirement(cuda: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(minimum, full-compatibility) driver for a CUDA 'major.minor'; Fail for one not in the tables."""
    major = cuda.split(".", 1)[0]
    if cuda not in FULL_COMPAT_DRIVER or major not in MINOR_COMPAT_DRIVER:
        raise Fail(f"no driver requirement known for CUDA {cuda} ([base] cuda): add it to FULL_COMPAT_DRIVER "
                   "and MINOR_COMPAT_DRIVER in skyrl_stack/smoke/gpu.py from NVIDIA's CUDA release notes")
    return MINOR_COMPAT_DRIVER[major], FULL_COMPAT_DRIVER[cuda]


def driver_verdict(driver: str, cuda: str) -> tuple[bool, str]:
    """(usable, one-line detail): Fail-worthy below the minor-version minimum, a warning below full compatibility."""
    minimum, full = driver_requirement(cuda)
    version = driver_tuple(driver)
    if version < minimum:
        return False, (f"driver {driver} is too old for CUDA {cuda}: needs >= {dotted(minimum)} "
                       f"(minor-version compatibility), >= {dotted(full)} for full support")
    if version < full:
        return True, (f"WARNING: driver {driver} < {dotted(full)} (CUDA {cuda}'s own driver): runs by CUDA "
                      f"minor-version compatibility (>= {dotted(minimum)}); no JIT of newer PTX, some features need an upgrade")
    return True, f"driver {driver} >= {dotted(full)} (full CUDA {cuda} support)"


def check_nvidia_smi(ctx) -> str:
    if ctx.expected_gpus and not ctx.visible_gpus():
        raise Fail(f"--gpus {ctx.gpus} asked for, but no GPU is visible")
    ctx.require_gpu()
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise Fail("nvidia-smi not found although GPU devices are visible (NVIDIA container toolkit not active?)")
    out = subprocess.run(
        [smi, "--query-gpu=index,name,driver_version,memory.total", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if out.returncode != 0:
        raise Fail(f"nvidia-smi failed: {last_line(out.stderr or out.stdout)}")
    gpus = parse_nvidia_smi(out.stdout)
    if not gpus:
        raise Fail("nvidia-smi lists no GPU")
    ctx.cache["nvidia_smi"] = gpus
    names = sorted({g["name"] for g in gpus})
    return f"{len(gpus)} GPU(s): {', '.join(names)}, driver {gpus[0]['driver']}"


def check_driver(ctx) -> str:
    driver = ctx.cache["nvidia_smi"][0]["driver"]
    usable, detail = driver_verdict(driver, wanted_cuda(ctx))
    if not usable:
        raise Fail(detail)
    return detail


def check_count(ctx) -> str:
    visible = ctx.visible_gpus()
    expected = ctx.expected_gpus
    try:
        torch = import_torch(ctx)
    except Skip:
        torch = None
    if torch is not None:
        usable = torch.cuda.device_count()
        if usable != visible:
            raise Fail(f"torch sees {usable} GPU(s), nvidia-smi/devices show {visible}")
    if expected is not None and visible != expected:
        raise Fail(f"{visible} GPU(s) visible, expected {expected} (--gpus {ctx.gpus})")
    return f"{visible} GPU(s)" + (" (torch agrees)" if torch is not None else " (torch not installed)")


def relative_error(out, ref) -> float:
    """||out - ref|| / ||ref|| in float32; NaN or inf anywhere makes it inf."""
    import torch

    out, ref = out.float(), ref.float()
    if not torch.isfinite(out).all():
        return math.inf
    return ((out - ref).norm() / ref.norm().clamp_min(1e-12)).item()


def bf16_matmul_error(device: str, n: int = 1024, seed: int = 0) -> float:
    """bf16 matmul on `device` against an fp32 CPU matmul of the same bf16-rounded inputs."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=gen).to(torch.bfloat16)
    b = torch.randn(n, n, generator=gen).to(torch.bfloat16)
    reference = a.float() @ b.float()
    result = (a.to(device) @ b.to(device)).cpu()
    return relative_error(result, reference)


def cuda_devices(ctx) -> tuple[object, int]:
    """torch and how many CUDA devices it can use; Fail when it sees none although GPUs are visible."""
    torch = import_torch(ctx)
    count = torch.cuda.device_count()
    if count == 0:
        raise Fail(f"torch {torch.__version__} sees no CUDA device (CUDA build: {torch.version.cuda})")
    return torch, count


def check_bf16_matmul(ctx) -> str:
    torch, count = cuda_devices(ctx)
    errors = []
    for index in range(count):
        error = bf16_matmul_error(f"cuda:{index}")
        if not error <= MATMUL_TOLERANCE:
            raise Fail(f"cuda:{index} bf16 matmul is off by {error:.3g} relative to the CPU (tolerance {MATMUL_TOLERANCE})")
        errors.append(error)
    return f"{len(errors)} GPU(s), worst relative error {max(errors):.2e}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _all_reduce_worker(rank: int, world_size: int, backend: str, init_method: str, use_cuda: bool, numel: int,
                       op: str = "SUM") -> None:
    """One rank: all-reduce (rank + 1) everywhere; every element must equal the sum over ranks."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    device = "cpu"
    if use_cuda:
        torch.cuda.set_device(rank)
        device = f"cuda:{rank}"
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=NCCL_TIMEOUT_S))
    try:
        tensor = torch.full((numel,), float(rank + 1), device=device)
        dist.all_reduce(tensor, op=getattr(dist.ReduceOp, op))
        expected = world_size * (world_size + 1) / 2
        wrong = (tensor != expected).sum().item()
        if wrong:
            raise RuntimeError(f"rank {rank}: {wrong} of {numel} elements wrong after all-reduce "
                               f"(first {tensor[0].item()}, expected {expected})")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def all_reduce_across_processes(world_size: int, backend: str, use_cuda: bool,
                                numel: int = 1 << 22, timeout_s: float = NCCL_TIMEOUT_S, op: str = "SUM") -> float:
    """Run the all-reduce in `world_size` spawned processes; return seconds, raise Fail on error or hang.

    `op` is the reduction the collective runs; the check always expects the sum, so a
    test passes another op to show a wrong result is caught (no real backend errs on demand)."""
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    init_method = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    context = mp.start_processes(
        _all_reduce_worker, args=(world_size, backend, init_method, use_cuda, numel, op),
        nprocs=world_size, join=False, start_method="spawn",
    )
    deadline = started + timeout_s
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                raise Fail(f"{backend} all-reduce across {world_size} processes hung for more than {timeout_s:.0f}s")
    except ProcessException as exc:
        raise Fail(f"{backend} all-reduce across {world_size} processes failed: {last_line(exc)}") from None
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
                process.join(5)
    return time.monotonic() - started


def check_nccl_all_reduce(ctx) -> str:
    _, world_size = cuda_devices(ctx)
    seconds = all_reduce_across_processes(world_size, "nccl", use_cuda=True)
    return f"nccl all-reduce of 16 MiB across {world_size} process(es)/GPU(s) in {seconds:.1f}s"


def reference_attention(q, k, v, causal: bool = True):
    """Plain softmax(QK^T / sqrt(d)) V in float32; tensors are (batch, seq, heads, head_dim) as in flash-attn."""
    import torch

    q, k, v = q.float(), k.float(), v.float()
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    if causal:
        seq_q, seq_k = q.shape[1], k.shape[1]
        # flash-attn aligns the causal mask to the bottom-right corner.
        mask = torch.ones(seq_q, seq_k, dtype=torch.bool, device=q.device).tril(diagonal=seq_k - seq_q)
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(dim=-1), v)


def attention_inputs(device: str, dtype, batch: int = 2, seq: int = 256, heads: int = 8, head_dim: int = 64, seed: int = 0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    shape = (batch, seq, heads, head_dim)
    return tuple(torch.randn(shape, generator=gen).to(device=device, dtype=dtype) for _ in range(3))


def attention_error(attention_fn, device: str, dtype) -> float:
    """Relative error of attention_fn(q, k, v, causal=True) against the reference on the same inputs."""
    q, k, v = attention_inputs(device, dtype)
    out = attention_fn(q, k, v, causal=True)
    return relative_error(out.cpu(), reference_attention(q.cpu(), k.cpu(), v.cpu(), causal=True))


def check_flash_attn(ctx) -> str:
    flash_attn = ctx.import_promised("flash-attn", "flash_attn")
    version, flash_attn_func = flash_attn.__version__, flash_attn.flash_attn_func
    torch, _ = cuda_devices(ctx)
    error = attention_error(lambda q, k, v, causal: flash_attn_func(q, k, v, causal=causal), "cuda:0", torch.bfloat16)
    if not error <= ATTENTION_TOLERANCE:
        raise Fail(f"flash-attn {version} differs from reference attention by {error:.3g} (tolerance {ATTENTION_TOLERANCE})")
    return f"flash-attn {version}: relative error {error:.2e} vs reference attention"


_NEEDS_SMI = ("gpu.nvidia-smi",)
CHECKS = [
    Check("gpu.nvidia-smi", check_nvidia_smi),
    Check("gpu.driver", check_driver, requires=_NEEDS_SMI),
    Check("gpu.count", check_count, requires=_NEEDS_SMI),
    Check("gpu.bf16-matmul", check_bf16_matmul, requires=_NEEDS_SMI),
    Check("gpu.nccl-all-reduce", check_nccl_all_reduce, requires=_NEEDS_SMI),
    Check("gpu.flash-attn", check_flash_attn, requires=_NEEDS_SMI),
]
