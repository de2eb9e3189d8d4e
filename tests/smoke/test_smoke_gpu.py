"""The GPU checks' logic, run on the CPU: the GPU code paths are tested before anyone has a GPU.

The same functions the GPU tier calls run here with CPU tensors and the gloo
backend instead of CUDA and NCCL (the only thing swapped is the device and the
collective backend). Needs torch (a dev dependency).
"""
from __future__ import annotations

import math

import pytest
import torch

from skyrl_stack.image.pins import load_pins
from skyrl_stack.smoke import cuda, gpu
from skyrl_stack.smoke.suite import Context, Fail, Skip


def _sdpa(q, k, v, causal):
    """torch's own attention kernel, in flash-attn's (batch, seq, heads, dim) layout."""
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal)
    return out.transpose(1, 2)


def test_bf16_matmul_on_cpu_is_within_tolerance():
    error = gpu.bf16_matmul_error("cpu", n=256)
    assert 0 < error <= gpu.MATMUL_TOLERANCE


def test_relative_error_flags_wrong_and_non_finite_results():
    ref = torch.randn(64, 64)
    assert gpu.relative_error(ref.clone(), ref) == 0
    assert gpu.relative_error(ref * 1.1, ref) == pytest.approx(0.1, rel=1e-3)
    broken = ref.clone()
    broken[3, 3] = float("nan")
    assert math.isinf(gpu.relative_error(broken, ref))


def test_reference_attention_matches_torch_kernel():
    assert gpu.attention_error(_sdpa, "cpu", torch.float32) < 1e-5


def test_attention_comparison_catches_a_wrong_mask():
    """A kernel that ignores the causal mask must fail the tolerance the GPU check uses."""
    wrong = lambda q, k, v, causal: _sdpa(q, k, v, causal=False)  # noqa: E731
    assert gpu.attention_error(wrong, "cpu", torch.float32) > gpu.ATTENTION_TOLERANCE


def test_bf16_attention_within_tolerance():
    """bf16 inputs, as flash-attn gets them, stay inside the tolerance against the fp32 reference."""
    assert gpu.attention_error(_sdpa, "cpu", torch.bfloat16) <= gpu.ATTENTION_TOLERANCE


def test_all_reduce_across_spawned_processes_with_gloo():
    seconds = gpu.all_reduce_across_processes(3, "gloo", use_cuda=False, numel=4096)  # raises unless every sum is 6
    assert seconds > 0


def test_all_reduce_with_a_wrong_sum_is_caught():
    """A collective that returns something other than the sum (here the max: 2 instead of 1 + 2)
    must fail the check, with the first wrong value and the expected one."""
    with pytest.raises(Fail, match=r"elements wrong after all-reduce \(first 2\.0, expected 3\.0\)"):
        gpu.all_reduce_across_processes(2, "gloo", use_cuda=False, numel=16, op="MAX")


def test_all_reduce_failure_in_a_rank_is_reported():
    """An invalid backend makes every rank raise; the cause comes back as one line."""
    with pytest.raises(Fail, match="all-reduce across 2 processes failed"):
        gpu.all_reduce_across_processes(2, "no-such-backend", use_cuda=False, numel=16)


def test_all_reduce_hang_is_timed_out_and_processes_killed():
    with pytest.raises(Fail, match="hung for more than"):
        gpu.all_reduce_across_processes(2, "gloo", use_cuda=False, numel=16, timeout_s=0)


def test_nvidia_smi_and_driver_parsing():
    rows = gpu.parse_nvidia_smi("0, NVIDIA H200, 570.124.06, 143771 MiB\n1, NVIDIA H200, 570.124.06, 143771 MiB\n")
    assert [r["name"] for r in rows] == ["NVIDIA H200", "NVIDIA H200"] and rows[0]["driver"] == "570.124.06"


# CUDA minor-version compatibility, from NVIDIA's CUDA 12.8 release notes (Tables 2 and 3, cited in gpu.py):
# a CUDA 12.x build runs on >= 525.60.13; 12.8's own driver is >= 570.26.
@pytest.mark.parametrize("driver, usable, start", [
    ("570.124.06", True, "driver 570.124.06 >= 570.26 (full CUDA 12.8 support)"),
    ("580.65.06", True, "driver 580.65.06 >= 570.26"),
    ("570.26", True, "driver 570.26 >= 570.26"),
    ("535.183.01", True, "WARNING: driver 535.183.01 < 570.26"),  # SkyPilot's default AWS GPU image (skypilot#9406)
    ("525.60.13", True, "WARNING: driver 525.60.13 < 570.26"),
    ("525.60.12", False, "driver 525.60.12 is too old for CUDA 12.8: needs >= 525.60.13"),
    ("470.82.01", False, "driver 470.82.01 is too old"),
])
def test_driver_follows_cuda_minor_version_compatibility(driver, usable, start):
    verdict = gpu.driver_verdict(driver, "12.8")
    assert verdict[0] is usable and verdict[1].startswith(start), verdict


def test_driver_check_uses_the_pinned_cuda(monkeypatch):
    """The requirement comes from [base] cuda; a CUDA with no known requirement fails naming the pin."""
    ctx = Context(host=True, gpus="all", pins=load_pins())
    ctx.cache["nvidia_smi"] = [{"driver": "535.183.01"}]
    assert gpu.check_driver(ctx).startswith("WARNING: driver 535.183.01 < 570.26 (CUDA 12.8's own driver)")
    ctx.cache["nvidia_smi"] = [{"driver": "520.61.05"}]
    with pytest.raises(Fail, match="too old for CUDA 12.8"):
        gpu.check_driver(ctx)
    with pytest.raises(Fail, match=r"no driver requirement known for CUDA 13.0 \(\[base\] cuda\)"):
        gpu.driver_verdict("580.65.06", "13.0")


MAPS = """\
7f0000000000-7f0000001000 r-xp 00000000 00:1f 1 /opt/skyrl/venv/lib/python3.12/site-packages/nvidia/cublas/lib/libcublas.so.12
7f0000002000-7f0000003000 r--p 00000000 00:1f 2 /opt/skyrl/venv/lib/python3.12/site-packages/nvidia/cuda_runtime/lib/libcudart.so.12
7f0000004000-7f0000005000 r-xp 00000000 00:1f 3 /usr/local/cuda/lib64/libcublasLt.so.12.8.4.1
7f0000006000-7f0000007000 r-xp 00000000 00:1f 4 /usr/lib/x86_64-linux-gnu/libcuda.so.570.124.06
7f0000008000-7f0000009000 r-xp 00000000 00:1f 5 /usr/lib/x86_64-linux-gnu/libc.so.6
"""


def test_loaded_cuda_libraries_are_reported_and_a_toolkit_copy_is_caught():
    loaded = cuda.loaded_cuda_libraries(MAPS)
    assert list(loaded) == ["libcublas.so.12", "libcublasLt.so.12.8.4.1", "libcudart.so.12"]  # not the driver, not libc
    assert cuda.foreign_libraries(loaded, "/opt/skyrl/venv/lib/python3.12/site-packages") == {
        "libcublasLt.so.12.8.4.1": "/usr/local/cuda/lib64/libcublasLt.so.12.8.4.1"}


def test_torch_libraries_check_skips_a_cpu_build():
    assert torch.version.cuda is None, "this test needs the CPU build of torch (the dev environment's)"
    with pytest.raises(Skip, match="CPU-only build"):
        cuda.check_torch_libraries(Context(host=True, gpus="all"))


def test_gpu_checks_skip_without_a_gpu(monkeypatch):
    monkeypatch.setattr("skyrl_stack.smoke.suite.count_visible_gpus", lambda: 0)
    with pytest.raises(Skip, match="no GPU visible"):
        gpu.check_nvidia_smi(Context(host=True, gpus="all"))
    with pytest.raises(Skip, match="--gpus none"):
        gpu.check_nvidia_smi(Context(host=True, gpus="none"))
    # Asking for GPUs that are not there is a failure, not a skip.
    with pytest.raises(Fail, match="--gpus 2 asked for"):
        gpu.check_nvidia_smi(Context(host=True, gpus="2"))


def test_flash_attn_absent_on_a_bare_host_is_skipped():
    """A GPU host with only torch (variant unknown): flash-attn missing is a skip, not a failure."""
    import importlib.util

    assert importlib.util.find_spec("flash_attn") is None, "this test needs a machine without flash-attn"
    with pytest.raises(Skip, match="flash-attn not installed"):
        gpu.check_flash_attn(Context(host=True, gpus="all"))


def test_gpu_checks_fail_when_torch_sees_no_device():
    """nvidia-smi shows GPUs but torch cannot use them (e.g. a CPU build of torch, like this one)."""
    assert not torch.cuda.is_available()
    with pytest.raises(Fail, match="sees no CUDA device"):
        gpu.check_bf16_matmul(Context(host=True, gpus="all"))
    with pytest.raises(Fail, match="sees no CUDA device"):
        gpu.check_nccl_all_reduce(Context(host=True, gpus="all"))
