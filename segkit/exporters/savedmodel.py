"""SavedModel export for serving: `serving_default` takes uint8 `images` (N, H, W, 3) of any size and
returns `mask` (N, H, W) int32, `probabilities` (N, H, W, C) float32 (softmax; sigmoid for a one-logit
binary model) and `logits` (N, H, W, C) float32.

Inside the graph the images are divided by 255, padded on the bottom/right to a multiple of 32 and
the outputs cropped back, exactly what segkit.inference.predictor does for the other formats. Load it with
`tf.saved_model.load(OUT).signatures["serving_default"]`; TF Serving serves it from a numbered
version folder (MODEL/1/).
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from segkit.exporters.source import Source
from segkit.inference.loading import MULTIPLE


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
        pad_h, pad_w = -h % MULTIPLE, -w % MULTIPLE
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
