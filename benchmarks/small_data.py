"""Small data: `tltf.fine_tune` defaults against two careful experts, 20 to 500 images a class.

For each data set in ../shared/datasets (`cats_and_dogs_filtered`, 2 classes;
`flowers`, 5 classes, 150 training images a class), training subsets of 20, 100 and 500
images a class (capped at what the data set has; the real count is printed), each drawn
anew for every seed, and three methods run side by side in one process, all on MobileNetV2
with ImageNet weights (from ../shared/keras_weights, through a seeded KERAS_HOME) at the
same image size (160 px by default, the tutorial's):

(a) recipe: the TensorFlow tutorial "Transfer learning and fine-tuning", with the one fix
    Keras 3 needs. Data from `keras.utils.image_dataset_from_directory` (batch 32, shuffled,
    seeded) over a temporary folder of symlinks to the subset; model = RandomFlip
    ("horizontal") + RandomRotation(0.2) -> Rescaling(1/127.5, offset=-1) (what
    `mobilenet_v2.preprocess_input` computes) -> base(training=False) ->
    GlobalAveragePooling2D -> Dropout(0.2) -> Dense (1 logit with binary cross-entropy from
    logits for 2 classes, as the tutorial; n logits with sparse categorical cross-entropy
    from logits for more). Adam 1e-4 for 10 epochs on the frozen base; then
    `base.trainable = True`, layers below index 100 frozen AND every BatchNormalization
    layer kept `trainable=False` (without that, Keras 3 trains the BN statistics and the
    tutorial collapses), recompiled with RMSprop 1e-5, 10 more epochs. No validation data,
    so no early stopping and no choice of epoch.
(b) probe: cross-validated logistic regression on pooled features. The same MobileNetV2
    with `pooling="avg"` embeds the training subset, decoded with Pillow (no
    augmentation); scikit-learn StandardScaler + LogisticRegressionCV (lbfgs, L2, 10 Cs
    from 1e-4 to 1e4, 5-fold stratified CV shuffled with the seed, C chosen by log loss,
    max_iter 5000), refit on the whole subset.
(c) tltf: `tltf.load_image_folder(subset, image_size=S)`,
    `tltf.build_classifier("mobilenet_v2", n, image_size=S)` and
    `tltf.fine_tune(model, train, None, seed=seed, verbose=0)`, every other argument at
    its default (no validation data, so no early stopping and no choice of epoch on the
    scoring set). The only argument added is `cache_dir` (a fresh temporary folder per
    run), so every run pays its own file checks, as a first run would, and nothing is
    written to ~/.cache. `--fine-tune NAME=VALUE ...` passes more `fine_tune` arguments
    (e.g. `head_fit=adam` for the Adam phase 1 of earlier versions, `finetune_epochs=0`).

Scoring is independent of all three pipelines: every validation file is decoded once per
data set with Pillow (RGB, EXIF orientation applied, resized to SxS with antialiased
bicubic) into uint8 arrays, and each trained model predicts on those raw pixels (for (b),
backbone features of those arrays, same preprocessing). Accuracy = argmax (or logit > 0)
against the label; the class order is the sorted folder names for every method.

Wall time of a run = everything the method does from reading its own files to a trained
model (building the model and loading its weights included; for (b), decoding and
embedding the training subset plus the CV fit). Predicting the validation images is
scoring and is not timed. Subset selection, the symlink folder and the shared validation
arrays are not timed either. `keras.backend.clear_session()` and `gc.collect()` run between
runs. On a shared machine, times are noisy: compare them within one invocation.

Printed: a row per (data set, images per class, method) with the mean +- sample std of
validation accuracy over seeds, min-max, and mean wall time; then, per (data set, size),
the targets, each marked met or missed: (c) mean >= (a) mean + 1.5 points, (c) mean >= (b)
mean + 1 point, (c) std <= (a) std, (c) time <= 1/3 of (a)'s.

Run (the full default run, 2 data sets x 3 sizes x 5 seeds x 3 methods, takes about 3-4
hours on 2 otherwise idle CPU cores, twice that when they are shared; the smoke run below
takes about 4 minutes):

    .venv/bin/python benchmarks/small_data.py
    .venv/bin/python benchmarks/small_data.py --datasets flowers --sizes 20 --seeds 1 \
        --recipe-epochs 1 1                                  # smoke run, a few minutes
    .venv/bin/python benchmarks/small_data.py --methods probe tltf --seed-list 3 4 \
        --json small_data.json
    .venv/bin/python benchmarks/small_data.py --datasets flowers cats_and_dogs_filtered \
        --sizes 20 100 --seeds 3 --methods probe tltf --fine-tune head_fit=adam  # before

Measured (seeds 0-2, 2 shared cores; mean +- std of validation accuracy, mean wall time of a
run), tltf before (`head_fit=adam`, 5 Adam epochs then 10 phase-2 epochs) and with the
defaults (the head fitted as a cross-validated logistic regression; no phase 2 below 100
images a class without validation data). The two (c) columns come from two invocations on
differently loaded cores (the defaults' run shared them with a full test run), so their
times compare only within a column; the accuracies do not depend on the load:

| data, images a class | (b) probe | (c) before | (c) defaults |
|---|---|---|---|
| flowers, 20 | 79.7 +- 2.7 | 71.3 +- 1.5 (67 s) | 80.3 +- 2.5 (7 s) |
| flowers, 100 | 84.3 +- 1.2 | 81.7 +- 0.5 (216 s) | 84.1 +- 1.0 (133 s) |
| cats_and_dogs_filtered, 20 | 94.6 +- 0.3 | 91.4 +- 1.2 (16 s) | 94.8 +- 0.5 (10 s) |
| cats_and_dogs_filtered, 100 | 96.1 +- 0.5 | 94.4 +- 0.5 (52 s) | 95.8 +- 0.8 (146 s) |
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = ROOT.parent / "shared"
DATASETS = ("cats_and_dogs_filtered", "flowers")
METHODS = ("recipe", "probe", "tltf")
LABELS = {"recipe": "(a) recipe, BN frozen", "probe": "(b) features + LogRegCV",
          "tltf": "(c) tltf defaults"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def _seed_keras_home(shared: Path) -> None:
    """Points KERAS_HOME at a folder seeded from `shared/keras_weights` (before keras loads)."""
    if os.environ.get("KERAS_HOME"):
        return
    sys.path.insert(0, str(ROOT / "tools"))
    from seed_keras_home import seed_keras_home

    home = seed_keras_home(source=shared / "keras_weights")
    if home is None:
        raise SystemExit(f"no weights in {shared / 'keras_weights'}; this benchmark needs them")
    os.environ["KERAS_HOME"] = str(home)


def _class_files(folder: Path) -> dict[str, list[Path]]:
    """Sorted class folder name -> sorted image files."""
    return {d.name: sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
            for d in sorted(folder.iterdir()) if d.is_dir()}


def _find_dataset(shared: Path, name: str):
    """(train files by class, validation files by class), or a one-line reason to skip."""
    root = shared / "datasets" / name
    if not (root / "train").is_dir() or not (root / "validation").is_dir():
        return f"no {root}/train and {root}/validation folders"
    train, val = _class_files(root / "train"), _class_files(root / "validation")
    if list(train) != list(val):
        return f"train classes {list(train)} differ from validation classes {list(val)}"
    if len(train) < 2 or not all(train.values()) or not all(val.values()):
        return f"needs at least 2 classes with images in both splits, got {list(train)}"
    return train, val


def _found_datasets(shared: Path, names) -> dict:
    """{name: (train files by class, validation files by class)} of the data sets found; a
    line for each one skipped and why, and one on stderr when none is found."""
    found = {}
    for name in names:
        data = _find_dataset(shared, name)
        if isinstance(data, str):
            print(f"skipping {name}: {data}")
        else:
            found[name] = data
    if not found:
        print(f"no data set found in {shared / 'datasets'}", file=sys.stderr)
    return found


def _decode(files, size: int):
    """Pillow: RGB, EXIF-transposed, antialiased bicubic resize to size x size; uint8."""
    import numpy as np
    from PIL import Image, ImageOps

    out = np.empty((len(files), size, size, 3), dtype="uint8")
    for i, f in enumerate(files):
        with Image.open(f) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            out[i] = np.asarray(img.resize((size, size), Image.BICUBIC))
    return out


def _subset(train: dict[str, list[Path]], per_class: int, seed: int) -> dict[str, list[Path]]:
    """`per_class` files of each class (all when fewer), drawn without replacement."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {}
    for cls, files in train.items():
        pick = rng.choice(len(files), size=min(per_class, len(files)), replace=False)
        out[cls] = [files[i] for i in sorted(pick)]
    return out


def _link_folder(subset: dict[str, list[Path]], dest: Path) -> Path:
    """A `dest/<class>/<file>` folder of symlinks to the subset's files."""
    for cls, files in subset.items():
        (dest / cls).mkdir(parents=True)
        for f in files:
            (dest / cls / f.name).symlink_to(f.resolve())
    return dest


def _predict(fn, x, chunk: int = 250):
    """`fn` on float32 copies of `x` in chunks (the uint8 arrays stay small)."""
    import numpy as np

    return np.concatenate([np.asarray(fn(x[i:i + chunk].astype("float32")))
                           for i in range(0, len(x), chunk)])


def _labels(out):
    """Class indices from model outputs: argmax, or logit > 0 for one output."""
    import numpy as np

    return (out[:, 0] > 0).astype(int) if out.shape[-1] == 1 else np.argmax(out, axis=-1)


def run_recipe(folder: Path, classes: list[str], size: int, seed: int, epochs: tuple[int, int]):
    """(a) The tutorial's recipe with BatchNorm kept frozen in phase 2; returns predict(x)."""
    import keras

    # Keras 3.15 warns that fit's default shuffle=True is ignored for a tf.data input (the
    # data set is already shuffled, as in the tutorial); the warning says nothing here.
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
    keras.utils.set_random_seed(seed)
    train = keras.utils.image_dataset_from_directory(
        folder, image_size=(size, size), batch_size=32, shuffle=True, seed=seed,
        class_names=classes, verbose=False)
    train = train.prefetch(2)
    base = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False,
                                          weights="imagenet")
    base.trainable = False
    augment = keras.Sequential([keras.layers.RandomFlip("horizontal"),
                                keras.layers.RandomRotation(0.2)])
    inputs = keras.Input(shape=(size, size, 3))
    x = augment(inputs)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    binary = len(classes) == 2
    model = keras.Model(inputs, keras.layers.Dense(1 if binary else len(classes))(x))
    loss = (keras.losses.BinaryCrossentropy(from_logits=True) if binary
            else keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-4), loss=loss)
    model.fit(train, epochs=epochs[0], verbose=0)
    if epochs[1]:
        base.trainable = True
        for layer in base.layers[:100]:
            layer.trainable = False
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=1e-5), loss=loss)
        model.fit(train, epochs=epochs[0] + epochs[1], initial_epoch=epochs[0], verbose=0)
    return lambda images: _labels(_predict(lambda b: model.predict(b, verbose=0), images))


def _logistic_regression_cv(seed: int):
    """StandardScaler + LogisticRegressionCV (lbfgs, L2, 10 Cs, 5-fold stratified CV)."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    kwargs = dict(Cs=10, cv=StratifiedKFold(5, shuffle=True, random_state=seed),
                  solver="lbfgs", scoring="neg_log_loss", max_iter=5000)
    params = inspect.signature(LogisticRegressionCV).parameters
    if "l1_ratios" in params and params["penalty"].default == "deprecated":
        kwargs["l1_ratios"] = (0.0,)  # scikit-learn >= 1.8: pure L2 is l1_ratio 0
    else:
        kwargs["penalty"] = "l2"
    if "use_legacy_attributes" in params:
        kwargs["use_legacy_attributes"] = False
    return make_pipeline(StandardScaler(), LogisticRegressionCV(**kwargs))


def run_probe(subset: dict[str, list[Path]], size: int, seed: int):
    """(b) LogisticRegressionCV on pooled MobileNetV2 features; returns predict(x)."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(seed)
    files = [f for cls in subset for f in subset[cls]]
    y = np.concatenate([np.full(len(subset[cls]), i) for i, cls in enumerate(subset)])
    base = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False,
                                          weights="imagenet", pooling="avg")

    def embed(images):
        return _predict(lambda b: base.predict(b / 127.5 - 1.0, batch_size=32, verbose=0),
                        images)

    classifier = _logistic_regression_cv(seed).fit(embed(_decode(files, size)), y)
    return lambda images: classifier.predict(embed(images))


def run_tltf(folder: Path, classes: list[str], size: int, seed: int, cache_dir: Path,
             options: dict | None = None):
    """(c) `tltf.fine_tune` with its defaults (or `options`), no validation data; returns
    predict(x)."""
    import tltf

    train = tltf.load_image_folder(folder, image_size=size, cache_dir=cache_dir)
    if list(train.class_names) != classes:
        raise ValueError(f"tltf class order {train.class_names} is not {classes}")
    model = tltf.build_classifier("mobilenet_v2", len(classes), image_size=size)
    tltf.fine_tune(model, train, None, seed=seed, verbose=0, **(options or {}))
    return lambda images: _labels(_predict(lambda b: model.predict(b, verbose=0), images))


def _one_run(method: str, subset, classes, size: int, seed: int, epochs, work: Path,
             options: dict | None = None):
    """Trains one method on one subset; returns (predict, wall seconds)."""
    folder = _link_folder(subset, work / "subset")
    start = time.perf_counter()
    if method == "recipe":
        predict = run_recipe(folder, classes, size, seed, epochs)
    elif method == "probe":
        predict = run_probe(subset, size, seed)
    else:
        predict = run_tltf(folder, classes, size, seed, work / "tltf-cache", options)
    return predict, time.perf_counter() - start


def _stats(values):
    import numpy as np

    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}


def _summarise(runs):
    """One row per (data set, images per class, method), in run order."""
    groups = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["per_class"], r["method"]), []).append(r)
    rows = []
    for (dataset, per_class, method), rs in groups.items():
        acc = _stats([100 * r["accuracy"] for r in rs])
        rows.append({"dataset": dataset, "per_class": per_class, "method": method,
                     "seeds": [r["seed"] for r in rs], "accuracy": acc,
                     "seconds": _stats([r["seconds"] for r in rs])["mean"]})
    return rows


def _targets(rows):
    """Per (data set, size): the four targets of (c) against (a) and (b), met or missed."""
    by = {(r["dataset"], r["per_class"], r["method"]): r for r in rows}
    out = []
    for dataset, per_class in dict.fromkeys((r["dataset"], r["per_class"]) for r in rows):
        a, b, c = (by.get((dataset, per_class, m)) for m in METHODS)
        checks = []
        if c and a:
            checks += [
                ("(c) mean >= (a) mean + 1.5 pt",
                 f"{c['accuracy']['mean']:.1f} vs {a['accuracy']['mean'] + 1.5:.1f}",
                 c["accuracy"]["mean"] >= a["accuracy"]["mean"] + 1.5 - 1e-9),
                ("(c) std <= (a) std",
                 f"{c['accuracy']['std']:.1f} vs {a['accuracy']['std']:.1f}",
                 c["accuracy"]["std"] <= a["accuracy"]["std"] + 1e-9),
                ("(c) time <= 1/3 of (a)",
                 f"{c['seconds']:.0f}s vs {a['seconds'] / 3:.0f}s",
                 c["seconds"] <= a["seconds"] / 3)]
        if c and b:
            checks.insert(1 if a else 0, (
                "(c) mean >= (b) mean + 1 pt",
                f"{c['accuracy']['mean']:.1f} vs {b['accuracy']['mean'] + 1:.1f}",
                c["accuracy"]["mean"] >= b["accuracy"]["mean"] + 1 - 1e-9))
        out.append({"dataset": dataset, "per_class": per_class,
                    "checks": [{"target": t, "figures": f, "met": bool(m)} for t, f, m in checks]})
    return out


def _print_report(rows, targets) -> None:
    print(f"\n{'data set':24s} {'/class':>6s} {'method':26s} {'seeds':>5s} "
          f"{'val acc % mean +- std':>22s} {'min-max':>12s} {'time s':>7s}")
    for r in rows:
        a = r["accuracy"]
        print(f"{r['dataset']:24s} {r['per_class']:>6d} {LABELS[r['method']]:26s} "
              f"{len(r['seeds']):>5d} {a['mean']:>13.1f} +- {a['std']:4.1f} "
              f"{a['min']:>5.1f}-{a['max']:<5.1f} {r['seconds']:>8.0f}")
    print("\ntargets")
    for t in targets:
        print(f"{t['dataset']}, {t['per_class']} per class:")
        if not t["checks"]:
            print("  n/a (needs (c) and (a) or (b))")
        for c in t["checks"]:
            print(f"  {'met   ' if c['met'] else 'MISSED'} {c['target']:32s} {c['figures']}")


def _fine_tune_options(parser, pairs: list[str]) -> dict:
    """`["head_fit=adam", "finetune_epochs=5"]` -> `{"head_fit": "adam", "finetune_epochs": 5}`."""
    options = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            parser.error(f"--fine-tune takes NAME=VALUE pairs, got {pair!r}")
        try:
            options[name] = json.loads(value)
        except ValueError:
            options[name] = value
    return options


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), metavar="NAME",
                        help=f"folders of SHARED/datasets (default: {' '.join(DATASETS)})")
    parser.add_argument("--sizes", nargs="+", type=int, default=[20, 100, 500], metavar="N",
                        help="training images per class, capped at what a class has "
                             "(default: 20 100 500)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, default=5, metavar="N",
                       help="run seeds 0..N-1 (default: 5)")
    seeds.add_argument("--seed-list", nargs="+", type=int, metavar="SEED",
                       help="run exactly these seeds")
    parser.add_argument("--image-size", type=int, default=160,
                        help="square input size, one MobileNetV2 has weights for (default: 160)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="recipe (a), probe (b), tltf (c) (default: all three)")
    parser.add_argument("--recipe-epochs", nargs=2, type=int, default=[10, 10],
                        metavar=("FROZEN", "FINETUNE"),
                        help="epochs of the recipe's two phases (default: 10 10)")
    parser.add_argument("--fine-tune", nargs="+", default=[], metavar="NAME=VALUE",
                        help="arguments of tltf.fine_tune for (c), a VALUE read as JSON when "
                             "it parses, else as a string (e.g. head_fit=adam finetune_epochs=5)")
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="write every run's figures, the table and the targets here")
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED,
                        help="folder holding datasets/ and keras_weights/ "
                             f"(default: {DEFAULT_SHARED})")
    args = parser.parse_args(argv)
    seed_list = args.seed_list if args.seed_list is not None else list(range(args.seeds))
    options = _fine_tune_options(parser, args.fine_tune)
    if not seed_list or min(args.sizes) < 1 or min(args.recipe_epochs) < 0:
        parser.error("needs at least one seed, sizes >= 1 and recipe epochs >= 0")

    found = _found_datasets(args.shared, args.datasets)
    if not found:
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _seed_keras_home(args.shared)
    sys.path.insert(0, str(ROOT))
    import keras
    import numpy as np

    size, epochs, runs = args.image_size, tuple(args.recipe_epochs), []
    if options and "tltf" in args.methods:
        print(f"(c) tltf.fine_tune with {options}, other arguments at their defaults")
    t_all = time.perf_counter()
    for name, (train, val) in found.items():
        classes = list(train)
        t0 = time.perf_counter()
        x_val = _decode([f for cls in classes for f in val[cls]], size)
        y_val = np.asarray([i for i, cls in enumerate(classes) for _ in val[cls]])
        print(f"{name}: {len(classes)} classes {classes}; decoded {len(y_val)} validation "
              f"images at {size} px in {time.perf_counter() - t0:.0f}s (not timed below)",
              flush=True)
        done_counts = set()
        for asked in args.sizes:
            counts = tuple(min(asked, len(files)) for files in train.values())
            per_class = max(counts)
            if counts in done_counts:
                print(f"{name}: {asked} per class is {per_class} here, already run; skipped")
                continue
            done_counts.add(counts)
            print(f"{name}: {asked} per class asked, {per_class} used "
                  f"({sum(counts)} training images)", flush=True)
            for seed in seed_list:
                subset = _subset(train, asked, seed)
                for method in args.methods:
                    with tempfile.TemporaryDirectory(prefix="tltf-small-data-") as work:
                        predict, seconds = _one_run(method, subset, classes, size, seed,
                                                    epochs, Path(work), options)
                        acc = float((predict(x_val) == y_val).mean())
                    del predict
                    keras.backend.clear_session()
                    gc.collect()
                    runs.append({"dataset": name, "asked_per_class": asked,
                                 "per_class": per_class, "train_images": sum(counts),
                                 "val_images": len(y_val), "seed": seed, "method": method,
                                 "accuracy": acc, "seconds": seconds})
                    print(f"  seed {seed} {LABELS[method]:26s} val acc {100 * acc:5.1f}%  "
                          f"{seconds:6.1f}s", flush=True)
        del x_val
    rows = _summarise(runs)
    targets = _targets(rows)
    _print_report(rows, targets)
    print(f"\ntotal wall time {time.perf_counter() - t_all:.0f}s")
    if args.json:
        args.json.write_text(json.dumps(
            {"config": {"datasets": list(found), "sizes": args.sizes, "seeds": seed_list,
                        "image_size": size, "methods": args.methods,
                        "recipe_epochs": list(epochs), "fine_tune": options},
             "runs": runs, "table": rows, "targets": targets}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
