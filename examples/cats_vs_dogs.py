"""Cats vs dogs: fine-tune MobileNetV2 in two phases, evaluate it, ship a .tflite.

    python examples/cats_vs_dogs.py                       # TFDS cats_vs_dogs (downloads)
    python examples/cats_vs_dogs.py --data-dir ../shared/datasets/cats_and_dogs_filtered
    python examples/cats_vs_dogs.py --data-dir photos/ --quick   # seconds, for CI

`--data-dir` is a folder with one subfolder per class, or with `train/` and `validation/`
splits of such folders. Everything goes to `--out`: the Keras model, the training logs and
checkpoints, the evaluation report and the .tflite file with its labels.
"""

import argparse
import time
from pathlib import Path

from tltf import build_classifier, evaluate, export_tflite, fine_tune, load_image_folder, load_tfds


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="image folder; default: TFDS cats_vs_dogs")
    parser.add_argument("--out", default="runs/cats_vs_dogs", help="output folder")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--head-epochs", type=int, default=5)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--quick", action="store_true",
                        help="tiny budget: 8 images per class, 96 px, 1 epoch per phase")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the outputs of an earlier run in --out")
    args = parser.parse_args()
    if args.quick:
        args.image_size, args.head_epochs, args.finetune_epochs = 96, 1, 1
        args.batch_size = 8
    return args


def load_data(args, out: Path):
    """(train, validation) ImageDatasets from --data-dir, or from TFDS."""
    if args.data_dir is None:
        if args.quick:
            split = ["train[:32]", "train[32:64]"]
        else:
            split = ["train[:80%]", "train[80%:]"]
        try:
            return load_tfds("cats_vs_dogs", split=split, image_size=args.image_size)
        except Exception as error:  # offline, or TFDS cannot prepare it here
            raise SystemExit(f"Could not load TFDS cats_vs_dogs ({error}); pass --data-dir.") from error
    root = Path(args.data_dir)
    limit = 8 if args.quick else None  # --quick: the first 8 images of each class
    data = load_image_folder(root, image_size=args.image_size, max_per_class=limit)
    if isinstance(data, tuple):  # the folder has train/ and validation/ splits
        return data[0], data[1]
    return load_image_folder(root, image_size=args.image_size,
                             validation_split=0.2, seed=0, max_per_class=limit)


def main():
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    train, val = load_data(args, out)
    print(f"train: {train}\nvalidation: {val}")

    model = build_classifier(args.backbone, train.num_classes, image_size=args.image_size,
                             class_names=train.class_names)
    result = fine_tune(model, train, val, head_epochs=args.head_epochs,
                       finetune_epochs=args.finetune_epochs, unfreeze="top_blocks:2",
                       batch_size=args.batch_size, directory=out / "training", seed=0,
                       overwrite=args.overwrite)
    model.save(out / "model.keras")

    report = evaluate(model, val, history=result.history)
    print(report.summary())
    report_dir = report.save(out / "report")

    exported = export_tflite(model, out / "cats_vs_dogs.tflite", quantization="float32",
                             overwrite=args.overwrite)

    print(f"\nDone in {time.time() - start:.0f}s. Validation accuracy {report.accuracy:.1%}.")
    print(f"  Keras model:   {out / 'model.keras'}")
    print(f"  training logs: {result.directory}")
    print(f"  report:        {report_dir}")
    print(f"  TFLite model:  {exported.path} ({exported.size_bytes / 1e6:.1f} MB)")
    print(f"  labels:        {exported.labels_path}")


if __name__ == "__main__":
    main()
