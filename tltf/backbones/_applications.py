"""The keras.applications families, registered as backbone specs when `tltf.backbones` loads.

Family by family: the names (widths and variants), input size, feature width,
preprocessing and block boundaries of each. Every constructor builds the headless, pooled
`keras.applications` model; nothing is built or downloaded at import.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from tltf.backbones.registry import BackboneSpec, register_backbone

__all__: list[str] = []  # registers specs; nothing to import from here


def _keras_constructor(cls_name: str, **fixed) -> Callable[..., keras.Model]:
    """Wraps a `keras.applications` class as a spec constructor (headless, pooled)."""

    def construct(input_shape, weights="imagenet", pooling="avg"):
        cls = getattr(keras.applications, cls_name)
        return cls(
            include_top=False,
            weights=weights,
            input_shape=tuple(input_shape),
            pooling=pooling,
            **fixed,
        )

    construct.__name__ = f"keras.applications.{cls_name}"
    construct.__qualname__ = construct.__name__
    return construct


def _numbered(template: str, first: int, last: int) -> tuple[str, ...]:
    return tuple(template.format(i) for i in range(first, last + 1))


def _add(name, cls_name, *, size, feature_dim, preprocessing, blocks, family, pretrained_sizes=None,
         min_size=32, aliases=(), description="", **fixed):
    register_backbone(
        BackboneSpec(
            name=name,
            constructor=_keras_constructor(cls_name, **fixed),
            default_size=size,
            pretrained_sizes=pretrained_sizes,
            preprocessing=preprocessing,
            feature_dim=feature_dim,
            blocks=tuple(blocks),
            family=family,
            min_size=min_size,
            aliases=tuple(aliases),
            description=description or f"keras.applications.{cls_name}",
        )
    )


def _alpha_tag(alpha: float) -> str:
    return f"{int(round(alpha * 100)):03d}"


def _register_keras_applications() -> None:
    # MobileNet V1: blocks conv_dw_1 .. conv_dw_13; stride-2 blocks start at their padding.
    v1_blocks = tuple(
        f"conv_pad_{i}" if i in (2, 4, 6, 12) else f"conv_dw_{i}" for i in range(1, 14)
    )
    for alpha in (0.25, 0.5, 0.75, 1.0):
        suffix = "" if alpha == 1.0 else f"_{_alpha_tag(alpha)}"
        _add(f"mobilenet{suffix}", "MobileNet", alpha=alpha, size=224,
             pretrained_sizes=(128, 160, 192, 224), feature_dim=int(1024 * alpha),
             preprocessing="tf", blocks=v1_blocks, family="mobilenet",
             aliases=("mobilenet_v1",) if alpha == 1.0 else ())

    # MobileNet V2: inverted residual blocks block_1 .. block_16 (block 0 is the stem).
    for alpha in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4):
        suffix = "" if alpha == 1.0 else f"_{_alpha_tag(alpha)}"
        width = 1280 if alpha <= 1.0 else int(1280 * alpha)
        _add(f"mobilenet_v2{suffix}", "MobileNetV2", alpha=alpha, size=224,
             pretrained_sizes=(96, 128, 160, 192, 224), feature_dim=width,
             preprocessing="tf", blocks=_numbered("block_{}", 1, 16), family="mobilenet_v2",
             aliases=("mobilenetv2",) if alpha == 1.0 else ())

    # MobileNet V3: preprocessing built in; blocks expanded_conv, expanded_conv_1 .. _N.
    for variant, cls_name, last, width in (("small", "MobileNetV3Small", 10, 576),
                                          ("large", "MobileNetV3Large", 14, 960)):
        blocks = ("expanded_conv", *_numbered("expanded_conv_{}", 1, last))
        for alpha, minimalistic, suffix in ((1.0, False, ""), (0.75, False, "_075"),
                                            (1.0, True, "_minimalistic")):
            _add(f"mobilenet_v3_{variant}{suffix}", cls_name, alpha=alpha,
                 minimalistic=minimalistic, size=224, feature_dim=int(width * alpha),
                 preprocessing="none",
                 blocks=blocks, family="mobilenet_v3",
                 aliases=(f"mobilenetv3{variant}",) if suffix == "" else ())

    # EfficientNet B0-B7: preprocessing built in; stages start at block1a .. block7a.
    for i, (size, width) in enumerate(((224, 1280), (240, 1280), (260, 1408), (300, 1536),
                                       (380, 1792), (456, 2048), (528, 2304), (600, 2560))):
        _add(f"efficientnet_b{i}", f"EfficientNetB{i}", size=size, feature_dim=width,
             preprocessing="none", blocks=_numbered("block{}a", 1, 7), family="efficientnet",
             aliases=(f"efficientnetb{i}",))

    # EfficientNet V2: preprocessing built in; 6 stages (B0-B3, S) or 7 (M, L).
    for variant, size, width, stages in (("b0", 224, 1280, 6), ("b1", 240, 1280, 6),
                                         ("b2", 260, 1408, 6), ("b3", 300, 1536, 6),
                                         ("s", 384, 1280, 6), ("m", 480, 1280, 7),
                                         ("l", 480, 1280, 7)):
        _add(f"efficientnet_v2_{variant}", f"EfficientNetV2{variant.upper()}", size=size,
             feature_dim=width, preprocessing="none", blocks=_numbered("block{}a", 1, stages),
             family="efficientnet_v2", aliases=(f"efficientnetv2{variant}",))

    # ResNet V1 (caffe preprocessing) and V2 ("tf"): stages conv2 .. conv5.
    resnet_blocks = _numbered("conv{}_block1", 2, 5)
    for depth in (50, 101, 152):
        _add(f"resnet{depth}", f"ResNet{depth}", size=224, feature_dim=2048,
             preprocessing="caffe", blocks=resnet_blocks, family="resnet")
        _add(f"resnet{depth}_v2", f"ResNet{depth}V2", size=224, feature_dim=2048,
             preprocessing="tf", blocks=resnet_blocks, family="resnet_v2",
             aliases=(f"resnet{depth}v2",))

    # ConvNeXt: preprocessing built in; stage 0, then each downsampling starts a stage.
    for variant, width in (("tiny", 768), ("small", 768), ("base", 1024), ("large", 1536),
                           ("xlarge", 2048)):
        prefix = f"convnext_{variant}"
        blocks = (f"{prefix}_stage_0", *_numbered(prefix + "_downsampling_block_{}", 0, 2))
        _add(prefix, f"ConvNeXt{variant.capitalize().replace('Xlarge', 'XLarge')}", size=224,
             feature_dim=width, preprocessing="none", blocks=blocks, family="convnext")

    # DenseNet: dense blocks conv2 .. conv5 (each with its transition layer).
    for depth, width in ((121, 1024), (169, 1664), (201, 1920)):
        _add(f"densenet{depth}", f"DenseNet{depth}", size=224, feature_dim=width,
             preprocessing="torch", blocks=_numbered("conv{}_block1", 2, 5), family="densenet")

    _add("xception", "Xception", size=299, min_size=71, feature_dim=2048, preprocessing="tf",
         blocks=_numbered("block{}", 2, 14), family="xception")
    _add("inception_v3", "InceptionV3", size=299, min_size=75, feature_dim=2048,
         preprocessing="tf", blocks=_numbered("after:mixed{}", 0, 9), family="inception_v3",
         aliases=("inceptionv3",))
    _add("inception_resnet_v2", "InceptionResNetV2", size=299, min_size=75, feature_dim=1536,
         preprocessing="tf",
         blocks=("after:mixed_5b", "after:block35_10_ac", "after:mixed_6a",
                 "after:block17_20_ac", "after:mixed_7a"),
         family="inception_resnet_v2", aliases=("inceptionresnetv2",))

    # NASNet: ImageNet weights exist only at the default size; cells stacked in 3 stages.
    for variant, size, width, cells in (("mobile", 224, 1056, 4), ("large", 331, 4032, 6)):
        blocks = ("after:reduction_concat_stem_2", f"after:normal_concat_{cells - 1}",
                  f"after:normal_concat_{2 * cells}")
        _add(f"nasnet_{variant}", f"NASNet{variant.capitalize()}", size=size,
             pretrained_sizes=(size,), feature_dim=width, preprocessing="tf", blocks=blocks,
             family="nasnet", aliases=(f"nasnet{variant}",))

    for depth in (16, 19):
        _add(f"vgg{depth}", f"VGG{depth}", size=224, feature_dim=512, preprocessing="caffe",
             blocks=_numbered("block{}", 1, 5), family="vgg")


_register_keras_applications()
