"""The models built on keras-hub (deeplabv3plus, segformer): keras-hub presets through --encoder-weights,
logits out, and reload in a fresh interpreter. No network: presets are written to tmp folders with
`save_to_preset`, and the download functions are replaced by ones failing as they do offline."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import keras_hub
import numpy as np
import pytest
import requests

from segkit import models
from segkit.errors import UserError
from segkit.models import build_model, deeplabv3plus, segformer
from segkit.models.weights import copy_weights_in_order

ROOT = Path(__file__).resolve().parents[1]
KAGGLE_HANDLE = "kaggle://keras/mit/keras/mit_b0_ade20k_512/4"
MIT_SIZE = 64  # keras-hub's MiTBackbone only runs on the square size it was built for


def randomise(model, seed):
    """Random values in every weight (kernels, BN statistics too), so that "the weights arrived" means
    something for each of them."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        values = rng.normal(0.0, 0.1, v.shape)
        v.assign(np.abs(values) + 0.5 if "variance" in v.path else values)


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    """{"segformer" | "deeplabv3plus": (keras-hub backbone, its preset folder)}: MiT-B0 and ResNet18."""
    root = tmp_path_factory.mktemp("presets")
    mit = keras_hub.models.MiTBackbone(image_shape=(MIT_SIZE, MIT_SIZE, 3), max_drop_path_rate=0.1,
                                       **segformer.ARCHITECTURES["b0"])
    resnet = keras_hub.models.ResNetBackbone(**deeplabv3plus.ARCHITECTURES["resnet18"])
    found = {}
    for (name, backbone), seed in zip((("segformer", mit), ("deeplabv3plus", resnet)), (1, 2)):
        randomise(backbone, seed)
        backbone.save_to_preset(str(root / name))
        found[name] = (backbone, str(root / name))
    return found


def hub_features(name, backbone, images):
    """The keras-hub backbone's maps that our encoder outputs."""
    if name == "segformer":
        levels = keras.Model(backbone.input, backbone.pyramid_outputs)(images)
        return [levels[f"P{i}"] for i in (1, 2, 3, 4)]
    return keras.Model(backbone.input, [backbone.pyramid_outputs["P2"], backbone.output])(images)


@pytest.mark.parametrize("name", ["segformer", "deeplabv3plus"])
def test_preset_folder_weights_arrive(name, presets, capsys):
    backbone, folder = presets[name]
    model = build_model(name, 5, encoder_weights=folder)
    encoder = model.get_layer("encoder")
    layers = [layer for layer in encoder.layers if layer.weights]
    assert capsys.readouterr().out == (
        f"loaded weights for {len(layers)} of {len(layers)} encoder layers from keras-hub preset {folder}\n"
    )
    sources = [layer for layer in backbone.layers if layer.weights]
    assert len(sources) == len(layers)
    for source, target in zip(sources, layers):
        for want, got in zip(source.get_weights(), target.get_weights()):
            np.testing.assert_array_equal(got, want)
    # ... and our encoder computes what keras-hub's backbone computes with them.
    images = np.random.default_rng(0).normal(size=(2, MIT_SIZE, MIT_SIZE, 3)).astype("float32")
    for got, want in zip(encoder(images), hub_features(name, backbone, images)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-4, rtol=1e-4)


def test_preset_image_converter_is_the_models_preprocessing(presets, tmp_path, capsys):
    _, folder = presets["segformer"]
    pixel = np.array([[[[0.2, 0.5, 1.0]]]], "float32")
    model = build_model("segformer", 3)
    preprocess = keras.Model(model.input, model.get_layer("preprocess").output)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(preprocess(pixel)[0, 0, 0], (pixel[0, 0, 0] - mean) / std, rtol=1e-5)

    with_converter = tmp_path / "with_converter"
    shutil.copytree(folder, with_converter)
    keras_hub.layers.ImageConverter(scale=1 / 255, offset=[-1.0, -2.0, -3.0]).save_to_preset(str(with_converter))
    model = build_model("segformer", 3, encoder_weights=str(with_converter))
    preprocess = keras.Model(model.input, model.get_layer("preprocess").output)
    # The converter takes [0, 255] images: x * 255 * scale + offset for ours in [0, 1].
    np.testing.assert_allclose(preprocess(pixel)[0, 0, 0], pixel[0, 0, 0] + [-1.0, -2.0, -3.0], rtol=1e-5)
    capsys.readouterr()


def test_segformer_outputs_keras_hubs_logits(presets):
    """Our SegFormer on keras-hub's MiT equals keras-hub's SegFormerBackbone + SegFormerImageSegmenter
    (whose head has no softmax in keras-hub 0.32) given the same weights, on normalised images."""
    mit, _ = presets["segformer"]
    hub = keras_hub.models.SegFormerImageSegmenter(
        backbone=keras_hub.models.SegFormerBackbone(image_encoder=mit, projection_filters=256), num_classes=4
    )
    hub_head = hub.backbone
    randomise(hub_head.linear_fuse, 3)
    randomise(hub.output_segmentation_head, 4)
    ours = build_model("segformer", 4, input_shape=(MIT_SIZE, MIT_SIZE, 3))
    copy_weights_in_order(mit, ours.get_layer("encoder"))
    for i, dense in enumerate(hub_head.mlp_blocks):
        ours.get_layer(f"head_linear{i}").set_weights(dense.get_weights())
    conv, bn, _ = hub_head.linear_fuse.layers
    ours.get_layer("head_fuse_conv").set_weights(conv.get_weights())
    ours.get_layer("head_fuse_bn").set_weights(bn.get_weights())
    ours.get_layer("head_classifier").set_weights(hub.output_segmentation_head.get_weights())

    images = np.random.default_rng(1).random((2, MIT_SIZE, MIT_SIZE, 3), dtype=np.float32)
    normalised = keras.Model(ours.input, ours.get_layer("preprocess").output)(images)
    logits = np.asarray(ours(images, training=False))
    np.testing.assert_allclose(logits, np.asarray(hub(normalised, training=False)), atol=2e-4, rtol=1e-4)
    assert logits.min() < 0 or logits.max() > 1 or not np.allclose(logits.sum(-1), 1.0)  # not probabilities


def test_keras_files_reload_after_import_models_alone(presets, tmp_path, capsys):
    images = np.random.default_rng(2).random((1, 64, 96, 3), dtype=np.float32)
    np.save(tmp_path / "images.npy", images)
    for name in ("segformer", "deeplabv3plus"):
        model = build_model(name, 3, encoder_weights=presets[name][1])
        model.save(tmp_path / f"{name}.keras")
        np.save(tmp_path / f"{name}.npy", np.asarray(model(images, training=False)))
    capsys.readouterr()
    # A fresh interpreter: keras alone does not know our layers ("segkit>..."); `import models` is all
    # it takes (the files name no keras-hub class: ours subclass keras-hub's, and models imports keras_hub).
    script = """
import keras, numpy as np
for name in ("segformer", "deeplabv3plus"):
    try:
        keras.saving.load_model(name + ".keras")
        raise SystemExit("loaded without import models")
    except TypeError as error:
        assert "segkit>" in str(error), error
from segkit import models
images = np.load("images.npy")
for name in ("segformer", "deeplabv3plus"):
    model = keras.saving.load_model(name + ".keras")
    np.testing.assert_allclose(model(images, training=False), np.load(name + ".npy"), atol=1e-5)
    print("ok", model.name)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["ok", "segformer", "ok", "deeplabv3plus"]


@pytest.mark.parametrize("name", ["segformer", "deeplabv3plus"])
def test_trained_in_bfloat16_reloads_in_float32(name, tmp_path):
    """train.py saves under mixed_bfloat16, evaluate.py / predict.py load under float32: the keras-hub
    sublayers must keep the policy of their layer rather than take the global one of the moment."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model(name, 3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    images = np.random.default_rng(3).random((1, 64, 96, 3), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(loaded(images)), np.asarray(model(images)))
    with_weights = [layer for layer in loaded._flatten_layers()
                    if layer.weights and not isinstance(layer, keras.Model)]
    assert len(with_weights) > 50 and {layer.dtype_policy.name for layer in with_weights} == {"mixed_bfloat16"}


def offline(monkeypatch):
    """Make keras-hub's downloads fail as they do without a network."""
    import huggingface_hub
    import kagglehub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def no_kaggle(*args, **kwargs):
        raise requests.exceptions.ConnectionError(
            "HTTPSConnectionPool(host='api.kaggle.com', port=443): Max retries exceeded "
            "(Caused by NameResolutionError: Failed to resolve 'api.kaggle.com')"
        )

    def no_hf(*args, **kwargs):
        raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub.")

    monkeypatch.setattr(kagglehub, "model_download", no_kaggle)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hf)


@pytest.mark.parametrize(
    "name, weights, handle",
    [
        ("segformer", "mit_b0_ade20k_512", "mit_b0_ade20k_512"),
        ("segformer", KAGGLE_HANDLE, KAGGLE_HANDLE),
        ("segformer", "hf://someone/mit_b0", "hf://someone/mit_b0"),
        ("deeplabv3plus", "imagenet", "resnet_18_imagenet"),  # the variant's keras-hub ImageNet preset
    ],
)
def test_preset_handle_offline_is_one_line(name, weights, handle, monkeypatch):
    offline(monkeypatch)
    with pytest.raises(UserError) as error:
        build_model(name, 3, encoder_weights=weights)
    assert str(error.value) == (
        f"encoder_weights: the keras-hub preset {handle!r} needs a network download, which failed "
        f"(no network?); pass a local preset folder (as backbone.save_to_preset(folder) writes) "
        f"or --encoder-weights none"
    )


def test_wrong_presets_are_one_line_errors(presets, tmp_path):
    mit_folder, resnet_folder = presets["segformer"][1], presets["deeplabv3plus"][1]
    cases = [
        (("vgg16_unet", mit_folder),
         f"encoder_weights: model 'vgg16_unet' takes no keras-hub preset (got {mit_folder!r}), only "
         f"deeplabv3plus and segformer do; vgg16_unet takes 'none', 'imagenet' or a weights file"),
        (("deeplabv3plus", mit_folder),
         f"encoder_weights: preset {mit_folder!r} holds a MiTBackbone; "
         f"deeplabv3plus needs a ResNetBackbone preset"),
        (("deeplabv3plus", resnet_folder, {"variant": "resnet50"}),
         f"encoder_weights: preset {resnet_folder!r} holds a ResNetBackbone that is not the deeplabv3plus "
         f"variant 'resnet50': pass variant='resnet18' (--variant resnet18)"),
        (("segformer", str(tmp_path)),
         f"encoder_weights: folder {str(tmp_path)!r} holds no keras-hub preset (no config.json; "
         f"backbone.save_to_preset(folder) writes one)"),
        (("segformer", "mit_b9_ade20k"),
         "encoder_weights: 'mit_b9_ade20k' is neither 'none', 'imagenet' nor a weights file ending in "
         ".keras / .weights.h5 / .h5 / .hdf5 nor a keras-hub preset (a preset name, kaggle:// or hf:// "
         "handle, or preset folder)"),
        (("segformer", "imagenet"),
         "encoder_weights: keras-hub has no ImageNet weights for the segformer variant 'b0'; pass a "
         f"keras-hub preset, e.g. one of {sorted(keras_hub.models.MiTBackbone.presets)}"),
    ]
    tiny = keras_hub.models.MiTBackbone(image_shape=(32, 32, 3), max_drop_path_rate=0.0, layerwise_depths=[1] * 4,
                                        hidden_dims=[8, 16, 40, 64], **segformer._MIT_COMMON)
    tiny.save_to_preset(str(tmp_path / "tiny"))
    cases.append((("segformer", str(tmp_path / "tiny")),
                  f"encoder_weights: preset {str(tmp_path / 'tiny')!r} holds a MiTBackbone that is not the "
                  f"segformer variant 'b0': its architecture is none of the variants"))
    for (name, weights, *options), message in cases:
        with pytest.raises(UserError) as error:
            build_model(name, 3, encoder_weights=weights, **(options[0] if options else {}))
        assert str(error.value) == message


def test_registry_marks_the_keras_hub_models():
    assert set(models.PRESET_MODELS) <= set(models.MODELS)
    assert models.model_options("segformer") == {"variant": "b0", "encoder_trainable": True, "dropout": False}
    assert models.model_options("deeplabv3plus") == {"variant": "resnet18", "encoder_trainable": True}
