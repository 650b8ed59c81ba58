"""`lr_find`: the learning-rate range test (Smith 2015; fastai's `Learner.lr_find`).

A copy of the model trains on batches of the data while the learning rate rises
exponentially, one step per batch; the loss, smoothed, is recorded against the rate, and a
rate is suggested from the curve. The caller's model is never trained: its weights,
`trainable` flags, compile state and optimizer are the same afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from tltf._io import atomic_path
from tltf.data._batches import batches
from tltf.models.classifier import compile_classifier
from tltf.training import runtime
from tltf.training.freeze import freeze_backbone, parse_unfreeze
from tltf.training.freeze import unfreeze as unfreeze_layers

__all__ = ["LRFindResult", "lr_find"]

# The smoothing of fastai's recorder: an exponential moving average, bias-corrected.
_BETA = 0.98
# The run stops once the smoothed loss passes this multiple of its best value (fastai's rule).
_DIVERGENCE = 4.0


@dataclass
class LRFindResult:
    """What `lr_find` returns.

    Attributes:
        lrs: list of float. The learning rate of each step, increasing.
        losses: list of float. The smoothed training loss after each step (exponential
            moving average with beta 0.98, bias-corrected).
        suggestion: float. The suggested peak learning rate: the `"valley"` rule (see
            `lr_find`).
        suggestions: dict. The rate each rule gives on the same curve: `"valley"`,
            `"steep"` (steepest descent of the smoothed loss) and `"minimum"` (the rate of
            the lowest smoothed loss, divided by 10).
        phase: int. 1 (head only) or 2 (top of the backbone unfrozen).
        unfrozen: list of str. The backbone's layers that trained (as `tltf.unfreeze`
            returns them); empty in phase 1.
        diverged: bool. Whether the run stopped early because the loss diverged.
    """

    lrs: list[float]
    losses: list[float]
    suggestion: float
    suggestions: dict[str, float] = field(default_factory=dict)
    phase: int = 2
    unfrozen: list[str] = field(default_factory=list)
    diverged: bool = False

    def plot(self, path: str | Path) -> Path:
        """Writes the loss against the learning rate (log scale) as a PNG, the suggestion marked.

        As fastai's `plot_lr_find`, the last 5 points (where the loss shoots up) are left out
        of a curve longer than 10, so that the scale shows the rest.

        Args:
            path: str or Path. The PNG file to write; its folder is created.

        Returns:
            The path written.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 4), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        shown = len(self.lrs) - 5 if len(self.lrs) > 10 else len(self.lrs)
        ax.plot(self.lrs[:shown], self.losses[:shown])
        at = int(np.argmin(np.abs(np.log(self.lrs) - math.log(self.suggestion))))
        ax.plot([self.suggestion], [self.losses[at]], "o", color="tab:red",
                label=f"valley: {self.suggestion:.2g}")
        ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed training loss",
               title=f"lr_find, phase {self.phase}")
        ax.legend(loc="best")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        return path

    def to_dict(self) -> dict:
        """The result as JSON-ready data."""
        return {"phase": self.phase, "suggestion": self.suggestion,
                "suggestions": dict(self.suggestions), "unfrozen": list(self.unfrozen),
                "diverged": self.diverged,
                "lrs": list(self.lrs), "losses": list(self.losses)}


def lr_find(
    model: keras.Model,
    train,
    *,
    phase: int = 2,
    unfreeze: str = "top_blocks:2",
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    batch_size: int = 32,
    label_smoothing: float = 0.1,
    seed: int | None = None,
) -> LRFindResult:
    """Runs the learning-rate range test on a copy of the model and suggests a peak rate.

    A copy of `model` (same weights) is prepared as `fine_tune` prepares that phase: phase 1
    freezes the backbone (`tltf.freeze_backbone`); phase 2 unfreezes the top of it
    (`tltf.unfreeze` with `unfreeze`, BatchNorm kept in inference mode). It is compiled as
    `fine_tune` compiles it (Adam, the same loss and `label_smoothing`) and trained for
    `num_steps` steps, one batch each (the data is cycled when it has fewer batches), the
    learning rate rising exponentially from `start_lr` to `end_lr`. The loss of each step
    is smoothed (exponential moving average, beta 0.98, bias-corrected); the run stops
    early once it exceeds 4 times its lowest value or is not finite. `model` itself is not
    trained: its weights, `trainable` flags and optimizer are unchanged.

    The suggestion is fastai's default rule, `"valley"` (`fastai.callback.schedule.valley`,
    https://docs.fast.ai/callback.schedule.html): on the smoothed curve without its first
    tenth of `num_steps` and its last 5 points (as fastai trims it), find the longest
    decreasing run of losses (the longest strictly decreasing subsequence), and take the
    rate about half way along it (index `start + floor(span/3) + floor(span/6)`). The
    older rules, `"steep"` (steepest descent) and `"minimum"` (rate of the lowest loss / 10),
    are in `suggestions`. The suggestion is a peak rate, as `fine_tune`'s `head_lr` and
    `finetune_lr` are (they warm up to it, then decay).

    Phase 2 is meant for a model whose head is already trained (run it after phase 1, as
    fastai runs `lr_find` again after unfreezing); on a fresh head the curve mostly shows
    the head learning.

    Args:
        model: keras.Model. A classifier from `tltf.build_classifier`.
        train: `tltf.ImageDataset`, a batched `tf.data.Dataset` of `(images, labels)` or a
            tuple `(images, labels)` of arrays (the forms `fine_tune` takes).
        phase: int. 1: the head alone on a frozen backbone; 2: the top of the backbone
            unfrozen too, as in `fine_tune`'s phase 2. Defaults to `2`.
        unfreeze: str. What phase 2 unfreezes, in the forms of `tltf.unfreeze`. Defaults to
            `"top_blocks:2"`, what `fine_tune` unfreezes without validation data; pass
            `"top_blocks:4"` for the rate of a `fine_tune` with validation data.
        start_lr: float > 0. The first learning rate. Defaults to `1e-7`.
        end_lr: float > `start_lr`. The last learning rate. Defaults to `10.0`.
        num_steps: int >= 10. Steps (batches) at most. Defaults to `100`.
        batch_size: int >= 1. Images per step (for an `ImageDataset` or arrays). Defaults
            to `32`.
        label_smoothing: float in [0, 1). Of the loss, as in `fine_tune`. Defaults to `0.1`.
        seed: int or None. Seeds the shuffle of the data and TensorFlow. Defaults to None.

    Returns:
        An `LRFindResult`.

    Raises:
        ValueError: a bad `phase`, `unfreeze`, `start_lr`, `end_lr`, `num_steps`,
            `batch_size` or `label_smoothing` (the message names it), or data that is not
            batched `(images, labels)`.

    Example:

    >>> import numpy as np
    >>> from tltf import build_classifier
    >>> x = np.random.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    >>> y = np.random.randint(0, 2, 16)
    >>> model = build_classifier("mobilenet_v2_035", 2, weights=None, image_size=32)
    >>> result = lr_find(model, (x, y), phase=1, num_steps=12, batch_size=8, seed=0)
    >>> len(result.lrs) <= 12 and 1e-7 <= result.suggestion <= 10
    True
    """
    _check_args(phase, unfreeze, start_lr, end_lr, num_steps, batch_size, label_smoothing)
    if seed is not None:
        runtime.set_seed(seed, deterministic=False)
    num_classes = int(model.outputs[0].shape[-1])
    data = batches(train, "train", training=True, batch_size=batch_size, seed=seed,
                   num_classes=num_classes, fit=True).data
    # A copy under the model's own policy: the caller's model, flags and optimizer stay as
    # they are, and the copy goes away with this call.
    work = runtime.rebuild_with_policy(model, model.dtype_policy)
    if phase == 1:
        freeze_backbone(work)
        unfrozen = []
    else:
        unfrozen = unfreeze_layers(work, unfreeze)
    compile_classifier(work, keras.optimizers.Adam(learning_rate=start_lr),
                       label_smoothing=label_smoothing)
    ratio = end_lr / start_lr
    lrs, losses, avg, best, diverged = [], [], 0.0, math.inf, False
    for step, (x, y) in enumerate(data.repeat().take(num_steps)):
        lr = start_lr * ratio ** (step / (num_steps - 1))
        work.optimizer.learning_rate.assign(lr)
        loss = float(work.train_on_batch(x, y, return_dict=True)["loss"])
        avg = _BETA * avg + (1 - _BETA) * loss
        smooth = avg / (1 - _BETA ** (step + 1))
        if not math.isfinite(smooth):
            diverged = True
            break
        lrs.append(lr)
        losses.append(smooth)
        best = min(best, smooth)
        if smooth > _DIVERGENCE * best:
            diverged = True
            break
    del work
    suggestions = _suggest(lrs, losses, num_steps)
    return LRFindResult(lrs=lrs, losses=losses, suggestion=suggestions["valley"],
                        suggestions=suggestions, phase=phase, unfrozen=unfrozen,
                        diverged=diverged)


def _suggest(lrs: list[float], losses: list[float], num_steps: int) -> dict[str, float]:
    """The valley, steep and minimum/10 rules on the curve trimmed as fastai trims it."""
    lr, loss = np.asarray(lrs), np.asarray(losses)
    trimmed = slice(num_steps // 10, len(loss) - 5)
    if len(loss[trimmed]) >= 3:  # a run that diverged early keeps its whole curve
        lr, loss = lr[trimmed], loss[trimmed]
    if len(loss) < 2:
        return dict.fromkeys(("valley", "steep", "minimum"), float(lr[0]))
    # Longest strictly decreasing subsequence ending at each point.
    run = np.ones(len(loss), dtype=int)
    for i in range(1, len(loss)):
        before = run[:i][loss[:i] > loss[i]]
        if len(before):
            run[i] = before.max() + 1
    end = int(np.argmax(run))
    start = max(0, end - int(run[end]))  # fastai counts the span so
    span = (end - start) / 3
    valley = float(lr[start + int(span) + int(span / 2)])
    slope = np.diff(loss) / np.diff(np.log(lr))
    return {"valley": valley, "steep": float(lr[int(np.argmin(slope))]),
            "minimum": float(lr[int(np.argmin(loss))]) / 10}


def _check_args(phase, unfreeze, start_lr, end_lr, num_steps, batch_size, label_smoothing):
    if isinstance(phase, bool) or phase not in (1, 2):
        raise ValueError(
            "`phase` must be 1 (the head on a frozen backbone) or 2 (the top of the "
            f"backbone unfrozen too). Received: phase={phase!r}"
        )
    parse_unfreeze(unfreeze)
    if not _is_number(start_lr) or not 0 < start_lr < math.inf:
        raise ValueError(f"`start_lr` must be a number > 0. Received: start_lr={start_lr!r}")
    if not _is_number(end_lr) or not start_lr < end_lr < math.inf:
        raise ValueError(
            f"`end_lr` must be a number > start_lr ({start_lr!r}). Received: end_lr={end_lr!r}"
        )
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 10:
        raise ValueError(
            f"`num_steps` must be an int >= 10. Received: num_steps={num_steps!r}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be an int >= 1. Received: batch_size={batch_size!r}"
        )
    if not _is_number(label_smoothing) or not 0 <= label_smoothing < 1:
        raise ValueError(
            "`label_smoothing` must be a number in [0, 1). "
            f"Received: label_smoothing={label_smoothing!r}"
        )


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
