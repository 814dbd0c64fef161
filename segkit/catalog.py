"""What the toolkit offers, in one place, without importing TensorFlow: the models and the facts about each,
the datasets, losses and the choices of every flag. The command line builds its help from here (so
`--help` is fast), and the registries (segkit.models.MODELS, segkit.data.DATASETS) are made from it.

A model's record holds everything the rest of the code needs to know about it:

    ModelSpec("ddrnet", "segkit.models.ddrnet:build_ddrnet", train_bytes_per_pixel=600, infer_bytes_per_pixel=750)

- `builder`: "module:function" of its builder (imported on first use).
- `train_bytes_per_pixel` / `infer_bytes_per_pixel`: the memory a training step / a forward pass takes per pixel
  (segkit.memory's estimate; measured by `python -m bench.memory`).
- `float32_on_cpu`: `--precision auto` keeps float32 on a bfloat16 CPU, where mixed precision is slower for it.
- `loop`: "keras" (model.fit, segkit.training.loop_keras) or "tf" (its own GradientTape loop, segkit.training.loop_tf;
  the model is a tf.Module, saved as a SavedModel).
- `keras_hub`: built on keras-hub; its encoder weights may be a keras-hub preset.
- `aux_layer`: the layer whose output takes `--aux-weight`'s auxiliary head in training ("": none).
"""

from __future__ import annotations

import dataclasses
import importlib

MULTIPLE = 32  # every model's contract: input height and width divisible by 32 (five stride-2 stages)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: str
    train_bytes_per_pixel: int
    infer_bytes_per_pixel: int
    float32_on_cpu: bool = False
    loop: str = "keras"
    keras_hub: bool = False
    aux_layer: str = ""

    def build_fn(self):
        """The builder function (imports its module)."""
        module, _, function = self.builder.partition(":")
        return getattr(importlib.import_module(module), function)


# Memory slopes: bytes per pixel of a training step (batch * H * W) and of a forward pass (H * W), float32 on CPU,
# measured by `python -m bench.memory` on 2026-11-29 (TensorFlow 2.21, Keras 3, 2-core x86-64 with AVX-512; batch 2
# at 256x256 and 512x512 for training, batch 1 at 512x512 and 1024x1024 for inference; each model at its default
# options, 11 classes; a repeated run differs by up to 10%). Under mixed_bfloat16 mobilenetv2_pix2pix took 1900
# and 1000.
# mobilenetv3_lraspp trains at 0.5-0.8x float32's speed in mixed_bfloat16 on an AVX512-BF16 CPU (bench.train_speed,
# 224x224, batch 8): its depthwise convs, hard-swish and squeeze-excite blocks are memory-bound, and the casts to
# and from bfloat16 cost more than the bf16 maths saves.
_SPECS = (
    ModelSpec("ddrnet", "segkit.models.ddrnet:build_ddrnet", 600, 750, aux_layer="fuse3_high"),
    ModelSpec("deeplabv3plus", "segkit.models.deeplabv3plus:build_deeplabv3plus", 1000, 1000, keras_hub=True),
    ModelSpec("mobilenetv2_pix2pix", "segkit.models.mobilenetv2_pix2pix:build_mobilenetv2_pix2pix", 2300, 2100),
    ModelSpec("mobilenetv3_lraspp", "segkit.models.mobilenetv3_lraspp:build_mobilenetv3_lraspp", 1350, 1200,
              float32_on_cpu=True),
    ModelSpec("resnet34_unet", "segkit.models.resnet34_unet:build_resnet34_unet", 2000, 1650),
    ModelSpec("segformer", "segkit.models.segformer:build_segformer", 2800, 1050, keras_hub=True),
    ModelSpec("unet_tf", "segkit.models.unet_tf:build_unet_tf", 5800, 1450, loop="tf"),
    ModelSpec("vgg16_unet", "segkit.models.vgg16_unet:build_vgg16_unet", 3550, 2650),
)
MODELS = {spec.name: spec for spec in _SPECS}
DEFAULT_MODEL = "mobilenetv2_pix2pix"

# Each name is a module of segkit.data with a `load(data_dir, split, ...)` function.
DATASETS = ("camvid", "cityscapes", "folder", "pets", "sample", "shapes", "stanford", "voc")

LOSSES = ("bce", "bce_dice", "cce", "dice", "dice_cce", "focal_tversky", "ohem_cce", "tversky", "tversky_cce")

# --variant: each model's own.
VARIANTS = {"mobilenetv3_lraspp": ("large", "small"), "ddrnet": ("nano", "tiny", "slim", "23"),
            "deeplabv3plus": ("resnet18", "resnet50", "resnet50_v2"),
            "segformer": ("b0", "b1", "b2", "b3", "b4", "b5")}

LR_SCHEDULES = ("cosine", "constant", "poly")
# --precision: our short names and Keras' own policy names.
PRECISIONS = ("auto", "float32", "bfloat16", "float16", "mixed_bfloat16", "mixed_float16")
STRATEGIES = ("auto", "none", "mirrored", "multiworker")
KEEP = ("best", "last")
AUGMENTS = ("standard", "strong", "colour")
EXPORT_FORMATS = ("savedmodel", "tflite", "onnx", "keras", "web")
QUANTIZE = ("none", "fp16", "dynamic", "int8")
TTA = ("none", "flip")
# What an export must agree with its source to be written: (max |logit difference| per unit of
# max(1, max |logit|), minimum mask agreement), by format or, for TFLite, by quantization.
EXPORT_TOLERANCES = {"keras": (1e-3, 0.999), "savedmodel": (1e-3, 0.999), "onnx": (1e-3, 0.999),
                     "none": (1e-3, 0.999), "fp16": (0.02, 0.99), "dynamic": (0.1, 0.97), "int8": (0.25, 0.90)}


def model(name: str) -> ModelSpec:
    """The record of model `name`, or a UserError listing the choices."""
    if name not in MODELS:
        from segkit.errors import UserError

        raise UserError(f"unknown model {name!r}; choose from {', '.join(sorted(MODELS))}")
    return MODELS[name]
