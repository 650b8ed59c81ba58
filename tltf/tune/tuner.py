"""Hyperparameter search over unfreeze depth and learning rates, on KerasTuner.

`TransferHyperModel.build(hp)` calls `build_classifier`; `TransferHyperModel.fit(hp, ...)`
calls `fine_tune` twice (phase 1, the head on a frozen backbone, then phase 2 with the top
`unfreeze_blocks` blocks trainable), so the search trains exactly like `fine_tune` does.
With `warm_start=True` phase 1 runs once per (backbone, head settings): its head weights are
saved under the search directory and every later trial with the same head settings starts
its phase 2 from them.
"""

from __future__ import annotations

import dataclasses
import gc
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
from tltf._progress import resolve_verbose
from tltf.backbones.registry import get_backbone
from tltf.models.classifier import build_classifier, compile_classifier
from tltf.models.parts import head_of
from tltf.training import recipe as _train

__all__ = ["TransferHyperModel", "SearchResult", "search", "plot_search"]

_TUNERS = ("bayesian", "hyperband", "random")
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
        seed: int or `None`. Seed for training.

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


# -- the tuner: KerasTuner's own, plus cleanup, timing and memory records per trial ---------
class _TltfTunerMixin:
    """Clears the Keras session between trials and records time, warm start and RSS."""

    def run_trial(self, trial, *args, **kwargs):
        self.hypermodel.last_fit = {}
        results = super().run_trial(trial, *args, **kwargs)
        self._tltf_record = {"trial_id": trial.trial_id, **self.hypermodel.last_fit}
        return results

    def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
        # KerasTuner imports `tensorboard` for every trial under TensorFlow, even without a
        # TensorBoard callback; TensorFlow 2.21 no longer installs it. Only go there if needed.
        if any(type(c).__name__ == "TensorBoard" for c in callbacks):
            super()._configure_tensorboard_dir(callbacks, trial, execution)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        keras.backend.clear_session()
        gc.collect()
        record = dict(getattr(self, "_tltf_record", {}), trial_id=trial.trial_id,
                      rss_mb=_rss_mb(), status=str(trial.status))
        self._tltf_record = {}
        self.tltf_trials_run.append(record)
        path = Path(self.get_trial_dir(trial.trial_id)) / "tltf_trial.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(record, default=str, indent=1))


def _tuner_class(kind: str):
    base = {"bayesian": keras_tuner.BayesianOptimization, "hyperband": keras_tuner.Hyperband,
            "random": keras_tuner.RandomSearch}[kind]
    return type(f"Tltf{base.__name__}", (_TltfTunerMixin, base), {})


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


@dataclasses.dataclass
class SearchResult:
    """What `search` found.

    Attributes:
        best_hyperparameters: dict. The best trial's hyperparameter values (`None` on a
            worker of a distributed search).
        best_model: `keras.Model` or `None`. The best model (see `best_model_source`).
        best_model_source: str or `None`. `"restored"` (the best trial's checkpoint at its
            best phase-2 epoch), `"retrained"` (trained again from the best hyperparameters
            on `train`) or `None` (not asked for, or a worker).
        best_score: float or `None`. The best trial's objective value.
        objective: str. The objective's name.
        trials: list of dict. One row per trial: id, status, score, every hyperparameter,
            and tltf's records (`seconds`, `phase1_seconds`, `head_reused`,
            `trainable_params`, `rss_mb`) when this directory holds them.
        trials_run: list of dict. The records of the trials this call ran (a resumed search
            lists only the new ones).
        directory: `Path`. The search's project directory.
        seconds: float. Wall time of this call's search.
        tuner: the `keras_tuner.Tuner`.
    """

    best_hyperparameters: dict | None
    best_model: keras.Model | None
    best_model_source: str | None
    best_score: float | None
    objective: str
    trials: list[dict]
    trials_run: list[dict]
    directory: Path
    seconds: float
    tuner: Any = dataclasses.field(repr=False, default=None)

    def to_dataframe(self):
        """The trials as a `pandas.DataFrame`, best first."""
        import pandas as pd

        return pd.DataFrame(self.trials)

    def table(self, columns: list[str] | None = None) -> str:
        """The trials as a printable text table, best first."""
        frame = self.to_dataframe()
        if columns is not None:
            frame = frame[[c for c in columns if c in frame.columns]]
        return frame.to_string(index=False, float_format=lambda v: f"{v:.4g}")

    def __str__(self) -> str:
        return (f"Search of {len(self.trials)} trials in {self.directory}; best "
                f"{self.objective}={self.best_score}\n" + self.table())

    def plot(self, path: str | os.PathLike) -> Path:
        """Saves the objective against unfreeze depth and learning rate; see `plot_search`."""
        return plot_search(self, path)


def search(
    train,
    val,
    *,
    backbone: str | list[str] = "mobilenet_v2",
    tuner: str = "bayesian",
    max_trials: int = 10,
    directory: str | os.PathLike,
    objective: str = "val_accuracy",
    overwrite: bool = False,
    project_name: str = "search",
    num_classes: int | None = None,
    image_size: int | None = None,
    weights: str | None = "imagenet",
    warm_start: bool = True,
    head_epochs: int = 3,
    finetune_epochs: int = 5,
    batch_size: int = 32,
    best_model: str | None = "restore",
    seed: int | None = 0,
    callbacks: list | None = None,
    verbose: int | str = "auto",
    **space,
) -> SearchResult:
    """Searches unfreeze depth, learning rates and head settings with KerasTuner.

    Every trial builds a classifier with `build_classifier` and trains it with `fine_tune`
    (see `TransferHyperModel`). The search lives in `directory/project_name`: rerunning the
    same call resumes it (finished trials are kept, not re-run); `overwrite=True` starts over.
    Under KerasTuner's distributed mode (`KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`,
    `KERASTUNER_ORACLE_PORT` set) the chief serves the oracle and returns the results once
    the workers are done; a worker runs trials and returns only its own records.

    Args:
        train: `ImageDataset`, batched `tf.data.Dataset` of (images, labels), or a tuple
            (images, labels) of arrays (then pass `num_classes`).
        val: same types as `train`; the objective is measured on it.
        backbone: str or list of str. Backbone(s) to search. Defaults to `"mobilenet_v2"`.
        tuner: str. `"bayesian"`, `"hyperband"` (its budget is `finetune_epochs` per
            trial and it ignores `max_trials`) or `"random"`. Defaults to `"bayesian"`.
        max_trials: int. Number of trials. Defaults to `10`.
        directory: str or `Path`. Where the search keeps its state.
        objective: str. Metric to maximise or minimise. Defaults to `"val_accuracy"`.
        overwrite: bool. Start over instead of resuming. Defaults to `False`.
        project_name: str. Sub-folder of `directory`. Defaults to `"search"`.
        num_classes: int or `None`. Needed when `train` is a `tf.data.Dataset`.
        image_size: int or `None`. Defaults to the data's image size.
        weights: str or `None`. Backbone weights. Defaults to `"imagenet"`.
        warm_start: bool. Train phase 1 once per head setting and start every trial's
            phase 2 from it. Defaults to `True`.
        head_epochs: int. Phase-1 epochs. Defaults to `3`.
        finetune_epochs: int. Phase-2 epochs. Defaults to `5`.
        batch_size: int. Defaults to `32`.
        best_model: `"restore"`, `"retrain"` or `None`. How to produce the best model.
            Defaults to `"restore"`.
        seed: int or `None`. Seed of the tuner (the same seed proposes the same trials)
            and of training. Defaults to `0`.
        callbacks: list of `keras.callbacks.Callback` or `None`. Passed to phase 2.
        verbose: 0 (silent), 1 (KerasTuner's trial display and Keras' progress bars), 2 (the
            trial display and one line per epoch) or `"auto"` (1 on a terminal, 2 in a file
            or CI log). Defaults to `"auto"`.
        **space: knobs of `TransferHyperModel` (`unfreeze_blocks`, `finetune_lr`,
            `head_lr`, `dropout`, `label_smoothing`, `augment`).

    Returns:
        A `SearchResult`.

    Raises:
        ValueError: if `tuner`, `max_trials`, `best_model` or a knob is invalid, or
            `num_classes` is missing for a `tf.data.Dataset`.
        TypeError: if `space` holds an unknown knob.

    Example:

    >>> import tempfile, numpy as np, tensorflow as tf
    >>> x = np.random.randint(0, 256, (8, 32, 32, 3)).astype("float32")
    >>> y = np.arange(8) % 2
    >>> ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    >>> result = search(ds, ds, num_classes=2, weights=None, max_trials=2, tuner="random",
    ...                 directory=tempfile.mkdtemp(), head_epochs=1, finetune_epochs=1,
    ...                 verbose=0)
    >>> len(result.trials)
    2
    """
    if tuner not in _TUNERS:
        raise ValueError(f"`tuner` must be one of {_TUNERS}. Received: tuner={tuner!r}")
    if not isinstance(max_trials, int) or max_trials < 1:
        raise ValueError(f"`max_trials` must be an int >= 1. Received: max_trials={max_trials!r}")
    if best_model not in ("restore", "retrain", None):
        raise ValueError("`best_model` must be 'restore', 'retrain' or None. "
                         f"Received: best_model={best_model!r}")
    unknown = sorted(set(space) - set(_DEFAULT_SPACE))
    if unknown:
        raise TypeError(f"search() got unknown keyword arguments {unknown}; the search-space "
                        f"knobs are {sorted(_DEFAULT_SPACE)}. Received: {unknown[0]}="
                        f"{space[unknown[0]]!r}")
    verbose = resolve_verbose(verbose)
    train_ds, class_names, num_classes, size = _as_batches(train, True, batch_size, seed,
                                                           num_classes, "train")
    val_ds = _as_batches(val, False, batch_size, seed, num_classes, "val")[0]
    project = Path(directory) / project_name
    hypermodel = TransferHyperModel(
        backbone, num_classes, image_size=image_size or size, weights=weights,
        head_epochs=head_epochs, finetune_epochs=finetune_epochs, class_names=class_names,
        warm_start=project / "warm_start" if warm_start else None, seed=seed, **space)
    budget = ({"max_epochs": finetune_epochs, "factor": 3} if tuner == "hyperband"
              else {"max_trials": max_trials})
    # KerasTuner reads seed=0 as "no seed" (`seed or random.randint(...)`): shift by one.
    the_tuner = _tuner_class(tuner)(
        hypermodel=hypermodel, objective=objective, directory=str(directory),
        project_name=project_name, overwrite=overwrite,
        seed=None if seed is None else seed + 1, **budget)
    the_tuner.tltf_trials_run = []
    start = time.perf_counter()
    the_tuner.search(train_ds, val_ds, callbacks=list(callbacks or []), verbose=verbose,
                     batch_size=batch_size)
    seconds = time.perf_counter() - start
    name = the_tuner.oracle.objective.name
    if os.environ.get("KERASTUNER_ORACLE_IP") and os.environ.get(
            "KERASTUNER_TUNER_ID", "chief") != "chief":
        return SearchResult(None, None, None, None, name, list(the_tuner.tltf_trials_run),
                            list(the_tuner.tltf_trials_run), project, seconds, the_tuner)
    trials = _trial_rows(the_tuner)
    best = the_tuner.oracle.get_best_trials(1)
    model, source = None, None
    if best and best_model == "restore":
        model, source = the_tuner.load_model(best[0]), "restored"
    elif best and best_model == "retrain":
        model = the_tuner.hypermodel.build(best[0].hyperparameters)
        the_tuner.hypermodel.fit(best[0].hyperparameters, model, train_ds, val_ds,
                                 verbose=verbose, batch_size=batch_size)
        source = "retrained"
    return SearchResult(
        dict(best[0].hyperparameters.values) if best else None, model, source,
        best[0].score if best else None, name, trials, list(the_tuner.tltf_trials_run),
        project, seconds, the_tuner)


def _as_batches(data, training, batch_size, seed, num_classes, arg):
    """`tltf.data._batches.batches` for every trial; an `ImageDataset` is cached in memory once."""
    from tltf.data._batches import batches

    if hasattr(data, "prepare") and hasattr(data, "num_classes"):
        num_classes = data.num_classes
    elif num_classes is None and (isinstance(data, tuple) or hasattr(data, "element_spec")):
        raise ValueError(f"`num_classes` is needed when `{arg}` is a tf.data.Dataset or arrays "
                         "(an ImageDataset knows it). Pass num_classes=... . "
                         "Received: num_classes=None")
    b = batches(data, arg, training=training, batch_size=batch_size, seed=seed, fit=True,
                num_classes=num_classes, cache="memory")
    return b.data, b.class_names, num_classes, (b.image_size or (None,))[0]


def _trial_rows(the_tuner) -> list[dict]:
    rows = []
    for trial in the_tuner.oracle.trials.values():
        row = {"trial_id": trial.trial_id, "status": str(trial.status), "score": trial.score}
        values = dict(trial.hyperparameters.values)
        for key in [k for k in values if k.startswith("unfreeze_blocks/")]:
            if values.get("backbone") == key.split("/", 1)[1]:
                values["unfreeze_blocks"] = values[key]
        row.update({k: v for k, v in values.items() if not k.startswith("unfreeze_blocks/")})
        record = Path(the_tuner.get_trial_dir(trial.trial_id)) / "tltf_trial.json"
        if record.is_file():
            extra = json.loads(record.read_text())
            row.update({k: extra[k] for k in ("seconds", "phase1_seconds", "phase2_seconds",
                                              "head_reused", "trainable_params", "rss_mb")
                        if k in extra})
        rows.append(row)
    direction = the_tuner.oracle.objective.direction
    rows.sort(key=lambda r: (r["score"] is None,
                             -(r["score"] or 0) if direction == "max" else (r["score"] or 0)))
    return rows


def plot_search(result: SearchResult | list[dict], path: str | os.PathLike, *,
                objective: str | None = None) -> Path:
    """Saves a PNG of the objective against unfreeze depth and fine-tune learning rate.

    Three panels: the objective against depth, against learning rate (log), and depth
    against learning rate with the objective as colour.

    Args:
        result: `SearchResult` or its `trials` list.
        path: str or `Path`. Where to write the PNG.
        objective: str or `None`. Axis label; defaults to the result's objective.

    Returns:
        The path written.

    Raises:
        ValueError: if no finished trial has an `unfreeze_blocks`, `finetune_lr` and score.

    Example:

    >>> import tempfile
    >>> rows = [{"unfreeze_blocks": 2, "finetune_lr": 1e-4, "score": 0.9},
    ...         {"unfreeze_blocks": 5, "finetune_lr": 1e-5, "score": 0.8}]
    >>> plot_search(rows, tempfile.mkdtemp() + "/search.png").name
    'search.png'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    trials = result.trials if isinstance(result, SearchResult) else list(result)
    label = objective or (result.objective if isinstance(result, SearchResult) else "score")
    rows = [r for r in trials if r.get("score") is not None
            and r.get("unfreeze_blocks") is not None and r.get("finetune_lr") is not None]
    if not rows:
        raise ValueError("No finished trial with `unfreeze_blocks`, `finetune_lr` and a score "
                         f"to plot. Received: {len(trials)} trials")
    depth = np.array([r["unfreeze_blocks"] for r in rows], dtype=float)
    lr = np.array([r["finetune_lr"] for r in rows], dtype=float)
    score = np.array([r["score"] for r in rows], dtype=float)
    fig = Figure(figsize=(13, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    ax1.scatter(depth, score)
    ax1.set(xlabel="unfreeze_blocks", ylabel=label, title=f"{label} vs depth")
    ax2.scatter(lr, score)
    ax2.set(xscale="log", xlabel="finetune_lr", ylabel=label, title=f"{label} vs learning rate")
    points = ax3.scatter(depth, lr, c=score, cmap="viridis", s=60)
    ax3.set(yscale="log", xlabel="unfreeze_blocks", ylabel="finetune_lr",
            title="depth x learning rate")
    fig.colorbar(points, ax=ax3, label=label)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
