"""From a few thousand images to millions: tltf against Keras' folder loader, side by side.

Generates N JPEGs (default 20,000 of 240x320 in 20 class folders) and measures, each side in
its own process (so peak RSS is its own):
  keras: `keras.utils.image_dataset_from_directory` (listing only, no check), iterated;
  tltf:  `load_image_folder` (the check pass, first call and second call over the unchanged
         folder) and `ImageDataset.prepare(training=True)` with its default `cache="auto"`,
         iterated; and once more with `cache="disk"`, the choice "auto" makes when the
         decoded set does not fit the memory budget.
Both at 160 px, batch 32, seed 0; epochs are iterations of the prepared dataset (no model).
Prints check-pass and listing times, first- and later-epoch images/s (also per second of
the process's CPU time, which a change in the machine's CPU share does not move: on a
shared 2-core machine whole runs can get half the CPU), peak RSS, and a table
that extrapolates them to 1M and 10M images (linear in N; memory as a fixed part plus a
per-file part plus the cache "auto" would choose at that N on this machine).

Usage:
    .venv/bin/python benchmarks/scale.py [--n 20000] [--folder DIR] [--epochs 2] [--repeats 3]
    .venv/bin/python benchmarks/scale.py --n 200000 --repeats 1   # the big run, ~40 min
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZE = 160
BATCH = 32
HEIGHT, WIDTH = 240, 320


def generate(root: Path, n: int, classes: int) -> None:
    """N JPEGs of smooth class-coloured patterns with a random box each (~15 KB a file)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    for c in range(classes):
        (root / f"class_{c:02d}").mkdir(parents=True, exist_ok=True)
    bases = []
    for c in range(classes):
        f = 0.01 + 0.004 * c
        bases.append(np.stack([127 + 100 * np.sin(f * xx + k + c) * np.cos(f * yy - k)
                               for k in range(3)], -1))
    t0 = time.perf_counter()
    for i in range(n):
        c = i % classes
        image = np.roll(bases[c], int(rng.integers(0, WIDTH)), axis=1)
        top, left = int(rng.integers(0, HEIGHT - 40)), int(rng.integers(0, WIDTH - 40))
        image[top:top + 40, left:left + 40] = rng.integers(0, 255, 3)
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(
            root / f"class_{c:02d}" / f"{i:07d}.jpg", quality=90)
        if (i + 1) % 5000 == 0:
            print(f"  generated {i + 1}/{n} ({time.perf_counter() - t0:.0f}s)", flush=True)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KB


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _epochs(ds, epochs: int) -> tuple[list[float], list[float]]:
    """Images per second of wall time, and per second of this process's CPU time (all its
    threads), of each epoch. The second does not move when the machine's CPU share does."""
    rates, cpu_rates = [], []
    for _ in range(epochs):
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        for x, _ in ds:
            n += int(x.shape[0])
        rates.append(n / (time.perf_counter() - t0))
        cpu_rates.append(n / (time.process_time() - c0))
    return rates, cpu_rates


def side_keras(folder: Path, epochs: int) -> dict:
    import keras

    base = _rss()
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        ds = keras.utils.image_dataset_from_directory(
            folder, image_size=(SIZE, SIZE), batch_size=BATCH, shuffle=True, seed=0,
            verbose=False)
        times.append(time.perf_counter() - t0)
    listed = _rss()
    rates, cpu_rates = _epochs(ds, epochs)
    return dict(check=times, rates=rates, cpu_rates=cpu_rates, base_rss=base, listed_rss=listed,
                peak_rss=_peak_rss())


def side_tltf(folder: Path, epochs: int, cache: str, work: Path) -> dict:
    import warnings

    import tltf  # noqa: F401  (imports as a user's script does, before the base RSS)
    from tltf.data import load_image_folder
    from tltf.data.checks import check_files
    from tltf.data.layout import list_image_files

    base = _rss()
    times = []
    for _ in range(2):  # the check pass alone: listing + check_files, cold then warm
        t0 = time.perf_counter()
        check_files(list_image_files(folder), cache_dir=work / "checks")
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()  # the whole loader, warm: listing, checks, labels, tf.data records
    data = load_image_folder(folder, image_size=SIZE, cache_dir=work / "checks")
    load = time.perf_counter() - t0
    listed = _rss()
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        ds = data.prepare(training=True, batch_size=BATCH, seed=0, cache=cache,
                          cache_dir=work / "data-cache")
    rates, cpu_rates = _epochs(ds, epochs)
    return dict(check=times, load=load, rates=rates, cpu_rates=cpu_rates, base_rss=base,
                listed_rss=listed,
                peak_rss=_peak_rss(), said=[str(w.message).split(".")[0] for w in said])


def _run_side(args, side: str, folder: Path, cache: str = "auto") -> dict:
    with tempfile.TemporaryDirectory(prefix="tltf-scale-") as work:
        command = [sys.executable, __file__, "--side", side, "--folder", str(folder),
                   "--epochs", str(args.epochs), "--cache", cache, "--work", work]
        out = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode or not lines:
            raise SystemExit(f"{side} failed:\n{out.stderr[-3000:]}")
        return json.loads(lines[-1][len("RESULT "):])


def _median(results: list[dict]) -> dict:
    """Every figure of a side's runs as the median over the runs (lists: element by element)."""
    import statistics

    out = dict(results[0])
    for key, value in results[0].items():
        if isinstance(value, list) and value and isinstance(value[0], (int, float)):
            out[key] = [statistics.median(r[key][i] for r in results) for i in range(len(value))]
        elif isinstance(value, (int, float)):
            out[key] = statistics.median(r[key] for r in results)
    return out


def _mb(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GB" if abs(nbytes) >= 2**30 else f"{nbytes / 2**20:.0f} MB"


def _time(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.2f} s"


def report(n: int, results: dict, repeats: int = 1) -> None:
    import psutil

    print(f"\n{n:,} JPEGs {HEIGHT}x{WIDTH}, read at {SIZE}x{SIZE}, batch {BATCH}, "
          f"{os.cpu_count()} CPUs; medians of {repeats} run(s) a side, taken in turns\n")
    names = list(results)
    print(f"{'':<34}" + "".join(f"{name:>22}" for name in names))

    def row(label, values):
        print(f"{label:<34}" + "".join(f"{v:>22}" for v in values))

    row("listing / check pass, 1st call", [f"{r['check'][0]:.2f} s" for r in results.values()])
    row("listing / check pass, 2nd call", [
        f"{r['check'][1]:.3f} s ({100 * r['check'][1] / r['check'][0]:.1f}%)"
        for r in results.values()])
    row("load_image_folder, warm", [f"{r['load']:.3f} s" if "load" in r else "-"
                                     for r in results.values()])
    row("first epoch", [f"{r['rates'][0]:.0f} img/s" for r in results.values()])
    row("first epoch, per CPU-second", [f"{r['cpu_rates'][0]:.0f} img" for r in results.values()])
    row("later epochs", [f"{sum(r['rates'][1:]) / max(1, len(r['rates']) - 1):.0f} img/s"
                         if len(r["rates"]) > 1 else "-" for r in results.values()])
    row("RSS after imports", [_mb(r["base_rss"]) for r in results.values()])
    row("RSS after listing/checks", [_mb(r["listed_rss"]) for r in results.values()])
    row("peak RSS", [_mb(r["peak_rss"]) for r in results.values()])
    for name, r in results.items():
        for message in r.get("said", []):
            print(f"  {name} said: {message}")
    keras_first = results["keras"]["rates"][0]
    tltf_first = results["tltf auto"]["rates"][0]
    cpu_ratio = results["tltf auto"]["cpu_rates"][0] / results["keras"]["cpu_rates"][0]
    runs = " ".join(f"{t / k:.2f}" for k, t in zip(results["keras"].get("first_runs", []),
                                                 results["tltf auto"].get("first_runs", [])))
    if runs:
        print(f"\nfirst epoch tltf/keras in each turn: {runs}")
    print(f"\nfirst epoch tltf/keras: {tltf_first / keras_first:.2f}x (target >= 1.0x), "
          f"{cpu_ratio:.2f}x per CPU-second; "
          f"second check pass: {100 * results['tltf auto']['check'][1] / results['tltf auto']['check'][0]:.1f}% "
          "of the first (target <= 5%)")

    # Extrapolation: times linear in N; memory = fixed + per-file * N + cache.
    available = psutil.virtual_memory().available
    decoded = SIZE * SIZE * 3
    print(f"\nExtrapolated (linear in N; this machine: {_mb(available)} of memory available, "
          f"{_mb(shutil.disk_usage(tempfile.gettempdir()).free)} free in the temp folder):")
    print(f"{'':<34}" + "".join(f"{f'{m:,}':>22}" for m in (n, 1_000_000, 10_000_000)))
    for name, r in results.items():
        per_file = max(0, r["listed_rss"] - r["base_rss"]) / n
        cache_now = max(0, r["peak_rss"] - r["listed_rss"])
        cells_check, cells_epoch, cells_rss = [], [], []
        for m in (n, 1_000_000, 10_000_000):
            cells_check.append(_time(r["check"][0] * m / n) + " / " + _time(r["check"][1] * m / n))
            cells_epoch.append(_time(m / r["rates"][0]) + " / " + (
                _time(m / r["rates"][-1]) if len(r["rates"]) > 1 else "-"))
            if name == "tltf auto" and m * decoded > 0.25 * available:
                # "auto" leaves memory: the decoded set goes to disk, RSS keeps what is left
                # of the cache part at N (at most the 512 MB shuffle buffer of prepare).
                cache = min(cache_now, 512 * 2**20)
                where = "disk" if m * decoded <= 0.5 * shutil.disk_usage(
                    tempfile.gettempdir()).free else "stream"
            elif name == "tltf auto":
                cache, where = cache_now * m / n, "memory"
            elif name == "tltf disk":
                cache, where = cache_now, "disk"
            else:
                cache, where = cache_now, "none"
            rss = r["base_rss"] + per_file * m + cache
            cells_rss.append(f"{_mb(rss)} ({where})")
        print(f"{name} check 1st / 2nd".ljust(34) + "".join(f"{c:>22}" for c in cells_check))
        print(f"{name} epoch 1st / later".ljust(34) + "".join(f"{c:>22}" for c in cells_epoch))
        print(f"{name} peak RSS (cache)".ljust(34) + "".join(f"{c:>22}" for c in cells_rss))
    print(f"(decoded set at {SIZE} px: {_mb(decoded * 1_000_000)} per million images)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="images to generate")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per side (first + later)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each side, in turns; figures are their medians")
    parser.add_argument("--folder", type=Path, default=None,
                        help="reuse (or create) the generated folder here instead of a temp one")
    parser.add_argument("--side", choices=("keras", "tltf"), help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        result = (side_keras(args.folder, args.epochs) if args.side == "keras"
                  else side_tltf(args.folder, args.epochs, args.cache, args.work))
        print("RESULT " + json.dumps(result))
        return
    temp = None
    folder = args.folder
    if folder is None:
        temp = tempfile.TemporaryDirectory(prefix="tltf-scale-data-")
        folder = Path(temp.name)
    try:
        have = sum(1 for _ in folder.glob("class_*/*.jpg")) if folder.is_dir() else 0
        if have != args.n:
            if have:
                raise SystemExit(f"{folder} holds {have} images, not --n {args.n}")
            print(f"generating {args.n:,} JPEGs in {folder} ...", flush=True)
            generate(folder, args.n, args.classes)
        runs = {}
        for repeat in range(args.repeats):  # the sides take turns, so noise hits them alike
            for name, side, cache in (("keras", "keras", "auto"), ("tltf auto", "tltf", "auto"),
                                      ("tltf disk", "tltf", "disk")):
                print(f"running {name} ({repeat + 1}/{args.repeats}) ...", flush=True)
                runs.setdefault(name, []).append(_run_side(args, side, folder, cache))
        medians = {name: _median(results) for name, results in runs.items()}
        for name, results in runs.items():  # the turns, so a slow spell shows as one
            medians[name]["first_runs"] = [r["rates"][0] for r in results]
        report(args.n, medians, args.repeats)
    finally:
        if temp is not None:
            temp.cleanup()


if __name__ == "__main__":
    main()
