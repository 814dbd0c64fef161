"""bench/: the FLOP counter behind the share-of-peak figures, checked on layers counted by hand,
bench.train_speed reporting it, and the output-stride ceiling on a mask scored by hand."""

import json
import re

import keras
import numpy as np

from bench.flops import forward_flops, model_flops
from bench.stride_ceiling import stride_ceiling, stride_prediction
from tests.conftest import run_script


def test_forward_flops_by_hand():
    inputs = keras.Input((32, 64, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)  # 2 * 16*32 * 8 * 9 * 3 = 221,184
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)  # 2 * 16*32 * 8 * 9 = 73,728
    x = keras.layers.Conv2DTranspose(4, 2, strides=2)(x)  # 2 * 16*32 * 8 * 4 * 4 = 131,072
    x = keras.layers.Dense(5)(x)  # 2 * 32*64 * 4 * 5 = 81,920
    x = keras.layers.BatchNormalization()(x)  # not counted
    assert forward_flops(keras.Model(inputs, x)) == 221_184 + 73_728 + 131_072 + 81_920


def test_registry_models_match_published_counts():
    # The figures the issue quotes for 224x224: 3.9 and 12.1 GFLOP.
    assert round(model_flops("mobilenetv2_pix2pix", (224, 224)) / 1e9, 1) == 3.9
    assert round(model_flops("resnet34_unet", (224, 224)) / 1e9, 1) == 12.1


def test_train_speed_reports_share_of_peak():
    result = run_script("-m", "bench.train_speed", "--model", "ddrnet", "--image-size", "64", "64", "--batch-size", "2",
                        "--steps", "2", "--warmup", "1", "--count", "4", "--json")
    assert result.returncode == 0, result.stderr[-1500:]
    assert re.search(r"% of \d+ GFLOP/s \(the (bf16|float32) matmul peak measured here\)", result.stdout)
    assert re.search(r"^CPU .+, \d+ cores, load average", result.stdout, re.M)  # the machine beside the figures


def test_train_speed_times_distillation(tmp_path):
    # A teacher of 3 classes: the student is built for its classes, its forward pass is in the timed step,
    # and no share of peak is claimed (the teacher's work is not counted in it).
    from segkit import models

    teacher = models.build_model("ddrnet", 3, input_shape=(None, None, 3), variant="tiny")
    teacher.save(tmp_path / "teacher.keras")
    result = run_script("-m", "bench.train_speed", "--model", "ddrnet", "--variant", "tiny", "--image-size", "64", "64",
                        "--batch-size", "2", "--steps", "2", "--warmup", "1", "--count", "4", "--json",
                        "--distill-from", str(tmp_path / "teacher.keras"))
    assert result.returncode == 0, result.stderr[-1500:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["num_classes"] == 3 and figures["distill_from"] == str(tmp_path / "teacher.keras")
    assert figures["train_images_per_sec"] > 0 and "share_of_peak" not in figures
    assert figures["parameters"] == teacher.count_params()  # the student's alone (the same network as the teacher)
    assert "distilling from" in result.stdout


def test_stride_ceiling_by_hand():
    # 32x32: class 0, a 4-pixel band of class 1 in columns 8-11 (one stride-4 cell wide, half a stride-8
    # cell), and an ignored 8x8 corner. At stride 4 the band's cells are pure and the bilinear resize puts
    # its edges back in place; at stride 8 the band is never more than half of a cell, so it is lost.
    mask = np.zeros((32, 32), np.int32)
    mask[:, 8:12] = 1
    mask[:8, :8] = 255
    results = stride_ceiling([mask], 2, (8, 4, 1))
    assert results[1]["per_class_iou"] == [1.0, 1.0]
    assert results[4]["per_class_iou"] == [1.0, 1.0]
    assert results[8]["per_class_iou"] == [832 / (832 + 128), 0.0]  # 1024 - 128 band - 64 ignored
    assert (stride_prediction(mask, 2, 4)[8:] == mask[8:]).all()


def test_stride_ceiling_command(tmp_path):
    out = tmp_path / "ceiling.json"
    result = run_script("-m", "bench.stride_ceiling", "--dataset", "sample", "--strides", "8", "2", "--json", str(out))
    assert result.returncode == 0, result.stderr[-1500:]
    figures = json.loads(out.read_text())["strides"]
    assert 0 < figures["8"]["miou"] < figures["2"]["miou"] <= 1
    result = run_script("-m", "bench.stride_ceiling", "--dataset", "sample", "--strides", "3")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == "error: --strides must divide 32, got 3"
