"""Export a trained model for serving (SavedModel) or for mobile (TFLite), checked against the source.

    python export.py --model runs/sample-mobilenetv2_pix2pix-... --format savedmodel --out exported/sample
    python export.py --model runs/sample-mobilenetv2_pix2pix-... --format tflite --out exported/sample.tflite
    python export.py --model RUN --format tflite --quantize fp16 --out exported/sample_fp16.tflite
    python export.py --model RUN --format tflite --quantize int8 --image-size 192 256 --out exported/sample_int8.tflite

--model: a run folder, a .keras file, or for unet_tf a run folder or its saved_model/ folder.
Models trained in mixed precision are exported in float32.

SavedModel (`--format savedmodel`): `serving_default` takes uint8 `images` (N, H, W, 3) of any
size and returns `mask` (N, H, W) int32, `probabilities` (N, H, W, C) float32 (softmax; sigmoid
for a one-logit binary model) and `logits` (N, H, W, C) float32. Inside the graph the images
are divided by 255, padded on the bottom/right to a multiple of 32 and the outputs cropped
back, exactly what inference.py does for the other formats. Load it with
`tf.saved_model.load(OUT).signatures["serving_default"]`.

TFLite (`--format tflite`): batch 1, fixed (H, W) = --image-size (default: the run's training
image size), converted by tf.lite.TFLiteConverter from the frozen forward function:
    --quantize none   float32 weights and activations, float32 input in [0, 1];
    --quantize fp16   float16 weights (half the file), float32 compute and input;
    --quantize int8   full-integer: int8 weights and activations calibrated on
                      --calibration-images images of the run's TRAINING split resized to
                      (H, W); uint8 input with scale 1/255 and zero point 0 (the raw pixel
                      values) and uint8 output logits (tflite_infer.py dequantizes them).
tflite_infer.py / inference.py resize other image sizes to (H, W) and the logits back.

Classes: the class names, colours and the run's config go to a sidecar that inference.py
reads, so evaluate.py and predict.py work on the exported file alone: `OUT/segkit.json` inside
a SavedModel folder, `OUT` with `.json` in place of `.tflite` beside a TFLite file.

Check: after writing, the exported file is loaded the way evaluate.py loads it and compared
with the source model on --check-images images of the validation split (the run's dataset;
--dataset/--data-dir override), on the same input (for TFLite: resized to (H, W)). It prints
the largest logit difference and the mask agreement (share of pixels with the same argmax)
and fails, deleting the output, beyond these tolerances (TOLERANCES), with L = max(1, the
largest |logit| of the source on those images):
    savedmodel, tflite none:  max |d logit| <= 0.001 L  and mask agreement >= 0.999
    tflite fp16:              max |d logit| <= 0.02 L   and mask agreement >= 0.99
    tflite int8:              max |d logit| <= 0.25 L   and mask agreement >= 0.90
Measured (L about 9 for MobileNetV2-pix2pix trained by `make train` on the sample; 5-10 for
small unet_tf runs): float exports differ by < 1e-5 L (agreement 1.0), fp16 by 0.002 L
(agreement 0.9998), int8 by 0.03-0.08 L (agreement 0.955-0.995; sample mIoU 0.2321 against
0.2344). Agreement alone misses gross errors: the int8 file fed images at half brightness (a
wrong input scale) still agreed on 0.915 of the pixels, but its logits were off by 0.64 L.
Writes are atomic: the file is written under a temporary name, checked, then renamed.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf

import cli
import data
import inference
from errors import UserError

FORMATS = ("savedmodel", "tflite", "keras")
QUANTIZE = ("none", "fp16", "int8")
# (max |logit difference| per unit of max(1, max |logit|); minimum mask agreement).
TOLERANCES = {"keras": (1e-3, 0.999), "savedmodel": (1e-3, 0.999), "none": (1e-3, 0.999), "fp16": (0.02, 0.99), "int8": (0.25, 0.90)}
SIDECAR = "segkit.json"  # inside a SavedModel folder; a TFLite file's sidecar is <name>.json


def parse_args(argv):
    names = {"keras": "keras", "savedmodel": "savedmodel", "none": "tflite float32", "fp16": "tflite fp16", "int8": "tflite int8"}
    tolerances = "; ".join(f"{names[k]}: max |dlogit| <= {d} L, mask agreement >= {a}"
                           for k, (d, a) in TOLERANCES.items())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog=f"The export fails beyond these tolerances, L = max(1, max |logit|): "
                                            f"{tolerances}. See the module docstring.")
    parser.add_argument("--model", required=True, help="run folder, .keras file, or unet_tf saved_model/ folder")
    parser.add_argument("--format", required=True,
                        help="savedmodel | tflite | keras (a float32 .keras without optimizer state, for shipping)")
    parser.add_argument("--quantize", default="none", help="tflite only: none | fp16 | int8 (default none)")
    parser.add_argument("--out", required=True, help="output: a folder for savedmodel, a .tflite file for tflite")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                        help="tflite input size, multiples of 32 (default: the run's training image size)")
    parser.add_argument("--dataset", help="dataset for calibration and the check (default: the run's)")
    parser.add_argument("--data-dir", help="dataset folder (default: the run's)")
    parser.add_argument("--calibration-images", type=int, default=64,
                        help="int8: training images the activation ranges are calibrated on (default 64)")
    parser.add_argument("--check-images", type=int, default=4,
                        help="validation images the export is checked on (default 4)")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# The source model


@dataclasses.dataclass
class Source:
    """A model to export: `forward` maps float32 (N, H, W, 3) in [0, 1] to float32 logits."""

    kind: str  # "keras" or "savedmodel"
    path: Path
    forward: object  # traceable by tf.function
    trackable: object  # owns the variables: the Keras model's tf.Variables or the loaded SavedModel
    info: dict | None  # class_names, colors, config (None: unknown)
    note: str = ""  # said once when exporting, e.g. a precision change
    model: object = None  # the float32 Keras model, for --format keras


def _float32_config(obj, replaced: set):
    """A serialized Keras model with every mixed-precision dtype policy replaced by float32;
    the names replaced are added to `replaced`."""
    if isinstance(obj, dict):
        config = obj.get("config")
        if obj.get("class_name") == "DTypePolicy" and isinstance(config, dict) \
                and str(config.get("name", "")).startswith("mixed_"):
            replaced.add(config["name"])
            return {**obj, "config": {**config, "name": "float32"}}
        return {key: _float32_config(value, replaced) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_float32_config(value, replaced) for value in obj]
    return obj


def float32_model(model):
    """`model` itself if it computes in float32, else a float32 copy with the same weights.

    A mixed_bfloat16 / mixed_float16 model would put casts and half-precision arithmetic into the
    exported graph; exported models compute in float32 (quantization is TFLite's business)."""
    import keras

    replaced = set()
    rewritten = _float32_config(keras.saving.serialize_keras_object(model), replaced)
    if not replaced:
        return model
    copy = keras.saving.deserialize_keras_object(rewritten)
    copy.set_weights(model.get_weights())
    copy.replaced_policies = sorted(replaced)
    return copy


def keras_variables(model) -> list:
    """The tf.Variables behind a Keras model's weights. A SavedModel that tracks these rather than
    the Keras model holds no Keras objects (plain TensorFlow loads it) and saves 40% faster."""
    return [getattr(v, "value", v) for v in model.weights]


def load_source(path) -> Source:
    path = Path(path)
    if not path.exists():
        raise UserError(f"--model {str(path)!r} does not exist")
    info = inference._read_info(path)
    model_path = path
    if path.is_dir() and not (path / "saved_model.pb").is_file():
        model_path = inference._find_model_file(path)
    if model_path.suffix == ".tflite":
        raise UserError(f"--model {str(model_path)!r} is already a TFLite file; export from the run folder instead")
    if model_path.is_dir() and (model_path / "saved_model.pb").is_file():
        loaded = tf.saved_model.load(str(model_path))
        signature = loaded.signatures.get("serving_default")
        if signature is None:
            raise UserError(f"SavedModel {model_path} has no serving_default signature")
        (name, spec), = signature.structured_input_signature[1].items()
        if spec.dtype != tf.float32 or "logits" not in signature.structured_outputs:
            raise UserError(f"SavedModel {model_path} is not a training SavedModel (float32 images -> logits); "
                            f"it looks exported already: export from the run folder instead")
        return Source("savedmodel", model_path, lambda x: signature(**{name: x})["logits"], loaded, info)
    if model_path.suffix != ".keras":
        raise UserError(f"--model {str(path)!r} is not a run folder, .keras file or SavedModel folder")
    import keras

    import losses  # noqa: F401  (registers the custom losses/metrics for deserialisation)
    import metrics  # noqa: F401
    import models  # noqa: F401
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot load Keras model {model_path}: {str(exc).splitlines()[0]}") from None
    exported = float32_model(model)
    note = "" if exported is model else \
        f"{model_path} computes in {', '.join(exported.replaced_policies)}; exported in float32"
    return Source("keras", model_path, lambda x: exported(x, training=False), keras_variables(exported), info, note,
                  model=exported)


# ---------------------------------------------------------------------------------------------
# SavedModel


class Serving(tf.Module):
    """uint8 images of any size -> mask, probabilities, logits (see the module docstring)."""

    def __init__(self, source: Source):
        super().__init__(name="segkit_serving")
        self.model = source.trackable  # tracked, so its variables are saved
        self._forward = source.forward

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve(self, images):
        x = tf.cast(images, tf.float32) / 255.0  # (N, H, W, 3) in [0, 1]
        h, w = tf.shape(x)[1], tf.shape(x)[2]
        pad_h, pad_w = -h % inference.MULTIPLE, -w % inference.MULTIPLE
        x = tf.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])  # (N, H', W', 3), multiples of 32
        logits = tf.cast(self._forward(x), tf.float32)[:, :h, :w, :]  # (N, H, W, C)
        if logits.shape[-1] == 1:  # binary model: one sigmoid logit
            probabilities = tf.sigmoid(logits)
            mask = tf.cast(logits[..., 0] > 0, tf.int32)
        else:
            probabilities = tf.nn.softmax(logits, axis=-1)
            mask = tf.argmax(logits, axis=-1, output_type=tf.int32)  # (N, H, W)
        return {"mask": mask, "probabilities": probabilities, "logits": logits}


def write_savedmodel(source: Source, folder: Path) -> None:
    module = Serving(source)
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})


# ---------------------------------------------------------------------------------------------
# TFLite


def frozen_function(source: Source, size):
    """The forward pass at batch 1 and `size` as a concrete function with the weights as constants.

    Freezing first (rather than handing the converter the Keras model or a function that reads
    variables) gives one path for Keras and raw-TF models alike, and the converter folds batch
    norm into the convolutions; unfrozen variables would stay VAR_HANDLE/READ_VARIABLE ops."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec([1, *size, 3], tf.float32, name="image")
    forward = tf.function(lambda image: {"logits": tf.cast(source.forward(image), tf.float32)})
    concrete = forward.get_concrete_function(spec)
    return convert_variables_to_constants_v2(concrete)


def to_8bit_levels(image) -> np.ndarray:
    """float32 [0, 1] pixels rounded to the 256 levels a uint8 image holds (SavedModel and int8 inputs)."""
    return np.round(np.clip(image, 0, 1) * 255).astype(np.float32) / 255


def calibration_images(ds, size, count):
    """`count` images spread over the dataset `ds` (the training split), resized to `size` as
    tflite_infer resizes them, rounded to 8-bit levels, each (1, H, W, 3) float32 in [0, 1]."""
    total = int(ds.cardinality())
    every = max(1, total // count) if total > 0 else 1
    images = []
    for image, _ in ds.shard(every, 0).take(count).as_numpy_iterator():
        resized = tf.image.resize(image, size, method="bilinear").numpy()
        images.append(to_8bit_levels(resized)[None])
    if not images:
        raise UserError("--quantize int8 needs calibration images but the training split is empty")
    # One black and one white pixel pin the input's calibrated range to exactly [0, 1], so the uint8
    # input gets scale 1/255 and zero point 0: the raw pixel values are the quantized input.
    images[0][0, 0, 0] = 0.0
    images[0][0, 0, 1] = 1.0
    return images


class _DropMessage(logging.Filter):
    def __init__(self, text):
        super().__init__()
        self.text = text

    def filter(self, record):
        return self.text not in record.getMessage()


def tflite_bytes(source: Source, size, quantize: str, calibration=None) -> bytes:
    """The .tflite file of `source` at batch 1 and `size` (H, W); see the module docstring.

    The frozen function goes to the converter without a `trackable_obj`: TensorFlow calls that
    the deprecated path and warns, but with one the converter re-saves the model first and took
    6x longer here (11.7 s against 2.0 s for MobileNetV2) for the same file."""
    frozen = frozen_function(source, size)
    quiet = _DropMessage("consider providing the trackable_obj")
    logging.getLogger("absl").addFilter(quiet)
    try:
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    finally:
        logging.getLogger("absl").removeFilter(quiet)
    if quantize == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image] for image in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    try:
        with warnings.catch_warnings():  # int8: "Statistics for quantized inputs were expected": the
            warnings.simplefilter("ignore")  # representative dataset gives them
            return converter.convert()
    except Exception as exc:  # the converter raises ConverterError / RuntimeError with MLIR dumps
        raise UserError(f"the TFLite converter failed on {source.path}: {str(exc).strip().splitlines()[0]}") from None


# ---------------------------------------------------------------------------------------------
# The check


def agreement(ref_logits: np.ndarray, logits: np.ndarray) -> float:
    """Share of pixels where both logit maps give the same label."""
    def labels(x):
        return (x[..., 0] > 0) if x.shape[-1] == 1 else np.argmax(x, axis=-1)

    return float(np.mean(labels(ref_logits) == labels(logits)))


def check_images(ds, count):
    """The first `count` images of `ds` (the validation split)."""
    return [to_8bit_levels(image) for image, _ in ds.take(count).as_numpy_iterator()]


def compare(source: Source, exported_fn, images, size=None):
    """(max |logit difference|, max |source logit|, mask agreement) of the exported batch function
    against the source.

    size: the TFLite file's fixed (H, W): both get the image resized to it; else both see the
    image at its own size (the source padded to a multiple of 32 and cropped back)."""
    worst, largest, agree = 0.0, 0.0, []
    for image in images:
        if size is not None:
            x = to_8bit_levels(tf.image.resize(image, size, method="bilinear").numpy())
            ref = np.asarray(source.forward(tf.constant(x[None], tf.float32)), np.float32)[0]
        else:
            x = image
            h, w = image.shape[:2]
            ref = np.asarray(source.forward(tf.constant(inference.pad_image(image)[None])), np.float32)[0, :h, :w]
        got = exported_fn(x[None].astype(np.float32))[0]
        worst = max(worst, float(np.max(np.abs(ref - got))))
        largest = max(largest, float(np.max(np.abs(ref))))
        agree.append(agreement(ref, got))
    return worst, largest, float(np.mean(agree))


# ---------------------------------------------------------------------------------------------
# Writing


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _replace(tmp: Path, final: Path) -> None:
    """Move `tmp` to `final`, replacing a previous export (a folder: renamed aside, then deleted)."""
    if tmp.is_dir() and final.exists():
        old = final.with_name(".old-" + final.name)
        _remove(old)
        final.rename(old)
        tmp.rename(final)
        _remove(old)
    else:
        tmp.replace(final)


def _written_by_export(sidecar: Path) -> bool:
    try:
        return "export" in json.loads(sidecar.read_text())
    except (ValueError, OSError):
        return False


def sidecar_payload(source: Source, args, size, parity) -> dict:
    info = source.info or {}
    payload = {"config": info.get("config", {}),
               "export": {"source": str(source.path), "format": args.format, "quantize": args.quantize,
                          "image_size": list(size) if size else None,
                          "max_logit_difference": parity[0], "max_logit": parity[1], "mask_agreement": parity[2]}}
    if "class_names" in info:
        payload["dataset_info"] = {"class_names": info["class_names"], "colors": info["colors"]}
    return payload


def check_args(args):
    if args.format not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}; got {args.format!r}")
    if args.quantize not in QUANTIZE:
        raise UserError(f"--quantize must be one of {', '.join(QUANTIZE)}; got {args.quantize!r}")
    out = Path(args.out)
    if args.format == "savedmodel":
        if args.quantize != "none":
            raise UserError(f"--quantize {args.quantize} applies to --format tflite only")
        if args.image_size:
            raise UserError("--image-size applies to --format tflite only (the SavedModel takes any size)")
        if out.exists() and not (out / "saved_model.pb").is_file():
            raise UserError(f"--out {str(out)!r} exists and is not a SavedModel; choose a new folder")
    elif args.format == "keras":
        if args.quantize != "none" or args.image_size:
            raise UserError("--quantize and --image-size apply to --format tflite only")
        if out.suffix != ".keras":
            raise UserError(f"--out must be a .keras file for --format keras, got {str(out)!r}")
    else:
        if out.suffix != ".tflite":
            raise UserError(f"--out must be a .tflite file for --format tflite, got {str(out)!r}")
        if out.is_dir():
            raise UserError(f"--out {str(out)!r} is a folder; give a .tflite file name")
    if args.image_size and (len(args.image_size) != 2 or any(s <= 0 or s % 32 for s in args.image_size)):
        raise UserError(f"--image-size must be two positive multiples of 32, got {args.image_size}")
    for key in ("calibration_images", "check_images"):
        if getattr(args, key) < 1:
            raise UserError(f"--{key.replace('_', '-')} must be at least 1, got {getattr(args, key)}")


def main(argv=None) -> int:
    args = parse_args(argv)
    check_args(args)
    source = load_source(args.model)
    if source.note:
        print(source.note)
    run_config = (source.info or {}).get("config", {})
    dataset = args.dataset or run_config.get("dataset")
    if dataset is None:
        raise UserError(f"--dataset is needed: {args.model} does not record which dataset it was trained on "
                        "(export checks the exported file on its validation images)")
    data_dir = args.data_dir if args.dataset or args.data_dir else run_config.get("data_dir")
    size = None
    if args.format == "tflite":
        size = tuple(args.image_size or run_config.get("image_size") or ())
        if len(size) != 2:
            raise UserError(f"--image-size is needed: {args.model} does not record its training image size")

    out = Path(args.out)
    if out.resolve() == source.path.resolve():
        raise UserError(f"--out {str(out)!r} is the model being exported; choose another path")
    sidecar = out.with_suffix(".json")
    if args.format == "keras" and source.model is None:
        raise UserError(f"--format keras needs a Keras model; {source.path} is a {source.kind}")
    if args.format != "savedmodel" and sidecar.is_file() and not _written_by_export(sidecar):
        raise UserError(f"--out {str(out)!r} would overwrite {sidecar}, which export.py did not write; "
                        "choose another name")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(".tmp-" + out.name)
    tmp_sidecar = tmp.with_suffix(".json")
    kind = args.format if args.format in ("savedmodel", "keras") else args.quantize
    max_diff, min_agreement = TOLERANCES[kind]
    try:
        _remove(tmp)
        val_ds, val_info = data.load_dataset(dataset, data_dir, run_config.get("val_split", "val"))
        train_ds, train_info = val_ds, val_info
        if args.quantize == "int8":
            train_ds, train_info = data.load_dataset(dataset, data_dir, run_config.get("train_split", "train"))
        with data.data_errors_as_user_errors(val_info, train_info):
            images = check_images(val_ds, args.check_images)
            if not images:
                raise UserError(f"{val_info.name}/{val_info.split} has no images to check the export on")
            if args.format == "savedmodel":
                write_savedmodel(source, tmp)
            elif args.format == "keras":
                source.model.save(tmp)  # float32 and uncompiled: no optimizer state
            else:
                calibration = None
                if args.quantize == "int8":
                    calibration = calibration_images(train_ds, size, args.calibration_images)
                tmp.write_bytes(tflite_bytes(source, size, args.quantize, calibration))
            exported = inference.load_predictor(tmp)
            run = exported.batch_fn
            if args.format == "keras":  # a bare Keras model: pad to a multiple of 32 like everywhere else
                run = lambda batch: np.stack([exported.logits(image) for image in batch])  # noqa: E731
            parity = compare(source, run, images, size)
        where = f"at {size[0]}x{size[1]}" if size else "at their own size"
        difference, largest, agree = parity
        print(f"check on {len(images)} {dataset} validation images {where}: max |logit difference| "
              f"{difference:.3g} (logits up to {largest:.3g}), mask agreement {agree:.4f}")
        limit = max_diff * max(1.0, largest)
        if not difference <= limit or not agree >= min_agreement:
            raise UserError(f"the exported {args.format} ({kind}) disagrees with {source.path}: max |logit difference| "
                            f"{difference:.3g}, mask agreement {agree:.4f} (tolerance: max |logit difference| <= {limit:.3g} and mask agreement >= "
                            f"{min_agreement}); nothing was written")
        payload = sidecar_payload(source, args, size, parity)
        if args.format == "savedmodel":
            (tmp / SIDECAR).write_text(json.dumps(payload, indent=2) + "\n")
        else:
            tmp_sidecar.write_text(json.dumps(payload, indent=2) + "\n")
            tmp_sidecar.replace(sidecar)
        _replace(tmp, out)
    finally:
        _remove(tmp)
        _remove(tmp_sidecar)
    files = [p for p in out.rglob("*") if p.is_file()] if out.is_dir() else [out]
    print(f"wrote {out} ({sum(p.stat().st_size for p in files) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
