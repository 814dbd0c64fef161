"""DDRNet: deep dual-resolution network (Hong et al. 2021, "Deep Dual-resolution Networks for Real-time and
Accurate Semantic Segmentation of Road Scenes"), built from plain 3x3 convolutions for from-scratch training.

Two branches run side by side after stride 8: a high-resolution one that stays at stride 8 (64 channels in
the slim variant) and a low-resolution one that goes down to stride 64 like a ResNet. They exchange features
twice (bilateral fusion: strided convs down, 1x1 conv + bilinear resize up). The low branch ends in DAPPM, a
pyramid of average pools whose levels are fused one into the next; the sum of both branches goes through a
small head at stride 8, and the logits are resized bilinearly to the input size.

`head_stride=4` ends the head at stride 4 instead, where the stem's features are added back (as DeepLabV3+'s
decoder does): at 360x480 a stride-8 map is 45x60, too coarse for CamVid's poles and signs. Even a perfect
stride-8 prediction of class shares, resized back, scores Pole IoU 0.17 on CamVid val (0.62 at stride 4,
0.90 at stride 2); the paper's head runs on 720x960 frames, where stride 8 is as fine as stride 4 here.

Dense 3x3 convolutions with 32-256 channels run close to the CPU's matmul peak under oneDNN, unlike the
depthwise convolutions of MobileNets, so for the same time this network does more useful work per image.
"""

import keras
from keras import layers

from segkit.models.blocks import ResizeLike, check_choice, check_input_shape, check_num_classes
from segkit.models.weights import parse_encoder_weights

# (planes, high-resolution planes, DAPPM branch planes, head planes): the paper's DDRNet-23-slim and -23, and
# "tiny" (three quarters of slim's widths, about 0.56x its work) and "nano" (half, about 0.25x): real-time
# students for int8 files that keep 30 frames/s at 360x480 on CPUs without VNNI.
VARIANTS = {"nano": (16, 32, 64, 32), "tiny": (24, 48, 96, 48), "slim": (32, 64, 128, 64), "23": (64, 128, 128, 128)}


def _conv_bn(x, filters, kernel_size=3, strides=1, name="conv"):
    x = layers.Conv2D(filters, kernel_size, strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    return layers.BatchNormalization(name=f"{name}_bn")(x)


def _bn_relu_conv(x, filters, kernel_size, name):
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    return layers.Conv2D(filters, kernel_size, padding="same", use_bias=False, name=f"{name}_conv")(x)


def basic_block(x, filters, strides=1, relu_out=True, name="block"):
    """ResNet basic block: 3x3 conv-BN-ReLU, 3x3 conv-BN, plus a (projected) shortcut, then ReLU."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, strides, name=f"{name}_down")
    y = layers.ReLU(name=f"{name}_a_relu")(_conv_bn(x, filters, 3, strides, name=f"{name}_a"))
    y = _conv_bn(y, filters, 3, name=f"{name}_b")
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_relu")(y) if relu_out else y


def bottleneck(x, filters, strides=1, name="bottleneck"):
    """ResNet bottleneck with expansion 2 (DDRNet's layer5): 1x1, 3x3 (strided), 1x1 to 2 x filters; no
    final ReLU (the next use applies one)."""
    shortcut = x
    if strides != 1 or x.shape[-1] != 2 * filters:
        shortcut = _conv_bn(x, 2 * filters, 1, strides, name=f"{name}_down")
    y = layers.ReLU(name=f"{name}_a_relu")(_conv_bn(x, filters, 1, name=f"{name}_a"))
    y = layers.ReLU(name=f"{name}_b_relu")(_conv_bn(y, filters, 3, strides, name=f"{name}_b"))
    y = _conv_bn(y, 2 * filters, 1, name=f"{name}_c")
    return layers.Add(name=f"{name}_add")([y, shortcut])


def stage(x, filters, blocks, strides=1, name="stage"):
    """`blocks` basic blocks, the first one strided; the stage's output has no final ReLU (as in DDRNet,
    where the fused sum is activated by its user)."""
    for i in range(blocks):
        x = basic_block(x, filters, strides if i == 0 else 1, relu_out=i < blocks - 1, name=f"{name}_block{i}")
    return x


def dappm(x, branch_filters, out_filters, name="dappm"):
    """Deep Aggregation Pyramid Pooling Module: (N, h, w, c) -> (N, h, w, out_filters).

    Levels: the map itself, average pools 5/2, 9/4, 17/8 and the global mean, each BN-ReLU-1x1 conv; each
    pooled level is resized back, added to the level before it and refined by a BN-ReLU-3x3 conv, so
    context flows from fine to coarse. The five levels are concatenated, compressed by a 1x1 conv and added to
    a 1x1 shortcut of the input.
    """
    levels = [_bn_relu_conv(x, branch_filters, 1, name=f"{name}_scale0")]
    pools = [layers.AveragePooling2D(5, 2, padding="same", name=f"{name}_pool1"),
             layers.AveragePooling2D(9, 4, padding="same", name=f"{name}_pool2"),
             layers.AveragePooling2D(17, 8, padding="same", name=f"{name}_pool3"),
             layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool4")]
    for i, pool in enumerate(pools, 1):
        level = _bn_relu_conv(pool(x), branch_filters, 1, name=f"{name}_scale{i}")
        level = ResizeLike(name=f"{name}_up{i}")([level, x])
        level = layers.Add(name=f"{name}_sum{i}")([level, levels[-1]])
        levels.append(_bn_relu_conv(level, branch_filters, 3, name=f"{name}_process{i}"))
    y = _bn_relu_conv(layers.Concatenate(name=f"{name}_concat")(levels), out_filters, 1, name=f"{name}_compress")
    shortcut = _bn_relu_conv(x, out_filters, 1, name=f"{name}_shortcut")
    return layers.Add(name=f"{name}_out")([y, shortcut])


def seg_head(x, filters, num_classes, name="head"):
    """BN-ReLU-3x3 conv(filters)-BN-ReLU-1x1 conv(num_classes, with bias)."""
    x = _bn_relu_conv(x, filters, 3, name=f"{name}_a")
    x = layers.BatchNormalization(name=f"{name}_b_bn")(x)
    x = layers.ReLU(name=f"{name}_b_relu")(x)
    return layers.Conv2D(num_classes, 1, name=f"{name}_classifier")(x)


def fine_head(x, fine, filters, fine_filters, num_classes, name="head"):
    """A head that ends at the stride of `fine` (the stem's stride-4 features): a BN-ReLU-3x3 conv(filters)
    at stride 8, a 1x1 projection to `fine_filters`, bilinear resize to `fine`'s size, plus a 1x1 projection
    of `fine`; then seg_head with `fine_filters` at stride 4."""
    x = _bn_relu_conv(x, filters, 3, name=f"{name}_coarse")
    x = _bn_relu_conv(x, fine_filters, 1, name=f"{name}_project")
    x = ResizeLike(name=f"{name}_up")([x, fine])
    skip = _conv_bn(fine, fine_filters, 1, name=f"{name}_skip")
    x = layers.Add(name=f"{name}_fuse")([x, skip])
    return seg_head(x, fine_filters, num_classes, name=name)


def build_ddrnet(
    num_classes,
    input_shape=(None, None, 3),
    encoder_weights=None,
    variant="slim",
    head_stride=8,
):
    """DDRNet-23 (`variant="23"`, 20 M parameters), DDRNet-23-slim (`"slim"`, 5.7 M), tiny (`"tiny"`, 3/4 of
    slim's widths, 3.2 M) or nano (`"nano"`, half its widths, 1.4 M), logits at full size.

    Stem: two stride-2 3x3 conv-BN-ReLU (stride 4), then basic-block stages [2, 2, 2, 2] for the low branch
    (strides 4, 8, 16, 32) and a bottleneck to stride 64 feeding DAPPM; the high branch forks at stride 8
    and keeps its resolution (two stages of two blocks and a bottleneck). Bilateral fusion after the
    stride-16 and stride-32 stages. ImageNet weights for DDRNet are not in keras.applications: it trains
    from scratch (`encoder_weights` must be None or "none").

    Args:
        num_classes: number of output channels (logits).
        input_shape: (H, W, 3), H and W None or multiples of 32.
        encoder_weights: None or "none".
        variant: "nano", "tiny", "slim" or "23" (widths in VARIANTS).
        head_stride: 8 (the paper's head) or 4 (`fine_head`: the stem's stride-4 features join the head, for
            thin objects; slim at 11 classes: +12,320 parameters, 6.10 against 5.87 GFLOP
            forward at 352x480).

    Returns:
        keras.Model named "ddrnet": float32 images in [0, 1], (N, H, W, 3) -> float32 logits
        (N, H, W, num_classes).

    Example:
        >>> model = build_ddrnet(11)
        >>> model(np.zeros((1, 64, 96, 3), "float32")).shape
        TensorShape([1, 64, 96, 11])
    """
    check_num_classes(num_classes)
    input_shape = check_input_shape(input_shape)
    check_choice("variant", variant, tuple(VARIANTS))
    check_choice("head_stride", head_stride, (8, 4))
    if parse_encoder_weights(encoder_weights) is not None:
        from segkit.errors import UserError

        raise UserError(f"ddrnet has no pretrained encoder weights; use --encoder-weights none, got {encoder_weights!r}")
    planes, high, spp, head = VARIANTS[variant]

    inputs = keras.Input(input_shape, name="image")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_minus1_plus1")(inputs)
    x = layers.ReLU(name="stem_a_relu")(_conv_bn(x, planes, 3, 2, name="stem_a"))  # (N, H/2, W/2, planes)
    x = layers.ReLU(name="stem_b_relu")(_conv_bn(x, planes, 3, 2, name="stem_b"))  # (N, H/4, W/4, planes)
    x = stage(x, planes, 2, name="layer1")  # (N, H/4, W/4, planes)
    fine = layers.ReLU(name="layer1_relu")(x)
    x = stage(fine, 2 * planes, 2, 2, name="layer2")  # (N, H/8, W/8, 2 planes)

    # Stride 16 (low) beside stride 8 (high), then fuse.
    low = stage(layers.ReLU(name="layer3_in")(x), 4 * planes, 2, 2, name="layer3")  # (N, H/16, W/16, 4 planes)
    hi = stage(layers.ReLU(name="layer3h_in")(x), high, 2, name="layer3h")  # (N, H/8, W/8, high)
    down = _conv_bn(layers.ReLU(name="down3_in")(hi), 4 * planes, 3, 2, name="down3")
    up = _conv_bn(layers.ReLU(name="compress3_in")(low), high, 1, name="compress3")
    low = layers.Add(name="fuse3_low")([low, down])
    hi = layers.Add(name="fuse3_high")([hi, ResizeLike(name="compress3_up")([up, hi])])

    # Stride 32 (low) beside stride 8 (high), then fuse.
    low = stage(layers.ReLU(name="layer4_in")(low), 8 * planes, 2, 2, name="layer4")  # (N, H/32, W/32, 8 planes)
    hi = stage(layers.ReLU(name="layer4h_in")(hi), high, 2, name="layer4h")  # (N, H/8, W/8, high)
    down = layers.ReLU(name="down4_a_relu")(_conv_bn(layers.ReLU(name="down4_in")(hi), 4 * planes, 3, 2,
                                                         name="down4_a"))
    down = _conv_bn(down, 8 * planes, 3, 2, name="down4_b")
    up = _conv_bn(layers.ReLU(name="compress4_in")(low), high, 1, name="compress4")
    low = layers.Add(name="fuse4_low")([low, down])
    hi = layers.Add(name="fuse4_high")([hi, ResizeLike(name="compress4_up")([up, hi])])

    # Stride 64 + context (low), one more bottleneck (high); sum at stride 8.
    hi = bottleneck(layers.ReLU(name="layer5h_in")(hi), high, name="layer5h")  # (N, H/8, W/8, 2 high)
    low = bottleneck(layers.ReLU(name="layer5_in")(low), 8 * planes, 2, name="layer5")  # (N, H/64, W/64, 16 pl.)
    low = dappm(low, spp, 2 * high)  # (N, H/64, W/64, 2 high)
    x = layers.Add(name="fuse_final")([hi, ResizeLike(name="dappm_up")([low, hi])])
    if head_stride == 8:
        x = seg_head(x, head, num_classes)  # (N, H/8, W/8, num_classes)
    else:
        x = fine_head(x, fine, head, planes, num_classes)  # (N, H/4, W/4, num_classes)
    outputs = ResizeLike(dtype="float32", name="logits")([x, inputs])
    return keras.Model(inputs, outputs, name="ddrnet")
