"""The search space and the training of one trial: a KerasTuner `HyperModel` over `fine_tune`.

`TransferHyperModel.build(hp)` calls `build_classifier`; `TransferHyperModel.fit(hp, ...)`
calls `fine_tune` twice (phase 1, the head on a frozen backbone, then phase 2 with the top
`unfreeze_blocks` blocks trainable), so the search trains exactly like `fine_tune` does.
With a `warm_start` directory, phase 1 runs once per (backbone, head settings): its head
weights are saved there and every later trial with the same head settings starts its
phase 2 from them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import numpy as np

from tltf._io import atomic_write, load_arrays, save_arrays
from tltf.backbones.registry import get_backbone
from tltf.models.classifier import build_classifier, compile_classifier
from tltf.models.parts import head_of
from tltf.training import recipe as _train

__all__ = ["TransferHyperModel"]

_HEAD_KNOBS = ("head_lr", "dropout", "label_smoothing", "augment")
_DEFAULT_SPACE = {
    "unfreeze_blocks": "auto",  # every depth 0 .. len(spec.blocks)
    "finetune_lr": (1e-5, 1e-3),  # log scale
    "head_lr": 1e-3,
    "dropout": [0.2, 0.5],
    "label_smoothing": [0.0, 0.1],
    "augment": None,
}


def _declare(hp, name: str, value: Any, *, log: bool = False, integer: bool = False):
    """Declares one knob: a `(low, high)` tuple is a range, a list a choice, else fixed."""
    if isinstance(value, tuple):
        if len(value) != 2 or not all(isinstance(v, (int, float)) for v in value):
            raise ValueError(
                f"A range for `{name}` must be a tuple of two numbers `(low, high)`; use a "
                f"list for a set of choices or a plain value to fix it. Received: {name}={value!r}"
            )
        low, high = value
        if integer:
            return hp.Int(name, int(low), int(high))
        return hp.Float(name, float(low), float(high), sampling="log" if log else "linear")
    if isinstance(value, list):
        if not value:
            raise ValueError(f"The choices for `{name}` must not be empty. Received: {name}=[]")
        choices = ["none" if v is None else v for v in value]
        return hp.Choice(name, choices)
    return hp.Fixed(name, "none" if value is None else value)


class TransferHyperModel(keras_tuner.HyperModel):
    """A KerasTuner `HyperModel` over the fine-tuning knobs of a tltf classifier.

    The search space, knob by knob (every argument below takes a `(low, high)` tuple for a
    range, a list for a set of choices, or a plain value to fix the knob):

    | knob | hyperparameter | default |
    |---|---|---|
    | depth | `unfreeze_blocks` (int) | `"auto"`: every depth from 0 to `len(spec.blocks)` |
    | phase-2 LR | `finetune_lr` (float, log) | `(1e-5, 1e-3)` |
    | phase-1 LR | `head_lr` | `1e-3` (fixed) |
    | head dropout | `dropout` | `[0.2, 0.5]` |
    | label smoothing | `label_smoothing` | `[0.0, 0.1]` |
    | backbone | `backbone` | fixed to `backbone`; a list makes it a choice |
    | augmentation | `augment` | `None` (fixed, stored as `"none"`) |

    With several backbones, the depth is a separate hyperparameter per backbone,
    `unfreeze_blocks/<name>`, active only when that backbone is chosen.

    Args:
        backbone: str or list of str. Registry name(s) of the backbone(s).
        num_classes: int. Number of classes.
        image_size: int or `None`. Input size; `None` uses the spec's default size.
        weights: str or `None`. Backbone weights, as for `build_classifier`. Defaults to
            `"imagenet"`.
        unfreeze_blocks: `"auto"`, int, tuple or list. Unfreeze depth in blocks.
        finetune_lr: float, tuple or list. Phase-2 learning rate (a range is log-scaled).
        head_lr: float, tuple or list. Phase-1 learning rate (a range is log-scaled).
        dropout: float, tuple or list. Dropout rate of the head.
        label_smoothing: float, tuple or list. Label smoothing of the loss.
        augment: policy, list of policies or `None`. Augmentation, as for
            `build_classifier`; strings only when it is a choice.
        head_epochs: int. Epochs of phase 1. Defaults to `3`.
        finetune_epochs: int. Epochs of phase 2 (Hyperband sets it per trial). Defaults to `5`.
        warm_start: str, `Path` or `None`. A directory for phase-1 head weights; when set,
            phase 1 runs once per distinct head setting and later trials load its weights.
        class_names: list of str or `None`. Stored in the head.
        seed: int or `None`. Seed of every trial's model and training. Defaults to `None`.

    Raises:
        ValueError: if a knob is malformed or `unfreeze_blocks` exceeds the backbone's
            number of blocks.

    Example:

    >>> hm = TransferHyperModel("mobilenet_v2", 2, image_size=32, weights=None)
    >>> hp = keras_tuner.HyperParameters()
    >>> model = hm.build(hp)
    >>> sorted(hp.values)
    ['augment', 'backbone', 'dropout', 'finetune_lr', 'head_lr', 'label_smoothing', 'unfreeze_blocks']
    """

    def __init__(
        self,
        backbone: str | list[str],
        num_classes: int,
        *,
        image_size: int | None = None,
        weights: str | None = "imagenet",
        unfreeze_blocks: Any = "auto",
        finetune_lr: Any = _DEFAULT_SPACE["finetune_lr"],
        head_lr: Any = _DEFAULT_SPACE["head_lr"],
        dropout: Any = _DEFAULT_SPACE["dropout"],
        label_smoothing: Any = _DEFAULT_SPACE["label_smoothing"],
        augment: Any = None,
        head_epochs: int = 3,
        finetune_epochs: int = 5,
        warm_start: str | os.PathLike | None = None,
        class_names: list[str] | None = None,
        seed: int | None = None,
        name: str | None = None,
    ):
        super().__init__(name=name, tunable=True)
        names = list(backbone) if isinstance(backbone, (list, tuple)) else [backbone]
        if not names:
            raise ValueError("`backbone` must name at least one backbone. Received: backbone=[]")
        self.specs = {n: get_backbone(n) for n in names}
        self.backbones = [spec.name for spec in self.specs.values()]
        self.specs = {spec.name: spec for spec in self.specs.values()}
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f"`num_classes` must be an int >= 2. Received: num_classes={num_classes!r}"
            )
        for label, epochs in (("head_epochs", head_epochs), ("finetune_epochs", finetune_epochs)):
            if not isinstance(epochs, int) or epochs < 1:
                raise ValueError(f"`{label}` must be an int >= 1. Received: {label}={epochs!r}")
        for spec in self.specs.values():
            _check_depth(unfreeze_blocks, spec)
        self.num_classes = num_classes
        self.image_size = image_size
        self.weights = weights
        self.space = {
            "unfreeze_blocks": unfreeze_blocks,
            "finetune_lr": finetune_lr,
            "head_lr": head_lr,
            "dropout": dropout,
            "label_smoothing": label_smoothing,
            "augment": augment,
        }
        self.head_epochs = head_epochs
        self.finetune_epochs = finetune_epochs
        self.warm_start = Path(warm_start) if warm_start is not None else None
        self.class_names = class_names
        self.seed = seed
        self.last_fit: dict[str, Any] = {}

    # -- the search space -------------------------------------------------------------------
    def knobs(self, hp) -> dict[str, Any]:
        """Declares the search space on `hp` and returns this trial's value of every knob.

        Args:
            hp: `keras_tuner.HyperParameters`.

        Returns:
            A dict with keys `backbone`, `unfreeze_blocks`, `finetune_lr`, `head_lr`,
            `dropout`, `label_smoothing` and `augment` (`None` for no augmentation).

        Example:

        >>> hm = TransferHyperModel("mobilenet_v2", 2, weights=None, unfreeze_blocks=3)
        >>> hm.knobs(keras_tuner.HyperParameters())["unfreeze_blocks"]
        3
        """
        space = self.space
        backbone = _declare(hp, "backbone", self.backbones if len(self.backbones) > 1
                            else self.backbones[0])
        if len(self.backbones) > 1:
            depth = None
            for name in self.backbones:
                with hp.conditional_scope("backbone", [name]):
                    d = _declare(hp, f"unfreeze_blocks/{name}",
                                 _depth_space(space["unfreeze_blocks"], self.specs[name]),
                                 integer=True)
                if name == backbone:
                    depth = d
        else:
            depth = _declare(hp, "unfreeze_blocks",
                             _depth_space(space["unfreeze_blocks"], self.specs[backbone]),
                             integer=True)
        augment = _declare(hp, "augment", space["augment"])
        return {
            "backbone": backbone,
            "unfreeze_blocks": int(depth),
            "finetune_lr": float(_declare(hp, "finetune_lr", space["finetune_lr"], log=True)),
            "head_lr": float(_declare(hp, "head_lr", space["head_lr"], log=True)),
            "dropout": float(_declare(hp, "dropout", space["dropout"])),
            "label_smoothing": float(_declare(hp, "label_smoothing", space["label_smoothing"])),
            "augment": None if augment == "none" else augment,
        }

    def build(self, hp) -> keras.Model:
        """Builds and compiles the classifier for this trial (phase-1 settings)."""
        k = self.knobs(hp)
        model = build_classifier(
            k["backbone"], self.num_classes, image_size=self.image_size, weights=self.weights,
            dropout=k["dropout"], augment=k["augment"], class_names=self.class_names,
            seed=self.seed,
        )
        compile_classifier(model, learning_rate=k["head_lr"], label_smoothing=k["label_smoothing"])
        return model

    # -- training: two calls of fine_tune, no loop of our own --------------------------------
    def fit(self, hp, model, train, val=None, *, callbacks=None, epochs=None, initial_epoch=0,
            verbose="auto", batch_size=32, **kwargs) -> keras.callbacks.History:
        """Trains one trial with `fine_tune` and returns the `History` of its phase 2.

        Phase 1 (the head) runs first, or is loaded from the warm-start directory; phase 2
        unfreezes the top `unfreeze_blocks` blocks and trains at `finetune_lr`. KerasTuner's
        callbacks (checkpointing, reporting) watch phase 2, so a trial's score is its best
        phase-2 epoch in both modes. Under Hyperband, `epochs - initial_epoch` replaces
        `finetune_epochs`, and a trial that continues a previous one skips phase 1.
        """
        k = self.knobs(hp)
        common = dict(batch_size=batch_size, label_smoothing=k["label_smoothing"],
                      seed=self.seed, verbose=verbose, **kwargs)
        finetune_epochs = self.finetune_epochs if epochs is None else epochs - initial_epoch
        info = {"head_reused": False, "phase1_seconds": 0.0}
        start = time.perf_counter()
        if not initial_epoch:
            info.update(self._phase1(model, train, val, k, common))
        probe = _TrainableProbe()
        t2 = time.perf_counter()
        callbacks = [probe, *(callbacks or [])]
        if k["unfreeze_blocks"]:
            result = _train.fine_tune(
                model, train, val, head_epochs=0, finetune_epochs=max(1, finetune_epochs),
                unfreeze=f"top_blocks:{k['unfreeze_blocks']}", finetune_lr=k["finetune_lr"],
                callbacks=callbacks, **common)
        else:  # depth 0: the backbone stays frozen and the head trains on at finetune_lr,
            # on the full model (not cached features) so the tuner's checkpoint fits it
            result = _train.fine_tune(
                model, train, val, head_epochs=max(1, finetune_epochs), finetune_epochs=0,
                head_lr=k["finetune_lr"], cache_features=False, callbacks=callbacks, **common)
        info.update(phase2_seconds=time.perf_counter() - t2,
                    seconds=time.perf_counter() - start,
                    trainable_weights=probe.trainable_weights,
                    trainable_params=probe.trainable_params)
        self.last_fit = info
        return _phase2_history(result.history)

    def _phase1(self, model, train, val, k, common) -> dict[str, Any]:
        head = head_of(model)
        if self.warm_start is not None:
            folder = self.warm_start / _head_key(k, self.head_epochs, self.image_size,
                                                 self.weights, self.seed)
            weights_file = folder / "head.npz"
            if weights_file.is_file():
                head.set_weights(load_arrays(weights_file))
                return {"head_reused": True, "head_dir": str(folder)}
        t1 = time.perf_counter()
        _train.fine_tune(model, train, val, head_epochs=self.head_epochs, finetune_epochs=0,
                         head_lr=k["head_lr"], **common)
        seconds = time.perf_counter() - t1
        if self.warm_start is None:
            return {"phase1_seconds": seconds}
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "settings.json", json.dumps(
            {**{n: k[n] for n in ("backbone", *_HEAD_KNOBS)}, "head_epochs": self.head_epochs,
             "seconds": seconds}, default=str, indent=1))
        save_arrays(weights_file, head.get_weights())  # last: a concurrent worker sees all or nothing
        return {"phase1_seconds": seconds, "head_dir": str(folder)}


class _TrainableProbe(keras.callbacks.Callback):
    """Records how many weights phase 2 really trains (after fine_tune's unfreeze)."""

    trainable_weights = None
    trainable_params = None

    def on_train_begin(self, logs=None):
        self.trainable_weights = len(self.model.trainable_weights)
        self.trainable_params = int(sum(np.prod(w.shape) for w in self.model.trainable_weights))


def _depth_space(value, spec):
    return (0, len(spec.blocks)) if value == "auto" else value


def _check_depth(value, spec) -> None:
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if v == "auto":
            continue
        if not isinstance(v, (int, np.integer)) or not 0 <= v <= len(spec.blocks):
            raise ValueError(
                f"`unfreeze_blocks` must be 'auto' or ints between 0 and {len(spec.blocks)} "
                f"(the number of blocks of '{spec.name}'). Received: unfreeze_blocks={value!r}"
            )


def _head_key(k, head_epochs, image_size, weights, seed) -> str:
    settings = {n: k[n] for n in ("backbone", *_HEAD_KNOBS)}
    settings.update(head_epochs=head_epochs, image_size=image_size, weights=weights, seed=seed)
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    return f"{k['backbone']}-{digest[:12]}"


def _phase2_history(history) -> keras.callbacks.History:
    """The phase-2 epochs of a `fine_tune` history, as the `History` KerasTuner scores."""
    hist = dict(getattr(history, "history", history))
    phases = hist.pop("phase", None)
    n = max((len(v) for v in hist.values() if isinstance(v, (list, tuple))), default=0)
    rows = list(range(n))
    if phases is not None:
        rows = [i for i in rows if phases[i] == 2] or rows
    out = keras.callbacks.History()
    out.history = {m: [float(v[i]) for i in rows] for m, v in hist.items()
                   if isinstance(v, (list, tuple)) and len(v) == n}
    out.epoch = list(range(len(rows)))
    return out
