"""segkit.exporters.tflite_graph: an int8 DDRNet file's output requantization moves before its final resize and
crop and its pixel conversion goes through float, and the file gives exactly the converter's values; graphs
without those ops are left as they are, and the shipped int8 files have nothing left to rewrite."""

from pathlib import Path

import numpy as np
import pytest

from segkit import models
from segkit.exporters import source, tflite
from segkit.exporters.tflite_graph import _builtin, input_through_float, requantize_early, rewrite_int8
from segkit.inference import tflite_runtime as tflite_infer
from tensorflow.lite.python import schema_py_generated as schema

SIZE = (50, 70)  # not multiples of 32: the graph pads to 64x96 and crops the logits back


def keras_source(model, where):
    model = source.float32_model(model)
    return source.Source("keras", where, lambda x: model(x, training=False), source.keras_variables(model), None)


def calibration(count=4, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (1, *SIZE, 3)).astype(np.float32) / 255 for _ in range(count)]


def ops_and_tensors(data: bytes):
    """[(op name, [input shapes], [output type names])] in execution order."""
    tree = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    graph = tree.subgraphs[0]
    out = []
    for op in graph.operators:
        out.append((names[_builtin(tree.operatorCodes[op.opcodeIndex])],
                    [list(graph.tensors[t].shape) for t in op.inputs],
                    [types[graph.tensors[t].type] for t in op.outputs]))
    return out


def outputs(path, images, xnnpack):
    interpreter = tflite_infer.make_interpreter(path, num_threads=1, xnnpack=xnnpack)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for image in images:
        interpreter.set_tensor(inp["index"], image)
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"]).copy())
    return np.stack(results), out["quantization"], out["dtype"]


@pytest.fixture(scope="module")
def ddrnet_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddrnet")
    model = models.build_model("ddrnet", 5, variant="nano")
    converted = tflite.converter_bytes(keras_source(model, tmp), SIZE, "int8", calibration())
    (tmp / "converter.tflite").write_bytes(converted)
    (tmp / "rewritten.tflite").write_bytes(rewrite_int8(converted))
    return tmp / "converter.tflite", tmp / "rewritten.tflite", keras_source(model, tmp)


def test_the_requantization_moves_before_the_resize(ddrnet_files):
    converted = ddrnet_files[0].read_bytes()
    before, after = ops_and_tensors(converted), ops_and_tensors(requantize_early(converted))
    assert [name for name, _, _ in before[-4:]] == ["CONV_2D", "RESIZE_BILINEAR", "STRIDED_SLICE", "QUANTIZE"]
    assert [name for name, _, _ in after[-4:]] == ["CONV_2D", "QUANTIZE", "RESIZE_BILINEAR", "STRIDED_SLICE"]
    assert before[:-3] == after[:-3]  # nothing else changes
    # The QUANTIZE now reads the head's stride-8 logits (64x96 padded: 8x12), not the full-size ones.
    assert before[-1][1] == [[1, 50, 70, 5]] and after[-3][1] == [[1, 8, 12, 5]]
    assert [types for _, _, types in after[-3:]] == [["UINT8"]] * 3


def test_the_pixels_are_converted_through_float(ddrnet_files):
    converted = ddrnet_files[0].read_bytes()
    before, after = ops_and_tensors(converted), ops_and_tensors(input_through_float(converted))
    assert before[0] == ("QUANTIZE", [[1, 50, 70, 3]], ["INT8"])
    assert after[:2] == [("DEQUANTIZE", [[1, 50, 70, 3]], ["FLOAT32"]), ("QUANTIZE", [[1, 50, 70, 3]], ["INT8"])]
    assert before[1:] == after[2:]
    both = ops_and_tensors(ddrnet_files[1].read_bytes())  # the file export writes: both rewrites
    assert [name for name, _, _ in both[:2]] == ["DEQUANTIZE", "QUANTIZE"]
    assert [name for name, _, _ in both[-3:]] == ["QUANTIZE", "RESIZE_BILINEAR", "STRIDED_SLICE"]


@pytest.mark.parametrize("xnnpack", ["on", "off"])
def test_the_rewritten_file_gives_the_converters_values(ddrnet_files, xnnpack):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (1, *SIZE, 3), dtype=np.uint8) for _ in range(3)]
    images += [np.zeros((1, *SIZE, 3), np.uint8), np.full((1, *SIZE, 3), 255, np.uint8),
               (np.arange(np.prod(SIZE) * 3) % 256).astype(np.uint8).reshape(1, *SIZE, 3)]  # every pixel value
    (a, qa, ta), (b, qb, tb) = (outputs(p, images, xnnpack) for p in ddrnet_files[:2])
    assert ta == tb == np.uint8 and qa == qb and a.shape == (6, 1, *SIZE, 5)
    assert np.ptp(a) > 0  # the check compares something
    if xnnpack == "on":  # how segkit runs int8 files, and MediaPipe on a CPU: the same values
        np.testing.assert_array_equal(a, b)
    else:  # TFLite's built-in int8 and uint8 resize kernels round a few interpolated values apart
        difference = np.abs(a.astype(int) - b.astype(int))
        assert difference.max() <= 1 and np.mean(difference > 0) < 0.01
        assert np.mean(a.argmax(-1) == b.argmax(-1)) > 0.99


def test_graphs_without_the_tail_stay_as_they_are(ddrnet_files, tmp_path):
    # A float file has no output QUANTIZE; a file whose logits come from a convolution at full size has only
    # the crop of the padded frame to move past, which would requantize more values (64x96, not 50x70);
    # a rewritten file has nothing left to move.
    model = models.build_model("ddrnet", 5, variant="nano")
    float_file = tflite.converter_bytes(keras_source(model, tmp_path), SIZE, "none")
    assert requantize_early(float_file) == float_file
    import keras

    inputs = keras.Input((None, None, 3))
    conv = keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same")(inputs))
    full_size = tflite.converter_bytes(keras_source(conv, tmp_path), SIZE, "int8", calibration(2))
    assert [name for name, _, _ in ops_and_tensors(full_size)][-3:] == ["CONV_2D", "STRIDED_SLICE", "QUANTIZE"]
    assert requantize_early(full_size) == full_size
    assert input_through_float(float_file) == float_file  # a float file takes uint8 pixels and casts them
    rewritten = ddrnet_files[1].read_bytes()
    assert requantize_early(rewritten) == rewritten and input_through_float(rewritten) == rewritten


def test_export_writes_the_rewritten_file(ddrnet_files):
    converter_file, rewritten_file, src = ddrnet_files
    assert tflite.tflite_bytes(src, SIZE, "int8", calibration()) == rewritten_file.read_bytes()


@pytest.mark.parametrize("name", ["camvid_tiny_int8", "camvid_realtime_int8", "camvid_ensemble_int8"])
def test_the_shipped_int8_files_carry_the_rewrites(name):
    """Nothing is left to rewrite in the shipped files (they were rewritten in place, values unchanged)."""
    from segkit.exporters.metadata import strip_associated_files

    data = strip_associated_files((Path(__file__).resolve().parents[1] / "pretrained" / f"{name}.tflite").read_bytes())
    assert rewrite_int8(data) == data
    assert [op for op, _, _ in ops_and_tensors(data)[:2]] == ["DEQUANTIZE", "QUANTIZE"]


def test_a_web_export_rewrites_an_older_int8_file(ddrnet_files, tmp_path, monkeypatch):
    """`--format web` given an int8 .tflite exported before the rewrites: the site's copy is rewritten, keeping
    its segmenter metadata and labels; given a rewritten file, the copy is byte for byte."""
    from segkit.exporters import export_web, web
    from segkit.exporters.metadata import add_segmenter_metadata, strip_associated_files
    from segkit.inference.tflite_runtime import read_labels
    from segkit.inference.predictor import load_predictor

    runtime = tmp_path / "runtime"  # the page's runtime files are not what this test is about
    for name in web.RUNTIME_FILES:
        (runtime / name).parent.mkdir(parents=True, exist_ok=True)
        (runtime / name).write_bytes(b"")
    monkeypatch.setattr(web, "runtime", lambda: runtime)
    labels = ["road", "car", "sky", "tree", "person"]
    older = tmp_path / "older.tflite"
    older.write_bytes(add_segmenter_metadata(ddrnet_files[0].read_bytes(), labels, image_size=SIZE))
    assert load_predictor(older).class_names == labels  # no sidecar: the names the file carries

    result = export_web(older, tmp_path / "site")
    copied = (tmp_path / "site" / "model.tflite").read_bytes()
    assert "conversions rewritten" in result.checked_on
    assert strip_associated_files(copied) == rewrite_int8(strip_associated_files(older.read_bytes()))
    assert [op for op, _, _ in ops_and_tensors(copied)[:2]] == ["DEQUANTIZE", "QUANTIZE"]
    assert read_labels(copied) == labels
    predictor = load_predictor(tmp_path / "site" / "model.tflite")
    assert predictor.class_names == labels and predictor.fixed_size == SIZE

    result = export_web(tmp_path / "site" / "model.tflite", tmp_path / "again")
    assert "copied as it is" in result.checked_on
    assert (tmp_path / "again" / "model.tflite").read_bytes() == copied

    # Beside a run's config.json, the file takes the run's colours when the run names the same classes.
    import json

    colors = [[i * 40, 255 - i * 40, 7] for i in range(5)]
    (tmp_path / "config.json").write_text(json.dumps({"dataset_info": {"class_names": labels, "colors": colors}}))
    assert load_predictor(older).colors == colors
    (tmp_path / "config.json").write_text(json.dumps({"dataset_info": {"class_names": list("abcde"),
                                                                       "colors": colors}}))
    assert load_predictor(older).class_names == labels
