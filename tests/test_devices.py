"""Device and precision choice: auto order, absent devices are errors (never a silent fallback)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deblurcli import devices
from deblurcli.devices import (
    free_memory_bytes,
    resolve_device,
    resolve_precision,
    set_threads,
)
from deblurcli.errors import DeviceError, OptionError

CPU = torch.device("cpu")


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)


@pytest.fixture
def one_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(devices, "_mps_available", lambda: True)


def test_auto_is_cpu_without_accelerators(no_gpu: None) -> None:
    assert resolve_device("auto") == CPU
    assert resolve_device("CPU") == CPU


def test_auto_prefers_cuda_then_mps(one_cuda: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("auto") == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("mps")


def test_cuda_index_checked(one_cuda: None) -> None:
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(DeviceError, match="'cuda:3' does not exist"):
        resolve_device("cuda:3")


@pytest.mark.parametrize(("spec", "message"), [("cuda", "CUDA is not available"), ("cuda:1", "CUDA is not available"), ("mps", "MPS is not available"), ("tpu", "unknown device")])
def test_absent_or_unknown_device_is_an_error(no_gpu: None, spec: str, message: str) -> None:
    with pytest.raises(DeviceError, match=message) as info:
        resolve_device(spec)
    assert "\n" not in str(info.value)


def test_precision_auto_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_precision("auto", CPU) == torch.float32
    assert resolve_precision("auto", torch.device("mps")) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", torch.device("cuda", 0)) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", torch.device("cuda", 0)) == torch.float16


def test_auto_cpu_inference_uses_bf16_only_where_native(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert resolve_precision("auto", CPU, inference=True) == torch.float32
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert resolve_precision("auto", CPU, inference=True) == torch.bfloat16
    assert resolve_precision("auto", CPU) == torch.float32  # training keeps fp32
    assert resolve_precision("fp32", CPU, inference=True) == torch.float32
    monkeypatch.setattr(devices, "_autocast_runs", lambda *a: False)  # a build without CPU autocast
    assert resolve_precision("auto", CPU, inference=True) == torch.float32


def test_cpu_flags_read_from_cpuinfo() -> None:
    flags = devices.cpu_flags()
    assert isinstance(flags, frozenset)
    if Path("/proc/cpuinfo").is_file() and platform.machine() in ("x86_64", "AMD64"):
        assert "sse2" in flags  # every x86-64 CPU has it


def test_explicit_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_precision("fp32", CPU) == torch.float32
    assert resolve_precision("bf16", CPU) == torch.bfloat16  # a real autocast probe on this CPU
    with pytest.raises(DeviceError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", CPU)
    monkeypatch.setattr(devices, "_autocast_runs", lambda *a: False)
    with pytest.raises(DeviceError, match="fp16 is not supported on cpu"):
        resolve_precision("fp16", CPU)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    with pytest.raises(DeviceError, match=r"bf16 is not supported on cuda:0 \(Tesla T4\)"):
        resolve_precision("bf16", torch.device("cuda", 0))


def test_set_threads() -> None:
    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(OptionError, match="at least 1"):
        set_threads(0)


def test_free_host_memory_is_plausible() -> None:
    free = free_memory_bytes(CPU)
    assert 16 << 20 < free < 1 << 50


def test_free_host_memory_comes_from_psutil_not_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    """psutil's figure, the same on Linux, macOS and Windows; /proc/meminfo is never read."""
    import builtins

    import psutil

    real_open = builtins.open

    def no_proc(path: object, *args: object, **kwargs: object) -> object:
        assert not str(path).startswith("/proc/meminfo"), "read /proc/meminfo"
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("Memory", (), {"available": 3 << 30})())
    assert free_memory_bytes(CPU) == 3 << 30


def test_native_bf16_is_asked_of_macos_where_there_is_no_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset())
    monkeypatch.setattr(devices, "_macos_sysctl", lambda name: 1 if name == devices.MACOS_BF16_SYSCTL else None)
    assert devices.cpu_has_native_bf16()
    monkeypatch.setattr(devices, "_macos_sysctl", lambda _name: 0)
    assert not devices.cpu_has_native_bf16()


_HEAP_PROBE = """
import ctypes, sys
import torch
from deblurcli.devices import keep_host_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
kept = keep_host_memory() if sys.argv[1] == "keep" else False
before = libc.mallinfo2().arena
x = torch.ones(64 << 20, dtype=torch.uint8)
mapped = libc.mallinfo2().hblkhd >= (64 << 20)
del x
print(kept, mapped, libc.mallinfo2().arena - before >= (60 << 20))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_host_memory_serves_large_tensors_from_a_kept_heap() -> None:
    def probe(mode: str) -> str:
        done = subprocess.run([sys.executable, "-c", _HEAP_PROBE, mode], capture_output=True, text=True, check=True)
        return done.stdout.strip()

    # By default glibc maps a 64 MiB tensor privately and unmaps it on free (a page-fault storm per layer);
    # after keep_host_memory it comes from the heap, which keeps it for the next tile.
    assert probe("default") == "False True False"
    assert probe("keep") == "True False True"
