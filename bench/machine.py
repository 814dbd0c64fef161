"""What machine a figure was measured on: the CPU's model name and its relevant flags, the load average, and
its matmul peak measured here (not assumed), for every benchmark to print beside its figures.

    python -m bench.machine            # prints the lines below, with a bf16 and a float32 peak

The build machine is not always the same CPU (an Intel Xeon with AMX, an AMD EPYC with AVX2 only, an AMD EPYC
with AVX512-BF16 have all been seen): compare figures only within one run of one machine.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")


def cpu() -> dict:
    """{"model": name, "flags": [the FLAGS it has], "cores": usable cores} from /proc/cpuinfo."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return {"model": model, "flags": [f for f in FLAGS if f in flags], "cores": cores}


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def matmul_peak(dtype: str = "bfloat16", size: int = 2048, runs: int = 10) -> float:
    """GFLOP/s of a size x size matmul in `dtype` on this machine (median of `runs`, after two warm-ups)."""
    import tensorflow as tf

    a = tf.cast(tf.random.normal((size, size)), dtype)
    b = tf.cast(tf.random.normal((size, size)), dtype)
    step = tf.function(lambda: tf.matmul(a, b))
    step(), step()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step().numpy()
        times.append(time.perf_counter() - start)
    return 2 * size ** 3 / sorted(times)[len(times) // 2] / 1e9


def describe() -> str:
    """One line: the CPU, its flags, usable cores and the load average now."""
    info = cpu()
    return (f"CPU {info['model']} ({', '.join(info['flags']) or 'no AVX2'}), {info['cores']} cores, "
            f"load average {load()}")


def main() -> int:
    print(describe())
    for dtype in ("bfloat16", "float32"):
        print(f"{dtype} 2048x2048 matmul: {matmul_peak(dtype):.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
