"""The `kerashub:` backbone source: a KerasHub preset as a `BackboneSpec`.

`build_classifier("kerashub:<preset>", ...)` takes a KerasHub preset name, a `kaggle://` or
`hf://` handle, or a local preset directory (what `Backbone.save_to_preset` writes), loaded
by KerasHub's own `Backbone.from_preset` (its download-and-cache path). The backbone becomes
a flat Keras model (each transformer layer or stage a top-level layer, so
`unfreeze("top_blocks:N")` works), ending in a pooled feature vector; the preset's image
converter becomes the model's `Preprocessing` (`"affine:<scale>/<offset>"`). The families
and the presets registered by name are data in `tltf.backbones._kerashub_families`.

keras_hub is an optional extra (`pip install "tltf[kerashub]"`, Python >= 3.11), imported
only when a `kerashub:` backbone is resolved or built: importing tltf never imports it.
"""

from __future__ import annotations

import os

import keras

from tltf.backbones._affine import affine_mode, parse_affine
from tltf.backbones._kerashub_families import FAMILIES, PRESETS, block_names, family_of
from tltf.backbones.registry import BackboneSpec, register_backbone, register_source

__all__ = ["KerasHubBackbone", "TokenPooling", "kerashub_backbone"]

_INSTALL = 'pip install "tltf[kerashub]"'


@keras.saving.register_keras_serializable(package="tltf")
class TokenPooling(keras.layers.Layer):
    """Pools a transformer's token sequence `(batch, tokens, dim)` into `(batch, dim)`.

    Args:
        mode: str. `"cls"` keeps the first (class) token, `"mean"` averages all tokens.
            Defaults to `"cls"`.
        **kwargs: base `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> tokens = np.arange(12, dtype="float32").reshape(1, 3, 4)
    >>> np.asarray(TokenPooling("cls")(tokens)).tolist()
    [[0.0, 1.0, 2.0, 3.0]]
    >>> np.asarray(TokenPooling("mean")(tokens)).tolist()
    [[4.0, 5.0, 6.0, 7.0]]
    """

    def __init__(self, mode: str = "cls", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("cls", "mean"):
            raise ValueError(f"`mode` must be 'cls' or 'mean'. Received: mode={mode!r}")
        self.mode = mode

    def call(self, tokens):
        return tokens[:, 0, :] if self.mode == "cls" else keras.ops.mean(tokens, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def kerashub_backbone(preset: str, *, name: str | None = None) -> BackboneSpec:
    """Describes a KerasHub preset as a `BackboneSpec`, for `build_classifier`.

    `build_classifier("kerashub:<preset>", ...)` calls this for you. The preset's config and
    image converter are read here (its architecture is built once, without weights, to find
    the blocks and the feature width); the weights are loaded each time the spec's
    constructor builds a backbone (`weights="imagenet"` means the preset's own weights,
    `None` a random initialisation).

    Args:
        preset: str. A KerasHub preset name (`keras_hub.models.Backbone.presets`), a
            `kaggle://` or `hf://` handle (downloaded and cached by KerasHub) or a local
            preset directory (`Backbone.save_to_preset` plus `ImageConverter.save_to_preset`).
        name: str or `None`. Spec name. Defaults to `"kerashub:<preset>"`.

    Returns:
        A `BackboneSpec` whose `preprocessing` is the preset converter's
        `"affine:<scale>/<offset>"`, whose blocks are the family's transformer layers or
        stages, and whose `family` is `"kerashub_<family>"`.

    Raises:
        ImportError: keras_hub is not installed (the message names the extra).
        FileNotFoundError: the preset is neither cached nor downloadable, or the directory
            holds no preset.
        ValueError: a family tltf does not know, or a preset without an image converter.

    Example (needs keras_hub, so it is not a doctest; `tests/test_kerashub.py` runs it):

    ```python
    import tempfile, keras_hub
    preset = tempfile.mkdtemp()
    keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=2,
                                 num_heads=2, hidden_dim=16, mlp_dim=32).save_to_preset(preset)
    keras_hub.layers.ViTImageConverter(image_size=(32, 32), scale=1 / 127.5,
                                       offset=-1.0).save_to_preset(preset)
    spec = kerashub_backbone(preset)
    assert (spec.family, spec.default_size, spec.feature_dim) == ("kerashub_vit", 32, 16)
    assert spec.blocks == ("transformer_block_1", "transformer_block_2")
    ```
    """
    hub = _load(preset, load_weights=False)
    family = _family(hub, preset)
    converter = _converter(preset)
    size = _default_size(hub, converter)
    net = KerasHubBackbone(hub, family.name)
    return _spec(name or f"kerashub:{preset}", preset, family, size=size,
                 feature_dim=int(net.output_shape[-1]),
                 blocks=block_names(family, [layer.name for layer in net.layers]),
                 preprocessing=affine_mode(converter.scale, converter.offset),
                 patch=_patch(hub))


def _spec(name, preset, family, *, size, feature_dim, blocks, preprocessing, patch=None):
    fixed = family.sizes == "fixed"
    min_size = size if fixed else (patch or 14) if family.sizes == "patch" else 32
    return BackboneSpec(
        name=name,
        constructor=_constructor(preset, family, size=size, feature_dim=feature_dim,
                                 blocks=blocks, preprocessing=preprocessing),
        default_size=size,
        pretrained_sizes=(size,) if fixed else None,
        preprocessing=preprocessing,
        feature_dim=feature_dim,
        blocks=tuple(blocks),
        family=f"kerashub_{family.name}",
        min_size=min(min_size, size),
        description=f"KerasHub {family.name} ({family.output}): {preset}",
    )


def _constructor(preset, family, *, size, feature_dim, blocks, preprocessing):
    """Builds the flat backbone of a preset, checking the spec against the loaded preset."""

    def construct(input_shape, weights="imagenet", pooling="avg"):
        shape = (int(input_shape[0]), int(input_shape[1]), 3)
        if family.sizes == "fixed" and shape[:2] != (size, size):
            raise ValueError(
                f"The KerasHub {family.name} preset '{preset}' takes {size}x{size} images only "
                f"(its position embedding fixes the size). Pass image_size={size}. "
                f"Received: input_shape={tuple(input_shape)}")
        overrides = {family.size_keyword: shape} if family.size_keyword else {}
        hub = _load(preset, load_weights=weights is not None, **overrides)
        scale, offset = parse_affine(_affine_of(_converter(preset)))
        if not _same_float32(parse_affine(preprocessing), (scale, offset)):
            raise ValueError(
                f"The image converter of the KerasHub preset '{preset}' computes "
                f"x * {scale} + {offset}, but the spec says {preprocessing!r}; tltf would "
                "preprocess differently from KerasHub. Fix the spec, or build with "
                f"tltf.backbones.kerashub.kerashub_backbone({preset!r}), which reads the "
                f"converter. Received: preprocessing={preprocessing!r}")
        net = KerasHubBackbone(hub, family.name, pooling=pooling, name="kerashub_backbone")
        if tuple(net.input_shape[1:3]) != shape[:2]:
            raise ValueError(
                f"The KerasHub preset '{preset}' takes {net.input_shape[1]}x"
                f"{net.input_shape[2]} images, but its spec says {size}. Fix the spec (or use "
                f"kerashub_backbone({preset!r})). Received: input_shape={tuple(input_shape)}")
        found = block_names(family, [layer.name for layer in net.layers])
        if int(net.output_shape[-1]) != feature_dim or found != tuple(blocks):
            raise ValueError(
                f"The KerasHub preset '{preset}' has {int(net.output_shape[-1])}-dim features "
                f"and blocks {list(found)}, but its spec says {feature_dim} and "
                f"{list(blocks)}. Fix the spec (or use kerashub_backbone({preset!r})). "
                f"Received: feature_dim={feature_dim}")
        if weights not in (None, "imagenet"):
            net.load_weights(os.fspath(weights))
        return net

    construct.__name__ = construct.__qualname__ = f"kerashub_backbone({preset!r})"
    construct.preset = preset
    return construct


def _keras_hub():
    try:
        import keras_hub
    except ImportError as error:
        raise ImportError(
            "A 'kerashub:' backbone needs KerasHub, an optional extra of tltf (Python >= "
            f"3.11). Install it with: {_INSTALL}. Received: ImportError({error})") from error
    return keras_hub


def _load(preset, *, load_weights, **overrides):
    """`Backbone.from_preset`, with one clear error when the preset cannot be found."""
    keras_hub = _keras_hub()
    local = os.path.expanduser(preset)
    remote = "://" in preset or (preset in keras_hub.models.Backbone.presets
                                 and not os.path.exists(local))
    if not remote and not os.path.isfile(os.path.join(local, "config.json")):
        raise FileNotFoundError(
            f"'{preset}' is not a KerasHub preset name (see "
            "`keras_hub.models.Backbone.presets`), a kaggle:// or hf:// handle, nor a local "
            "preset directory with a config.json (`Backbone.save_to_preset` writes one). "
            f"Received: preset={preset!r}")
    try:
        return keras_hub.models.Backbone.from_preset(preset if remote else local,
                                                     load_weights=load_weights, **overrides)
    except Exception as error:  # kagglehub / huggingface_hub raise their own network errors
        if not remote or isinstance(error, (TypeError, ImportError)):
            raise
        raise FileNotFoundError(
            f"The KerasHub preset '{preset}' is not in KerasHub's cache and could not be "
            f"downloaded ({type(error).__name__}: {str(error)[:300]}). On a machine with "
            "network access, load it once and save it with "
            f"`keras_hub.models.Backbone.from_preset({preset!r}).save_to_preset(dir)` and "
            f"`keras_hub.layers.ImageConverter.from_preset({preset!r}).save_to_preset(dir)`, "
            "copy that directory here and pass 'kerashub:<dir>'; or copy the kagglehub "
            "cache (KAGGLEHUB_CACHE, default ~/.cache/kagglehub). "
            f"Received: preset={preset!r}") from error


def _converter(preset):
    keras_hub = _keras_hub()
    local = os.path.expanduser(preset)
    source = local if os.path.isdir(local) else preset
    try:
        return keras_hub.layers.ImageConverter.from_preset(source)
    except FileNotFoundError as error:
        raise ValueError(
            f"The KerasHub preset '{preset}' has no image converter (image_converter.json), so "
            "tltf cannot know how to normalise its pixels. Save the converter into the "
            "preset directory (`keras_hub.layers.ImageConverter(...).save_to_preset(dir)`). "
            f"Received: preset={preset!r}") from error


def _affine_of(converter) -> str:
    return affine_mode(converter.scale, converter.offset)


def _same_float32(a, b) -> bool:
    import numpy as np

    return all(np.array_equal(np.broadcast_to(np.float32(x), 3), np.broadcast_to(np.float32(y), 3))
               for x, y in zip(a, b))


def _family(hub, preset):
    family = family_of(type(hub).__name__)
    if family is None:
        known = sorted(f.backbone_class for f in FAMILIES.values())
        raise ValueError(
            f"The KerasHub preset '{preset}' is a {type(hub).__name__}; tltf knows the feature "
            f"output and blocks of {known} only. Received: preset={preset!r}")
    return family


def _default_size(hub, converter) -> int:
    if converter.image_size and converter.image_size[0]:
        return int(converter.image_size[0])
    height = hub.inputs[0].shape[1]
    return int(height) if height else 224


def _patch(hub):
    patch = getattr(hub, "patch_size", None)
    return int(patch[0] if isinstance(patch, (tuple, list)) else patch) if patch else None


@keras.saving.register_keras_serializable(package="tltf")
class KerasHubBackbone(keras.Model):
    """A KerasHub backbone as one flat functional model ending in a pooled feature vector.

    A transformer's encoder holds its layers inside one Keras layer; calling them one by one
    here makes each a top-level layer, so unfreezing can pick them. The weights are the
    KerasHub backbone's own (the same layer objects). The config is the KerasHub backbone's
    own config (what `save_to_preset` writes as config.json) plus the family, so a `.keras`
    file rebuilds it with no preset and no network, through Keras' deserialization, which
    in safe mode refuses Python lambdas as for any other layer.

    Args:
        backbone: a `keras_hub.models.Backbone` of a family tltf knows, or its serialized
            config.
        family: str. Its family in `tltf.backbones._kerashub_families.FAMILIES`.
        pooling: str. `"avg"` or `"max"` pooling of a feature map. Defaults to `"avg"`.
        trainable_layers: list of str or `None`. Names of the top-level layers to keep
            trainable (restores a partly unfrozen model). Defaults to `None` (all).
        **kwargs: `keras.Model` arguments (`name`, ...).

    Example (needs keras_hub; `tests/test_kerashub.py` runs it):

    ```python
    import keras_hub
    hub = keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=2,
                                       num_heads=2, hidden_dim=16, mlp_dim=32)
    net = KerasHubBackbone(hub, "vit")
    assert net.output_shape == (None, 16)
    assert "transformer_block_2" in [layer.name for layer in net.layers]
    ```
    """

    def __init__(self, backbone, family: str, pooling: str = "avg",
                 trainable_layers: list[str] | None = None, **kwargs):
        if isinstance(backbone, dict):
            _keras_hub()  # registers KerasHub's classes before they are deserialized
            backbone = keras.saving.deserialize_keras_object(backbone)
        if family not in FAMILIES:
            raise ValueError(f"`family` must be one of {sorted(FAMILIES)}. "
                             f"Received: family={family!r}")
        inputs, outputs = _flat_graph(FAMILIES[family], backbone, pooling)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.family = family
        self.pooling = pooling
        self._backbone_config = keras.saving.serialize_keras_object(backbone)
        if trainable_layers is not None:
            for layer in self.layers:
                layer.trainable = layer.name in trainable_layers

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "family": self.family,
                "pooling": self.pooling, "backbone": self._backbone_config,
                "trainable_layers": [layer.name for layer in self.layers if layer.trainable]}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _flat_graph(family, hub, pooling):
    """(inputs, outputs) of the flat graph of a KerasHub backbone."""
    if pooling not in ("avg", "max"):
        raise ValueError(f"`pooling` must be 'avg' or 'max'. Received: pooling={pooling!r}")
    if family.output == "pooled_map":
        pool = (keras.layers.GlobalAveragePooling2D if pooling == "avg"
                else keras.layers.GlobalMaxPooling2D)(name="pool")
        return hub.inputs[0], pool(hub.outputs[0])
    if family.name == "siglip":
        encoder = hub.vision_encoder
        inputs = keras.Input(encoder.image_shape, name="images")
        x = encoder.embedding(inputs)
        for block in encoder.encoder_layers:
            x = block(x)
        return inputs, encoder.head(encoder.post_layer_norm(x))
    inputs = keras.Input(tuple(hub.inputs[0].shape[1:]), name="images")
    if family.name == "vit":
        encoder = hub.get_layer("vit_encoder")
        x = encoder.dropout(hub.get_layer("vit_patching_and_embedding")(inputs))
        blocks, final = encoder.encoder_layers, encoder.layer_norm
    else:  # dinov2
        x = hub.embeddings(inputs)
        blocks, final = hub.encoder.layers, hub.layernorm
    for block in blocks:
        x = block(x)
    return inputs, TokenPooling("cls", name="token_pooling")(final(x))


def _register_known() -> None:
    for preset, family, size, width, blocks, (scale, offset) in PRESETS:
        register_backbone(_spec(f"kerashub:{preset}", preset, FAMILIES[family], size=size,
                                feature_dim=width, blocks=blocks,
                                preprocessing=affine_mode(scale, offset),
                                patch=14 if family == "dinov2" else None))


_register_known()
register_source("kerashub", kerashub_backbone)
