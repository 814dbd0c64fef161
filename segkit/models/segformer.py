"""SegFormer (Xie et al. 2021, "SegFormer: Simple and Efficient Design for Semantic Segmentation with
Transformers"): keras-hub's Mix Transformer (MiT) encoder and the all-MLP decoder, logits at full size.

keras-hub's MiT layers recover a feature map's height and width from its token count as sqrt(N), so
keras_hub.models.MiTBackbone only runs on square images of the size it was built for, and its
SegFormerBackbone / SegFormerImageSegmenter resize to sizes fixed at build time. The encoder here is
made of subclasses of those same keras-hub layers (same sublayers, hence the same weights, in the same
order) whose `call` keeps the (N, h, w, C) map, so it runs on any size whose sides are multiples of 32,
also unknown until run time; a keras-hub MiT preset loads into it layer by layer.
"""

import keras
import keras_hub
import numpy as np
from keras import layers, ops
from keras_hub.src.models.mit.mit_layers import HierarchicalTransformerEncoder, OverlappingPatchingAndEmbedding

from segkit.models.blocks import ResizeLike, check_bool, check_choice, check_input_shape, check_num_classes
from segkit.models.weights import keras_hub_weights, load_encoder_weights, load_preset_weights

_MIT_WIDE = [64, 128, 320, 512]
_MIT_COMMON = dict(num_layers=4, layerwise_num_heads=[1, 2, 5, 8], layerwise_sr_ratios=[8, 4, 2, 1],
                   layerwise_patch_sizes=[7, 3, 3, 3], layerwise_strides=[4, 2, 2, 2])
# keras_hub.models.MiTBackbone arguments of MiT-B0 .. B5 (the architectures of keras-hub's mit_bN_* presets;
# the parameter counts match their metadata) and the decoder width of the paper for each.
ARCHITECTURES = {
    "b0": dict(hidden_dims=[32, 64, 160, 256], layerwise_depths=[2, 2, 2, 2], **_MIT_COMMON),
    "b1": dict(hidden_dims=_MIT_WIDE, layerwise_depths=[2, 2, 2, 2], **_MIT_COMMON),
    "b2": dict(hidden_dims=_MIT_WIDE, layerwise_depths=[3, 4, 6, 3], **_MIT_COMMON),
    "b3": dict(hidden_dims=_MIT_WIDE, layerwise_depths=[3, 4, 18, 3], **_MIT_COMMON),
    "b4": dict(hidden_dims=_MIT_WIDE, layerwise_depths=[3, 8, 27, 3], **_MIT_COMMON),
    "b5": dict(hidden_dims=_MIT_WIDE, layerwise_depths=[3, 6, 40, 3], **_MIT_COMMON),
}
DECODER_FILTERS = {"b0": 256, "b1": 256, "b2": 768, "b3": 768, "b4": 768, "b5": 768}
# Stochastic regularisation with dropout=True: keras-hub's (and the paper's) drop path, rising linearly
# over the blocks to 0.1; keras-hub's 0.1 dropouts inside attention; 0.1 dropout before the classifier.
MAX_DROP_PATH_RATE = 0.1
ATTENTION_DROPOUT = 0.1
DROPOUT = 0.1


def share_dtype_policy(layer):
    """Give `layer`'s sublayers its dtype policy.

    keras-hub's layers make their sublayers without passing their dtype on, so these take the global
    policy of the moment: a model trained under mixed_bfloat16 and reloaded under float32 would mix
    bfloat16 layers with float32 sublayers (and fail adding their outputs).
    """
    for sublayer in layer._flatten_layers(include_self=False):
        sublayer.dtype_policy = layer.dtype_policy


@keras.saving.register_keras_serializable(package="segkit")
class MiTPatchEmbedding(OverlappingPatchingAndEmbedding):
    """keras-hub's overlapping patch embedding (zero-pad, strided conv, LayerNorm) returning the
    (N, H/stride, W/stride, C) map instead of a flattened token sequence."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        share_dtype_policy(self)

    def build(self, input_shape):
        # Sublayers built here, not on first call, so that a reloaded model has their variables.
        self.proj.build(self.padding.compute_output_shape(input_shape))
        self.norm.build((None, None, None, self.project_dim))
        self.built = True

    def call(self, x):
        return self.norm(self.proj(self.padding(x)))

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (n, None if h is None else h // self.stride, None if w is None else w // self.stride,
                self.project_dim)


@keras.saving.register_keras_serializable(package="segkit")
class MiTBlock(HierarchicalTransformerEncoder):
    """keras-hub's MiT transformer block on an (N, h, w, C) map, h and w read from the map itself.

    With t the h*w tokens of the map:
        t = t + DropPath(EfficientAttention(LayerNorm(t)))
        t = t + DropPath(MixFFN(LayerNorm(t)))
    EfficientAttention: softmax(q k^T / sqrt(C / heads)) v, keys and values from the map reduced by a
    sr x sr strided conv + LayerNorm; MixFFN: Dense(4C), 3x3 depthwise conv on the map, GELU, Dense(C).
    The sublayers are keras-hub's (built by its __init__); only the reshapes differ.
    """

    def __init__(self, project_dim, num_heads, sr_ratio=1, drop_prob=0.0, layer_norm_epsilon=1e-6,
                 attention_dropout=0.1, **kwargs):
        super().__init__(project_dim, num_heads, sr_ratio=sr_ratio, drop_prob=drop_prob,
                         layer_norm_epsilon=layer_norm_epsilon, **kwargs)
        self.sr_ratio = sr_ratio
        self.drop_prob = drop_prob
        self.layer_norm_epsilon = layer_norm_epsilon
        # keras-hub fixes both dropouts of its attention at 0.1 (the paper's MiT uses none).
        self.attention_dropout = attention_dropout
        self.attn.dropout.rate = self.attn.proj_drop.rate = attention_dropout
        share_dtype_policy(self)

    def build(self, input_shape):
        c = self.project_dim
        tokens = (None, None, c)
        attn, mlp = self.attn, self.mlp
        for layer in (self.norm1, attn.q, attn.k, attn.v, attn.proj, self.norm2, mlp.fc1):
            layer.build(tokens)
        if self.sr_ratio > 1:
            attn.sr.build((None, None, None, c))
            attn.norm.build(tokens)
        mlp.dwconv.build((None, None, None, 4 * c))
        mlp.fc2.build((None, None, 4 * c))
        attn.built = mlp.built = True
        self.built = True

    def call(self, x):
        shape = ops.shape(x)
        n, h, w, c = shape[0], shape[1], shape[2], self.project_dim
        t = ops.reshape(x, (n, -1, c))  # (N, h*w, C)
        t = t + self.drop_path(self._attention(self.norm1(t), n, h, w))
        t = t + self.drop_path(self._mix_ffn(self.norm2(t), n, h, w))
        return ops.reshape(t, (n, h, w, c))

    def _attention(self, t, n, h, w):
        # keras-hub's SegFormerMultiheadAttention.call, with h and w passed in.
        attn, c = self.attn, self.project_dim
        heads = attn.num_heads

        def split_heads(y):  # (N, L, C) -> (N, heads, L, C / heads)
            return ops.transpose(ops.reshape(y, (n, -1, heads, c // heads)), (0, 2, 1, 3))

        q = split_heads(attn.q(t))
        kv = t
        if self.sr_ratio > 1:
            kv = attn.sr(ops.reshape(t, (n, h, w, c)))  # (N, h/sr, w/sr, C)
            kv = attn.norm(ops.reshape(kv, (n, -1, c)))
        k, v = split_heads(attn.k(kv)), split_heads(attn.v(kv))
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * attn.scale
        probs = attn.dropout(ops.softmax(scores, axis=-1))
        out = ops.reshape(ops.transpose(ops.matmul(probs, v), (0, 2, 1, 3)), (n, -1, c))
        return attn.proj_drop(attn.proj(out))

    def _mix_ffn(self, t, n, h, w):
        # keras-hub's MixFFN.call, with h and w passed in.
        mlp = self.mlp
        y = mlp.fc1(t)
        y = mlp.dwconv(ops.reshape(y, (n, h, w, 4 * self.project_dim)))
        y = ops.nn.gelu(ops.reshape(y, (n, -1, 4 * self.project_dim)))
        return mlp.fc2(y)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        # keras-hub's get_config stores neither sr_ratio nor layer_norm_epsilon: start from Layer's.
        config = keras.layers.Layer.get_config(self)
        config.update(project_dim=self.project_dim, num_heads=self.num_heads, sr_ratio=self.sr_ratio,
                      drop_prob=self.drop_prob, layer_norm_epsilon=self.layer_norm_epsilon,
                      attention_dropout=self.attention_dropout)
        return config


def mit_encoder(architecture, input_shape=(None, None, 3), dropout=False, name="encoder"):
    """MiT encoder with keras-hub's layers: images -> [P1, P2, P3, P4] at strides 4, 8, 16, 32.

    Args:
        architecture: keras_hub.models.MiTBackbone arguments, e.g. ARCHITECTURES["b0"].
        input_shape: (H, W, 3), H and W None or multiples of 32.
        dropout: drop path and attention dropout (MAX_DROP_PATH_RATE, ATTENTION_DROPOUT), or none.

    Returns:
        keras.Model `name` whose layers, in order, hold the same weights as the layers of a
        keras_hub.models.MiTBackbone(**architecture).

    Example:
        >>> encoder = mit_encoder(ARCHITECTURES["b0"])
        >>> [tuple(t.shape) for t in encoder(np.zeros((1, 64, 96, 3), "float32"))]
        [(1, 16, 24, 32), (1, 8, 12, 64), (1, 4, 6, 160), (1, 2, 3, 256)]
    """
    a = architecture
    drop_rates = np.linspace(0.0, MAX_DROP_PATH_RATE if dropout else 0.0, sum(a["layerwise_depths"]))
    inputs = keras.Input(input_shape, name="image")
    x, outputs, block = inputs, [], 0
    for i in range(a["num_layers"]):
        x = MiTPatchEmbedding(project_dim=a["hidden_dims"][i], patch_size=a["layerwise_patch_sizes"][i],
                              stride=a["layerwise_strides"][i], name=f"patch_and_embed_{i}")(x)
        for k in range(a["layerwise_depths"][i]):
            x = MiTBlock(a["hidden_dims"][i], a["layerwise_num_heads"][i], sr_ratio=a["layerwise_sr_ratios"][i],
                         drop_prob=float(drop_rates[block]),
                         attention_dropout=ATTENTION_DROPOUT if dropout else 0.0,
                         name=f"hierarchical_encoder_{i}_{k}")(x)
            block += 1
        x = layers.LayerNormalization(epsilon=1e-5, name=f"output_level_{i}")(x)  # (N, H/s, W/s, dims[i])
        outputs.append(x)
    return keras.Model(inputs, outputs, name=name)


def segformer_head(features, reference, num_classes, filters, dropout=False, name="head"):
    """SegFormer's all-MLP decoder, as keras-hub's SegFormerBackbone + SegFormerImageSegmenter without
    their fixed-size resizes: [P1..P4] -> (N, h1, w1, num_classes) logits at P1's stride 4.

    Each level: Dense(filters), bilinear resize to P1's size; concat (deepest first), 1x1 conv
    (no bias) - BN - ReLU, [dropout 0.1], 1x1 conv to classes.

    Example:
        >>> features = [keras.Input((16 // 2**i, 16 // 2**i, 8)) for i in range(4)]
        >>> segformer_head(features, features[0], 3, 32).shape
        (None, 16, 16, 3)
    """
    levels = [
        ResizeLike(name=f"{name}_resize{i}")([layers.Dense(filters, name=f"{name}_linear{i}")(f), reference])
        for i, f in enumerate(features)
    ]
    x = layers.Concatenate(name=f"{name}_concat")(levels[::-1])  # (N, h1, w1, 4 filters)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_fuse_conv")(x)
    x = layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"{name}_fuse_bn")(x)
    x = layers.ReLU(name=f"{name}_fuse_relu")(x)
    if dropout:
        x = layers.Dropout(DROPOUT, name=f"{name}_dropout")(x)
    return layers.Conv2D(num_classes, 1, name=f"{name}_classifier")(x)


def build_segformer(
    num_classes,
    input_shape=(None, None, 3),
    encoder_weights=None,
    variant="b0",
    encoder_trainable=True,
    dropout=False,
):
    """SegFormer-B0 .. B5 on keras-hub's MiT encoder, float32 logits at the input size.

    The MiT encoder gives maps at strides 4, 8, 16, 32; the all-MLP head fuses them at stride 4 and
    its logits are resized bilinearly to the input size. No softmax (keras-hub's segmenter has none
    either): the model outputs logits like every model here. Images are normalised inside the model:
    ImageNet mean and std, or the scale and offset of the preset's keras-hub ImageConverter.

    Args:
        num_classes: number of output channels (logits).
        input_shape: (H, W, 3), H and W None or multiples of 32.
        encoder_weights: None / "none", a keras-hub MiT preset (a name such as "mit_b0_ade20k_512",
            a kaggle:// or hf:// handle, or a local folder written by `save_to_preset`; a SegFormer
            preset such as "segformer_b0_ade20k_512" gives its encoder), or a weights file
            (see segkit/models/weights/). keras-hub has no ImageNet MiT weights.
        variant: "b0" .. "b5" (ARCHITECTURES); a preset must hold that variant's architecture.
        encoder_trainable: False freezes the encoder.
        dropout: True adds SegFormer's stochastic regularisation (drop path, keras-hub's attention
            dropouts, dropout before the classifier; see MAX_DROP_PATH_RATE); off by default, like
            mobilenetv2_pix2pix's dropout, so that training-mode outputs are deterministic.

    Returns:
        keras.Model named "segformer": float32 images in [0, 1], (N, H, W, 3) -> float32 logits
        (N, H, W, num_classes).

    Example:
        >>> model = build_segformer(12)
        >>> model(np.zeros((1, 64, 96, 3), "float32")).shape
        TensorShape([1, 64, 96, 12])
    """
    check_num_classes(num_classes)
    input_shape = check_input_shape(input_shape)
    check_choice("variant", variant, tuple(ARCHITECTURES))
    check_bool("encoder_trainable", encoder_trainable)
    check_bool("dropout", dropout)
    weights, source, (scale, offset) = keras_hub_weights(
        encoder_weights, keras_hub.models.MiTBackbone, ARCHITECTURES, variant, {}, "segformer"
    )

    encoder = mit_encoder(ARCHITECTURES[variant], input_shape, dropout)
    encoder.trainable = encoder_trainable
    inputs = keras.Input(input_shape, name="image")
    x = layers.Rescaling(scale, offset, name="preprocess")(inputs)  # keras-hub's ImageConverter, on [0, 1]
    features = encoder(x)  # (N, H/4, W/4, d1) .. (N, H/32, W/32, d4)
    x = segformer_head(features, features[0], num_classes, DECODER_FILTERS[variant], dropout)  # (N, H/4, W/4, C)
    outputs = ResizeLike(dtype="float32", name="logits")([x, inputs])
    model = keras.Model(inputs, outputs, name="segformer")

    if source is not None:
        print(load_preset_weights(source, encoder, weights.handle))
    elif weights is not None:
        print(load_encoder_weights(encoder, weights))
    return model
