"""Choosing numeric precision and the tf.distribute strategy for the hardware at hand."""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import tensorflow as tf

from errors import UserError


def cpu_has_bf16() -> bool:
    """True if the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str) -> str:
    """The Keras dtype policy for --precision: auto picks mixed bfloat16 on bf16 CPUs, mixed float16 on GPUs."""
    if precision == "auto":
        if tf.config.list_physical_devices("GPU"):
            return "mixed_float16"
        return "mixed_bfloat16" if cpu_has_bf16() else "float32"
    return {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}[precision]


def set_precision(precision: str) -> str:
    policy = resolve_precision(precision)
    keras.mixed_precision.set_global_policy(policy)
    return policy


def make_strategy(name: str):
    """The tf.distribute strategy for --strategy (auto: mirrored over several GPUs, else none)."""
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        name = "multiworker" if os.environ.get("TF_CONFIG") else ("mirrored" if len(gpus) > 1 else "none")
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise UserError("--strategy multiworker needs the cluster in the TF_CONFIG environment variable")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"unknown strategy {name!r}; choose from auto, none, mirrored, multiworker")


def worker_info() -> dict:
    """{'num_workers', 'task_type', 'task_index', 'is_chief'} from TF_CONFIG (one local worker without it)."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    cluster, task = config.get("cluster", {}), config.get("task", {})
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    task_type, index = task.get("type", "worker"), int(task.get("index", 0))
    is_chief = task_type == "chief" or (task_type == "worker" and index == 0 and "chief" not in cluster)
    return {"num_workers": max(1, workers), "task_type": task_type, "task_index": index, "is_chief": is_chief}
