"""Phase 2 on a cached trunk: the frozen part's output computed once, the top trained on it.

In phase 2 everything below the unfrozen blocks is frozen: its BatchNormalization layers run
in inference mode and its weights never move. When nothing random runs there either (no
augmentation layer, no dropout or noise layer below the cut), its output for an image is the
same in every epoch. `plan` finds the cut: the one tensor of the backbone's graph that every
layer above the unfreeze boundary depends on alone (for MobileNetV2 and `top_blocks:2`, the
output of `block_14_add`). `TrunkCache` computes that tensor once for every training and
validation image and builds the top model from the very same layer objects above the cut,
then the head, so `fit` on it updates the full model's weights; the full model is what
checkpoints, the best weights, `predict` and every export see.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import NamedTuple

import keras

from tltf._warn import warn
from tltf.data._cache_choice import _gb
from tltf.models.parts import backbone_of, head_of
from tltf.training import _store, distribute
from tltf.training._train_data import (
    Outputs,
    _Extractor,
    cache_outputs,
    images_at_most,
    known_size,
    mirrored,
    num_batches,
)
from tltf.training.runtime import _walk_layers

_RANDOM = (keras.layers.Dropout, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
           keras.layers.AlphaDropout)


class Cut(NamedTuple):
    """Where the trunk ends: the cut tensor of the backbone's graph and the layer making it."""

    tensor: object  # a KerasTensor of the backbone's graph
    layer: str  # the name of the backbone layer whose output it is
    values: int  # values per image


class TopData(NamedTuple):
    """What `TrunkCache()` returns: the model that trains, its data, the seconds it took."""

    model: keras.Model
    train: object  # tf.data.Dataset of (trunk outputs, labels), shuffled every epoch, endless
    val: object  # the validation outputs, or None
    steps: int  # batches an epoch
    seconds: float  # spent in the call (computing the outputs, unless phase 1 did)


def check_option(option) -> None:
    if not (isinstance(option, bool) or option == "auto"):
        raise ValueError(
            f"`trunk_cache` must be True, False or 'auto'. Received: trunk_cache={option!r}")


def plan(option, model, unfreeze: str, has_augmentation: bool, strategy,
         callbacks=None) -> tuple[Cut | None, str]:
    """The cut to cache at in phase 2, or None and the reason why not.

    `has_augmentation`: the model has an augmentation layer other than a horizontal flip
    alone (`_train_data.mirrored`), which the cache serves by storing both views.

    Raises:
        ValueError: `option` is True and the trunk cannot be cached.
    """
    if option is False:
        return None, "trunk_cache=False"
    reason, cut = _obstacle(model, unfreeze, has_augmentation, strategy)
    if reason is None and callbacks:
        # Keras hands every callback the model that fits: here the top of the backbone and
        # the head. A checkpoint or a tuner saving it could not load it into the whole model.
        reason, cut = ("callbacks were passed, and they would see the model that trains on "
                       "the cached trunk (the top blocks and the head), not the whole model"), None
    if reason is not None and option is True:
        raise ValueError(
            "`trunk_cache=True` trains phase 2 on the cached output of the frozen part of the "
            f"backbone, but {reason}. Use trunk_cache='auto' (which then trains the full model) "
            f"or False. Received: trunk_cache={option!r}")
    return cut, reason or ""


def _obstacle(model, unfreeze, has_augmentation, strategy) -> tuple[str | None, Cut | None]:
    if has_augmentation:
        return "the model has an augmentation layer, which runs before the unfrozen blocks", None
    if distribute.worker_shard(strategy)[0] > 1:
        return "training runs on several workers, each with its own share of the data", None
    names = [layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)
             and not (layer.name == "augmentation" and mirrored(model))]
    if names != ["preprocessing", "backbone", "head"]:
        return f"the model is not image -> preprocessing -> backbone -> head (layers {names})", None
    from tltf.training.freeze import _start_index

    backbone = backbone_of(model)
    layers = list(getattr(backbone, "layers", [backbone]))
    with warnings.catch_warnings():  # `unfreeze` itself warns about too many blocks
        warnings.simplefilter("ignore")
        start = _start_index(model, backbone, unfreeze)
    below = [layer for layer in layers[:start] if not isinstance(layer, keras.layers.InputLayer)]
    if not below:
        return f"nothing below the unfrozen layers is frozen (unfreeze={unfreeze!r})", None
    for layer in [model.get_layer("preprocessing"), *below]:
        for inner in _walk_layers(layer):
            if isinstance(inner, _RANDOM) or type(inner).__name__.startswith("Random"):
                return (f"the frozen layer {inner.name!r} ({type(inner).__name__}) runs at "
                        "random in training"), None
    cut = _cut_tensor(layers[start:])
    if cut is None:
        return (f"the layers above the unfreeze boundary (from {layers[start].name!r}) take "
                "more than one tensor from the frozen layers below it"), None
    producer = next((layer for layer in below
                     if any(t is cut for t in _tensors(layer, "output"))), None)
    if producer is None:
        return "the layers above the unfreeze boundary read the backbone's input", None
    return None, Cut(cut, producer.name, math.prod(int(d) for d in cut.shape[1:]))


def _tensors(layer, which: str) -> list:
    """The input or output tensors of a layer's first call (the one in its model's graph)."""
    try:
        return keras.tree.flatten(getattr(layer, which))
    except (AttributeError, ValueError):  # a layer never called on symbolic tensors
        return []


def _cut_tensor(above: list):
    """The one tensor from below that the layers `above` read, or None."""
    made = {id(t) for layer in above for t in _tensors(layer, "output")}
    from_below = {id(t): t for layer in above for t in _tensors(layer, "input")
                  if id(t) not in made}
    if len(from_below) != 1 or not made:
        return None
    (cut,) = from_below.values()
    return cut if all(d is not None for d in cut.shape[1:]) else None


class TrunkOutputs(NamedTuple):
    """The frozen trunk's outputs for every training and validation image (`TrunkCache.outputs`)."""

    top: keras.Model  # the backbone's layers above the cut: trunk output -> backbone output
    data: Outputs  # the outputs as arrays and datasets (`_train_data.cache_outputs`)
    place: _store.Place
    seconds: float  # spent computing them


class TrunkCache:
    """Phase 2's cached trunk. `outputs()` computes the trunk's outputs once (phase 1 may ask
    first, and compute its features from them instead of from the images); calling it when
    phase 2 starts (after a resumed run's weights are back) returns a `TopData`, or None
    (with a warning) when the outputs would fit neither memory nor the disk of `cache_dir`
    (the run folder; the temp folder when None), where they are kept memory-mapped when
    they do not fit memory.

    The outputs stay valid from phase 1 to phase 2 of one call: nothing below the cut trains
    in either phase, and a checkpoint of the run holds the same values there.

    The training outputs are shuffled with the seed every epoch, endlessly (`fit` then needs
    `steps_per_epoch=TopData.steps`); a resumed run skips the `epochs_done` epochs' batches.
    """

    def __init__(self, option, model, cut: Cut, train, train_ds, val, val_ds, batch_size, seed,
                 verbose, note, cache_dir=None):
        self.option, self.model, self.cut, self.cache_dir = option, model, cut, cache_dir
        # A flip as the only augmentation: the mirror images' outputs are cached too.
        self.mirror = mirrored(model)
        self.train, self.train_ds, self.val, self.val_ds = train, train_ds, val, val_ds
        self.batch_size, self.seed, self.verbose, self.note = batch_size, seed, verbose, note
        self._outputs: TrunkOutputs | None = None
        self._failed: str | None = None

    def outputs(self, for_phase1: bool = False) -> TrunkOutputs | None:
        """The trunk's outputs, computed on the first call; None (and the reason kept for
        `__call__`) when they fit neither memory nor disk or Keras cannot split the backbone."""
        if self._outputs is not None or self._failed is not None:
            return self._outputs
        t0 = time.perf_counter()
        model, cut = self.model, self.cut
        n = images_at_most(self.train, self.train_ds, self.batch_size) * (2 if self.mirror else 1)
        if self.val_ds is not None:
            n += images_at_most(self.val, self.val_ds, self.batch_size)
        nbytes = n * cut.values * 4
        exact = known_size(self.train) is not None and (
            self.val_ds is None or known_size(self.val) is not None)
        images = f"{n} images" if exact else f"up to {n} images"
        if self.mirror:
            images += " (each training image twice: as it is and mirrored)"
        place = _store.choose(nbytes, self.cache_dir, f"trunk outputs of {images}")
        if not place.fits:
            self._failed = place.reason
            return None
        backbone = backbone_of(model)
        try:  # the frozen part, and the part above the cut that trains
            bottom = keras.Model(backbone.inputs, cut.tensor)
            top = keras.Model(cut.tensor, backbone.output, name=f"{backbone.name}_top")
        except ValueError as e:  # e.g. a KerasHub graph whose op names Keras cannot reuse
            _store.remove(place)
            self._failed = f"Keras cannot split the backbone at {cut.layer} ({e})"
            return None
        shape = "x".join(str(d) for d in cut.tensor.shape[1:])
        where = "" if place.folder is None else (
            f", on disk in {place.folder} and read memory-mapped: {place.reason}")
        uses = ("phase 1's features are computed from it, and in phase 2 the layers above it "
                "and the head train on it" if for_phase1
                else "the layers above it and the head train on it")
        self.note(f"{'phase 1' if for_phase1 else 'phase 2'}: caching the frozen trunk's output "
                  f"at {cut.layer} ({shape} values an image, {_gb(nbytes)} for {images}"
                  f"{where}); {uses}")
        preprocessing = model.get_layer("preprocessing")
        extract = _Extractor(lambda x, training=False: bottom(preprocessing(x), training=training))
        out = cache_outputs(extract, model, self.train, self.val_ds, self.batch_size, self.seed,
                            self.verbose, f"{'phase 1' if for_phase1 else 'phase 2'}: caching",
                            "trunk outputs", place=place, mirror=self.mirror)
        self._outputs = TrunkOutputs(top, out, place, time.perf_counter() - t0)
        return self._outputs

    def __call__(self, epochs_done: int = 0) -> TopData | None:
        t0 = time.perf_counter()
        computed = self.outputs()
        if computed is None:
            return self._fall_back(self._failed)
        out = computed.data
        steps = num_batches(self.train_ds)
        if math.ceil(len(out.y) / out.batch) != steps:
            self.release()
            return self._fall_back(f"the {steps} training batches are not all of the first "
                                   f"one's size ({out.batch})")
        # One order a epoch from one iterator (fit is given steps_per_epoch), so epoch k has
        # the same order in a resumed run as in an unbroken one.
        tr = out.train.repeat().skip(epochs_done * steps)
        inputs = keras.Input(tuple(self.cut.tensor.shape[1:]), name="trunk")
        outputs = head_of(self.model)(computed.top(inputs))
        top_model = keras.Model(inputs, outputs, name=f"{self.model.name}_top")
        # The first phase-2 epoch is charged with the trunk pass unless phase 1 was.
        return TopData(top_model, tr, out.val, steps, time.perf_counter() - t0)

    def release(self) -> None:
        """Frees the outputs (their folder, when on disk); a later call computes them again."""
        if self._outputs is not None:
            _store.remove(self._outputs.place)
        self._outputs = self._failed = None

    def _fall_back(self, reason: str) -> None:
        if self.option is True:
            raise ValueError(f"`trunk_cache=True` cannot cache phase 2's trunk: {reason}. "
                             "Use trunk_cache='auto' or False. Received: trunk_cache=True")
        warn(f"trunk_cache='auto' trains phase 2 on the full model: {reason}.")
