"""Writes an `EvaluationReport` to disk: JSON, PNG figures and one self-contained HTML page.

The HTML page embeds its figures as `data:` URIs, so it opens in any browser, offline, and
can be mailed or archived as a single file; the same figures are also written as PNG files
beside it for slides and notebooks.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from pathlib import Path

import numpy as np

from tltf._io import atomic_write

__all__ = [
    "plot_confusion_matrix",
    "plot_history",
    "plot_mistakes",
    "save_report",
]

REPORT_FILES = {
    "json": "report.json",
    "confusion_matrix": "confusion_matrix.png",
    "history": "training_curves.png",
    "mistakes": "mistakes.png",
    "html": "report.html",
}


def plot_confusion_matrix(matrix, class_names, path: str | os.PathLike) -> Path:
    """Saves the row-normalised confusion matrix as a labelled PNG.

    Each row (a true class) is divided by its support, so the diagonal reads as per-class
    recall; cells show the fraction and the raw count.

    Args:
        matrix: int array `(C, C)`. Rows are true classes, columns predicted classes.
        class_names: list of str. The `C` class names.
        path: str or path. The PNG file to write.

    Returns:
        The path written.

    Raises:
        ValueError: if the matrix is not square or does not match `class_names`.

    Example:

    >>> import numpy as np, tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "cm.png")
    >>> plot_confusion_matrix(np.array([[3, 1], [0, 4]]), ["cat", "dog"], f).exists()
    True
    """
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix)
    n = len(class_names)
    if matrix.shape != (n, n):
        raise ValueError(
            f"`matrix` must be square with one row per class ({n} classes). "
            f"Received: matrix.shape={matrix.shape}"
        )
    totals = matrix.sum(axis=1, keepdims=True)
    normalized = np.divide(matrix, totals, out=np.zeros(matrix.shape, float), where=totals > 0)
    side = min(4 + 0.5 * n, 24)
    fig = Figure(figsize=(side + 1.5, side))
    ax = fig.add_subplot()
    im = ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xticks(range(n), labels=class_names, rotation=45 if n > 3 else 0, ha="right" if n > 3 else "center")
    ax.set_yticks(range(n), labels=class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Confusion matrix (normalized by true class)")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                color = "white" if normalized[i, j] > 0.5 else "black"
                ax.text(j, i, f"{normalized[i, j]:.2f}\n({matrix[i, j]})", ha="center",
                        va="center", color=color, fontsize=8 if n <= 10 else 6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)


def plot_history(history: dict, path: str | os.PathLike) -> Path:
    """Saves the training curves (loss, and accuracy when recorded) with phase boundaries.

    Args:
        history: dict of lists, one value per epoch, e.g. `{"loss": [...], "val_loss": [...],
            "phase": ["head", "head", "finetune", ...]}`. A `"phase"` list marks where one
            training phase ends and the next begins.
        path: str or path. The PNG file to write.

    Returns:
        The path written.

    Raises:
        ValueError: if `history` has no numeric per-epoch series.

    Example:

    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "h.png")
    >>> plot_history({"loss": [1.0, 0.5, 0.4], "phase": ["head", "head", "finetune"]}, f).name
    'h.png'
    """
    from matplotlib.figure import Figure

    series = {k: v for k, v in history.items()
              if isinstance(v, list) and v and all(_is_number(x) for x in v)
              and k not in ("epoch", "lr", "learning_rate")}
    if not series:
        raise ValueError(
            "`history` has no numeric per-epoch series to plot. "
            f"Received: history keys={sorted(history)}"
        )
    panels = [("loss", [k for k in series if "loss" in k])]
    panels.append(("accuracy", [k for k in series if "acc" in k]))
    panels = [(title, keys) for title, keys in panels if keys]
    if not panels:
        panels = [("metrics", list(series))]
    phases = [f"phase {x}" if _is_number(x) else str(x) for x in history.get("phase") or []]
    fig = Figure(figsize=(6 * len(panels), 4))
    for p, (title, keys) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), p + 1)
        for key in sorted(keys):
            values = [float(x) if x is not None else math.nan for x in series[key]]
            ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=key)
        for i in range(1, len(phases)):
            if phases[i] != phases[i - 1]:
                ax.axvline(i + 0.5, color="gray", linestyle="--")
                ax.text(i + 0.5, 1.0, f" {phases[i]}", transform=ax.get_xaxis_transform(),
                        va="top", ha="left", fontsize=8, color="gray")
        if phases:
            ax.text(0.01, 1.0, f" {phases[0]}", transform=ax.transAxes, va="top", fontsize=8,
                    color="gray")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend(fontsize=8, loc="center right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)


def plot_mistakes(mistakes, path: str | os.PathLike, *, columns: int = 4) -> Path:
    """Saves a grid of the most confident mistakes, each titled true / predicted / confidence.

    Args:
        mistakes: list of `tltf.evaluation.metrics.Mistake` with thumbnails (`image`).
        path: str or path. The PNG file to write.
        columns: int. Images per row. Defaults to `4`.

    Returns:
        The path written.

    Raises:
        ValueError: if no mistake carries an image.

    Example:

    >>> import numpy as np, tempfile, os
    >>> from tltf.evaluation.metrics import Mistake
    >>> m = Mistake(0, "cat", "dog", 0.9, image=np.zeros((8, 8, 3), "uint8"))
    >>> plot_mistakes([m], os.path.join(tempfile.mkdtemp(), "m.png")).suffix
    '.png'
    """
    from matplotlib.figure import Figure

    shown = [m for m in mistakes if m.image is not None]
    if not shown:
        raise ValueError(f"No mistake has an image to show. Received: {len(mistakes)} mistakes")
    columns = max(1, min(columns, len(shown)))
    rows = math.ceil(len(shown) / columns)
    fig = Figure(figsize=(2.6 * columns, 2.9 * rows))
    for k, m in enumerate(shown):
        ax = fig.add_subplot(rows, columns, k + 1)
        image = m.image if m.image.shape[-1] == 3 else m.image[..., 0]
        ax.imshow(image, cmap=None if image.ndim == 3 else "gray")
        ax.set_title(f"true: {m.true_label}\npred: {m.predicted_label} ({m.confidence:.2f})",
                     fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)


def save_report(report, directory: str | os.PathLike) -> Path:
    """Writes `report.json`, the PNG figures and `report.html` into `directory`.

    Figures: `confusion_matrix.png` always; `training_curves.png` when the report carries a
    training history; `mistakes.png` when there are mistakes with thumbnails. The HTML page
    embeds the figures, so it is a single self-contained file that needs no network.

    Args:
        report: `tltf.evaluation.metrics.EvaluationReport`.
        directory: str or path. The folder to write into (created if missing).

    Returns:
        The path of `report.html`.

    Example:

    >>> import numpy as np, keras, tempfile
    >>> from tltf.evaluation.metrics import evaluate
    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.GlobalAveragePooling2D()(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    >>> report = evaluate(model, (np.random.rand(6, 8, 8, 3) * 255, np.arange(6) % 2))
    >>> save_report(report, tempfile.mkdtemp()).name
    'report.html'
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / REPORT_FILES["json"], json.dumps(report.to_dict(), indent=2))
    figures = {"confusion_matrix": plot_confusion_matrix(
        report.confusion_matrix, report.class_names, directory / REPORT_FILES["confusion_matrix"])}
    if report.history:
        try:
            figures["history"] = plot_history(report.history, directory / REPORT_FILES["history"])
        except ValueError:
            pass  # a history without numeric series has nothing to plot
    if any(m.image is not None for m in report.mistakes):
        figures["mistakes"] = plot_mistakes(report.mistakes, directory / REPORT_FILES["mistakes"])
    page = directory / REPORT_FILES["html"]
    atomic_write(page, _html(report, figures))
    return page


def _is_number(x) -> bool:
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(report, figures) -> str:
    headline = [("examples", report.num_samples), ("accuracy", f"{report.accuracy:.4f}")]
    headline += [(f"top-{k} accuracy", f"{v:.4f}") for k, v in report.top_k_accuracy.items() if k > 1]
    headline.append(("expected calibration error", f"{report.ece:.4f}"))
    if report.calibration:
        c = report.calibration
        headline += [("temperature", f"{c['temperature']:.3f}"),
                     ("ECE before temperature", f"{c['ece_before']:.4f}")]
    per_class = [(n, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", m["support"])
                 for n, m in report.per_class.items()]
    for name, m in (("macro avg", report.macro_avg), ("weighted avg", report.weighted_avg)):
        per_class.append((name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}",
                          report.num_samples))
    sections = [
        "<h2>Summary</h2>", _table(("measure", "value"), headline),
        "<h2>Per class</h2>",
        _table(("class", "precision", "recall", "F1", "support"), per_class),
        "<h2>Confusion matrix</h2>", _img(figures["confusion_matrix"], "confusion matrix"),
    ]
    if "history" in figures:
        sections += ["<h2>Training curves</h2>", _img(figures["history"], "training curves")]
    if report.mistakes:
        sections.append("<h2>Most confident mistakes</h2>")
        if "mistakes" in figures:
            sections.append(_img(figures["mistakes"], "most confident mistakes"))
        sections.append(_table(
            ("#", "file", "true", "predicted", "confidence"),
            [(m.index, m.file or "", m.true_label, m.predicted_label, f"{m.confidence:.3f}")
             for m in report.mistakes]))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
             "padding:4px 8px;text-align:left}img{max-width:100%;display:block;margin:1em 0}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>tltf evaluation report</title>"
            f"<style>{style}</style></head><body><h1>Evaluation report</h1>"
            + "\n".join(sections) + "</body></html>\n")
