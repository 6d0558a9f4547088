"""The machine's measured peaks for the roofline: dense GEMM FLOP/s in the model's dtype and
memory read bandwidth, measured once per machine, dtype and thread count, then cached.

GEMM: the best of several square matmuls large enough to reach the library's peak (MKL or
oneDNN on CPU, cuBLAS on CUDA), and on CPU in bf16/fp16 also of the same product on a weight
packed for oneDNN once, the engine's own GEMM (model_executor/layers/utils.py), which runs ~10%
faster than the plain matmul that repacks its operand on every call. Read bandwidth: the best
of several sums over a buffer far larger than the last-level cache. Both use torch's threads
as the engine does.

Peaks measured while other processes kept the CPUs busy understate the machine (a roofline
fraction above 1 is the symptom), so such an entry is marked `under_load` and measured again by
the first later run that finds the CPUs idle.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from vllm_hydra.model_executor.layers.utils import PACK_BATCH_HINT, can_pack_for_onednn

logger = logging.getLogger(__name__)

GEMM_SIZE = 2048
GEMM_REPEATS = 5
READ_BYTES = 1 << 30
READ_REPEATS = 5
# Part of the cache key: a change to how the peaks are measured measures them again.
METHOD_VERSION = 2  # 2: the packed oneDNN GEMM counts
# Other processes' share of the CPUs above which a measurement counts as taken under load.
BUSY_FRACTION = 0.2
IDLE_PROBE_S = 0.25


@dataclass(frozen=True)
class MachinePeaks:
    gemm_tflops: float
    read_gbs: float
    under_load: bool = False  # other processes were busy while these were measured (CPU)


def cache_file() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "vllm_hydra" / "machine_peaks.json"


def machine_key(device: torch.device, dtype: torch.dtype) -> str:
    """What the peaks depend on: the processor, torch's build, its threads, the dtype."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_description()
    text = f"{name}|{torch.__version__}|{torch.get_num_threads()}|{dtype}|{METHOD_VERSION}"
    return f"{device.type}-{dtype}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _cpu_description() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    wanted = ("model name", "flags")
    return "|".join(sorted({line for line in lines if line.startswith(wanted)}))


def machine_peaks(device: torch.device, dtype: torch.dtype) -> MachinePeaks:
    """The cached peaks of this machine and dtype, measured now if there are none (or if the
    cached ones were measured under load and the CPUs are idle now)."""
    path, key = cache_file(), machine_key(device, dtype)
    cached = json.loads(path.read_text()) if path.is_file() else {}
    if key in cached:
        peaks = MachinePeaks(**cached[key])
        if not (peaks.under_load and device.type == "cpu" and cpus_idle_now()):
            return peaks
        logger.info("The cached peaks were measured under load and the CPUs are idle: again")
    peaks = _measure(device, dtype)
    cached[key] = asdict(peaks)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cached, indent=1))
    os.replace(tmp, path)  # another job reading at the same time never sees half a file
    return peaks


def _measure(device: torch.device, dtype: torch.dtype) -> MachinePeaks:
    logger.info("Measuring this machine's GEMM peak (%s) and read bandwidth", dtype)
    busy_before, self_before, start = _cpu_busy_s(), _self_cpu_s(), time.perf_counter()
    gemm, read = measure_gemm_tflops(device, dtype), measure_read_gbs(device)
    wall = time.perf_counter() - start
    others = (_cpu_busy_s() - busy_before) - (_self_cpu_s() - self_before)
    under_load = device.type == "cpu" and others > BUSY_FRACTION * wall * (os.cpu_count() or 1)
    if under_load:
        logger.warning(
            "Other processes used %.1f of %.1f CPU-seconds while the peaks were measured: "
            "they understate this machine (marked under_load; an idle run measures again)",
            others,
            wall * (os.cpu_count() or 1),
        )
    return MachinePeaks(gemm, read, under_load)


def _cpu_busy_s() -> float:
    """Seconds all CPUs spent busy since boot (/proc/stat), 0.0 where there is no /proc."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(f) for f in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpus_idle_now() -> bool:
    """Whether the CPUs stay nearly idle for a moment while this process waits."""
    before = _cpu_busy_s()
    time.sleep(IDLE_PROBE_S)
    busy = _cpu_busy_s() - before
    return busy <= BUSY_FRACTION * IDLE_PROBE_S * (os.cpu_count() or 1)


def _best_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()  # warm-up: first-touch pages, library dispatch, GPU clocks
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


@torch.inference_mode()
def measure_gemm_tflops(device: torch.device, dtype: torch.dtype, size: int = GEMM_SIZE) -> float:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    seconds = _best_seconds(lambda: a @ b, device, GEMM_REPEATS)
    if can_pack_for_onednn(b):
        packed = torch.ops.mkldnn._reorder_linear_weight(b, PACK_BATCH_HINT)
        linear = torch.ops.mkldnn._linear_pointwise
        packed_s = _best_seconds(lambda: linear(a, packed, None, "none", [None], ""), device, 3)
        seconds = min(seconds, packed_s)
    return 2 * size**3 / seconds / 1e12


@torch.inference_mode()
def measure_read_gbs(device: torch.device, num_bytes: int = READ_BYTES) -> float:
    x = torch.ones(num_bytes // 4, dtype=torch.float32, device=device)
    seconds = _best_seconds(lambda: x.sum(), device, READ_REPEATS)
    return num_bytes / seconds / 1e9
