"""Does `tltf.lr_find`'s phase-2 suggestion beat `fine_tune`'s default `finetune_lr="auto"`?

On ../shared/datasets/flowers (5 classes), MobileNetV2 with ImageNet weights (from
../shared/keras_weights through a seeded KERAS_HOME) at 160 px, training subsets of N
images a class drawn anew for each seed (the helpers of `benchmarks/small_data.py`). For
each (N, seed), in one process:

1. phase 1 once: `fine_tune(model, train, val, finetune_epochs=0, seed=seed)` (the default
   convex head fit); its weights are kept, so both arms below start from the same model;
2. (a) default: `fine_tune(model, train, val, head_epochs=0, finetune_epochs=E, seed=seed)`
   (`finetune_lr="auto"`: 1e-4 at batch 32);
3. (b) lr_find: `lr_find(model, train, phase=2, seed=seed)` (every other argument at its
   default: 1e-7 to 10 over 100 steps, `unfreeze="top_blocks:2"`, the valley rule), then
   the same `fine_tune` call with `finetune_lr=result.suggestion`.

Both arms have the validation folder (50 a class) as `val`: early stopping and the best
epoch are chosen on it, and it is also what is scored (`val_accuracy` of the best epoch),
so the figures are optimistic in the same way for both. Printed: per (N, seed) the phase-1
accuracy, each arm's accuracy, the suggested rate and the seconds lr_find took; then the
means per N, also as one `fine_tune` call with `val` would return them (the best epoch of
both phases: max(phase 1, phase 2)).

Run (35 minutes on 2 cores shared with other jobs):

    .venv/bin/python benchmarks/lr_find.py
    .venv/bin/python benchmarks/lr_find.py --sizes 20 --seeds 0 --epochs 2   # smoke run

Measured (the defaults above; validation accuracy; suggestion; seconds of lr_find):

    N=20,  seed 0: phase 1 78.4, default 72.4, lr_find 77.2 (2.2e-05, 108 s)
    N=20,  seed 1: phase 1 78.0, default 74.8, lr_find 76.0 (6.7e-05, 129 s)
    N=100, seed 0: phase 1 84.0, default 85.2, lr_find 84.8 (4.6e-05, 146 s)
    N=100, seed 1: phase 1 84.4, default 86.0, lr_find 84.8 (3.9e-05, 146 s)

The suggestion did not beat the default: at 100 a class the default 1e-4 scored higher on
both seeds; at 20 a class phase 2 at either rate scored below phase 1 alone, and one
`fine_tune` call with `val` returns the phase-1 epoch in both arms (see docs/lr_find.md).
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

from small_data import DEFAULT_SHARED, _class_files, _link_folder, _seed_keras_home, _subset


def one_run(folder: Path, val_folder: Path, size: int, seed: int, epochs: int) -> dict:
    import keras

    import tltf

    train = tltf.load_image_folder(folder, image_size=size)
    val = tltf.load_image_folder(val_folder, image_size=size, class_names=train.class_names)
    model = tltf.build_classifier("mobilenet_v2", train.num_classes, image_size=size)
    head = tltf.fine_tune(model, train, val, finetune_epochs=0, seed=seed, verbose=0)
    fitted = model.get_weights()
    row = {"phase 1": head.best_metrics["val_accuracy"]}
    default = tltf.fine_tune(model, train, val, head_epochs=0, finetune_epochs=epochs,
                             seed=seed, verbose=0)
    row["default"] = default.best_metrics["val_accuracy"]
    model.set_weights(fitted)
    t0 = time.perf_counter()
    found = tltf.lr_find(model, train, phase=2, seed=seed)
    row["lr_find s"] = time.perf_counter() - t0
    row["suggestion"] = found.suggestion
    tuned = tltf.fine_tune(model, train, val, head_epochs=0, finetune_epochs=epochs,
                           finetune_lr=found.suggestion, seed=seed, verbose=0)
    row["lr_find"] = tuned.best_metrics["val_accuracy"]
    keras.backend.clear_session()
    gc.collect()
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=5, help="phase-2 epochs of each arm")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    args = parser.parse_args(argv)
    _seed_keras_home(args.shared)
    root = args.shared / "datasets" / "flowers"
    files = _class_files(root / "train")
    rows = []
    print(f"{'N':>4} {'seed':>4} {'phase 1':>8} {'default':>8} {'lr_find':>8} "
          f"{'suggested':>10} {'lr_find s':>9}", flush=True)
    for n in args.sizes:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                folder = _link_folder(_subset(files, n, seed), Path(tmp) / "train")
                row = one_run(folder, root / "validation", args.image_size, seed, args.epochs)
            rows.append({"n": n, "seed": seed, **row})
            print(f"{n:>4} {seed:>4} {row['phase 1']:>8.3f} {row['default']:>8.3f} "
                  f"{row['lr_find']:>8.3f} {row['suggestion']:>10.2e} {row['lr_find s']:>9.0f}",
                  flush=True)
    # One `fine_tune(model, train, val, finetune_epochs=E)` call picks its best epoch over
    # both phases on `val`, which is also what is scored here: max(phase 1, phase 2).
    for r in rows:
        r["default, one call"] = max(r["phase 1"], r["default"])
        r["lr_find, one call"] = max(r["phase 1"], r["lr_find"])
    print("\nmeans (validation accuracy; 'one call': the best epoch of both phases, as one "
          "fine_tune call with val returns it):")
    for n in args.sizes:
        part = [r for r in rows if r["n"] == n]
        mean = {k: sum(r[k] for r in part) / len(part) for k in part[0] if k not in ("n", "seed")}
        print(f"  N={n}, {len(part)} seeds: phase 1 {mean['phase 1']:.3f}; phase 2 at the "
              f"default 1e-4 {mean['default']:.3f}, at the suggestion {mean['lr_find']:.3f} "
              f"(mean {mean['suggestion']:.1e}); one call: default "
              f"{mean['default, one call']:.3f}, lr_find {mean['lr_find, one call']:.3f}; "
              f"lr_find took {mean['lr_find s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
