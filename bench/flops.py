"""Forward floating-point operations of a Keras model per image, counted layer by layer.

    python -m bench.flops --model ddrnet --image-size 352 480

Counted: convolutions (2 * output pixels * output channels * kernel area * input channels / groups),
depthwise and transposed convolutions, and dense layers; one multiply-add is 2 operations. Left out:
batch norm, activations, pooling, resizing and attention matmuls (keras-hub's transformer layers), which
are small next to the convolutions of the CNNs here. Training costs about 3 times the forward pass
(forward, gradients of the activations, gradients of the weights), which is how bench.train_speed turns
images/s into GFLOP/s and a share of the CPU's peak.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import sys  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from segkit import models  # noqa: E402
from segkit import cli  # noqa: E402

TRAINING_FACTOR = 3  # forward + backward (activations) + backward (weights)


def forward_flops(model) -> int:
    """Operations of one forward pass of `model`, built with a fixed input shape (batch 1)."""
    total = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.Model):
            continue  # its layers are counted themselves
        try:
            out, inp = layer.output.shape, layer.input.shape
        except (AttributeError, ValueError):  # a layer used more than once, or not in the graph
            continue
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            total += 2 * out[1] * out[2] * inp[-1] * layer.depth_multiplier * kh * kw
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            kh, kw = layer.kernel_size
            total += 2 * inp[1] * inp[2] * inp[-1] * out[-1] * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            total += 2 * out[1] * out[2] * out[-1] * kh * kw * inp[-1] // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * int(np.prod(out[1:-1])) * inp[-1] * out[-1]
    return int(total)


def model_flops(name: str, image_size, num_classes: int = 12, **options) -> int:
    """forward_flops of registry model `name` at `image_size` (H, W multiples of 32)."""
    return forward_flops(models.build_model(name, num_classes, input_shape=(*image_size, 3), **options))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=models.DEFAULT_MODEL, help=f"one of {sorted(models.MODELS)}")
    parser.add_argument("--image-size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    parser.add_argument("--num-classes", type=int, default=12)
    parser.add_argument("--variant", help="the model's --variant, if it has one")
    parser.add_argument("--head-stride", type=int, help="ddrnet's --head-stride")
    args = parser.parse_args(argv)
    options = {key: value for key, value in (("variant", args.variant), ("head_stride", args.head_stride))
               if value is not None}
    flops = model_flops(args.model, tuple(args.image_size), args.num_classes, **options)
    h, w = args.image_size
    print(f"{args.model} {h}x{w}: {flops / 1e9:.3f} GFLOP forward per image, about "
          f"{TRAINING_FACTOR * flops / 1e9:.2f} GFLOP per training image")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
