"""How deep to fine-tune, and how fast? A KerasTuner search over unfreeze depth and learning rate.

    python examples/tune_unfreeze_depth.py --data-dir photos/ --trials 8
    python examples/tune_unfreeze_depth.py --data-dir photos/ --quick   # seconds, for CI

Every trial builds a MobileNetV2 classifier and trains it with `fine_tune`: phase 1 trains
the head (once per head setting, then reused by later trials), phase 2 unfreezes the top
`unfreeze_blocks` blocks (0 = head only) at `finetune_lr`. The search is kept in
`--out/search`; run the same command again to resume it. Prints the trials best first,
saves a plot of the objective against depth and learning rate, and the best model.
"""

import argparse
from pathlib import Path

from tltf import evaluate, load_image_folder, search


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True,
                        help="folder of class subfolders, or of train/ and validation/ splits")
    parser.add_argument("--out", default="runs/tune_unfreeze_depth")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--head-epochs", type=int, default=3)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--quick", action="store_true",
                        help="tiny budget: 8 images per class, 96 px, 2 trials of 1+1 epochs")
    args = parser.parse_args()
    if args.quick:
        args.image_size, args.trials, args.head_epochs, args.finetune_epochs = 96, 2, 1, 1
    return args


def main():
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(args.data_dir)
    limit = 8 if args.quick else None  # --quick: the first 8 images of each class
    data = load_image_folder(root, image_size=args.image_size, max_per_class=limit)
    if not isinstance(data, tuple):
        data = load_image_folder(root, image_size=args.image_size,
                                 validation_split=0.2, seed=0, max_per_class=limit)
    train, val = data[0], data[1]

    result = search(
        train, val,
        backbone=args.backbone,
        tuner="random" if args.quick else "bayesian",
        max_trials=args.trials,
        directory=out,
        head_epochs=args.head_epochs,
        finetune_epochs=args.finetune_epochs,
        batch_size=8 if args.quick else 32,
        unfreeze_blocks=[0, 1, 2, 4, 8],  # blocks of the backbone, counted from the top
        finetune_lr=(1e-5, 1e-3),  # log-uniform range
        seed=0,
    )
    print(result.table(["score", "unfreeze_blocks", "finetune_lr", "dropout", "status"]))
    print(f"\nbest {result.objective} = {result.best_score:.4f} with "
          f"{result.best_hyperparameters}")

    plot = result.plot(out / "search.png")
    result.best_model.save(out / "best_model.keras")
    report = evaluate(result.best_model, val)
    print(f"best model, re-evaluated: accuracy {report.accuracy:.1%}")
    print(f"  search state: {result.directory}")
    print(f"  plot:         {plot}")
    print(f"  best model:   {out / 'best_model.keras'}")


if __name__ == "__main__":
    main()
