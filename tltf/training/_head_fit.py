"""Phase 1 as one convex fit: the linear head as an L2-regularised logistic regression.

On a frozen backbone, a linear softmax head is a multinomial logistic regression of the
labels on the pooled features. Its loss is convex: for a given L2 strength it has one
solution, which L-BFGS reaches in a few dozen steps, and the strength is chosen by
stratified k-fold cross-validation on the training features (scikit-learn's
`LogisticRegressionCV`, the "careful expert" of `benchmarks/small_data.py`). Five Adam
epochs at batch 32 stop far from that optimum when there are few images. Head only,
MobileNetV2 at 160 px, validation accuracy over 5 seeds (mean +- std):

| data, images a class | Adam, 5 epochs | convex fit |
|---|---|---|
| flowers, 20 | 44.1 +- 7.3 | 79.0 +- 3.4 |
| flowers, 100 | 74.8 +- 1.6 | 85.0 +- 1.4 |
| cats_and_dogs_filtered, 20 | 72.1 +- 7.6 | 94.9 +- 0.7 |
| cats_and_dogs_filtered, 100 | 91.3 +- 1.7 | 96.2 +- 0.4 |
"""

from __future__ import annotations

import inspect

import numpy as np

from tltf.models.parts import head_of
from tltf.training import distribute

HEAD_FITS = ("auto", "convex", "adam")
# `head_fit="auto"` fits convexly up to this many training examples x classes: 2e5 took
# 20 s on one busy CPU core (cost grows linearly), so the cap is about a minute and a half.
MAX_AUTO_SIZE = 1_000_000
_CS = np.logspace(-4, 4, 10)  # the inverse L2 strengths cross-validated, on standardised features
_MAX_FOLDS = 5


def check_head_fit(head_fit) -> None:
    if head_fit not in HEAD_FITS:
        raise ValueError(f"`head_fit` must be one of {HEAD_FITS}. Received: head_fit={head_fit!r}")


def plan(head_fit: str, model, cached: bool, strategy) -> str:
    """`"convex"` or `"adam"` for phase 1, from what is known before any feature is computed.

    Raises a ValueError when `head_fit="convex"` cannot be honoured.
    """
    if head_fit == "adam":
        return "adam"
    reason = _obstacle(model, cached, strategy)
    if reason is None:
        return "convex"
    if head_fit == "convex":
        raise ValueError(
            "`head_fit='convex'` fits the head as a logistic regression on cached features, "
            f"but {reason}. Use head_fit='auto' (which then trains the head with Adam) or "
            f"'adam'. Received: head_fit={head_fit!r}")
    return "adam"


def _obstacle(model, cached, strategy) -> str | None:
    if not cached:
        return ("phase 1 does not run on cached features (the model has an augmentation "
                "layer other than a horizontal flip alone, or cache_features=False)")
    head = head_of(model)
    if head.hidden_units:
        return f"the head has a hidden layer (hidden_units={head.hidden_units})"
    if head.multi_label:
        return "the head is multi-label (independent sigmoid outputs)"
    if distribute.worker_shard(strategy)[0] > 1:
        return ("training runs on several workers: each would fit its own copy of the head "
                "and nothing would keep the copies equal (Adam's all-reduce does)")
    return None


def data_allows(head_fit: str, y: np.ndarray, num_classes: int, x=None) -> bool:
    """Whether the cached labels (and features `x`) allow the convex fit; raises if
    `head_fit="convex"` needs it."""
    counts = np.bincount(y.astype(int).ravel(), minlength=num_classes) if y.ndim == 1 else None
    reason = (
        "the features do not fit memory (they are on disk, and the fit reads them whole)"
        if isinstance(x, np.memmap)
        else f"the labels have shape {y.shape}, not one class index per image" if counts is None
        else f"class {int(np.argmin(counts))} has {int(counts.min())} training image(s) and "
             "cross-validation needs at least 2 of each class" if counts.min() < 2
        else None
    )
    if reason is None and (head_fit == "convex" or len(y) * num_classes <= MAX_AUTO_SIZE):
        return True
    if head_fit == "convex":
        raise ValueError(
            f"`head_fit='convex'` cannot fit this training data: {reason}. Use "
            f"head_fit='auto' or 'adam'. Received: head_fit={head_fit!r}")
    return False


def fit_linear_head(head, x, y, *, class_weight=None, seed=None, mirror=None) -> float:
    """Writes the cross-validated L2 logistic regression of `y` on `x` into `head`.

    The features are standardised for the fit (as scikit-learn's `StandardScaler` does) and
    the scaling is folded into the Dense kernel and bias, so the head takes raw features.
    A binary fit (one logit for class 1) becomes the 2-class softmax `[-z/2, z/2]`, which
    gives the same probabilities. Folds are stratified, `min(5, smallest class count)` of
    them, shuffled with `seed` (0 when None) so that the fit is deterministic.

    `mirror` (the features of the same images flipped left to right, when the model's
    augmentation is that flip): the fit is on both, each image's two rows in the same fold,
    which minimises the loss a random flip of every image would have on average.

    Returns:
        float. The chosen C (inverse L2 strength on the standardised features).
    """
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    x = np.asarray(x, dtype="float64")
    y = np.asarray(y).astype(int)
    folds = min(_MAX_FOLDS, int(np.bincount(y).min()))
    cv = StratifiedKFold(folds, shuffle=True, random_state=0 if seed is None else int(seed))
    if mirror is not None:  # an image and its mirror image are never on both sides of a fold
        n = len(y)
        cv = [(np.concatenate([a, a + n]), np.concatenate([b, b + n]))
              for a, b in cv.split(np.zeros(n), y)]
        x, y = np.concatenate([x, np.asarray(mirror, dtype="float64")]), np.concatenate([y, y])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 10 * np.finfo("float64").eps] = 1.0  # constant features, as StandardScaler
    fit = LogisticRegressionCV(Cs=_CS, cv=cv, solver="lbfgs", scoring="neg_log_loss",
                               max_iter=5000, class_weight=class_weight, **_l2_only())
    # One BLAS thread: the matrices are small and TensorFlow's threads share the cores; with
    # OpenBLAS's default threads a 500 x 1280 fit took 17 times longer on 2 busy cores.
    with threadpool_limits(limits=1, user_api="blas"):
        fit.fit((x - mean) / scale, y)
    coef, intercept = fit.coef_, fit.intercept_
    if coef.shape[0] == 1:  # binary: scikit-learn's one logit is for class 1
        coef, intercept = np.stack([-coef[0], coef[0]]) / 2, np.array([-intercept[0], intercept[0]]) / 2
    layer = head.predictions
    layer.kernel.assign((coef / scale).T.astype("float32"))
    layer.bias.assign((intercept - coef @ (mean / scale)).astype("float32"))
    return float(np.ravel(fit.C_)[0])


def _l2_only() -> dict:
    """Keywords for a pure L2 penalty on every scikit-learn >= 1.3, without deprecation warnings."""
    from sklearn.linear_model import LogisticRegressionCV

    params = inspect.signature(LogisticRegressionCV).parameters
    if "l1_ratios" in params and params["penalty"].default == "deprecated":
        kwargs = {"l1_ratios": (0.0,)}  # scikit-learn >= 1.8: pure L2 is l1_ratio 0
    else:
        kwargs = {"penalty": "l2"}
    if "use_legacy_attributes" in params:
        kwargs["use_legacy_attributes"] = False
    return kwargs
