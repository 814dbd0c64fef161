"""export.py: SavedModel and TFLite (float32, fp16, int8) exports of a small trained run, checked against
the Keras model; every registry model converts; a failed check or bad input leaves nothing behind."""

import json
import statistics
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import cli
import evaluate
import export
import inference
import models
import predict
import tflite_infer
import train
from errors import UserError
from tests.test_scripts import TINY, write_camvid_layout

SIZE = (64, 96)  # the generated images' size: the TFLite files see them unresized


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data_dir = write_camvid_layout(tmp_path_factory.mktemp("data") / "camvid")
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    assert train.main(["--dataset", "camvid", "--data-dir", str(data_dir), *TINY, "--epochs", "1",
                       "--steps-per-epoch", "40", "--num-samples", "0", "--run-dir", str(run_dir)]) == 0
    return run_dir


@pytest.fixture(scope="module")
def exports(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    paths = {"savedmodel": out / "savedmodel"}
    assert export.main(["--model", str(run), "--format", "savedmodel", "--out", str(paths["savedmodel"])]) == 0
    for quantize in ("none", "fp16", "int8"):
        paths[quantize] = out / f"model_{quantize}.tflite"
        assert export.main(["--model", str(run), "--format", "tflite", "--quantize", quantize, "--image-size",
                            *map(str, SIZE), "--calibration-images", "12", "--out", str(paths[quantize])]) == 0
    return paths


@pytest.fixture(scope="module")
def keras_logits(run):
    """The trained Keras model's logits for one uint8 image, padded to a multiple of 32 and cropped back."""
    predictor = inference.load_predictor(run / "model.keras")
    return lambda image_uint8: predictor.logits(image_uint8.astype(np.float32) / 255)


def test_savedmodel_signature(exports, keras_logits):
    serve = tf.saved_model.load(str(exports["savedmodel"])).signatures["serving_default"]
    assert serve.structured_input_signature[1]["images"].dtype == tf.uint8
    images = np.random.default_rng(1).integers(0, 256, (2, 50, 70, 3), dtype=np.uint8)  # 50, 70: not multiples of 32
    out = serve(images=tf.constant(images))
    assert out["mask"].dtype == tf.int32 and out["mask"].shape == (2, 50, 70)
    assert out["probabilities"].dtype == tf.float32 and out["probabilities"].shape == (2, 50, 70, 11)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0, atol=1e-5)
    for k in range(2):
        reference = keras_logits(images[k])
        np.testing.assert_allclose(out["logits"][k].numpy(), reference, atol=1e-4)
        assert np.mean(out["mask"][k].numpy() == reference.argmax(-1)) >= 0.999


def test_sidecars_carry_the_classes(run, exports):
    classes = json.loads((run / "config.json").read_text())["dataset_info"]["class_names"]
    assert (exports["savedmodel"] / export.SIDECAR).is_file()
    for key, path in exports.items():
        predictor = inference.load_predictor(path)
        assert predictor.class_names == classes, key
        assert predictor.info["config"]["dataset"] == "camvid"
        assert predictor.fixed_size == (None if key == "savedmodel" else SIZE)
    details = tflite_infer.make_interpreter(exports["int8"]).get_input_details()[0]
    assert details["dtype"] == np.uint8
    scale, zero = details["quantization"]
    assert scale == pytest.approx(1 / 255) and zero == 0  # the uint8 input is the raw pixel value


def test_tflite_at_the_padded_size_pads_like_keras(exports, keras_logits):
    # 50x70 pads to the file's 64x96: the predictor pads and crops, as for Keras, instead of resizing.
    image = np.random.default_rng(4).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    logits = inference.load_predictor(exports["none"]).logits(image.astype(np.float32) / 255)
    np.testing.assert_allclose(logits, keras_logits(image), atol=1e-4)


def test_interpreter_choice(exports, monkeypatch):
    def delegated(interpreter):
        return any(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())

    # Default: TensorFlow's interpreter, built-in kernels for float files, XNNPACK for int8 ones.
    assert not delegated(tflite_infer.make_interpreter(exports["none"]))
    assert delegated(tflite_infer.make_interpreter(exports["int8"]))
    assert delegated(tflite_infer.make_interpreter(exports["none"], xnnpack="on"))
    image = np.random.default_rng(5).random((1, *SIZE, 3)).astype(np.float32)
    tf_logits = tflite_infer.tflite_batch_fn(exports["none"])[0](image)
    monkeypatch.setenv("SEGKIT_TFLITE_RUNTIME", "litert")
    run_litert, _ = tflite_infer.tflite_batch_fn(exports["none"])
    assert type(run_litert.interpreter).__module__.startswith("ai_edge_litert")
    np.testing.assert_allclose(run_litert(image), tf_logits, atol=1e-5)
    monkeypatch.setenv("SEGKIT_TFLITE_RUNTIME", "tflite")
    with pytest.raises(UserError, match="SEGKIT_TFLITE_RUNTIME must be one of tf, litert; got 'tflite'"):
        tflite_infer.make_interpreter(exports["none"])


def miou(model_path, capsys) -> float:
    assert evaluate.main(["--model", str(model_path), "--json"]) == 0  # dataset and classes from the sidecar
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["miou"]


def test_evaluate_parity(run, exports, capsys):
    reference = miou(run, capsys)
    assert 0 < reference <= 1
    for key, tolerance in (("savedmodel", 1e-3), ("none", 1e-3), ("fp16", 1e-3), ("int8", 0.02)):
        assert miou(exports[key], capsys) == pytest.approx(reference, abs=tolerance), key


def test_predict_with_int8_tflite(run, exports, keras_logits, tmp_path):
    image = np.random.default_rng(2).integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    assert predict.main(["--model", str(exports["int8"]), str(tmp_path / "x.png"), "--out", str(tmp_path / "p")]) == 0
    mask = Image.open(tmp_path / "p" / "x_mask.png")
    colors = json.loads((run / "config.json").read_text())["dataset_info"]["colors"]
    assert mask.size == (SIZE[1], SIZE[0]) and mask.getpalette()[:6] == [*colors[0], *colors[1]]
    agreement = np.mean(np.asarray(mask) == keras_logits(image).argmax(-1))
    assert agreement >= 0.9


def test_int8_is_smaller_and_faster(exports):
    assert exports["int8"].stat().st_size < exports["none"].stat().st_size / 3
    interpreters = {key: tflite_infer.make_interpreter(exports[key], num_threads=1) for key in ("none", "int8")}
    for interpreter in interpreters.values():
        interpreter.invoke()
    cpu = {key: [] for key in interpreters}
    for _ in range(40):  # interleaved, CPU time: robust to the load of a shared machine
        for key, interpreter in interpreters.items():
            start = time.process_time()
            interpreter.invoke()
            cpu[key].append(time.process_time() - start)
    assert statistics.median(cpu["int8"]) < 0.8 * statistics.median(cpu["none"])


REGISTRY = [("mobilenetv3_lraspp", {"variant": "small"}), ("resnet34_unet", {}), ("vgg16_unet", {}),
            ("unet_tf", {"base_filters": 8})]


@pytest.mark.parametrize("name, options", REGISTRY, ids=[name for name, _ in REGISTRY])
def test_every_model_converts(name, options, tmp_path):
    model = models.build_model(name, 3, **options)
    if name == "unet_tf":  # exported from its SavedModel, as a unet_tf run keeps it
        models.unet_tf.export_savedmodel(model, tmp_path / "saved_model")
        source = export.load_source(tmp_path / "saved_model")
    else:
        model = export.float32_model(model)
        weights = export.keras_variables(model)
        source = export.Source("keras", tmp_path, lambda x: model(x, training=False), weights, None)
    (tmp_path / "m.tflite").write_bytes(export.tflite_bytes(source, (32, 64), "none"))
    run_tflite, fixed = tflite_infer.tflite_batch_fn(tmp_path / "m.tflite")
    assert fixed == (32, 64)
    image = np.random.default_rng(3).random((1, 32, 64, 3)).astype(np.float32)
    reference = np.asarray(source.forward(tf.constant(image)))
    got = run_tflite(image)
    assert got.shape == (1, 32, 64, 3)
    assert np.max(np.abs(got - reference)) <= 1e-3 * max(1.0, np.max(np.abs(reference)))
    assert export.agreement(reference, got) >= 0.999


def test_failed_check_writes_nothing(run, exports, tmp_path, monkeypatch, capsys):
    out = tmp_path / "model.tflite"
    previous = exports["none"].read_bytes()
    out.write_bytes(previous)  # an earlier export at the same place survives a failed one
    # A broken conversion: asked for float32, the converter hands back the int8 file (logits off by ~0.5).
    monkeypatch.setattr(export, "tflite_bytes", lambda *args, **kwargs: exports["int8"].read_bytes())
    code = cli.run(export.main, ["--model", str(run), "--format", "tflite", "--image-size", *map(str, SIZE),
                                 "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "disagrees" in err[0], err
    assert out.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]


@pytest.mark.parametrize("args, message", [
    (["--model", "/nonexistent/run", "--format", "tflite", "--out", "x.tflite"], "does not exist"),
    (["--format", "onnx", "--out", "x.onnx"], "--format must be one of savedmodel, tflite"),
    (["--format", "tflite", "--quantize", "int4", "--out", "x.tflite"], "--quantize must be one of"),
    (["--format", "tflite", "--out", "x.pb"], "must be a .tflite file"),
    (["--format", "savedmodel", "--quantize", "int8", "--out", "sm"], "applies to --format tflite only"),
    (["--format", "tflite", "--image-size", "100", "96", "--out", "x.tflite"], "multiples of 32"),
])
def test_bad_input_is_one_line(run, tmp_path, capsys, args, message):
    argv = args if "--model" in args else ["--model", str(run), *args]
    argv = [str(tmp_path / a) if a.startswith("x.") or a == "sm" else a for a in argv]
    assert cli.run(export.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_keras_format_for_shipping(run, tmp_path, capsys):
    """--format keras: a float32 .keras without optimizer state, its classes beside it, same numbers."""
    import keras

    out = tmp_path / "ship" / "model.keras"
    assert export.main(["--model", str(run), "--format", "keras", "--out", str(out)]) == 0
    shipped = keras.saving.load_model(out)  # plain load: no custom_objects
    assert getattr(shipped, "optimizer", None) is None and not shipped.compiled
    assert out.stat().st_size < 0.5 * next((run / "checkpoints").glob("epoch_*.keras")).stat().st_size
    assert json.loads(out.with_suffix(".json").read_text())["dataset_info"]["class_names"][0] == "Sky"
    assert miou(out, capsys) == pytest.approx(miou(run, capsys), abs=1e-6)
    for args, message in ((["--quantize", "int8"], "apply to --format tflite only"),
                          (["--out", str(tmp_path / "x.tflite")], "must be a .keras file")):
        argv = ["--model", str(run), "--format", "keras", "--out", str(out), *args]
        if "--out" in args:
            argv = ["--model", str(run), "--format", "keras", *args]
        with pytest.raises(UserError, match=message):
            export.main(argv)
