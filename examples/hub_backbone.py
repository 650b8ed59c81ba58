"""Transfer learning from a TF Hub model, in a Keras 3 model that trains, saves and exports.

    python examples/hub_backbone.py --data-dir photos/                      # MobileNetV2 from tfhub.dev
    python examples/hub_backbone.py --data-dir photos/ --backbone hub:efficientnet_v2_b0
    python examples/hub_backbone.py --data-dir photos/ \\
        --backbone hub:https://tfhub.dev/google/imagenet/mobilenet_v3_small_100_224/feature_vector/5
    python examples/hub_backbone.py --data-dir photos/ --backbone hub:/path/to/saved_model

`--backbone` is `hub:` followed by a name from `tltf.list_backbones("hub:*")`, a tfhub.dev or
Kaggle Models URL (downloaded once into TFHUB_CACHE_DIR by tensorflow_hub), or a local
SavedModel directory. Hub image models take pixels in [0, 1]; the model built here takes raw
pixels and scales them itself. Models in the old TF1 Hub format serve as frozen feature
extractors only: run them with `--finetune-epochs 0`.
"""

import argparse
from pathlib import Path

from tltf import (
    build_classifier,
    evaluate,
    export_tflite,
    fine_tune,
    get_backbone,
    list_backbones,
    load_image_folder,
    load_model,
)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True,
                        help="folder of class subfolders, or of train/ and validation/ splits")
    parser.add_argument("--backbone", default="hub:mobilenet_v2_100_224")
    parser.add_argument("--out", default="runs/hub_backbone")
    parser.add_argument("--image-size", type=int, help="default: the hub model's size")
    parser.add_argument("--head-epochs", type=int, default=5)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--quick", action="store_true",
                        help="tiny budget: 8 images per class, 1 epoch per phase")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the outputs of an earlier run in --out")
    args = parser.parse_args()
    if args.quick:
        args.head_epochs, args.finetune_epochs = 1, min(args.finetune_epochs, 1)
        args.batch_size = 8
    return args


def main():
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("Well-known hub backbones:", ", ".join(list_backbones("hub:*")))

    # The hub model decides the default input size (a fixed-size model accepts no other).
    size = args.image_size or get_backbone(args.backbone).default_size

    root = Path(args.data_dir)
    limit = 8 if args.quick else None  # --quick: the first 8 images of each class
    data = load_image_folder(root, image_size=size, max_per_class=limit)
    if not isinstance(data, tuple):
        data = load_image_folder(root, image_size=size,
                                 validation_split=0.2, seed=0, max_per_class=limit)
    train, val = data[0], data[1]
    print(f"train: {train}\nvalidation: {val}")

    model = build_classifier(args.backbone, train.num_classes, image_size=size,
                             class_names=train.class_names)
    result = fine_tune(model, train, val, head_epochs=args.head_epochs,
                       finetune_epochs=args.finetune_epochs, unfreeze="top_blocks:1",
                       batch_size=args.batch_size, directory=out / "training", seed=0,
                       overwrite=args.overwrite)

    # The .keras file keeps the hub handle and the fine-tuned weights. Loading it runs that
    # SavedModel's graph, so tltf refuses unless the handle is trusted (safe loading).
    model.save(out / "model.keras")
    handle = args.backbone.removeprefix("hub:")
    reloaded = load_model(out / "model.keras", trust_hub_handles=[handle])

    report = evaluate(reloaded, val, history=result.history)
    print(report.summary())
    report_dir = report.save(out / "report")
    exported = export_tflite(reloaded, out / "hub_model.tflite", overwrite=args.overwrite)

    print(f"\nValidation accuracy {report.accuracy:.1%}.")
    print(f"  Keras model:  {out / 'model.keras'}")
    print(f"  report:       {report_dir}")
    print(f"  TFLite model: {exported.path} ({exported.size_bytes / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
