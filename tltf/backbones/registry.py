"""The backbone registry: one frozen `BackboneSpec` per pretrained image model.

Every entry is data: the Keras constructor, the default input size, the sizes with
pretrained weights, the preprocessing, the feature width and the block boundaries used to
unfreeze by depth. `build_classifier` reads nothing else about a backbone.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import keras

from tltf._backend import check_backend

check_backend()  # Keras must run on TensorFlow before this module builds anything

__all__ = [
    "BackboneSpec",
    "block_start_indices",
    "get_backbone",
    "list_backbones",
    "register_backbone",
    "register_source",
    "spec_data",
    "spec_from_data",
]

PREPROCESSING_MODES = ("tf", "torch", "caffe", "unit", "none")


@dataclass(frozen=True)
class BackboneSpec:
    """What tltf needs to know about one backbone, as plain data.

    Args:
        name: str. Registry name, e.g. `"mobilenet_v2"`.
        constructor: callable. `constructor(input_shape=(h, w, 3), weights=..., pooling=...)`
            returns a `keras.Model` that maps *preprocessed* images to a pooled
            `(batch, feature_dim)` vector.
        default_size: int. Input size the pretrained weights were trained at.
        pretrained_sizes: tuple of int, or `None`. The only input sizes with pretrained
            weights; `None` when the weights work at any size `>= min_size`.
        preprocessing: str. How raw pixels in [0, 255] become the backbone's input: `"tf"`
            (to [-1, 1]), `"torch"` (ImageNet mean/std), `"caffe"` (BGR, mean subtracted),
            `"unit"` (to [0, 1]) or `"none"` (the backbone does it itself).
        feature_dim: int. Width of the pooled feature vector.
        blocks: tuple of str. Block boundaries, bottom to top. An entry `"p"` starts a block
            at the first layer named `p` or `p_...`; `"after:n"` starts it right after the
            layer named `n`. See `block_start_indices`.
        family: str. The `keras.applications` family, e.g. `"mobilenet_v2"`.
        min_size: int. Smallest input size the architecture accepts.
        aliases: tuple of str. Other names that resolve to this spec.
        description: str. One line shown by `list_backbones`.

    Example:

    >>> spec = get_backbone("mobilenet_v2")
    >>> spec.default_size, spec.preprocessing, len(spec.blocks)
    (224, 'tf', 16)
    """

    name: str
    constructor: Callable[..., keras.Model] = field(repr=False, compare=False)
    default_size: int
    pretrained_sizes: tuple[int, ...] | None
    preprocessing: str
    feature_dim: int
    blocks: tuple[str, ...]
    family: str
    min_size: int = 32
    aliases: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self):
        if self.preprocessing not in PREPROCESSING_MODES:
            raise ValueError(
                f"BackboneSpec '{self.name}': `preprocessing` must be one of "
                f"{PREPROCESSING_MODES}. Received: preprocessing={self.preprocessing!r}"
            )
        if self.min_size > self.default_size:
            raise ValueError(
                f"BackboneSpec '{self.name}': `min_size` must not exceed `default_size`. "
                f"Received: min_size={self.min_size}, default_size={self.default_size}"
            )


def spec_data(spec: BackboneSpec) -> dict:
    """The plain-data fields of a spec (everything but the constructor), JSON-serialisable.

    A model keeps them in its config, so it knows its own backbone without the registry.

    Example:

    >>> data = spec_data(get_backbone("mobilenet_v2"))
    >>> data["name"], data["blocks"][:2]
    ('mobilenet_v2', ['block_1', 'block_2'])
    """
    data = {f.name: getattr(spec, f.name) for f in fields(spec) if f.name != "constructor"}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def spec_from_data(data: dict) -> BackboneSpec:
    """The spec a model carries, rebuilt from `spec_data` (no registry lookup, nothing loaded).

    Its constructor is the registered one when a backbone of that name is registered with the
    same blocks; otherwise calling it raises, saying to register the spec to build new models.

    Example:

    >>> spec = spec_from_data(spec_data(get_backbone("mobilenet_v2")))
    >>> spec.name, spec.blocks[-1]
    ('mobilenet_v2', 'block_16')
    """
    known = {f.name for f in fields(BackboneSpec)} - {"constructor"}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
    registered = _REGISTRY.get(values.get("name"))
    if registered is not None and tuple(registered.blocks) == values.get("blocks"):
        constructor = registered.constructor
    else:
        def constructor(*args, **kwargs):
            raise ValueError(
                f"The backbone spec '{values.get('name')}' came with a saved model; it describes "
                "that model's blocks but cannot build a new backbone. Register the spec "
                "(tltf.register_backbone) to build new models with it. "
                f"Received: backbone={values.get('name')!r}")
    return BackboneSpec(constructor=constructor, **values)


_REGISTRY: dict[str, BackboneSpec] = {}
# Prefix ("hub") -> function resolving the rest of a name ("hub:<handle>") to a spec. Sources
# register themselves here, so the registry knows no source.
_SOURCES: dict[str, Callable[[str], BackboneSpec]] = {}


def register_source(prefix: str, resolve: Callable[[str], BackboneSpec]) -> None:
    """Makes `get_backbone("<prefix>:<rest>")` call `resolve(rest)` (how `hub:` names work).

    Args:
        prefix: str. A Python identifier, e.g. `"hub"`.
        resolve: callable taking the text after the colon and returning a `BackboneSpec`.

    Raises:
        ValueError: the prefix is not an identifier, or is registered already.

    Example:

    >>> register_source("doc_example", lambda rest: get_backbone(rest))
    >>> get_backbone("doc_example:mobilenet_v2").name
    'mobilenet_v2'
    """
    if not isinstance(prefix, str) or not prefix.isidentifier():
        raise ValueError(f"`prefix` must be an identifier such as 'hub'. Received: prefix={prefix!r}")
    if prefix in _SOURCES:
        raise ValueError(f"A backbone source '{prefix}:' is registered already. "
                         f"Received: prefix={prefix!r}")
    _SOURCES[prefix] = resolve
_ALIASES: dict[str, str] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Adds a backbone to the registry so every tltf function can use it by name.

    Args:
        spec: `BackboneSpec`. The backbone to add.

    Returns:
        The spec, so the call can be used as an expression.

    Raises:
        ValueError: if the name or one of its aliases is already registered.

    Example:

    >>> import keras
    >>> def tiny(input_shape, weights=None, pooling="avg"):
    ...     inputs = keras.Input(input_shape)
    ...     x = keras.layers.Conv2D(8, 3, name="block1_conv")(inputs)
    ...     x = keras.layers.Conv2D(8, 3, name="block2_conv")(x)
    ...     return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    >>> _ = register_backbone(BackboneSpec(
    ...     name="my_tiny_net", constructor=tiny, default_size=32, pretrained_sizes=None,
    ...     preprocessing="unit", feature_dim=8, blocks=("block1", "block2"), family="custom"))
    >>> "my_tiny_net" in list_backbones("my_*")
    True
    """
    if not isinstance(spec, BackboneSpec):
        raise TypeError(
            f"`register_backbone` expects a BackboneSpec. Received: spec={spec!r}"
        )
    for key in (spec.name, *spec.aliases):
        if key in _REGISTRY or key in _ALIASES:
            raise ValueError(
                f"A backbone named '{key}' is already registered; choose another name. "
                f"Received: spec.name={spec.name!r}"
            )
    _REGISTRY[spec.name] = spec
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name
    return spec


def list_backbones(pattern: str = "*") -> list[str]:
    """Returns the sorted names of registered backbones that match a wildcard pattern.

    Args:
        pattern: str. A shell-style wildcard (`*`, `?`, `[ab]`). Defaults to `"*"`.

    Returns:
        A sorted list of registry names (aliases are not listed).

    Example:

    >>> list_backbones("efficientnet_b[01]")
    ['efficientnet_b0', 'efficientnet_b1']
    """
    return sorted(name for name in _REGISTRY if fnmatch.fnmatchcase(name, pattern))


def get_backbone(name: str | BackboneSpec) -> BackboneSpec:
    """Looks a backbone up by name or alias (a `BackboneSpec` is returned as it is).

    A name starting with `"hub:"` is a TF Hub handle or a local SavedModel directory and
    is resolved by `tltf.backbones.hub.hub_backbone`.

    Args:
        name: str or `BackboneSpec`.

    Returns:
        The `BackboneSpec`.

    Raises:
        ValueError: for an unknown name; the message lists close matches.

    Example:

    >>> get_backbone("resnet50v2").name
    'resnet50_v2'
    """
    if isinstance(name, BackboneSpec):
        return name
    if not isinstance(name, str):
        raise TypeError(
            f"`backbone` must be a registry name, a BackboneSpec or a keras.Model. "
            f"Received: backbone={name!r}"
        )
    key = name.strip()
    if key in _REGISTRY:
        return _REGISTRY[key]
    if key in _ALIASES:
        return _REGISTRY[_ALIASES[key]]
    prefix, colon, rest = key.partition(":")
    if colon and prefix.isidentifier():
        if prefix not in _SOURCES:
            raise ValueError(
                f"No backbone source '{prefix}:' is loaded (loaded: {sorted(_SOURCES) or 'none'}). "
                f"Use `tltf.get_backbone` or `tltf.build_classifier`, which load the built-in "
                f"sources, or import the module that registers it (`import tltf.backbones.hub` for "
                f"'hub:'). Received: backbone={name!r}")
        return _SOURCES[prefix](rest)
    normalized = key.lower().replace("-", "_")
    if normalized in _REGISTRY or normalized in _ALIASES:
        return get_backbone(normalized)
    known = [*_REGISTRY, *_ALIASES]
    close = [n for n in sorted(_REGISTRY) if n.startswith(normalized)][:5]
    close += [n for n in difflib.get_close_matches(normalized, known, n=5, cutoff=0.6)
              if n not in close]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(
        f"Unknown backbone '{name}'.{hint} See `tltf.list_backbones()` for every name. "
        f"Received: backbone={name!r}"
    )


def block_start_indices(spec: BackboneSpec, backbone: keras.Model) -> list[int]:
    """Finds where each of the spec's blocks starts in `backbone.layers`.

    Args:
        spec: `BackboneSpec`. Supplies the block boundaries.
        backbone: `keras.Model`. The backbone built from that spec.

    Returns:
        A list of increasing indices into `backbone.layers`, one per block boundary.

    Raises:
        ValueError: if a boundary matches no layer (the spec does not fit the model).

    Example:

    >>> spec = get_backbone("mobilenet_v2")
    >>> net = spec.constructor(input_shape=(96, 96, 3), weights=None)
    >>> starts = block_start_indices(spec, net)
    >>> net.layers[starts[0]].name
    'block_1_expand'
    """
    names = [layer.name for layer in backbone.layers]
    starts = []
    for boundary in spec.blocks:
        if boundary.startswith("after:"):
            target = boundary[len("after:") :]
            index = names.index(target) + 1 if target in names else None
        else:
            index = next(
                (i for i, n in enumerate(names) if n == boundary or n.startswith(boundary + "_")),
                None,
            )
        if index is None:
            raise ValueError(
                f"Block boundary '{boundary}' of backbone '{spec.name}' matches no layer of "
                f"the model '{backbone.name}'; the spec's `blocks` do not fit this model. "
                f"Received: blocks={spec.blocks!r}"
            )
        starts.append(index)
    if starts != sorted(starts):
        raise ValueError(
            f"The block boundaries of backbone '{spec.name}' are not in layer order. "
            f"Received: blocks={spec.blocks!r}"
        )
    return starts


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
    construct.keras_class = cls_name
    construct.keras_kwargs = dict(fixed)
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

