"""Learning-rate defaults of `fine_tune`: batch-size scaling, warmup + cosine, discriminative rates."""

from __future__ import annotations

import math

import keras

from tltf import _compat
from tltf._backend import check_backend

check_backend()  # Keras must run on TensorFlow before this module builds anything

__all__ = [
    "REFERENCE_BATCH_SIZE",
    "DiscriminativeAdam",
    "scaled_learning_rate",
    "warmup_cosine",
]

REFERENCE_BATCH_SIZE = 32


def scaled_learning_rate(base: float, batch_size: int) -> float:
    """Scales a learning rate tuned at batch size 32 to another batch size (square-root rule).

    Adam-type optimizers normalise the gradient, so the linear scaling rule of SGD overshoots;
    the square-root rule keeps the noise scale of the updates constant
    (Malladi et al., 2022, "On the SDEs and Scaling Rules for Adaptive Gradient Algorithms").

    Args:
        base: float. The learning rate at batch size 32.
        batch_size: int. The batch size used for training.

    Returns:
        `base * sqrt(batch_size / 32)`.

    Raises:
        ValueError: if `base` or `batch_size` is not positive.

    Example:

    ```python
    assert tltf.training.schedules.scaled_learning_rate(1e-3, 128) == 2e-3
    ```
    """
    if not base > 0:
        raise ValueError(f"`base` must be a positive learning rate. Received: base={base!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}"
        )
    return base * math.sqrt(batch_size / REFERENCE_BATCH_SIZE)


def warmup_cosine(
    peak: float, total_steps: int, *, warmup_fraction: float = 0.1
) -> keras.optimizers.schedules.LearningRateSchedule:
    """A schedule that rises linearly from 0 to `peak`, then decays to 0 along a cosine.

    Warmup keeps the first updates of a fresh Adam (whose second-moment estimate is still
    poor) from wrecking pretrained weights; cosine decay ends each phase with small steps,
    which settles the weights without a hand-tuned step schedule.

    Args:
        peak: float. The learning rate at the end of warmup.
        total_steps: int. Optimizer steps in the whole phase (epochs times steps per epoch).
        warmup_fraction: float. Share of `total_steps` spent warming up (at least one step
            when `total_steps > 1`). Defaults to `0.1`.

    Returns:
        A `keras.optimizers.schedules.CosineDecay` with warmup.

    Raises:
        ValueError: if `total_steps < 1` or `warmup_fraction` is not in [0, 1).

    Example:

    ```python
    schedule = tltf.training.schedules.warmup_cosine(1e-3, 100)
    assert float(schedule(10)) == pytest.approx(1e-3)
    ```
    """
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(
            f"`total_steps` must be a positive integer. Received: total_steps={total_steps!r}"
        )
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(
            "`warmup_fraction` must be in [0, 1). "
            f"Received: warmup_fraction={warmup_fraction!r}"
        )
    warmup = 0 if total_steps == 1 or warmup_fraction == 0 else max(
        1, round(total_steps * warmup_fraction)
    )
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(float(peak), decay_steps=total_steps)
    return keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=total_steps - warmup,
        warmup_target=float(peak),
        warmup_steps=warmup,
    )


@keras.saving.register_keras_serializable(package="tltf")
class DiscriminativeAdam(keras.optimizers.Adam):
    """Adam with a learning-rate multiplier per variable (lower rates for deeper layers).

    Args:
        lr_multipliers: dict mapping a variable's `path` to the factor its learning rate is
            multiplied by. Variables not listed use factor 1.
        **kwargs: passed to `keras.optimizers.Adam`.

    Example:

    ```python
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    opt = tltf.training.schedules.DiscriminativeAdam({layer.kernel.path: 0.1}, learning_rate=1e-2)
    opt.apply([keras.ops.ones((3, 2)), keras.ops.ones((2,))], layer.trainable_weights)
    ```
    """

    def __init__(self, lr_multipliers: dict[str, float] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}

    def build(self, variables):
        super().build(variables)
        # update_step receives backend variables (no `.path`): look factors up by index.
        self._factors = [self.lr_multipliers.get(v.path, 1.0) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factors[_compat.optimizer_variable_index(self, variable)]
        if factor != 1.0:
            learning_rate = learning_rate * factor
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["lr_multipliers"] = dict(self.lr_multipliers)
        return config


def _block_lr_multipliers(model, factor):
    """Variable path -> learning-rate factor: f for the top unfrozen block, f**2 below, ..."""
    if factor is None or factor == 1.0:
        return None
    from tltf.backbones.registry import block_start_indices
    from tltf.models.parts import backbone_of, spec_of

    backbone = backbone_of(model)
    layers = backbone.layers
    spec = spec_of(model)
    starts = block_start_indices(spec, backbone) if spec is not None else [0]
    starts = sorted(set([0, *starts]))
    multipliers = {}
    for depth, start in enumerate(reversed(starts)):
        end = len(layers) if depth == 0 else list(reversed(starts))[depth - 1]
        for layer in layers[start:end]:
            for variable in layer.trainable_weights:
                multipliers[variable.path] = factor ** (depth + 1)
    return multipliers
