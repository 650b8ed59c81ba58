"""Does the reduced-scale JPEG decode cost accuracy? tltf's fast decode against a full one.

tltf decodes a JPEG that is at least twice the asked size with libjpeg's DCT scaling (by
1/2, 1/4 or 1/8, as long as the scaled image still covers the target), then resizes it
(bilinear where both sides shrink by 2x or less, area averaging where one shrinks more).
The alternative is a full decode followed by the resize for that size.
This script measures, side by side in one run on the shared data sets:

- decode time per image of both (tltf's own pipeline, `prepare(cache=None)`; the full
  decode is tltf with the DCT scale forced to 1);
- how far the pixels are apart (mean absolute difference, 0-255), and how far each is from
  Pillow's decode (RGB, EXIF applied, bicubic antialiased resize: the independent client
  of `benchmarks/small_data.py`);
- what it does to accuracy: a cross-validated logistic regression on pooled MobileNetV2
  (ImageNet) features of a training subset, trained on images decoded one way and scored
  on the validation folder decoded the same way, and decoded by Pillow (a phone or server
  decoding differently from training), over several seeds (a new subset each).

Run (about 5 minutes on 2 cores):

    .venv/bin/python benchmarks/decode_quality.py
    .venv/bin/python benchmarks/decode_quality.py --size 224 --per-class 50 --seeds 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import small_data as sd  # noqa: E402  (the shared helpers of the small-data benchmark)

DECODES = ("fast", "full", "pillow")


def _tltf_arrays(files_by_class: dict, size: int, work: Path, full: bool):
    """(images, labels, seconds) decoded by tltf's pipeline, with the DCT scale or without."""
    import numpy as np
    import tensorflow as tf

    import tltf
    from tltf.data import _checked_files

    folder = sd._link_folder(files_by_class, Path(tempfile.mkdtemp(dir=work)) / "data")
    original = _checked_files._decode_ratio  # read once when the data set is made
    calls = []

    def full_scale(heights, widths, jpeg, image_size, resize):
        calls.append(len(heights))
        return tf.where(tf.cast(jpeg, tf.bool), 1, 0)  # scale 1 for every JPEG

    if full:  # scale 1: libjpeg decodes every pixel, then the resize for that size
        _checked_files._decode_ratio = full_scale
    try:
        data = tltf.load_image_folder(folder, image_size=size, cache_dir=work / "checks")
        start = time.perf_counter()
        pairs = [(x.numpy(), y.numpy()) for x, y in
                 data.prepare(training=False, batch_size=64, cache=None)]
        seconds = time.perf_counter() - start
    finally:
        _checked_files._decode_ratio = original
    if full and not calls:  # the loader no longer reads the ratio where this patches it
        raise SystemExit("the full decode was not applied: update _tltf_arrays")
    return (np.concatenate([p[0] for p in pairs]).astype("uint8"),
            np.concatenate([p[1] for p in pairs]), seconds)


def _pillow_arrays(files_by_class: dict, size: int):
    import numpy as np

    files = [f for cls in files_by_class for f in files_by_class[cls]]
    labels = np.concatenate([np.full(len(v), i) for i, v in enumerate(files_by_class.values())])
    start = time.perf_counter()
    images = sd._decode(files, size)
    return images, labels, time.perf_counter() - start


def _decoded(files_by_class, size, work):
    """{decode: (images, labels, seconds)} for the three decodes of the same files."""
    return {"fast": _tltf_arrays(files_by_class, size, work, full=False),
            "full": _tltf_arrays(files_by_class, size, work, full=True),
            "pillow": _pillow_arrays(files_by_class, size)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(sd.DATASETS), metavar="NAME")
    parser.add_argument("--size", type=int, default=160, help="image size (default 160)")
    parser.add_argument("--per-class", type=int, default=100,
                        help="training images a class for the accuracy runs (default 100)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--shared", type=Path, default=sd.DEFAULT_SHARED)
    args = parser.parse_args(argv)
    sd._seed_keras_home(args.shared)

    import keras
    import numpy as np

    base = keras.applications.MobileNetV2(input_shape=(args.size, args.size, 3),
                                          include_top=False, weights="imagenet", pooling="avg")

    def embed(images):
        return sd._predict(lambda b: base.predict(b / 127.5 - 1.0, batch_size=32, verbose=0),
                           images)

    for name in args.datasets:
        found = sd._find_dataset(args.shared, name)
        if isinstance(found, str):
            print(f"{name}: skipped ({found})")
            continue
        train, val = found
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            # Untimed: the first pipeline of a process pays TensorFlow's start-up.
            _decoded({c: files[:4] for c, files in val.items()}, args.size, work)
            val_sets = _decoded(val, args.size, work)
            n = len(val_sets["fast"][1])
            print(f"\n{name}, {n} validation images at {args.size} px")
            for decode in DECODES:
                print(f"  decode {decode:6s} {1000 * val_sets[decode][2] / n:6.1f} ms/image")
            for a, b in (("fast", "full"), ("fast", "pillow"), ("full", "pillow")):
                diff = np.abs(val_sets[a][0].astype("float32") - val_sets[b][0]).mean()
                print(f"  mean |{a} - {b}| {diff:5.2f} (0-255)")
            if not all(np.array_equal(val_sets["fast"][1], val_sets[d][1]) for d in DECODES):
                raise SystemExit("the decodes read the validation files in different orders")
            val_features = {d: embed(val_sets[d][0]) for d in DECODES}
            scores = {(d, s): [] for d in DECODES for s in ("same", "pillow")}
            for seed in range(args.seeds):
                subset = sd._subset(train, args.per_class, seed)
                for decode, (images, labels, _) in _decoded(subset, args.size, work).items():
                    fit = sd._logistic_regression_cv(seed).fit(embed(images), labels)
                    y = val_sets[decode][1]
                    scores[decode, "same"].append(np.mean(fit.predict(val_features[decode]) == y))
                    scores[decode, "pillow"].append(
                        np.mean(fit.predict(val_features["pillow"]) == y))
            print(f"  accuracy, {args.per_class} a class, seeds 0-{args.seeds - 1} "
                  "(mean +- std, %):")
            print("  trained on   scored on the same decode   scored on Pillow's decode")
            for decode in DECODES:
                same, pil = (100 * np.array(scores[decode, s]) for s in ("same", "pillow"))
                print(f"  {decode:10s}   {same.mean():5.1f} +- {same.std():3.1f}"
                      f"                  {pil.mean():5.1f} +- {pil.std():3.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
