"""The backbone registry: one frozen `BackboneSpec` per pretrained image model.

Every entry is data: the Keras constructor, the default input size, the sizes with
pretrained weights, the preprocessing, the feature width and the block boundaries used to
unfreeze by depth. `build_classifier` reads nothing else about a backbone.

The registry knows no source. The keras.applications table (`tltf.backbones._applications`)
registers its specs, and a source of names with a prefix, such as `hub:`
(`tltf.backbones.hub_source`) or `kerashub:` (`tltf.backbones.kerashub`), registers itself
with `register_source`; importing `tltf.backbones` loads them all.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import keras

from tltf._backend import check_backend
from tltf.backbones._affine import parse_affine

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
            `"unit"` (to [0, 1]), `"none"` (the backbone does it itself) or
            `"affine:<scale>/<offset>"` (`x * scale + offset`, each one number or three per
            RGB channel: a KerasHub preset's image converter, see `tltf.backbones.kerashub`).
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
        if self.preprocessing not in PREPROCESSING_MODES and parse_affine(
                self.preprocessing) is None:
            raise ValueError(
                f"BackboneSpec '{self.name}': `preprocessing` must be one of "
                f"{PREPROCESSING_MODES} or 'affine:<scale>/<offset>'. "
                f"Received: preprocessing={self.preprocessing!r}"
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
_ALIASES: dict[str, str] = {}  # alias -> registry name
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

    A name `"<prefix>:<rest>"` that is not registered as it is goes to the source registered
    for that prefix (`register_source`): `"hub:<handle>"` is a TF Hub handle or a local
    SavedModel directory, resolved by `tltf.backbones.hub_source.hub_backbone`.

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
                f"No backbone source '{prefix}:' is registered (registered: "
                f"{sorted(_SOURCES) or 'none'}). Import the module that registers it with "
                f"`register_source`. Received: backbone={name!r}")
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
