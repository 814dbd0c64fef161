"""segkit.exporters: SavedModel and TFLite (float32, fp16, int8) exports of a small trained run, checked against
the Keras model; every registry model converts; a failed check or bad input leaves nothing behind."""

import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from segkit import models, sidecar
from bench import latency
from segkit.errors import UserError
from segkit import exporters as export
from segkit.inference import predictor as inference, scoring
from segkit.inference import tflite_runtime as tflite_infer
from segkit.exporters import check, source, tflite
from segkit.inference.loading import SIDECAR
from segkit.training.trainer import train
from tests.conftest import predict_paths, run_script, tiny_config, write_camvid_layout

ROOT = Path(__file__).resolve().parents[1]
SIZE = (64, 96)  # the generated images' size: the TFLite files see them unresized


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data_dir = write_camvid_layout(tmp_path_factory.mktemp("data") / "camvid")
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    train(tiny_config(data_dir, epochs=1, steps_per_epoch=40, num_samples=0, run_dir=str(run_dir)))
    return run_dir


@pytest.fixture(scope="module")
def exports(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    paths = {"savedmodel": out / "savedmodel"}
    export.export_model(run, "savedmodel", paths["savedmodel"])
    paths["onnx"] = out / "model.onnx"
    export.export_model(run, "onnx", paths["onnx"])
    for quantize in ("none", "fp16", "dynamic", "int8"):
        paths[quantize] = out / f"model_{quantize}.tflite"
        result = export.export_model(run, "tflite", paths[quantize], quantize=quantize, image_size=SIZE,
                                     calibration_count=12)
        assert result.out == paths[quantize] and result.size_bytes == paths[quantize].stat().st_size
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
    assert (exports["savedmodel"] / SIDECAR).is_file()
    for key, path in exports.items():
        predictor = inference.load_predictor(path)
        assert predictor.class_names == classes, key
        assert predictor.info["config"]["dataset"] == "camvid"
        assert predictor.fixed_size == (None if key in ("savedmodel", "onnx") else SIZE)
    details = tflite_infer.make_interpreter(exports["int8"]).get_input_details()[0]
    assert details["dtype"] == np.uint8
    scale, zero = details["quantization"]
    assert scale == pytest.approx(1 / 255) and zero == 0  # the uint8 input is the raw pixel value


def test_tflite_at_any_size_pads_inside_like_keras(run, keras_logits, tmp_path):
    # Exported at 50x70 (not multiples of 32) the file pads and crops inside its graph, as segkit.inference.predictor
    # does for the Keras model, so a 50x70 frame gets the Keras logits with no resizing. Its input is uint8
    # pixels (raw values, no quantization scale), which MediaPipe feeds without normalization metadata.
    export.export_model(run, "tflite", tmp_path / "m.tflite", image_size=(50, 70))
    image = np.random.default_rng(4).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    predictor = inference.load_predictor(tmp_path / "m.tflite")
    assert predictor.fixed_size == (50, 70)
    details = predictor.batch_fn.interpreter.get_input_details()[0]
    assert details["dtype"] == np.uint8 and details["quantization"] == (0.0, 0)
    np.testing.assert_allclose(predictor.logits(image.astype(np.float32) / 255), keras_logits(image), atol=1e-4)



@pytest.mark.parametrize("runtime", ["tf", "litert"])
def test_argmax_graph_is_numpys_argmax(runtime):
    """The one-op ARG_MAX graph that makes a fixed-size file's mask gives np.argmax's classes, the first of equal
    values included, for each output type; a type it does not take falls back to np.argmax itself."""
    rng = np.random.default_rng(3)
    for dtype in (np.int8, np.uint8, np.float32):
        y = rng.integers(0, 3, (7, 9, 5)).astype(dtype)  # few values: most pixels have ties
        y[0, 0] = [2, 0, 2, 1, 2]  # first of three equal maxima: class 0
        y[0, 1] = [0, 1, 1, 1, 1]
        classes = tflite_infer.argmax_fn(y.shape, y.dtype, runtime)
        assert classes is not tflite_infer._numpy_argmax, dtype
        got = classes(y)
        assert got.dtype == np.int32 and got[0, 0] == 0 and got[0, 1] == 1
        np.testing.assert_array_equal(got, np.argmax(y, axis=-1))
        np.testing.assert_array_equal(classes(y[::-1].copy()), np.argmax(y[::-1], axis=-1))  # called again
    assert tflite_infer.argmax_fn((7, 9, 5), np.int16) is tflite_infer._numpy_argmax


def test_lean_tflite_path_gives_the_general_paths_results(exports, monkeypatch):
    """A frame of the file's own size goes in as uint8 pixels and its mask is the argmax of the quantized
    output: the same classes, pixel for pixel, as dequantizing first, and the same logits as float input."""
    rng = np.random.default_rng(6)
    pixels = rng.integers(0, 256, (2, *SIZE, 3), dtype=np.uint8)
    images = pixels.astype(np.float32) / 255
    for key in ("none", "int8"):
        predictor = inference.load_predictor(exports[key])
        run = predictor.batch_fn
        logits = run(images)
        assert logits.dtype == np.float32 and logits.shape[:3] == (2, *SIZE)
        np.testing.assert_array_equal(run(pixels), logits)  # uint8 pixels = round(255 x) of the float input
        np.testing.assert_array_equal(run.labels(pixels), logits.argmax(-1))
        if key == "int8":  # the file's own output is quantized; run() dequantizes it
            out = run.interpreter.get_output_details()[0]
            quantized = run.interpreter.get_tensor(out["index"])[0]  # that of the last image run
            scale, zero = out["quantization"]
            assert quantized.dtype == np.uint8 and scale > 0
            np.testing.assert_allclose(logits[1], (quantized.astype(np.float32) - zero) * scale, rtol=1e-6)
        general = inference.to_labels(predictor.logits_batch(images))
        lean_calls = []
        monkeypatch.setattr(run, "labels", lambda batch, real=run.labels: lean_calls.append(1) or real(batch))
        np.testing.assert_array_equal(predictor.labels_batch(images), general)
        np.testing.assert_array_equal(predictor.labels(images[0]), general[0])
        assert len(lean_calls) == 2, key
        # Other sizes and several views still take the general path (MediaPipe's resizing; averaged logits).
        other = rng.random((1, 40, 56, 3)).astype(np.float32)
        np.testing.assert_array_equal(predictor.labels_batch(other), inference.to_labels(predictor.logits_batch(other)))
        flip = inference.to_labels(predictor.logits_batch(images, tta="flip"))
        np.testing.assert_array_equal(predictor.labels_batch(images, tta="flip"), flip)
        assert len(lean_calls) == 2, key
        # bench.latency times the mask, as predict.py makes it (1 warm-up + 2 timed calls)
        assert len(latency.time_models([predictor], images[0], runs=2, warmup=1)[0]) == 2
        assert len(lean_calls) == 5, key

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


def miou(model_path) -> float:
    evaluation = scoring.evaluate_model(model_path)  # dataset and classes from the sidecar
    return scoring.as_json(evaluation.report, evaluation.count)["miou"]


def test_evaluate_parity(run, exports):
    reference = miou(run)
    assert 0 < reference <= 1
    for key, tolerance in (("savedmodel", 1e-3), ("onnx", 1e-3), ("none", 1e-3), ("fp16", 1e-3), ("dynamic", 0.01),
                           ("int8", 0.02)):
        assert miou(exports[key]) == pytest.approx(reference, abs=tolerance), key


def test_predict_with_int8_tflite(run, exports, keras_logits, tmp_path):
    image = np.random.default_rng(2).integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    assert len(predict_paths(exports["int8"], [tmp_path / "x.png"], tmp_path / "p")) == 1
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


def test_a_mixed_precision_model_is_exported_in_float32():
    """source.float32_model (runtime.with_policies): every mixed or half policy becomes float32, the weights are
    the same arrays, the logits stay close; a float32 model comes back as itself."""
    import keras

    from segkit.runtime import with_policies

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        mixed = models.build_model("ddrnet", 4, variant="nano")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    exported = source.float32_model(mixed)
    assert exported.replaced_policies == ["mixed_bfloat16"]
    assert {layer.dtype_policy.name for layer in exported.layers} == {"float32"}
    assert all(np.array_equal(a, b) for a, b in zip(exported.get_weights(), mixed.get_weights()))
    x = np.random.default_rng(0).random((1, 64, 96, 3), dtype=np.float32)
    ours, theirs = np.asarray(exported(x)), np.asarray(mixed(x))
    assert np.abs(ours - theirs).max() <= 0.05 * np.abs(theirs).max()
    assert source.float32_model(exported) is exported
    # keras-hub backbones store their policy as a plain dtype string: renamed too; an input's dtype is data
    dense = keras.layers.Dense(2, dtype="bfloat16", name="d")
    inputs = keras.Input((3,), dtype="float32")
    plain, replaced = with_policies(keras.Model(inputs, dense(inputs)), lambda name, layer: "float32")
    assert replaced == {"bfloat16"} and plain.get_layer("d").dtype_policy.name == "float32"
    assert plain.inputs[0].dtype == "float32"


REGISTRY = [("mobilenetv3_lraspp", {"variant": "small"}), ("resnet34_unet", {}), ("vgg16_unet", {}),
            ("unet_tf", {"base_filters": 8})]


@pytest.mark.parametrize("name, options", REGISTRY, ids=[name for name, _ in REGISTRY])
def test_every_model_converts(name, options, tmp_path):
    model = models.build_model(name, 3, **options)
    if name == "unet_tf":  # exported from its SavedModel, as a unet_tf run keeps it
        models.unet_tf.export_savedmodel(model, tmp_path / "saved_model")
        src = source.load_source(tmp_path / "saved_model")
    else:
        model = source.float32_model(model)
        weights = source.keras_variables(model)
        src = source.Source("keras", tmp_path, lambda x: model(x, training=False), weights, None)
    (tmp_path / "m.tflite").write_bytes(tflite.tflite_bytes(src, (32, 64), "none"))
    run_tflite, fixed = tflite_infer.tflite_batch_fn(tmp_path / "m.tflite")
    assert fixed == (32, 64)
    image = np.random.default_rng(3).integers(0, 256, (1, 32, 64, 3)).astype(np.float32) / 255  # uint8 pixels
    reference = np.asarray(src.forward(tf.constant(image)))
    got = run_tflite(image)
    assert got.shape == (1, 32, 64, 3)
    assert np.max(np.abs(got - reference)) <= 1e-3 * max(1.0, np.max(np.abs(reference)))
    assert check.agreement(reference, got) >= 0.999


def test_failed_check_writes_nothing(run, exports, tmp_path, monkeypatch):
    out = tmp_path / "model.tflite"
    previous = exports["none"].read_bytes()
    with sidecar.write_pair(out) as pair:  # an earlier export at the same place survives a failed one
        pair.tmp.write_bytes(previous)
        pair.payload = sidecar.read(exports["none"])
    # A broken conversion: asked for float32, the converter hands back the int8 file (logits off by ~0.5).
    monkeypatch.setattr(export, "tflite_bytes", lambda *args, **kwargs: exports["int8"].read_bytes())
    with pytest.raises(UserError) as caught:
        export.export_model(run, "tflite", out, image_size=SIZE)
    err = str(caught.value).splitlines()
    assert len(err) == 1 and "disagrees" in err[0], err
    assert out.read_bytes() == previous and sidecar.read(out)["export"]["quantize"] == "none"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.tflite"]


@pytest.mark.parametrize("args, message", [
    (["--model", "/nonexistent/run", "--format", "tflite", "--out", "x.tflite"], "does not exist"),
    (["--format", "coreml", "--out", "x.mlmodel"], "--format must be one of savedmodel, tflite, onnx"),
    (["--format", "tflite", "--quantize", "int4", "--out", "x.tflite"], "--quantize must be one of"),
    (["--format", "tflite", "--out", "x.pb"], "must be a .tflite file"),
    (["--format", "savedmodel", "--quantize", "int8", "--out", "sm"], "applies to --format tflite only"),
    (["--format", "tflite", "--image-size", "0", "96", "--out", "x.tflite"], "two positive sizes"),
    (["--format", "onnx", "--out", "x.tflite"], "must be a .onnx file"),
])
def test_bad_input_is_one_line(run, tmp_path, args, message):
    argv = args if "--model" in args else ["--model", str(run), *args]
    argv = [str(tmp_path / a) if a.startswith("x.") or a == "sm" else a for a in argv]
    at = argv.index("--image-size") if "--image-size" in argv else None
    size = at and tuple(int(v) for v in argv[at + 1:at + 3])
    flags = dict(zip(argv[::2], argv[1::2])) if at is None else dict(zip(argv[:at:2], argv[1:at:2]),
                                                                      **dict(zip(argv[at + 3::2], argv[at + 4::2])))
    with pytest.raises(UserError) as caught:
        export.export_model(flags["--model"], flags["--format"], flags["--out"], quantize=flags.get("--quantize", "none"),
                            image_size=size)
    err = str(caught.value).splitlines()
    assert len(err) == 1 and message in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_export_script_one_line(run, tmp_path):
    """The script itself: one 'error:' line and exit status 2 for a bad flag, the check line when it works."""
    bad = run_script("export.py", "--model", str(run), "--format", "coreml", "--out", str(tmp_path / "x.onnx"))
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: argument --format: invalid choice")
    good = run_script("export.py", "--model", str(run), "--format", "keras", "--out", str(tmp_path / "m.keras"))
    assert good.returncode == 0, good.stderr[-1500:]
    assert "mask agreement 1.0000" in good.stdout and f"wrote {tmp_path / 'm.keras'}" in good.stdout


def test_a_model_whose_data_is_elsewhere_asks_for_data_dir(run, tmp_path):
    """A model trained on another machine (its recorded data folder missing here) is refused in one line that
    names --data-dir, before anything is written, by export and evaluate alike; with --data-dir it exports."""
    import shutil

    from segkit.inference import scoring

    moved = tmp_path / "moved"
    shutil.copytree(run, moved, ignore=shutil.ignore_patterns("checkpoints", "logs", "samples"))
    config = json.loads((moved / "config.json").read_text())
    real = config["config"]["data_dir"]
    config["config"]["data_dir"] = "../elsewhere/camvid"
    (moved / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out" / "m.keras"
    for refused in (lambda: export.export_model(moved, "keras", out), lambda: scoring.evaluate_model(moved)):
        with pytest.raises(UserError) as caught:
            refused()
        err = str(caught.value).splitlines()
        assert len(err) == 1 and "'../elsewhere/camvid', which is not here" in err[0] and "--data-dir" in err[0], err
        assert not (tmp_path / "out").exists()
    assert export.export_model(moved, "keras", out, data_dir=real).parity.agreement == 1.0


def test_keras_format_for_shipping(run, tmp_path):
    """--format keras: a float32 .keras without optimizer state, its classes beside it, same numbers."""
    import keras

    out = tmp_path / "ship" / "model.keras"
    export.export_model(run, "keras", out)
    shipped = keras.saving.load_model(out)  # plain load: no custom_objects
    assert getattr(shipped, "optimizer", None) is None and not shipped.compiled
    assert out.stat().st_size < 0.5 * next((run / "checkpoints").glob("epoch_*.keras")).stat().st_size
    assert sidecar.read(out)["dataset_info"]["class_names"][0] == "Sky"
    assert miou(out) == pytest.approx(miou(run), abs=1e-6)
    # a shipped file names its recipe, not the folders of the machine it was trained on
    shipped_out = tmp_path / "ship" / "shipped.keras"
    export.export_model(run, "keras", shipped_out, recipe="tests: tiny_config, 2 epochs")
    entry = sidecar.read(shipped_out)
    assert entry["recipe"] == "tests: tiny_config, 2 epochs"
    assert entry["config"]["run_dir"] == run.name and entry["export"]["source"] == run.name
    assert str(tmp_path) not in json.dumps(entry) and str(run.parent) not in json.dumps(entry)
    assert miou(shipped_out) == pytest.approx(miou(run), abs=1e-6)
    for kwargs, message in (({"quantize": "int8"}, "apply to --format tflite only"),
                            ({"out": tmp_path / "x.tflite"}, "must be a .keras file")):
        with pytest.raises(UserError, match=message):
            export.export_model(run, "keras", **{"out": out, **kwargs})


def test_shipped_sidecar_keeps_only_names_of_the_training_machine_files(tmp_path, monkeypatch):
    # the run folder, --init-from and a student's --distill-from teacher; a relative data folder is kept as given
    machine = tmp_path / "home" / "me"
    config = {"run_dir": str(machine / "runs" / "student"), "init_from": str(machine / "runs" / "base"),
              "distill_from": str(machine / "teacher.keras"), "data_dir": "../shared/datasets/camvid"}
    model = source.Source("keras", machine / "runs" / "student" / "model.keras", None, None, {"config": config})
    payload = export.sidecar_payload(model, "keras", "none", None, check.Parity(0.0, 1.0, 1.0), recipe="tests")
    assert payload["config"] == {"run_dir": "student", "init_from": "base", "distill_from": "teacher.keras",
                                 "data_dir": "../shared/datasets/camvid"}
    assert payload["export"]["source"] == "student" and payload["recipe"] == "tests"
    assert str(machine) not in json.dumps(payload)
    # A run that named its data folder by its absolute path: relative to where export runs, as scripts read it.
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    model.info["config"]["data_dir"] = str(tmp_path / "shared" / "datasets" / "camvid")
    payload = export.sidecar_payload(model, "keras", "none", None, check.Parity(0.0, 1.0, 1.0), recipe="tests")
    assert payload["config"]["data_dir"] == os.path.join("..", "shared", "datasets", "camvid")


def test_ensemble_is_the_mean_of_its_models_probabilities(run, tmp_path):
    """--model A B: one .keras whose output is log(mean softmax) of the models' logits (NumPy reference, with
    the 1e-4 floor), reloaded plainly; its int8 TFLite agrees; a mismatch of classes or kinds is one line, and
    so is an ensemble given to --init-from."""
    import shutil

    import keras

    other = tmp_path / "other"  # a second run: the first's folder with perturbed weights
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("checkpoints", "logs", "samples"))
    model = keras.saving.load_model(other / "model.keras")
    rng = np.random.default_rng(0)
    for weight in model.trainable_weights:  # not BatchNorm's statistics: a variance must stay positive
        weight.assign(weight.numpy() + 0.05 * rng.standard_normal(weight.shape).astype("float32"))
    model.save(other / "model.keras")
    values = json.loads((other / "config.json").read_text())
    values["config"]["seed"] = 1  # the second run's settings differ, as they would
    (other / "config.json").write_text(json.dumps(values))

    out = tmp_path / "ensemble.keras"
    result = export.export_model([run, other], "keras", out, recipe="tests: two runs")
    ensemble = keras.saving.load_model(out)  # plain load
    image = rng.random((1, *SIZE, 3), dtype=np.float32)
    logits = [np.asarray(keras.saving.load_model(p / "model.keras")(image), np.float64) for p in (run, other)]
    probs = [np.exp(z - z.max(-1, keepdims=True)) / np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)
             for z in logits]
    expected = np.maximum(np.log(np.mean(probs, axis=0)), np.log(1e-4))
    np.testing.assert_allclose(np.asarray(ensemble(image)), expected, atol=1e-4)
    assert result.parity.agreement == 1.0
    entry = sidecar.read(out)
    assert entry["export"]["source"] == [run.name, "other"] and entry["dataset_info"]["class_names"][0] == "Sky"
    # each model's own settings are recorded (the top-level config is the first one's), without this machine's
    # folders, and an export of the ensemble file keeps the record
    config = json.loads((run / "config.json").read_text())["config"]
    assert [m["source"] for m in entry["members"]] == [run.name, "other"]
    assert [m["config"]["seed"] for m in entry["members"]] == [config["seed"], 1]
    assert entry["members"][1]["config"]["run_dir"] == Path(config["run_dir"]).name
    int8 = export.export_model(out, "tflite", tmp_path / "ensemble_int8.tflite", quantize="int8", image_size=SIZE,
                               calibration_count=8)
    assert int8.parity.agreement >= 0.9
    assert sidecar.read(tmp_path / "ensemble_int8.tflite")["members"] == entry["members"]
    # fine-tuning starts from one network: an ensemble given to --init-from is refused in one line
    from segkit.models.ensemble import ensemble_members
    from segkit.training.loop_keras import init_weights

    assert len(ensemble_members(ensemble)) == 2 and ensemble_members(model) == []
    with pytest.raises(UserError, match="is an ensemble of 2 networks"):
        init_weights(model, str(out))

    for models_, message in (([run, run], "names the same model twice"),
                             ([run, tmp_path / "ensemble_int8.tflite"], "already a TFLite file")):
        with pytest.raises(UserError, match=message):
            export.export_model(models_, "keras", tmp_path / "bad.keras")
    config = json.loads((other / "config.json").read_text())
    config["dataset_info"]["class_names"][0] = "Heaven"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="must predict the same classes"):
        export.export_model([run, other], "keras", tmp_path / "bad.keras")
    assert not (tmp_path / "bad.keras").exists()


# --- ONNX -----------------------------------------------------------------------------------


def test_onnx_runs_any_size_like_keras(exports, keras_logits, tmp_path):
    """The .onnx file takes images of any size (dynamic H, W) through onnxruntime, padded like the Keras model;
    predict and the latency benchmark run it as they run the other formats."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(exports["onnx"]), providers=["CPUExecutionProvider"])
    (spec,) = session.get_inputs()
    assert spec.type == "tensor(float)" and spec.shape[-1] == 3 and not all(isinstance(d, int) for d in spec.shape)
    predictor = inference.load_predictor(exports["onnx"])
    assert predictor.kind == "onnx" and predictor.class_names[0] == "Sky"
    for shape in ((50, 70, 3), (96, 128, 3)):
        image = np.random.default_rng(7).integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_allclose(predictor.logits(image.astype(np.float32) / 255), keras_logits(image), atol=1e-4)
    Image.fromarray(image).save(tmp_path / "x.png")
    assert len(predict_paths(exports["onnx"], [tmp_path / "x.png"], tmp_path / "p")) == 1
    timed = run_script("-m", "bench.latency", "--model", str(exports["onnx"]), str(exports["int8"]), "--image-size", "64",
                       "96", "--runs", "3", "--warmup", "1", "--threads", "1", "--output", "logits")
    assert timed.returncode == 0, timed.stderr[-1500:]
    assert " onnx " in timed.stdout and " tflite-int8 " in timed.stdout and "64x96 image to logits" in timed.stdout


def test_unet_tf_exports_to_onnx_too(tmp_path):
    """The raw-TensorFlow U-Net (a training SavedModel) converts like the Keras models, checked the same way."""
    import onnxruntime

    models.unet_tf.export_savedmodel(models.build_model("unet_tf", 3, base_filters=8), tmp_path / "saved_model")
    result = export.export_model(tmp_path / "saved_model", "onnx", tmp_path / "m.onnx", dataset="shapes",
                                 check_count=2)
    assert result.parity.agreement >= 0.999
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"] and session.get_outputs()[0].name == "logits"
    with pytest.raises(UserError, match="--format keras needs a Keras model"):
        export.export_model(tmp_path / "saved_model", "keras", tmp_path / "m.keras", dataset="shapes")


# --- TFLite for mobile runtimes: metadata, dynamic range, MediaPipe ---------------------------------


def test_tflite_metadata_carries_labels(run, exports):
    """Every TFLite export holds the class names (a labels.txt associated file and TFLITE_METADATA) and still
    loads in both interpreters; dynamic-range files have int8 weights and float activations."""
    from tensorflow.lite.python import schema_py_generated as schema

    from segkit.inference.tflite_runtime import read_labels

    classes = json.loads((run / "config.json").read_text())["dataset_info"]["class_names"]
    for key in ("none", "fp16", "dynamic", "int8"):
        payload = exports[key].read_bytes()
        assert read_labels(payload) == classes, key
        model = schema.Model.GetRootAsModel(payload, 0)
        assert [model.Metadata(i).Name() for i in range(model.MetadataLength())].count(b"TFLITE_METADATA") == 1
    assert tflite_infer.describe(tflite_infer.make_interpreter(exports["dynamic"])) == "dynamic"
    assert tflite_infer.describe(tflite_infer.make_interpreter(exports["int8"])) == "int8"
    assert tflite_infer.describe(tflite_infer.make_interpreter(exports["none"])) == "float32"
    assert exports["dynamic"].stat().st_size < exports["none"].stat().st_size / 3


MP_PYTHON = Path(os.environ.get("SEGKIT_MEDIAPIPE_PYTHON", ROOT / ".venv-mp" / "bin" / "python"))


def mediapipe_masks(model: Path, images, out: Path):
    """(labels, [category mask per image]) from MediaPipe's ImageSegmenter, run in its own venv."""
    done = subprocess.run([str(MP_PYTHON), str(ROOT / "tests" / "mediapipe_segment.py"), str(model), *map(str, images),
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["labels"], [np.load(out / f"{Path(i).stem}_category.npy") for i in images]


@pytest.mark.skipif(not MP_PYTHON.exists(), reason=f"no MediaPipe venv at {MP_PYTHON} (make test builds .venv-mp)")
def test_mediapipe_agrees_with_predict(run, exports, tmp_path):
    """MediaPipe's ImageSegmenter runs our float and int8 files as they are (no glue, no normalization
    metadata), reads the class names from them, and its category mask agrees with predict.py's labels:
    at the file's own size and for frames it must resize (the shipped 360x480 file on 180x240 frames)."""
    frames = sorted((ROOT / "segkit" / "data" / "sample" / "camvid" / "val").glob("*.jpg"))[:2]
    own = []
    for k in range(2):  # frames of the exported size, from the run's own validation split
        image = np.random.default_rng(20 + k).integers(0, 256, (*SIZE, 3), dtype=np.uint8)
        own.append(tmp_path / f"own{k}.png")
        Image.fromarray(image).save(own[-1])
    classes = json.loads((run / "config.json").read_text())["dataset_info"]["class_names"]
    cases = [(exports["none"], own, 0.99), (exports["int8"], own, 0.97),
             (ROOT / "pretrained" / "camvid_realtime_int8.tflite", frames, 0.97)]
    for model, images, minimum in cases:
        labels, masks = mediapipe_masks(model, images, tmp_path / model.stem)
        if model.parent != ROOT / "pretrained":
            assert labels == classes
        predictor = inference.load_predictor(model)
        for image, mask in zip(images, masks):
            pixels = np.asarray(Image.open(image).convert("RGB"))
            ours = predictor.labels(pixels.astype(np.float32) / 255)
            assert mask.shape == ours.shape
            assert np.mean(mask == ours) >= minimum, (model.name, image.name, np.mean(mask == ours))


ONNX_SMALL = {"mobilenetv2_pix2pix": {"alpha": 0.35}, "mobilenetv3_lraspp": {"variant": "small"}, "ddrnet": {},
              "resnet34_unet": {}, "vgg16_unet": {}, "deeplabv3plus": {"variant": "resnet18"},
              "segformer": {"variant": "b0"}}


@pytest.mark.parametrize("name", sorted(ONNX_SMALL))
def test_onnx_for_every_keras_model(name, tmp_path):
    """Every registered Keras model converts, runs in onnxruntime at two sizes and batch sizes with the Keras
    model's logits, names its input `images` and output `logits` with symbolic batch, height and width, and
    carries the class names. BatchNorm statistics are set away from 0/1 first: a trace in training mode
    (batch statistics, as Keras' own export gave DeepLabV3+'s pyramid pooling) would not match."""
    import keras
    import onnxruntime

    from segkit.exporters.onnx import write_onnx
    from segkit.inference.loading import read_onnx_metadata as read_metadata
    from segkit.exporters.source import Source

    model = models.build_model(name, 3, **ONNX_SMALL[name])
    rng = np.random.default_rng(0)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.5, layer.moving_mean.shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2, layer.moving_variance.shape).astype("float32"))
    info = {"class_names": ["sky", "road", "car"], "colors": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}
    path = tmp_path / f"{name}.onnx"
    write_onnx(Source("keras", path, lambda x: model(x, training=False), None, info), path, info)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (image_input,), (logit_output,) = session.get_inputs(), session.get_outputs()
    assert (image_input.name, image_input.shape) == ("images", ["batch", "height", "width", 3])
    assert (logit_output.name, logit_output.shape) == ("logits", ["batch", "height", "width", 3])
    assert read_metadata(path) == info
    for shape in [(1, 64, 96, 3), (2, 128, 64, 3)]:
        x = rng.random(shape, dtype=np.float32)
        np.testing.assert_allclose(session.run(None, {"images": x})[0], np.asarray(model(x, training=False)),
                                   atol=1e-4, rtol=1e-4)
