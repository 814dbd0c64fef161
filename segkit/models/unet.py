"""The U-Nets' one builder (resnet34_unet, vgg16_unet): an encoder and segmentation_models' U-Net decoder."""

import keras
from keras import layers

from segkit.models.blocks import unet_decoder
from segkit.models.weights import load_encoder_weights


def encoder_unet(name, num_classes, input_shape, encoder, preprocess, weights=None, encoder_trainable=True,
                 center=None):
    """The U-Nets' one builder: an encoder (a `feature_extractor`: skips, shallow to deep, then the deepest
    map), the input's preprocessing (a layer or function) before it, `center` (optional) on the deepest map,
    `unet_decoder` with the skips deepest first, and a 3x3 conv to float32 logits. A weights file
    (`weights`, from parse_encoder_weights) is loaded into the encoder by layer name."""
    encoder.trainable = encoder_trainable
    inputs = keras.Input(input_shape, name="image")
    *skips, x = encoder(preprocess(inputs))
    if center is not None:
        x = center(x)
    x = unet_decoder(x, skips[::-1])  # (N, H, W, 16)
    outputs = layers.Conv2D(num_classes, 3, padding="same", dtype="float32", name="logits")(x)
    model = keras.Model(inputs, outputs, name=name)
    if weights not in (None, "imagenet"):
        print(load_encoder_weights(encoder, weights))
    return model
