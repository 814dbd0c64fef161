"""segkit.runtime: which precision and strategy each kind of machine gets, and how TF_CONFIG is read.

The hardware is faked by monkeypatching: a cpuinfo file written here, and TensorFlow's GPU list.
"""

import json

import keras
import pytest
import tensorflow as tf

from segkit import runtime
from segkit.errors import UserError

AMD_ZEN4_FLAGS = "fpu sse2 avx2 avx512f avx512bw avx512vl avx512_bf16 avx512_vnni"
SKYLAKE_FLAGS = "fpu sse2 avx2 avx512f avx512bw avx512vl avx512_vnni"
SAPPHIRE_RAPIDS_FLAGS = "fpu avx512f avx512_fp16 amx_bf16 amx_tile amx_int8"


def cpuinfo(tmp_path, flags, key="flags"):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: some cpu\n{key}\t\t: {flags}\n\n"
                    f"processor\t: 1\n{key}\t\t: {flags}\n")
    return path


@pytest.mark.parametrize("flags, key, expected", [
    (AMD_ZEN4_FLAGS, "flags", True),
    (SAPPHIRE_RAPIDS_FLAGS, "flags", True),
    (SKYLAKE_FLAGS, "flags", False),
    ("fp asimd bf16 i8mm", "Features", False),  # Arm's bf16 is not an x86 flag oneDNN uses here
    ("avx512_bf16x avx2", "flags", False),  # whole flags only, not substrings
])
def test_cpu_has_bf16_reads_the_flags(tmp_path, flags, key, expected):
    assert runtime.cpu_has_bf16(cpuinfo(tmp_path, flags, key)) is expected


def test_cpu_has_bf16_without_cpuinfo(tmp_path):
    assert runtime.cpu_has_bf16(tmp_path / "missing") is False


class FakeGPU:
    def __init__(self, capability):
        self.capability = capability


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """machine(gpus=[compute capability, ...], cpu_flags=...) fakes the hardware runtime sees."""
    real_list, real_cpu_has_bf16 = tf.config.list_physical_devices, runtime.cpu_has_bf16

    def set_machine(gpus=(), cpu_flags=SKYLAKE_FLAGS):
        fake = [FakeGPU(c) for c in gpus]
        monkeypatch.setattr(tf.config, "list_physical_devices",
                            lambda kind=None: list(fake) if kind == "GPU" else real_list(kind))
        monkeypatch.setattr(tf.config.experimental, "get_device_details",
                            lambda gpu: {} if gpu.capability is None else {"compute_capability": gpu.capability})
        path = cpuinfo(tmp_path, cpu_flags)
        monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: real_cpu_has_bf16(path))

    return set_machine


@pytest.mark.parametrize("gpus, cpu_flags, policy", [
    ((), AMD_ZEN4_FLAGS, "mixed_bfloat16"),  # this machine: AVX512-BF16
    ((), SAPPHIRE_RAPIDS_FLAGS, "mixed_bfloat16"),  # AMX
    ((), SKYLAKE_FLAGS, "float32"),  # AVX-512 without bf16: bfloat16 is emulated, slower than float32
    (((8, 0),), SKYLAKE_FLAGS, "mixed_float16"),  # A100
    (((7, 0), (7, 0)), AMD_ZEN4_FLAGS, "mixed_float16"),  # a GPU wins over a bf16 CPU
    (((6, 1),), AMD_ZEN4_FLAGS, "float32"),  # Pascal: no float16 tensor cores; training runs on the GPU
    ((None,), SKYLAKE_FLAGS, "mixed_float16"),  # capability unknown: assume a current GPU
])
def test_auto_precision(machine, gpus, cpu_flags, policy):
    machine(gpus=gpus, cpu_flags=cpu_flags)
    assert runtime.resolve_precision("auto") == policy


def test_auto_precision_per_model(machine):
    machine(cpu_flags=AMD_ZEN4_FLAGS)
    assert runtime.resolve_precision("auto", "resnet34_unet") == "mixed_bfloat16"
    assert runtime.resolve_precision("auto", "mobilenetv3_lraspp") == "float32"  # slower in bf16 on a CPU
    assert runtime.resolve_precision("bfloat16", "mobilenetv3_lraspp") == "mixed_bfloat16"  # unless asked for
    assert runtime.resolve_precision("auto", "unet_tf") == "float32"  # a tf.Module: no Keras policy
    machine(gpus=[(8, 0)])
    assert runtime.resolve_precision("auto", "mobilenetv3_lraspp") == "mixed_float16"
    assert runtime.resolve_precision("auto", "unet_tf") == "float32"


@pytest.mark.parametrize("precision, policy", [
    ("float32", "float32"), ("bfloat16", "mixed_bfloat16"), ("float16", "mixed_float16"),
    ("mixed_bfloat16", "mixed_bfloat16"), ("mixed_float16", "mixed_float16")])  # Keras' own names too
def test_explicit_precision_ignores_the_hardware(machine, precision, policy):
    machine(gpus=[(8, 0)], cpu_flags=AMD_ZEN4_FLAGS)
    assert runtime.resolve_precision(precision) == policy


def test_unknown_precision_names_the_choices():
    with pytest.raises(UserError, match=r"--precision must be one of auto, float32, bfloat16, float16, mixed_bfloat16, mixed_float16; got 'fp8'"):
        runtime.resolve_precision("fp8")


def test_set_precision_sets_the_global_policy(machine):
    machine(cpu_flags=AMD_ZEN4_FLAGS)
    try:
        assert runtime.set_precision("auto") == "mixed_bfloat16"
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        assert keras.layers.Dense(2).compute_dtype == "bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("tf_config, gpus, name", [
    (None, (), "none"),
    (None, ((8, 0),), "none"),  # one GPU needs no strategy
    (None, ((8, 0), (8, 0)), "mirrored"),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, (), "multiworker"),
])
def test_auto_strategy(machine, monkeypatch, tf_config, gpus, name):
    machine(gpus=gpus)
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert runtime.strategy_name("auto") == name
    assert runtime.strategy_name("mirrored") == "mirrored"  # an explicit choice stays


def test_make_strategy_none_and_errors(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert runtime.make_strategy("none").num_replicas_in_sync == 1
    with pytest.raises(UserError, match="needs the cluster in the TF_CONFIG"):
        runtime.make_strategy("multiworker")
    with pytest.raises(UserError, match=r"--strategy must be one of auto, none, mirrored, multiworker; got 'ring'"):
        runtime.make_strategy("ring")


def set_tf_config(monkeypatch, cluster, task_type, index):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}}))


def test_worker_info_without_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert runtime.worker_info() == {"num_workers": 1, "task_type": "worker", "task_index": 0, "rank": 0,
                                     "is_chief": True}


@pytest.mark.parametrize("task_type, index, rank, is_chief", [("worker", 0, 0, True), ("worker", 1, 1, False),
                                                               ("worker", 2, 2, False)])
def test_worker_info_workers_only(monkeypatch, task_type, index, rank, is_chief):
    """Without a "chief" task, worker 0 is the chief."""
    set_tf_config(monkeypatch, {"worker": ["h0:2222", "h1:2222", "h2:2222"]}, task_type, index)
    assert runtime.worker_info() == {"num_workers": 3, "task_type": task_type, "task_index": index, "rank": rank,
                                     "is_chief": is_chief}


@pytest.mark.parametrize("task_type, index, rank, is_chief", [("chief", 0, 0, True), ("worker", 0, 1, False),
                                                               ("worker", 1, 2, False)])
def test_worker_info_with_a_chief(monkeypatch, task_type, index, rank, is_chief):
    """With a "chief" task, it is the chief and rank 0; workers follow."""
    set_tf_config(monkeypatch, {"chief": ["c:2222"], "worker": ["h0:2222", "h1:2222"]}, task_type, index)
    info = runtime.worker_info()
    assert (info["num_workers"], info["rank"], info["is_chief"]) == (3, rank, is_chief)


@pytest.mark.parametrize("tf_config, message", [
    ("{not json", "TF_CONFIG is not valid JSON"),
    (json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}),
     "TF_CONFIG task index 1 is out of range: the cluster lists 1 worker"),
    (json.dumps({"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, "task": {"type": "ps", "index": 0}}),
     "task type must be 'chief' or 'worker' for training, got 'ps'"),
])
def test_worker_info_bad_tf_config(monkeypatch, tf_config, message):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(UserError, match=message):
        runtime.worker_info()
