"""The CPU kernels' C library (csrc/cpu/*.c): built on first use with the system C compiler,
cached, and loaded through ctypes.

vLLM compiles its CPU kernels (paged attention, RMSNorm, SiLU-and-mul, rotary) into its
extension at install time; this project compiles the same few kernels at first use, in about
five seconds, so that `pip install` needs no compiler and a machine without one still runs (on
the pure-torch paths, with one warning). The library is built once per source, compiler and
CPU (-march=native) into ~/.cache/vllm_hydra/kernels (or $VLLM_HYDRA_KERNEL_DIR). It shares the
process's OpenMP runtime with torch (both load libgomp.so.1), so its threads are torch's.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).parent / "csrc" / "cpu"
# Reassociating float sums lets the compiler vectorise the reductions (2x on the decode
# attention, measured); infinities and NaNs keep their IEEE meaning (no -ffinite-math-only).
# Every bf16 rounding the kernels reproduce sits between integer ops, which no flag here moves.
CFLAGS = [
    "-O3",
    "-march=native",
    "-fopenmp",
    "-fPIC",
    "-shared",
    "-std=gnu11",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fassociative-math",
    "-fno-signed-zeros",
]


def kernel_dir() -> Path:
    chosen = os.environ.get("VLLM_HYDRA_KERNEL_DIR")
    if chosen:
        return Path(chosen)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "vllm_hydra" / "kernels"


def _sources(source_dir: Path) -> list[Path]:
    return sorted(source_dir.glob("*.c"))


def _cpu_flags() -> str:
    """The CPU's feature flags: -march=native code is only valid on a CPU that has them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _build(compiler: str, source_dir: Path | None = None, march: str = "native") -> Path:
    """The shared library for these sources (SOURCE_DIR's unless given), compiler and CPU (or
    the -march given); compiled if not cached."""
    source_dir = source_dir or SOURCE_DIR
    flags = [f"-march={march}" if f == "-march=native" else f for f in CFLAGS]
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=True
    ).stdout
    texts = [p.read_text() for p in sorted(source_dir.iterdir()) if p.suffix in (".c", ".h")]
    key = hashlib.sha256(
        "\0".join([*texts, compiler, version, *flags, _cpu_flags()]).encode()
    ).hexdigest()[:16]
    target = kernel_dir() / f"vllm_hydra_cpu-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Compile to a private name, then rename: processes building at once never load a half file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        sources = [str(p) for p in _sources(source_dir)]
        cmd = [compiler, *flags, *sources, "-o", tmp, "-lm"]
        subprocess.run(cmd, capture_output=True, text=True, check=True)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def build_library(source_dir: Path | None = None, march: str = "native") -> ctypes.CDLL:
    """The library compiled from another checkout's csrc/cpu (a benchmark's baseline), or for
    another CPU (`march="haswell"`: the AVX2 code paths, which run here too), cached as the
    project's own is. Raises where it cannot be built."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or "cc"
    return ctypes.CDLL(str(_build(compiler, source_dir, march)))


@functools.cache
def load_library() -> ctypes.CDLL | None:
    """The kernel library, or None (warned once) where it cannot be built here."""
    if os.environ.get("VLLM_HYDRA_CPU_KERNELS", "1") == "0":
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if platform.system() != "Linux" or compiler is None:
        logger.warning("No C compiler found: the CPU kernels run their slower torch paths")
        return None
    try:
        return ctypes.CDLL(str(_build(compiler)))
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        logger.warning("CPU kernels not built (%s); using the torch paths", detail)
        return None
