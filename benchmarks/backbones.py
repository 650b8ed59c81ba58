"""Backbone benchmark: Keras and LiteRT images/s at 1 and 2 threads, parameters, .tflite size.

One table to choose a backbone from: each registered KerasHub family at its default size and
one or two members of each keras.applications family, every one built by
`tltf.build_classifier` (raw pixels in, preprocessing inside, a 10-class head) with random
weights (speed does not depend on them), exported by `tltf.export_tflite` (float32, built-in
ops only) and timed on this CPU.

- Keras: images/s of `predict_on_batch` on batches of 8, in a process whose TensorFlow
  runs 1 or 2 intra-op threads (set before TensorFlow starts, so one worker process each).
- LiteRT: images/s of one-image `invoke()` calls (as on a phone), interpreter at 1 or 2
  threads; the median call time over about `--seconds`.
- Parameters: the backbone's. Size: the float32 `.tflite` file.

KerasHub presets cannot be downloaded here, so each KerasHub family is built from the
architecture of its registered preset (the same configuration KerasHub's own converters
use), written with `save_to_preset` and loaded back through `kerashub:<dir>`, the path a
downloaded preset takes; the spec found there is checked against the registered one.

Run (about 30-45 minutes on 2 shared CPU cores; needs `pip install "tltf[kerashub]"`):

    .venv/bin/python benchmarks/backbones.py
    .venv/bin/python benchmarks/backbones.py --only mobilenet_v3_small kerashub:dinov2_small \
        --seconds 2 --out runs/bench_backbones
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERAS_APPLICATIONS = [
    "mobilenet_v3_small", "mobilenet_v3_large", "mobilenet_v2", "mobilenet",
    "efficientnet_b0", "efficientnet_v2_b0", "resnet50", "resnet50_v2", "densenet121",
    "convnext_tiny", "inception_v3", "xception", "nasnet_mobile",
]  # larger ones (vgg16, inception_resnet_v2, efficientnet_v2_s, ...) with --only
KERAS_HUB = [
    "kerashub:mobilenet_v3_small_100_imagenet", "kerashub:mobilenet_v3_large_100_imagenet",
    "kerashub:efficientnet_b0_ra_imagenet", "kerashub:resnet_50_imagenet",
    "kerashub:dinov2_small", "kerashub:vit_base_patch16_224_imagenet",
    "kerashub:siglip_base_patch16_224",
]
_IMAGENET = dict(scale=[1 / (255 * s) for s in (0.229, 0.224, 0.225)],
                 offset=[-m / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="backbone names (default: all of the table)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time budget per figure")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_backbones"))
    parser.add_argument("--worker", type=int, choices=(1, 2), help=argparse.SUPPRESS)
    return parser.parse_args()


def _kerashub_architecture(name):
    """(backbone, converter) of a registered KerasHub preset's architecture, random weights.

    KerasHub's timm converters hold the CNN configurations (a private module, fine for a
    benchmark); the transformer sizes are those of the presets' model cards.
    """
    import keras_hub
    from keras_hub.src.utils.timm import convert_efficientnet, convert_mobilenet, convert_resnet

    m, layers = keras_hub.models, keras_hub.layers
    preset = name.removeprefix("kerashub:")
    if preset.startswith("mobilenet_v3"):
        arch = "mobilenetv3_" + preset.split("_")[2] + "_100"
        config = convert_mobilenet.convert_backbone_config({"architecture": arch})
        return (m.MobileNetBackbone(**config, image_shape=(224, 224, 3)),
                layers.MobileNetImageConverter(image_size=(224, 224), **_IMAGENET))
    if preset.startswith("efficientnet_b0"):
        config = convert_efficientnet.convert_backbone_config({"architecture": "efficientnet_b0"})
        return (m.EfficientNetBackbone(**config, input_shape=(224, 224, 3)),
                layers.EfficientNetImageConverter(image_size=(224, 224), **_IMAGENET))
    if preset.startswith("resnet_50"):
        config = convert_resnet.convert_backbone_config({"architecture": "resnet50"})
        return (m.ResNetBackbone(**config, image_shape=(224, 224, 3)),
                layers.ResNetImageConverter(image_size=(224, 224), **_IMAGENET))
    if preset == "dinov2_small":
        return (m.DINOV2Backbone(patch_size=14, num_layers=12, hidden_dim=384, num_heads=6,
                                 intermediate_dim=1536, image_shape=(224, 224, 3)),
                layers.DINOV2ImageConverter(image_size=(224, 224), **_IMAGENET))
    if preset == "vit_base_patch16_224_imagenet":
        return (m.ViTBackbone(image_shape=(224, 224, 3), patch_size=16, num_layers=12,
                              num_heads=12, hidden_dim=768, mlp_dim=3072),
                layers.ViTImageConverter(image_size=(224, 224), scale=1 / 127.5, offset=-1.0))
    if preset == "siglip_base_patch16_224":
        vision = m.SigLIPVisionEncoder(patch_size=16, hidden_dim=768, num_layers=12,
                                       num_heads=12, intermediate_dim=3072,
                                       image_shape=(224, 224, 3))
        text = m.SigLIPTextEncoder(vocabulary_size=32000, embedding_dim=768, hidden_dim=768,
                                   num_layers=12, num_heads=12, intermediate_dim=3072)
        return (m.SigLIPBackbone(vision, text),
                layers.SigLIPImageConverter(image_size=(224, 224), scale=1 / 127.5,
                                            offset=-1.0))
    raise SystemExit(f"no architecture for {name}")


def _build(name, out):
    """A tltf classifier on `name` (random weights) and the note for the table."""
    import tltf
    from tltf.backbones.kerashub import kerashub_backbone

    if not name.startswith("kerashub:"):
        return tltf.build_classifier(name, 10, weights=None, seed=0), "keras.applications"
    directory = out / "presets" / name.removeprefix("kerashub:")
    if not (directory / "config.json").is_file():
        backbone, converter = _kerashub_architecture(name)
        backbone.save_to_preset(str(directory))
        converter.save_to_preset(str(directory))
    found, registered = kerashub_backbone(str(directory)), tltf.get_backbone(name)
    same = all(getattr(found, f) == getattr(registered, f)
               for f in ("feature_dim", "blocks", "default_size", "family"))
    return (tltf.build_classifier(f"kerashub:{directory}", 10, weights=None, seed=0),
            "KerasHub" + ("" if same else " (differs from the registered spec!)"))


def _keras_rate(model, size, seconds):
    import numpy as np

    x = np.random.default_rng(0).uniform(0, 255, (8, size, size, 3)).astype("float32")
    model.predict_on_batch(x)  # trace
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 2:
        t = time.perf_counter()
        model.predict_on_batch(x)
        times.append(time.perf_counter() - t)
    return 8 / statistics.median(times)


def _litert_rate(path, size, threads, seconds):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    image = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype("float32")
    interpreter.set_tensor(detail["index"], image)
    interpreter.invoke()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - t)
    return 1 / statistics.median(times)


def worker(threads, names, out, seconds) -> None:
    """Times every backbone in this process (TensorFlow at `threads` intra-op threads)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    import tltf
    from tltf.models.parts import backbone_of

    for name in names:
        model, source = _build(name, out)
        size = model.input_shape[1]
        row = {"name": name, "threads": threads, "source": source, "size": size,
               "params": backbone_of(model).count_params(),
               "keras": _keras_rate(model, size, seconds)}
        if threads == 2:  # export once; LiteRT sets its own thread count
            path = out / "tflite" / (name.replace(":", "_") + ".tflite")
            path.parent.mkdir(parents=True, exist_ok=True)
            tltf.export_tflite(model, path, metadata=False, overwrite=True,
                               class_names=[str(i) for i in range(10)])
            row["tflite_mb"] = path.stat().st_size / 1e6
            row["litert"] = {t: _litert_rate(path, size, t, seconds) for t in (1, 2)}
        print("ROW " + json.dumps(row), flush=True)
        keras.backend.clear_session()


def main() -> int:
    args = parse_args()
    out = Path(args.out)
    names = args.only or [*KERAS_HUB, *KERAS_APPLICATIONS]
    if args.worker:
        worker(args.worker, names, out, args.seconds)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for threads in (2, 1):  # 2 first: it writes the presets and .tflite files
        command = [sys.executable, __file__, "--worker", str(threads), "--seconds",
                   str(args.seconds), "--out", str(out), "--only", *names]
        result = subprocess.run(command, capture_output=True, text=True,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        for line in result.stdout.splitlines():
            if line.startswith("ROW "):
                row = json.loads(line[4:])
                rows.setdefault(row["name"], {}).update(
                    {k: v for k, v in row.items() if k not in ("threads", "keras")},
                    **{f"keras_{threads}": row["keras"]})
        if result.returncode != 0:
            print(result.stderr[-3000:], file=sys.stderr)
    table = [
        "| backbone | source | size | params (M) | .tflite (MB) | Keras img/s 1T | Keras img/s 2T "
        "| LiteRT img/s 1T | LiteRT img/s 2T |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ordered = sorted(rows.values(), key=lambda r: -r.get("litert", {}).get("2", 0))
    for r in ordered:
        lite = r.get("litert", {})
        table.append(
            f"| `{r['name']}` | {r['source']} | {r['size']} | {r['params'] / 1e6:.1f} | "
            f"{r.get('tflite_mb', float('nan')):.1f} | {r.get('keras_1', float('nan')):.1f} | "
            f"{r.get('keras_2', float('nan')):.1f} | {lite.get('1', float('nan')):.1f} | "
            f"{lite.get('2', float('nan')):.1f} |")
    text = "\n".join(table)
    print(text)
    (out / "backbones.md").write_text(text + "\n")
    (out / "backbones.json").write_text(json.dumps(ordered, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
