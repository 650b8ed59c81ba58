"""Hyperparameter search over unfreeze depth and learning rates, on KerasTuner.

`search` runs KerasTuner's own tuners over a `TransferHyperModel` (see
`tltf.tune.hypermodel`), clearing the Keras session after every trial and recording its
time, warm start and memory; it returns a `SearchResult`, which `plot_search` draws.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import time
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import numpy as np

from tltf._io import atomic_write
from tltf._progress import resolve_verbose
from tltf.tune.hypermodel import _DEFAULT_SPACE, TransferHyperModel

__all__ = ["SearchResult", "search", "plot_search"]

_TUNERS = ("bayesian", "hyperband", "random")


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
    project = Path(directory) / project_name
    train_ds, class_names, num_classes, size = _as_batches(train, True, batch_size, seed,
                                                           num_classes, "train", project)
    val_ds = _as_batches(val, False, batch_size, seed, num_classes, "val", project)[0]
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


def _as_batches(data, training, batch_size, seed, num_classes, arg, directory):
    """`tltf.data._batches.batches` for every trial: an `ImageDataset` is decoded once and cached
    (`cache="auto"`: in memory when it fits, else in the search's folder), then read by all."""
    from tltf.data._batches import batches

    if hasattr(data, "prepare") and hasattr(data, "num_classes"):
        num_classes = data.num_classes
    elif num_classes is None and (isinstance(data, tuple) or hasattr(data, "element_spec")):
        raise ValueError(f"`num_classes` is needed when `{arg}` is a tf.data.Dataset or arrays "
                         "(an ImageDataset knows it). Pass num_classes=... . "
                         "Received: num_classes=None")
    b = batches(data, arg, training=training, batch_size=batch_size, seed=seed, fit=True,
                num_classes=num_classes, cache="auto", cache_dir=directory)
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
