"""Device and precision choice: what the user asked for, or an error, never a silent fallback.

A user who types ``--device cuda`` and gets a CPU run that takes fifty times longer has been misled, so an
absent device is a :class:`~deblurcli.errors.DeviceError` that says what *is* available. ``auto`` is the
only spec that picks, in the order CUDA, MPS, CPU. Precision follows the same rule: ``auto`` is bf16/fp16
on GPUs; on a CPU it is fp32, except for inference on a CPU with native bf16 arithmetic (AVX512-BF16 or AMX
on x86, the BF16 extension on Arm), where bf16 autocast ran nafnet-s 1.9x faster than fp32 at 58.9 dB PSNR
from it (docs/performance.md; the engine still checks each run against fp32 and falls back). Without
native bf16, reduced precision on a CPU is emulated and slower. An explicit reduced precision is accepted
only if a tiny autocast convolution actually runs on that device.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import re
import sys

import torch

from deblurcli.errors import DeviceError, OptionError, PrecisionError

#: accepted ``--precision`` spellings -> dtype (``auto`` is resolved per device).
PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
}

#: Feature flags of CPUs that compute bf16 natively (x86 AVX512-BF16 and AMX, Arm's BF16 extension), as Linux
#: spells them in /proc/cpuinfo; macOS answers the sysctl in :data:`MACOS_BF16_SYSCTL` instead.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
MACOS_BF16_SYSCTL = b"hw.optional.arm.FEAT_BF16"

#: glibc ``mallopt`` parameters (malloc.h): the free space kept at the top of the heap before it is given back
#: to the OS, and the most chunks served by a private ``mmap``.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is the device running out of memory: CUDA, MPS and CPU allocators each say it differently."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text
    return False


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """The device specs that would work here, for error messages and ``-v`` output."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        found.append("mps")
    return found


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into a :class:`torch.device` that exists on this machine."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    have = ", ".join(available_devices())
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if match:
        if not torch.cuda.is_available():
            raise DeviceError(f"device '{spec}' requested but CUDA is not available here (available: {have})")
        index = int(match.group(1)) if match.group(1) is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device '{spec}' does not exist: this machine has {have}")
        return torch.device("cuda", index)
    if spec == "mps":
        if not _mps_available():
            raise DeviceError(f"device 'mps' requested but Apple MPS is not available here (available: {have})")
        return torch.device("mps")
    raise DeviceError(f"unknown device '{spec}': use auto, cpu, cuda, cuda:N or mps")


@functools.cache
def _autocast_runs(device_type: str, index: int | None, dtype: torch.dtype) -> bool:
    """Whether a convolution under autocast to ``dtype`` runs on the device and gives finite output."""
    device = torch.device(device_type, index) if index is not None else torch.device(device_type)
    try:
        conv = torch.nn.Conv2d(3, 4, 3, padding=1).to(device)
        with torch.no_grad(), torch.autocast(device_type=device_type, dtype=dtype):
            out = conv(torch.rand(1, 3, 8, 8, device=device))
        return bool(out.dtype == dtype and torch.isfinite(out).all())
    except (RuntimeError, TypeError, ValueError, AssertionError):
        return False


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (``flags``/``Features`` in /proc/cpuinfo); empty elsewhere.

    psutil, which gives the memory figures below on every platform, has no CPU features; the kernel's list
    is the one source on Linux, and macOS is asked through :func:`_macos_sysctl` instead.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def _macos_sysctl(name: bytes) -> int | None:
    """An integer sysctl of macOS (``hw.optional.*`` feature bits), or None where there is none."""
    if sys.platform != "darwin":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.dylib")
        value, size = ctypes.c_int64(0), ctypes.c_size_t(8)
        if libc.sysctlbyname(name, ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return value.value


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (otherwise bf16 autocast is emulated, and slower).

    Windows offers no query for it, so there the answer is False and ``auto`` stays fp32: the safe side.
    """
    return bool(cpu_flags() & NATIVE_BF16_FLAGS) or bool(_macos_sysctl(MACOS_BF16_SYSCTL))


def resolve_precision(spec: str, device: torch.device, *, inference: bool = False) -> torch.dtype:
    """Turn ``auto|fp32|bf16|fp16`` into the compute dtype for ``device``, or raise DeviceError.

    ``inference=True`` lets ``auto`` pick bf16 on a CPU with native bf16 (it pays for inference, checked
    per run by the engine); training keeps fp32 on CPUs, where bf16 gradients have not been validated.
    """
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        if inference and cpu_has_native_bf16() and _autocast_runs(device.type, None, torch.bfloat16):
            return torch.bfloat16
        return torch.float32
    if spec not in PRECISIONS:
        raise PrecisionError(f"unknown precision '{spec}': use auto, fp32, bf16 or fp16")
    dtype = PRECISIONS[spec]
    if dtype == torch.float32:
        return dtype
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise PrecisionError(f"{spec} is not supported on {device} ({torch.cuda.get_device_name(device)}): use fp16 or fp32")
    if not _autocast_runs(device.type, device.index, dtype):
        raise PrecisionError(f"{spec} is not supported on {device} with this PyTorch build: use fp32")
    return dtype


def set_threads(n: int) -> None:
    """Use ``n`` CPU threads for intra-op parallelism (``--threads``); ``n`` must be at least 1."""
    if n < 1:
        raise OptionError(f"must be at least 1, got {n}", "--threads")
    torch.set_num_threads(n)


def keep_host_memory() -> bool:
    """Let this process reuse the host memory it frees instead of returning it to the OS (glibc only).

    Why: glibc serves every allocation above its mmap threshold (32 MiB at most) with a fresh ``mmap`` and
    unmaps it on ``free``, so every large layer output of a tile is page-faulted in anew and zeroed by the
    kernel. On a 12 MP photo (nafnet-s, 2 threads, bf16) that kernel time was 5.7 s of 29 CPU-s with 512 px
    tiles and 16 of 39 with 1024 px ones; with ``mmap`` and heap trimming off, the same run spent 1.1 s in
    the kernel and ``deblur photo.jpg`` went from 15.6 s to 12.0 s (docs/performance.md). The cost is that
    the process keeps its peak heap until it exits, which is what a command that runs one model until it is
    done wants anyway -- so the CLI and the Ray actors call this, and the library never does on its own
    (it changes the whole process). Returns whether the settings took (False off glibc, e.g. macOS, musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def host_available_bytes() -> int:
    """Memory the OS can give this process now, reclaimable cache included, on Linux, macOS and Windows
    alike (psutil's ``available``: MemAvailable on Linux, free + inactive pages on macOS, the available
    physical memory on Windows)."""
    import psutil

    return int(psutil.virtual_memory().available)


def free_memory_bytes(device: torch.device) -> int:
    """Bytes free for new tensors on ``device`` (what the tile-size choice budgets against)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        # Memory held by PyTorch's caching allocator but unused is free for us too.
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "mps":
        # Unified memory: the Metal limit minus what the driver already holds, bounded by host free memory.
        limit = torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
        return int(max(0, min(limit, host_available_bytes())))
    return host_available_bytes()
