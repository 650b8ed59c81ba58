"""Benchmark of `tltf.tune.tuner.search` on cats vs dogs with real MobileNetV2 weights.

One run measures, on the same subset of ../shared/datasets/cats_and_dogs_filtered:
  1. `fine_tune` with its defaults (the baseline),
  2. a search with warm start (phase 1 trained once, every trial's phase 2 starts from it),
  3. the same search without warm start (phase 1 in every trial),
and prints validation accuracy (the objective) and held-out test accuracy of each best model,
and the wall time of both searches. A random tuner with a fixed seed proposes the same
trials to both searches, so their times compare like for like.

    .venv/bin/python benchmarks/tune.py [--trials 6] [--out /tmp/tltf-bench-tune]

Weights: `KERAS_HOME` is seeded from ../shared/keras_weights (as its README says) unless it
is already set. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def _seed_keras_home() -> None:
    """Seeds KERAS_HOME from ../shared/keras_weights (before keras is imported)."""
    sys.path.insert(0, str(ROOT / "tools"))
    from seed_keras_home import use_shared_weights

    if use_shared_weights() is None:
        raise SystemExit(f"no weights in {SHARED / 'keras_weights'}; this benchmark needs them")


def _subset(source: Path, target: Path, sizes: dict[str, tuple[str, int, int]]) -> Path:
    """Links the first/next files of each class into target/<split>/<class>/."""
    for split, (src_split, start, count) in sizes.items():
        for cls in ("cats", "dogs"):
            files = sorted((source / src_split / cls).glob("*.jpg"))[start:start + count]
            out = target / split / cls
            out.mkdir(parents=True, exist_ok=True)
            for f in files:
                (out / f.name).symlink_to(f.resolve())
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED / "datasets" / "cats_and_dogs_filtered")
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="tltf-bench-tune-")))
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--val-per-class", type=int, default=100)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--head-epochs", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--tuner", default="random")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    _seed_keras_home()

    import tltf
    from tltf.data.folder import load_image_folder
    from tltf.training.recipe import fine_tune
    from tltf.tune.tuner import search

    args.out.mkdir(parents=True, exist_ok=True)
    subset = args.out / "data"
    if subset.exists():
        shutil.rmtree(subset)
    _subset(args.data, subset, {
        "train": ("train", 0, args.train_per_class),
        "validation": ("validation", 0, args.val_per_class),
        "test": ("validation", args.val_per_class, args.test_per_class),
    })
    train, val, test = load_image_folder(subset, image_size=args.image_size, seed=args.seed)
    test_ds = test.prepare(training=False, batch_size=32)
    figures: dict = {"command": "benchmarks/tune.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("data", "out")),
        "train": len(train), "val": len(val), "test": len(test)}

    def test_accuracy(model):
        return float(model.evaluate(test_ds, verbose=0, return_dict=True)["accuracy"])

    # 1. the baseline: fine_tune's defaults
    start = time.perf_counter()
    model = tltf.build_classifier("mobilenet_v2", train.num_classes, image_size=args.image_size)
    result = fine_tune(model, train, val, seed=args.seed, verbose=0)
    figures["fine_tune_defaults"] = {
        "val_accuracy": float(result.best_metrics["val_accuracy"]),
        "test_accuracy": test_accuracy(model), "seconds": time.perf_counter() - start}
    print(json.dumps(figures, indent=1), flush=True)
    del model, result

    # 2./3. the same search with and without warm start
    searches = {}
    for label, warm in (("search_warm_start", True), ("search_plain", False)):
        found = search(train, val, backbone="mobilenet_v2", tuner=args.tuner,
                       max_trials=args.trials, directory=args.out / label, overwrite=True,
                       image_size=args.image_size, warm_start=warm, head_epochs=args.head_epochs,
                       finetune_epochs=args.finetune_epochs, seed=args.seed, verbose=0,
                       dropout=0.2, label_smoothing=0.1)
        searches[label] = found
        figures[label] = {
            "seconds": found.seconds, "best_val_accuracy": found.best_score,
            "best_test_accuracy": test_accuracy(found.best_model),
            "best_model": found.best_model_source,
            "best_hyperparameters": {k: found.best_hyperparameters[k] for k in
                                     ("unfreeze_blocks", "finetune_lr")},
            "phase1_seconds_total": sum(r.get("phase1_seconds") or 0 for r in found.trials_run),
            "rss_mb_after_trials": [round(r["rss_mb"]) for r in found.trials_run],
        }
        print(found.table(["trial_id", "score", "unfreeze_blocks", "finetune_lr", "seconds",
                           "phase1_seconds", "head_reused", "trainable_params"]), flush=True)
        print(json.dumps(figures[label], indent=1), flush=True)
    warm, plain = searches["search_warm_start"], searches["search_plain"]
    def proposed(found):
        return [(r["unfreeze_blocks"], r["finetune_lr"])
                for r in sorted(found.trials, key=lambda r: r["trial_id"])]

    same = proposed(warm) == proposed(plain)
    figures["warm_start_saving_seconds"] = plain.seconds - warm.seconds
    figures["warm_start_saving_fraction"] = 1 - warm.seconds / plain.seconds
    figures["same_trials_in_both_searches"] = same
    figures["plot"] = str(warm.plot(args.out / "search_warm_start.png"))
    (args.out / "figures.json").write_text(json.dumps(figures, indent=1, default=str))
    print(json.dumps(figures, indent=1, default=str))


if __name__ == "__main__":
    main()
