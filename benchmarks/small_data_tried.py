"""Small data: candidates measured against tltf's defaults, each side by side in one run.

The candidates below did not help. This script keeps the measurement that says so, so it can
be run again on other data. It uses the same data sets, subsets, seeds, MobileNetV2 weights
and Pillow-decoded validation arrays as `benchmarks/small_data.py` (whose helpers it imports).

`--part pooling`: how the convex head sees the backbone. The probe of small_data.py (b)
standardises the global-average-pooled features of MobileNetV2 and fits a cross-validated
L2 logistic regression on them, which is what tltf's phase 1 does. Here the 5x5x1280 maps
of every training and validation image are computed once (Pillow decode, 160 px) and the
same cross-validated fit runs on other poolings of them:

- `avg`: global average pooling (the probe, and tltf's head);
- `sqrt`: the square root of the average-pooled features (a power transform, which makes
  the non-negative ReLU6 features closer to Gaussian; a few-shot learning trick);
- `sqrt_l2`: that, L2-normalised per image;
- `avg_max`: average and max pooling side by side (2560 features; fastai's concat pooling);
- `gem`: generalised-mean pooling with p = 3;
- `log`: log(1 + average-pooled features).

`--part averaging`: averaging phase 2's weights. tltf's `fine_tune(seed=s)` runs on the
subset with `finetune_epochs` forced (default 10, as tltf runs it from 100 images a class),
and a callback keeps the weights phase 2 trains. Scored on the same run:

- `phase1`: a second `fine_tune` of the same seed with `finetune_epochs=0` (the convex head
  alone; phase 1 is deterministic, so these are the weights phase 2 started from);
- `final`: phase 2's last weights (what tltf returns);
- `ema`: an exponential moving average of the trained weights, updated after every step
  (momentum `--ema-momentum`, default 0.9);
- `swa`: the mean of the end-of-epoch weights over the last half of the epochs;
- `wise`: the mean of `phase1` and `final` (weight-space ensembling, WiSE-FT at 0.5).

`--part views`: augmented views of every training image in the convex fit (phase 1 fits
on cached features, so augmentation there means more cached views). The cross-validated fit
of the probe on the pooled features of these training views (the validation images are
seen once, whole, at 160 px):

- `one`: the image (the probe, and tltf's phase 1);
- `flip`: the image and its mirror;
- `crops`: the image, and five 160 px crops (centre and corners) of it decoded at 200 px
  (a 1.25x zoom, the scale part of a random resized crop);
- `flip_crops`: all of these and their mirrors (12 views).

With more than one view, the views of one image share its fold in the cross-validation
(`StratifiedGroupKFold` over images), so the L2 strength is chosen on images the fit has not
seen in any view; `one` is the probe of small_data.py exactly.

(The callback makes `fine_tune` train the full model instead of the cached trunk, which
computes the same thing; see `tests/test_trunk_cache.py`.)

Run (on 2 idle cores, both data sets: about 8 minutes for `pooling` and 13 for `views`
at sizes 20 and 100 with 5 seeds; about 5 minutes a seed for `averaging` at 100 a class):

    .venv/bin/python benchmarks/small_data_tried.py --part pooling --sizes 20 100 --seeds 5
    .venv/bin/python benchmarks/small_data_tried.py --part averaging --sizes 100 --seeds 3
    .venv/bin/python benchmarks/small_data_tried.py --part views --sizes 20 100 --seeds 5
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import small_data as sd  # noqa: E402  (the shared helpers of the small-data benchmark)

POOLINGS = ("avg", "sqrt", "sqrt_l2", "avg_max", "gem", "log")
AVERAGES = ("phase1", "final", "ema", "swa", "wise")
VIEWS = ("one", "flip", "crops", "flip_crops")
ZOOM = 1.25  # the crops' images are decoded this much larger than the input size


def _pool(maps, how: str):
    """(N, H, W, C) non-negative feature maps -> (N, features) by one of POOLINGS."""
    import numpy as np

    m = maps.astype("float32")
    avg = m.mean(axis=(1, 2))
    if how == "avg":
        return avg
    if how == "sqrt":
        return np.sqrt(avg)
    if how == "sqrt_l2":
        f = np.sqrt(avg)
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    if how == "avg_max":
        return np.concatenate([avg, m.max(axis=(1, 2))], axis=1)
    if how == "gem":
        return (np.maximum(m, 1e-6) ** 3).mean(axis=(1, 2)) ** (1 / 3)
    if how == "log":
        return np.log1p(avg)
    raise ValueError(f"unknown pooling {how!r}; expected one of {POOLINGS}")


def _feature_maps(files, size: int):
    """MobileNetV2's last feature maps of Pillow-decoded `files`, as float16."""
    import keras

    base = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False,
                                          weights="imagenet")
    maps = sd._predict(lambda b: base.predict(b / 127.5 - 1.0, batch_size=32, verbose=0),
                       sd._decode(files, size))
    keras.backend.clear_session()
    return maps.astype("float16")


def run_pooling(name, train, val, sizes, seeds, size):
    """{(per_class, pooling): [accuracy per seed]} for one data set."""
    import numpy as np

    classes = list(train)
    files = [f for c in classes for f in train[c]]
    index = {f: i for i, f in enumerate(files)}
    t0 = time.perf_counter()
    maps = _feature_maps(files, size)
    val_maps = _feature_maps([f for c in classes for f in val[c]], size)
    y_val = np.asarray([i for i, c in enumerate(classes) for _ in val[c]])
    print(f"{name}: feature maps of {len(files)} training and {len(y_val)} validation images "
          f"in {time.perf_counter() - t0:.0f}s", flush=True)
    out = {}
    for per_class in sizes:
        for seed in seeds:
            subset = sd._subset(train, per_class, seed)
            rows = np.asarray([index[f] for c in classes for f in subset[c]])
            y = np.asarray([i for i, c in enumerate(classes) for _ in subset[c]])
            accs = []
            for how in POOLINGS:
                fit = sd._logistic_regression_cv(seed).fit(_pool(maps[rows], how), y)
                acc = float((fit.predict(_pool(val_maps, how)) == y_val).mean())
                out.setdefault((per_class, how), []).append(acc)
                accs.append(f"{how} {100 * acc:.1f}")
            print(f"  {per_class} a class, seed {seed}: " + ", ".join(accs), flush=True)
    return out


def _view_features(files, size: int, views: bool = True):
    """{view name: (N, 1280) pooled features}: the image, and with `views` its mirror, five
    crops of it decoded ZOOM times larger (centre, then the corners) and their mirrors."""
    import keras
    import numpy as np

    base = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False,
                                          weights="imagenet", pooling="avg")

    def embed(images):
        return sd._predict(lambda b: base.predict(b / 127.5 - 1.0, batch_size=32, verbose=0),
                           images)

    whole = sd._decode(files, size)
    out = {"image": embed(whole)}
    if not views:
        keras.backend.clear_session()
        return out
    out["mirror"] = embed(whole[:, :, ::-1])
    del whole
    big = sd._decode(files, round(size * ZOOM))
    edge = big.shape[1] - size
    corners = [(edge // 2, edge // 2), (0, 0), (0, edge), (edge, 0), (edge, edge)]
    for i, (top, left) in enumerate(corners):
        crop = np.ascontiguousarray(big[:, top:top + size, left:left + size])
        out[f"crop{i}"] = embed(crop)
        out[f"crop{i}_mirror"] = embed(crop[:, :, ::-1])
    keras.backend.clear_session()
    return out


def _grouped_probe(seed: int, x, y, groups):
    """The probe's StandardScaler + LogisticRegressionCV, its folds keeping each image's
    views together (stratified by class)."""
    from sklearn.model_selection import StratifiedGroupKFold

    probe = sd._logistic_regression_cv(seed)
    cv = StratifiedGroupKFold(5, shuffle=True, random_state=seed)
    probe.steps[-1][1].cv = list(cv.split(x, y, groups))
    return probe.fit(x, y)


def run_views(name, train, val, sizes, seeds, size):
    """{(per_class, views): [accuracy per seed]} for one data set."""
    import numpy as np

    classes = list(train)
    subsets = {(n, seed): sd._subset(train, n, seed) for n in sizes for seed in seeds}
    used = sorted({f for sub in subsets.values() for c in classes for f in sub[c]})
    index = {f: i for i, f in enumerate(used)}
    t0 = time.perf_counter()
    feats = _view_features(used, size)
    x_val = _view_features([f for c in classes for f in val[c]], size, views=False)["image"]
    y_val = np.asarray([i for i, c in enumerate(classes) for _ in val[c]])
    print(f"{name}: 12 views of {len(used)} training images and {len(y_val)} validation "
          f"images in {time.perf_counter() - t0:.0f}s", flush=True)
    crops = [f"crop{i}" for i in range(5)]
    kinds = {"one": ["image"], "flip": ["image", "mirror"], "crops": ["image", *crops],
             "flip_crops": ["image", "mirror", *crops, *(f"{c}_mirror" for c in crops)]}
    out = {}
    for (per_class, seed), subset in subsets.items():
        rows = np.asarray([index[f] for c in classes for f in subset[c]])
        y = np.asarray([i for i, c in enumerate(classes) for _ in subset[c]])
        accs = []
        for kind in VIEWS:
            views = kinds[kind]
            x = np.concatenate([feats[v][rows] for v in views])
            fit = (sd._logistic_regression_cv(seed).fit(x, y) if len(views) == 1
                   else _grouped_probe(seed, x, np.tile(y, len(views)),
                                       np.tile(np.arange(len(y)), len(views))))
            acc = float((fit.predict(x_val) == y_val).mean())
            out.setdefault((per_class, kind), []).append(acc)
            accs.append(f"{kind} {100 * acc:.1f}")
        print(f"  {per_class} a class, seed {seed}: " + ", ".join(accs), flush=True)
    return out


def _tracker(momentum: float):
    import keras

    class Track(keras.callbacks.Callback):
        """Keeps an EMA of the trained weights (every step) and each epoch's weights."""

        def on_train_begin(self, logs=None):
            self.variables = list(self.model.trainable_weights)
            self.ema = [v.numpy().copy() for v in self.variables]
            self.epochs = []

        def on_train_batch_end(self, batch, logs=None):
            for e, v in zip(self.ema, self.variables, strict=True):
                e *= momentum
                e += (1 - momentum) * v.numpy()

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append([v.numpy().copy() for v in self.variables])

    return Track()


def run_averaging(name, train, val, sizes, seeds, size, epochs, momentum):
    """{(per_class, average): [accuracy per seed]} for one data set."""
    import keras
    import numpy as np

    import tltf

    classes = list(train)
    x_val = sd._decode([f for c in classes for f in val[c]], size)
    y_val = np.asarray([i for i, c in enumerate(classes) for _ in val[c]])

    def accuracy(model):
        out = sd._predict(lambda b: model.predict(b, verbose=0), x_val)
        return float((sd._labels(out) == y_val).mean())

    out = {}
    for per_class in sizes:
        for seed in seeds:
            subset = sd._subset(train, per_class, seed)
            with tempfile.TemporaryDirectory(prefix="tltf-small-data-tried-") as work:
                folder = sd._link_folder(subset, Path(work) / "subset")
                data = tltf.load_image_folder(folder, image_size=size,
                                              cache_dir=Path(work) / "checks")
                scores = {}
                first = tltf.build_classifier("mobilenet_v2", len(classes), image_size=size,
                                              seed=seed)
                tltf.fine_tune(first, data, None, seed=seed, verbose=0, finetune_epochs=0)
                scores["phase1"] = accuracy(first)
                start = first.get_weights()
                model = tltf.build_classifier("mobilenet_v2", len(classes), image_size=size,
                                              seed=seed)
                track = _tracker(momentum)
                t0 = time.perf_counter()
                tltf.fine_tune(model, data, None, seed=seed, verbose=0,
                               finetune_epochs=epochs, callbacks=[track])
                seconds = time.perf_counter() - t0
                scores["final"] = accuracy(model)
                final = model.get_weights()
                for variable, value in zip(track.variables, track.ema, strict=True):
                    variable.assign(value)
                scores["ema"] = accuracy(model)
                last_half = track.epochs[len(track.epochs) // 2:]
                for i, variable in enumerate(track.variables):
                    variable.assign(np.mean([w[i] for w in last_half], axis=0))
                scores["swa"] = accuracy(model)
                model.set_weights([(a + b) / 2 if a.dtype.kind == "f" else b
                                   for a, b in zip(start, final, strict=True)])
                scores["wise"] = accuracy(model)
            keras.backend.clear_session()
            for k, v in scores.items():
                out.setdefault((per_class, k), []).append(v)
            print(f"  {per_class} a class, seed {seed} ({seconds:.0f}s): "
                  + ", ".join(f"{k} {100 * v:.1f}" for k, v in scores.items()), flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("pooling", "averaging", "views"), required=True)
    parser.add_argument("--datasets", nargs="+", default=list(sd.DATASETS),
                        choices=sd.DATASETS)
    parser.add_argument("--sizes", nargs="+", type=int, default=[20, 100], metavar="N",
                        help="training images a class (default: 20 100)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default: 5)")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--finetune-epochs", type=int, default=10,
                        help="phase-2 epochs for --part averaging (default: 10)")
    parser.add_argument("--ema-momentum", type=float, default=0.9)
    parser.add_argument("--shared", type=Path, default=sd.DEFAULT_SHARED)
    args = parser.parse_args(argv)
    if args.seeds < 1 or min(args.sizes) < 1:
        parser.error("needs at least one seed and sizes >= 1")
    found = sd._found_datasets(args.shared, args.datasets)
    if not found:
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", category=UserWarning)
    sd._seed_keras_home(args.shared)
    sys.path.insert(0, str(sd.ROOT))
    import numpy as np

    seeds = list(range(args.seeds))
    names = {"pooling": POOLINGS, "averaging": AVERAGES, "views": VIEWS}[args.part]
    table = {}
    for name, (train, val) in found.items():
        if args.part == "pooling":
            table[name] = run_pooling(name, train, val, args.sizes, seeds, args.image_size)
        elif args.part == "views":
            table[name] = run_views(name, train, val, args.sizes, seeds, args.image_size)
        else:
            table[name] = run_averaging(name, train, val, args.sizes, seeds, args.image_size,
                                        args.finetune_epochs, args.ema_momentum)
    today = {"pooling": "avg", "views": "one",
             "averaging": "final (phase1 below 100 a class)"}[args.part]
    print(f"\nvalidation accuracy in %, mean +- std over seeds {seeds}; tltf today: {today}")
    print("| data set | a class | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for name, results in table.items():
        for per_class in args.sizes:
            cells = []
            for k in names:
                v = 100 * np.asarray(results[(per_class, k)])
                std = v.std(ddof=1) if len(v) > 1 else 0.0
                cells.append(f"{v.mean():.1f} +- {std:.1f}")
            print(f"| {name} | {per_class} | " + " | ".join(cells) + " |")
    base = "final" if args.part == "averaging" else names[0]
    print(f"\nthe same runs, paired: each column minus {base} on the same seed, in points, "
          "mean +- std (min to max)")
    print("| data set | a class | " + " | ".join(k for k in names if k != base) + " |")
    print("|---|---|" + "---|" * (len(names) - 1))
    for name, results in table.items():
        for per_class in args.sizes:
            cells = []
            for k in names:
                if k == base:
                    continue
                d = 100 * (np.asarray(results[(per_class, k)])
                           - np.asarray(results[(per_class, base)]))
                std = d.std(ddof=1) if len(d) > 1 else 0.0
                cells.append(f"{d.mean():+.1f} +- {std:.1f} ({d.min():+.1f} to {d.max():+.1f})")
            print(f"| {name} | {per_class} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
