"""Export benchmark: size, LiteRT latency and accuracy of every quantization mode.

MobileNetV2 (ImageNet weights from ../shared/keras_weights through a seeded KERAS_HOME) is
trained with `tltf.fine_tune` on ../shared/datasets/cats_and_dogs_filtered, then exported in
each quantization mode (int8 modes calibrated on training images). Every file is run by
LiteRT image by image on the validation images next to the Keras model: accuracy, top-1
agreement and the largest probability difference (2 threads), and median latency per image
at 1 and 2 threads. One markdown table is printed and saved with a JSON copy.

Targets (issue 6): int8 at most 30% of the float32 size, at least 1.5x faster than float32
(1 thread), at most 1 point less accurate.

Run (about 15-30 minutes on 2 shared CPU cores):

    .venv/bin/python benchmarks/export.py
    .venv/bin/python benchmarks/export.py --image-size 160 --head-epochs 2 --finetune-epochs 1 \
        --out runs/bench_export
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODES = ("float32", "float16", "dynamic", "int8", "int8_io")


def _seed_keras_home() -> None:
    """Seeds KERAS_HOME from ../shared/keras_weights (before keras is imported)."""
    sys.path.insert(0, str(ROOT / "tools"))
    from seed_keras_home import use_shared_weights

    if use_shared_weights() is None:
        raise SystemExit(f"no weights in {SHARED / 'keras_weights'}; this benchmark needs them")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "datasets" / "cats_and_dogs_filtered"))
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--head-epochs", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--calibration-samples", type=int, default=200)
    parser.add_argument("--max-val", type=int, default=None, help="validation images (all)")
    parser.add_argument("--latency-samples", type=int, default=200,
                        help="images timed at 1 thread")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_export"))
    parser.add_argument("--model", help="a trained .keras model to reuse instead of training")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if not (SHARED / "keras_weights").is_dir() or not Path(args.data).is_dir():
        print(f"needs {SHARED}/keras_weights and {args.data}; absent here", file=sys.stderr)
        return 1
    _seed_keras_home()
    import keras

    import tltf
    from tltf.data.folder import load_image_folder
    from tltf.export.tflite import export_tflite
    from tltf.export.verify import comparison_markdown, verify_tflite
    from tltf.training.recipe import fine_tune

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, val = load_image_folder(args.data, image_size=args.image_size)
    print(f"tltf {tltf.__version__}: train {len(train)} / val {len(val)} images, "
          f"{args.image_size} px, classes {train.class_names}", flush=True)

    started = time.time()
    if args.model:
        model = keras.saving.load_model(args.model)
    else:
        model = tltf.build_classifier("mobilenet_v2", train.num_classes,
                                      image_size=args.image_size, class_names=train.class_names)
        fine_tune(model, train, val, head_epochs=args.head_epochs,
                  finetune_epochs=args.finetune_epochs, seed=0, verbose=2,
                  directory=out / "training")
        model.save(out / "model.keras")
    train_s = time.time() - started
    print(f"training: {train_s:.0f} s", flush=True)

    rows, reports = [], []
    for mode in args.modes:
        started = time.time()
        result = export_tflite(model, out / f"model_{mode}.tflite", quantization=mode,
                               representative_data=train,
                               num_calibration_samples=args.calibration_samples)
        convert_s = time.time() - started
        two = verify_tflite(result.path, model, val, max_samples=args.max_val, num_threads=2,
                            name=mode)
        one = verify_tflite(result.path, model, val, max_samples=args.latency_samples,
                            num_threads=1, name=mode)
        reports.append(two)
        rows.append({"mode": mode, "size_mb": result.size_bytes / 1e6,
                     "input": result.input_dtype, "output": result.output_dtype,
                     "latency_ms_1_thread": one.median_latency_ms,
                     "latency_ms_2_threads": two.median_latency_ms,
                     "keras_accuracy": two.keras_accuracy, "tflite_accuracy": two.tflite_accuracy,
                     "top1_agreement": two.top1_agreement, "max_abs_diff": two.max_abs_diff,
                     "convert_s": convert_s})
        print(f"{mode}: {two}; 1 thread {one.median_latency_ms:.2f} ms; converted in "
              f"{convert_s:.0f} s", flush=True)

    table = [
        "| mode | I/O | size (MB) | size vs float32 | latency 1 thread (ms) | speed-up "
        "| latency 2 threads (ms) | Keras acc | TFLite acc | drop (points) | top-1 agreement "
        "| max prob diff |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = next((r for r in rows if r["mode"] == "float32"), rows[0])
    for r in rows:
        table.append(
            f"| {r['mode']} | {r['input']}/{r['output']} | {r['size_mb']:.2f} "
            f"| {r['size_mb'] / base['size_mb']:.0%} | {r['latency_ms_1_thread']:.2f} "
            f"| {base['latency_ms_1_thread'] / r['latency_ms_1_thread']:.2f}x "
            f"| {r['latency_ms_2_threads']:.2f} | {r['keras_accuracy']:.2%} "
            f"| {r['tflite_accuracy']:.2%} "
            f"| {100 * (base['tflite_accuracy'] - r['tflite_accuracy']):+.2f} "
            f"| {r['top1_agreement']:.2%} | {r['max_abs_diff']:.3f} |"
        )
    text = "\n".join(table)
    print("\n" + text)
    int8 = next((r for r in rows if r["mode"] == "int8"), None)
    if int8 is not None and base["mode"] == "float32":
        checks = {
            "int8 size <= 30% of float32": int8["size_mb"] <= 0.30 * base["size_mb"],
            "int8 >= 1.5x faster (1 thread)":
                base["latency_ms_1_thread"] / int8["latency_ms_1_thread"] >= 1.5,
            "int8 <= 1 point below float32":
                base["tflite_accuracy"] - int8["tflite_accuracy"] <= 0.01,
        }
        text += "\n\n" + "\n".join(f"- {k}: {'yes' if v else 'NO'}" for k, v in checks.items())
        print("\n".join(f"{k}: {'yes' if v else 'NO'}" for k, v in checks.items()))
    (out / "export_benchmark.md").write_text(text + "\n\n" + comparison_markdown(reports) + "\n")
    (out / "export_benchmark.json").write_text(json.dumps(
        {"args": vars(args), "training_s": train_s, "rows": rows}, indent=2) + "\n")
    print(f"\nwritten: {out / 'export_benchmark.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
