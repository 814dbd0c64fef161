"""segkit as an installed package: a wheel that works outside the repository, `import segkit` alone enough for
Keras to reload every model we register, commands that parse before they import TensorFlow, and the Python API
the README shows, run as written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, tiny_config

COMMANDS = ("train", "evaluate", "predict", "export", "verify")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": ""}


def run(args, cwd, timeout=600, **kwargs):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=ENV, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A wheel built from this checkout, installed into a new venv outside the repository. The venv finds the
    dependencies (TensorFlow & co., pinned by requirements.txt) in this environment's site-packages through a
    .pth line, so the test installs nothing from the network; segkit itself comes from the wheel alone."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # what a wheel is built from, copied: the build writes nothing into the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "segkit", source / "segkit", ignore=shutil.ignore_patterns("__pycache__", "node_modules"))
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                 "-w", str(tmp / "dist"), str(source)], cwd=tmp)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("segkit-*.whl")
    venv = tmp / "venv"
    assert run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp).returncode == 0
    python = venv / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    cwd=tmp).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)], cwd=tmp)
    assert installed.returncode == 0, installed.stderr[-2000:]
    return wheel, venv, tmp


def test_the_wheel_holds_the_package_and_its_sample(installed):
    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert "segkit/__init__.py" in names and "segkit/cli/main.py" in names
    assert sum(n.startswith("segkit/data/sample/camvid/train/") for n in names) == 96
    assert not [n for n in names if n.split("/")[0] in ("tests", "bench", "notebooks", "data", "models")]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "segkit = segkit.cli.main:entry" in zipfile.ZipFile(wheel).read(entry_points).decode()


LOAD_AND_PREDICT = """
import sys
import numpy as np
import segkit, keras
print(segkit.__file__)
model = keras.saving.load_model(sys.argv[1])
frame = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(sys.argv[2]).convert("RGB"))
logits = model(np.pad(frame / 255.0, ((0, 12), (0, 0), (0, 0)))[None].astype("float32"))
labels = np.argmax(np.asarray(logits)[0, :frame.shape[0]], -1)
print("classes", len(np.unique(labels)), "shape", labels.shape)
print("api", segkit.load_model(sys.argv[1]).labels(frame).shape)
"""


def test_installed_package_loads_the_shipped_model_and_predicts(installed):
    _, venv, tmp = installed
    frame = ROOT / "segkit" / "data" / "sample" / "camvid" / "val" / "0016E5_07959.jpg"
    result = run([str(venv / "bin" / "python"), "-c", LOAD_AND_PREDICT, str(ROOT / "pretrained" / "camvid.keras"),
                  str(frame)], cwd=tmp)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith(str(venv)), lines[0]  # the installed copy, not this checkout
    assert lines[1].startswith("classes ") and lines[1].endswith("shape (180, 240)") and int(lines[1].split()[1]) >= 3
    assert lines[2] == "api (180, 240)"


def test_installed_console_commands(installed):
    _, venv, tmp = installed
    for command in COMMANDS:
        result = run([str(venv / "bin" / "segkit"), command, "--help"], cwd=tmp, timeout=120)
        assert result.returncode == 0 and f"usage: segkit {command}" in result.stdout, (command, result.stderr)
    result = run([str(venv / "bin" / "segkit"), "--version"], cwd=tmp)
    assert result.stdout.startswith("segkit ") and result.returncode == 0
    # The bundled sample ships inside the package: the sample dataset reads from site-packages.
    result = run([str(venv / "bin" / "segkit"), "verify", "--dataset", "sample", "--split", "val"], cwd=tmp)
    assert result.returncode == 0 and "sample val: 32 images" in result.stdout, result.stdout + result.stderr[-2000:]


RELOAD = """
import sys
import numpy as np
import segkit
import keras
x = np.random.default_rng(0).random((1, 64, 96, 3), dtype=np.float32)
for name in sys.argv[2:]:
    np.save(f"{sys.argv[1]}/{name}.out.npy", np.asarray(keras.saving.load_model(f"{sys.argv[1]}/{name}.keras")(x)))
print("loaded", len(sys.argv) - 2)
"""
SMALL = {"mobilenetv2_pix2pix": {"alpha": 0.35}, "mobilenetv3_lraspp": {"variant": "small"}, "ddrnet": {},
         "resnet34_unet": {}, "vgg16_unet": {}, "deeplabv3plus": {"variant": "resnet18"}, "segformer": {"variant": "b0"}}


def test_import_segkit_alone_reloads_every_keras_model(tmp_path):
    """Every registered Keras model saved to .keras reloads in a fresh process that imports segkit and Keras and
    nothing else of ours, with the same outputs (unet_tf is a tf.Module, saved as a SavedModel)."""
    from segkit import catalog, models

    keras_models = [name for name, spec in catalog.MODELS.items() if spec.loop == "keras"]
    assert sorted(keras_models) == sorted(SMALL)
    x = np.random.default_rng(0).random((1, 64, 96, 3), dtype=np.float32)
    expected = {}
    for name in keras_models:
        model = models.build_model(name, 3, **SMALL[name])
        model.save(tmp_path / f"{name}.keras")
        expected[name] = np.asarray(model(x))
    result = run([sys.executable, "-c", RELOAD, str(tmp_path), *keras_models], cwd=tmp_path)
    assert result.returncode == 0 and f"loaded {len(keras_models)}" in result.stdout, result.stderr[-3000:]
    for name in keras_models:
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.out.npy"), expected[name], atol=1e-5, err_msg=name)


PARSE_ONLY = """
import sys
from segkit.cli import main
for name in main.COMMANDS:
    __import__(f"segkit.cli.{name}", fromlist=["build_parser"]).build_parser().format_help()
import segkit
print(sorted(m for m in ("tensorflow", "keras", "numpy") if m in sys.modules))
"""


def test_commands_parse_before_tensorflow():
    """--help and flag errors need no TensorFlow: building every command's parser imports none of it."""
    result = run([sys.executable, "-c", PARSE_ONLY], cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr[-2000:]


def test_help_lists_choices_and_one_name_per_meaning():
    from segkit.cli import evaluate, export, predict, train, verify

    train_help, predict_help = train.build_parser().format_help(), predict.build_parser().format_help()
    assert "{ddrnet,deeplabv3plus," in train_help and "{cosine,constant,poly}" in train_help
    assert "{savedmodel,tflite,onnx,keras,web}" in export.build_parser().format_help()
    assert "--opacity" in predict_help and "--alpha" not in predict_help  # --alpha is MobileNet's width only
    for parser in (train, evaluate, export, verify):
        assert "--data-option" in parser.build_parser().format_help()


def test_a_closed_pipe_ends_quietly():
    """`segkit train --help | head -1`: the reader goes away; no BrokenPipeError traceback."""
    process = subprocess.Popen([sys.executable, "-m", "segkit.cli.main", "train", "--help"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    process.stdout.close()  # before it writes a line
    _, err = process.communicate(timeout=120)
    assert process.returncode in (0, 141) and b"Traceback" not in err and b"BrokenPipe" not in err, err


def test_api_as_the_readme_shows(camvid_dir, tmp_path):
    """train -> load_model -> labels (uint8 and float alike) -> evaluate -> export, through `import segkit`."""
    import segkit
    from segkit.errors import UserError

    config = tiny_config(camvid_dir, epochs=1, run_dir=str(tmp_path / "run"))
    result = segkit.train(config, num_samples=0)
    assert result.epochs == 1 and (tmp_path / "run" / "model.keras").is_file()
    model = segkit.load_model(result.run_dir)
    assert isinstance(model, segkit.Predictor) and model.num_classes == 11
    image = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    np.testing.assert_array_equal(model.labels(image), model.labels(image / 255.0))
    with pytest.raises(UserError, match=r"float images must be in \[0, 1\].*divide by 255"):
        model.labels(image.astype(np.float32))  # 0-255 values in a float array: refused, not misread
    with pytest.raises(UserError, match="must be uint8"):
        model.labels(image.astype(np.int64))
    scores = segkit.evaluate(result.run_dir)
    assert 0.0 <= scores.report["miou"] <= 1.0 and scores.count == 4
    exported = segkit.export(result.run_dir, "keras", tmp_path / "m.keras")
    assert exported.parity.agreement >= 0.999 and (tmp_path / "m.keras").is_file()
