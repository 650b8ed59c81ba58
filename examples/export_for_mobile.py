"""Export a classifier for a phone: full-integer int8 .tflite, checked against the Keras model.

    python examples/export_for_mobile.py --data-dir photos/ --model runs/cats_vs_dogs/model.keras
    python examples/export_for_mobile.py --data-dir photos/            # trains a quick head first
    python examples/export_for_mobile.py --data-dir photos/ --quick    # seconds, for CI

The int8 file is calibrated on training images, then run by LiteRT image by image next to
the Keras model on the validation images: the fidelity report gives both accuracies, the
largest probability difference, the file size and the latency. The export is refused (the
script fails) if accuracy drops by more than `--max-drop`. A float32 file is written too,
for comparison.
"""

import argparse
from pathlib import Path

from tltf import build_classifier, export_tflite, fine_tune, load_image_folder, load_model


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True,
                        help="folder of class subfolders, or of train/ and validation/ splits")
    parser.add_argument("--model", help="a trained .keras classifier; default: train a head")
    parser.add_argument("--out", default="runs/export_for_mobile")
    parser.add_argument("--image-size", type=int, default=160, help="when training a head")
    parser.add_argument("--max-drop", type=float, default=0.01,
                        help="largest accepted accuracy drop (0.01 = one point)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny budget: 8 images per class, 96 px, 1 epoch")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the .tflite files of an earlier run in --out")
    args = parser.parse_args()
    if args.quick:
        args.image_size, args.max_drop = 96, 1.0  # a handful of images cannot measure a drop
    return args


def main():
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model = load_model(args.model) if args.model else None  # safe mode: runs no code
    size = model.input_shape[1] if model else args.image_size
    root = Path(args.data_dir)
    limit = 8 if args.quick else None  # --quick: the first 8 images of each class
    data = load_image_folder(root, image_size=size, max_per_class=limit)
    if not isinstance(data, tuple):
        data = load_image_folder(root, image_size=size,
                                 validation_split=0.2, seed=0, max_per_class=limit)
    train, val = data[0], data[1]

    if model is None:  # no model given: a frozen MobileNetV2 with a trained head
        model = build_classifier("mobilenet_v2", train.num_classes, image_size=size,
                                 class_names=train.class_names)
        fine_tune(model, train, val, head_epochs=1 if args.quick else 5, finetune_epochs=0,
                  seed=0)

    reference = export_tflite(model, out / "model_float32.tflite", overwrite=args.overwrite)
    result = export_tflite(model, out / "model_int8.tflite", quantization="int8",
                           representative_data=train, verify=True, validation_data=val,
                           max_accuracy_drop=args.max_drop, overwrite=args.overwrite)

    report = result.report
    print(f"\nint8 file:  {result.path} ({result.size_bytes / 1e6:.2f} MB, "
          f"float32 was {reference.size_bytes / 1e6:.2f} MB)")
    print(f"  input {result.input_dtype}, output {result.output_dtype}, labels {result.labels_path}")
    print(f"  accuracy on {report.num_samples} validation images: Keras {report.keras_accuracy:.1%}, "
          f"int8 {report.tflite_accuracy:.1%} (drop {report.accuracy_drop:+.1%})")
    print(f"  largest probability difference {report.max_abs_diff:.4f}, "
          f"median latency {report.median_latency_ms:.1f} ms per image")


if __name__ == "__main__":
    main()
