"""The KerasHub families tltf knows, as data, and the presets it registers by name.

Per family: the KerasHub backbone class, the feature output (`"cls_token"` of a transformer,
`"pooled_output"` of an encoder with its own attention-pooling head, `"pooled_map"` of a
convolutional feature map), which input sizes the weights allow, the keyword that sets the
input size, and the pattern of the layer names that start a block for
`unfreeze("top_blocks:N")`. `tltf.backbones.kerashub` turns a loaded preset into a flat
Keras model with these facts; nothing here imports keras_hub.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__: list[str] = []  # tables read by tltf.backbones.kerashub

# KerasHub converters: ImageNet mean/std on [0, 255] pixels, or [-1, 1] (mean = std = 0.5).
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGENET = (tuple(1 / (255 * s) for s in _STD), tuple(-m / s for m, s in zip(_MEAN, _STD)))
SYMMETRIC = (1 / 127.5, -1.0)


@dataclass(frozen=True)
class Family:
    """What tltf needs to know about one KerasHub backbone family.

    `blocks` is a regular expression over the flat model's layer names; its first group (or
    the whole name) names a block, in layer order. `sizes` is `"fixed"` (the position
    embedding fixes the size), `"patch"` (any multiple of the patch size; the position
    embedding is interpolated) or `"any"` (a convolutional network).
    """

    name: str
    backbone_class: str
    output: str
    sizes: str
    blocks: str
    size_keyword: str | None = "image_shape"
    block_kind: str = "blocks"


FAMILIES = {
    f.name: f
    for f in (
        Family("vit", "ViTBackbone", "cls_token", "fixed", r"transformer_block_\d+$",
               size_keyword=None, block_kind="transformer layers"),
        Family("dinov2", "DINOV2Backbone", "cls_token", "patch", r"layers_\d+$",
               block_kind="transformer layers"),
        Family("siglip", "SigLIPBackbone", "pooled_output", "fixed", r".*encoder_block_\d+$",
               size_keyword=None, block_kind="transformer layers"),
        Family("resnet", "ResNetBackbone", "pooled_map", "any", r"(stack\d+_block0)_",
               block_kind="stages"),
        Family("efficientnet", "EfficientNetBackbone", "pooled_map", "any", r"(block\d+a)_",
               size_keyword="input_shape", block_kind="stages"),
        Family("mobilenet_v3", "MobileNetBackbone", "pooled_map", "any", r"(block_\d+)_\d+$"),
    )
}
_BY_CLASS = {f.backbone_class: f for f in FAMILIES.values()}


def family_of(backbone_class: str) -> Family | None:
    """The family of a KerasHub backbone class name, or `None` when tltf does not know it."""
    return _BY_CLASS.get(backbone_class)


def block_names(family: Family, layer_names) -> tuple[str, ...]:
    """The block boundaries (`BackboneSpec.blocks`) found in a flat model's layer names."""
    pattern, found = re.compile(family.blocks), []
    for name in layer_names:
        match = pattern.match(name)
        if match:
            block = match.group(1) if pattern.groups else name
            if block not in found:
                found.append(block)
    return tuple(found)


def _n(template: str, count: int, first: int = 0) -> tuple[str, ...]:
    return tuple(template.format(i) for i in range(first, first + count))


# KerasHub's converter builds the SigLIP vision encoder unnamed; saved to the preset it is
# "sig_lip_vision_encoder", whose name then prefixes its blocks when the preset is loaded.
_SIGLIP_BLOCK = "sig_lip_vision_encoder_encoder_block_{}"

# The presets a user would pick, registered as `kerashub:<preset>` (no download to list):
# preset, family, input size, feature width, block boundaries, converter (scale, offset).
# Sizes, widths and depths are those of the KerasHub preset tables and model cards; the
# constructor checks each against the loaded preset and raises on any difference.
PRESETS = (
    ("vit_base_patch16_224_imagenet", "vit", 224, 768, _n("transformer_block_{}", 12, 1),
     SYMMETRIC),
    ("vit_base_patch16_384_imagenet", "vit", 384, 768, _n("transformer_block_{}", 12, 1),
     SYMMETRIC),
    ("vit_large_patch16_224_imagenet", "vit", 224, 1024, _n("transformer_block_{}", 24, 1),
     SYMMETRIC),
    ("dinov2_small", "dinov2", 224, 384, _n("layers_{}", 12), IMAGENET),
    ("dinov2_base", "dinov2", 224, 768, _n("layers_{}", 12), IMAGENET),
    ("dinov2_large", "dinov2", 224, 1024, _n("layers_{}", 24), IMAGENET),
    ("siglip_base_patch16_224", "siglip", 224, 768,
     _n(_SIGLIP_BLOCK, 12), SYMMETRIC),
    ("siglip2_base_patch16_224", "siglip", 224, 768, _n(_SIGLIP_BLOCK, 12), SYMMETRIC),
    ("resnet_18_imagenet", "resnet", 224, 512, _n("stack{}_block0", 4), IMAGENET),
    ("resnet_50_imagenet", "resnet", 224, 2048, _n("stack{}_block0", 4), IMAGENET),
    ("efficientnet_b0_ra_imagenet", "efficientnet", 224, 1280, _n("block{}a", 7, 1), IMAGENET),
    ("efficientnet_lite0_ra_imagenet", "efficientnet", 224, 1280, _n("block{}a", 7, 1),
     IMAGENET),
    ("mobilenet_v3_small_100_imagenet", "mobilenet_v3", 224, 576, _n("block_{}", 6), IMAGENET),
    ("mobilenet_v3_large_100_imagenet", "mobilenet_v3", 224, 960, _n("block_{}", 7), IMAGENET),
)
