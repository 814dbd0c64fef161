"""Choosing numeric precision and the tf.distribute strategy for the hardware at hand.

Precision (`--precision`): "auto" resolves to a Keras dtype policy from what the machine has:

    GPU with compute capability >= 7.0 (float16 tensor cores)   mixed_float16
    CPU with AVX512-BF16 or AMX-BF16 (no usable GPU)            mixed_bfloat16, except a model whose record
                                                                 (segkit.catalog) says float32_on_cpu
    anything else                                                float32

and float32 everywhere for a model with its own loop (unet_tf, a tf.Module: Keras' dtype policy does not reach
it). Keras' own policy names (mixed_bfloat16, mixed_float16) are accepted as well as ours.

Under a mixed policy the layers compute in 16 bits and keep float32 weights; every model's last
layer has dtype float32, so the logits, the losses and the metrics stay float32.

Strategy (`--strategy`): "auto" is multiworker when TF_CONFIG is set, mirrored with several local
GPUs, else none. `--batch-size` is per replica; the global batch is batch_size * replicas.
The strategy must be made before TensorFlow runs any op (MultiWorkerMirroredStrategy configures
the collective ops at start-up), so train.py makes it first.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import keras
import tensorflow as tf

from segkit import catalog
from segkit.errors import UserError

PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16",
              "mixed_bfloat16": "mixed_bfloat16", "mixed_float16": "mixed_float16"}
STRATEGIES = catalog.STRATEGIES
MIN_FLOAT16_CAPABILITY = (7, 0)  # Volta: the first GPUs with float16 tensor cores


def cpu_has_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True if the CPU flags in `cpuinfo` include native bfloat16 arithmetic (avx512_bf16 or amx_bf16)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def gpus_with_float16() -> list:
    """The local GPUs fast at float16 (compute capability >= 7.0; unknown capability counts as fast)."""
    fast = []
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability is None or tuple(capability) >= MIN_FLOAT16_CAPABILITY:
            fast.append(gpu)
    return fast


def resolve_precision(precision: str, model: str | None = None) -> str:
    """The Keras dtype policy for --precision and --model (see the module docstring for what auto picks)."""
    if precision == "auto":
        spec = catalog.MODELS.get(model)
        if spec and spec.loop == "tf":
            return "float32"
        if gpus_with_float16():
            return "mixed_float16"
        if tf.config.list_physical_devices("GPU"):
            return "float32"  # an older GPU: float16 without tensor cores is no faster
        return "mixed_bfloat16" if cpu_has_bf16() and not (spec and spec.float32_on_cpu) else "float32"
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of auto, {', '.join(PRECISIONS)}; got {precision!r}")
    return PRECISIONS[precision]


def set_precision(precision: str, model: str | None = None) -> str:
    """Set Keras' global dtype policy for --precision and --model; returns the policy name."""
    policy = resolve_precision(precision, model)
    keras.mixed_precision.set_global_policy(policy)
    return policy


HALF = ("bfloat16", "float16", "mixed_bfloat16", "mixed_float16")


def with_policies(model, rename):
    """`model` with each layer's dtype policy renamed by `rename(policy_name, layer_name)`: the model itself
    when no name changes, else a copy with the same weights; and the set of policy names replaced.

    Used to export a mixed-precision model in float32 and to run a float32 teacher in a run's mixed policy.
    A plain half-precision `"dtype"` string (keras-hub's backbones store their policy so) counts as a policy;
    other plain dtypes (an input's "float32") are data types and are left alone."""
    replaced = set()

    def renamed(name, layer):
        new = rename(name, layer)
        if new != name:
            replaced.add(name)
        return new

    def walk(obj, layer=None):
        if isinstance(obj, list):
            return [walk(value, layer) for value in obj]
        if not isinstance(obj, dict):
            return obj
        inner = obj.get("config")
        if obj.get("class_name") == "DTypePolicy" and isinstance(inner, dict):
            return {**obj, "config": {**inner, "name": renamed(inner.get("name"), layer)}}
        if isinstance(obj.get("dtype"), str) and obj["dtype"] in HALF:
            obj = {**obj, "dtype": renamed(obj["dtype"], layer)}
        own = inner.get("name") if "class_name" in obj and isinstance(inner, dict) else layer
        return {key: walk(value, own if key == "config" else layer) for key, value in obj.items()}

    rewritten = walk(keras.saving.serialize_keras_object(model))
    if not replaced:
        return model, replaced
    copy = keras.saving.deserialize_keras_object(rewritten)
    copy.set_weights(model.get_weights())
    return copy, replaced


def strategy_name(name: str) -> str:
    """What --strategy `name` means here: auto becomes multiworker (TF_CONFIG set), mirrored (2+ GPUs) or none."""
    if name not in STRATEGIES:
        raise UserError(f"--strategy must be one of {', '.join(STRATEGIES)}; got {name!r}")
    if name == "auto":
        if os.environ.get("TF_CONFIG"):
            return "multiworker"
        return "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "none"
    return name


def make_strategy(name: str):
    """The tf.distribute strategy for --strategy. Call it before any other TensorFlow op."""
    name = strategy_name(name)
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()  # every local GPU (the CPU when there is none)
    worker_info()  # a readable error for a malformed TF_CONFIG before TensorFlow parses it
    if not os.environ.get("TF_CONFIG"):
        raise UserError("--strategy multiworker needs the cluster in the TF_CONFIG environment variable, e.g. "
                        'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                        '"task": {"type": "worker", "index": 0}}\'')
    return MultiWorkerMirroredStrategy()


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """tf.distribute.MultiWorkerMirroredStrategy with the two fixes Keras 3's model.fit needs (3.15 at least).

    Without them fit fails on several workers (keras-team/keras#20585, tensorflow/tensorflow#72388):
    - Before the first step of fit and of each validation, Keras passes one whole (images, masks) batch to
      `reduce`, only to learn its shapes and dtypes. The stock strategy takes one value, not a tuple
      ("Attempt to convert a value (PerReplica ...)"), and averaging images over the workers would fail
      anyway where their batches differ in shape (validation shares of different sizes, images padded to
      their own size). A nested structure therefore gets this worker's own values back.
    - Keras averages each step's scalar loss and metrics with axis=0, which fails on a scalar ("Invalid
      reduction dimension 0 for input with 0 dimensions"); for a scalar, axis=None (the mean over the
      replicas) is what is meant.
    """

    def reduce(self, reduce_op, value, axis):
        if tf.nest.is_nested(value):
            return tf.nest.map_structure(lambda v: self.experimental_local_results(v)[0], value)
        first = self.experimental_local_results(value)[0]
        scalar = getattr(getattr(first, "shape", None), "rank", 0) == 0
        return super().reduce(reduce_op, value, None if scalar else axis)


def wait_for_workers(strategy) -> None:
    """Return once every worker got here (a no-op on one worker).

    The chief hosts the cluster's coordination service: if it exits while another worker is still finishing
    model.fit, that worker stalls until its heartbeat to the service times out and logs an error.
    """
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        strategy.reduce("SUM", tf.constant(1.0), axis=None)


def worker_info() -> dict:
    """This process's place in the TF_CONFIG cluster (one local worker without TF_CONFIG):

        num_workers  chief + workers in the cluster
        task_type, task_index  as in TF_CONFIG
        rank         0 for the chief, then the workers in order (0..num_workers-1; which data shard to read)
        is_chief     the task of type "chief", or worker 0 when the cluster has no chief; only it writes files
    """
    text = os.environ.get("TF_CONFIG", "") or "{}"
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"TF_CONFIG is not valid JSON ({exc}): {text!r}") from None
    cluster, task = config.get("cluster", {}), config.get("task", {})
    chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
    task_type, index = task.get("type", "worker"), int(task.get("index", 0))
    if config and task_type not in ("chief", "worker"):
        raise UserError(f"TF_CONFIG task type must be 'chief' or 'worker' for training, got {task_type!r}")
    members = {"chief": chiefs, "worker": workers}[task_type]
    if config and not 0 <= index < len(members):
        raise UserError(f"TF_CONFIG task index {index} is out of range: the cluster lists {len(members)} "
                        f"{task_type}(s)")
    rank = index if task_type == "chief" else len(chiefs) + index
    is_chief = task_type == "chief" or (task_type == "worker" and index == 0 and not chiefs)
    return {"num_workers": max(1, len(chiefs) + len(workers)), "task_type": task_type, "task_index": index,
            "rank": rank, "is_chief": is_chief}


def library_versions() -> dict:
    """Versions that decide a run's numbers, stored in its config.json."""
    import numpy

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": numpy.__version__}
