"""bench/: the FLOP counter behind the share-of-peak figures, checked on layers counted by hand, and
bench.train_speed reporting it."""

import keras

from bench.flops import forward_flops, model_flops
from tests.test_scripts import run_script


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
    assert "% of 813 GFLOP/s" in result.stdout
