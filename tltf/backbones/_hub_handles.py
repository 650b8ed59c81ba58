"""Which TF Hub handles a model config may name: the safe-mode rule and the well-known table.

Loading a hub handle runs its SavedModel's graph, so a handle read from a `.keras` file is
refused in Keras' safe mode unless it is one of the well-known tfhub.dev handles below or the
caller of `tltf.load_model` trusts it. A handle from a layer alive in this process (a clone
in memory) is always allowed. `HubLayer.from_config` and the classifier's saved backbone
name both ask `check_safe_to_load`; `tltf.backbones.hub_source` registers the table's
handles as `hub:<name>` backbones.
"""

from __future__ import annotations

import contextlib
import contextvars
import os

from tltf import _compat
from tltf.backbones.registry import list_backbones

__all__: list[str] = []  # the rules of `HubLayer.from_config` and `tltf.load_model`


def check_safe_to_load(handle) -> None:
    """A `.keras` file from a stranger must not run code: refuses to load `handle` in safe mode.

    Loading a hub handle runs its SavedModel's graph, which may do anything a TensorFlow op
    can (write files, read secrets). So, like `keras.layers.TFSMLayer`, while Keras
    deserializes in safe mode (the default of `keras.saving.load_model`) a handle from a model
    config is refused, local or remote, unless it is one of the well-known tfhub.dev handles
    of the table below or the caller trusts it (`tltf.load_model(path, trust_hub_handles=...)`).
    Building and cloning layers in memory is not deserialization and is never refused.
    """
    if isinstance(handle, FromLiveLayer) or handle is None:
        return
    if str(handle) in _KNOWN_HANDLES or _is_trusted(str(handle)):
        return
    if _compat.in_safe_mode():
        raise RefusedHandle(handle)


class FromLiveLayer(str):
    """A handle as the `get_config` of a layer alive in this process returns it.

    That layer already loaded the SavedModel, by the user's choice, so cloning it in memory
    (`keras.models.clone_model`, `Model.from_config(model.get_config())`, which Keras runs
    in safe mode too) loads nothing new and is allowed. Saving writes JSON, which keeps only
    the plain string, so a config read from a file never carries this mark.
    """

    __slots__ = ()


class RefusedHandle(ValueError):
    """The refusal of `check_safe_to_load`; `handle` lets the CLI name its own opt-in flag."""

    def __init__(self, handle):
        self.handle = handle
        text = str(handle)
        self.shown = text if len(text) <= 200 else text[:197] + "..."  # a file may hold 1 MB
        super().__init__(
            f"Refusing to load the TF Hub/SavedModel handle '{self.shown}' named in this "
            "model's config: loading it would run the SavedModel's graph, which can execute "
            "arbitrary TensorFlow ops, and safe mode allows only the well-known tfhub.dev "
            "handles. If you trust the file and the SavedModel (also when you saved the model "
            f"yourself), load it with `tltf.load_model(path, trust_hub_handles=[{self.shown!r}])`"
            " or `keras.saving.load_model(path, safe_mode=False)`. "
            f"Received: handle={self.shown!r}"
        )


# Handles the caller of `tltf.load_model` trusts, for the duration of that call only. A
# context variable rather than a global, so the trust never outlives the call nor leaks into
# another thread's load.
_TRUSTED: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "tltf_trusted_hub_handles", default=())


@contextlib.contextmanager
def trusting(handles):
    """Trusts these handles (`tltf.load_model(..., trust_hub_handles=...)`) inside the block."""
    token = _TRUSTED.set(tuple(str(h) for h in handles))
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def _is_trusted(handle: str) -> bool:
    trusted = _TRUSTED.get()
    if handle in trusted:
        return True
    if "://" in handle:
        return False
    # A local directory may be written './hub_model' in one place and 'hub_model' in another.
    real = os.path.realpath(handle)
    return any("://" not in t and os.path.realpath(t) == real for t in trusted)


def check_backbone_name(name) -> None:
    """`spec_of` resolves a saved `"hub:<handle>"` backbone name by loading the handle, so
    a config that names an unregistered one is held to the rule of `check_safe_to_load`."""
    if isinstance(name, FromLiveLayer):
        return
    if isinstance(name, str) and name.strip().startswith("hub:") and (
            name.strip() not in list_backbones()):
        check_safe_to_load(name.strip()[len("hub:"):])


# The well-known hub image backbones ---------------------------------------------------------
# Handles and input sizes as in the TensorFlow Hub tutorial "Retraining an Image Classifier"
# (tensorflow/docs, site/en/hub/tutorials/tf2_image_retraining), plus the TF1 module kept
# in ../shared/tfhub_modules. Feature widths are checked against the loaded model at build
# time (a wrong figure raises instead of building a mismatched head).
_TFHUB = "https://tfhub.dev/google/"
KNOWN_HUB_BACKBONES = (
    # name, handle, default size, feature dim, fixed size
    ("mobilenet_v2_100_224", _TFHUB + "imagenet/mobilenet_v2_100_224/feature_vector/4", 224,
     1280, False),
    ("mobilenet_v3_small_100_224", _TFHUB + "imagenet/mobilenet_v3_small_100_224/feature_vector/5",
     224, 1024, False),
    ("mobilenet_v3_large_100_224", _TFHUB + "imagenet/mobilenet_v3_large_100_224/feature_vector/5",
     224, 1280, False),
    ("efficientnet_v2_b0", _TFHUB + "imagenet/efficientnet_v2_imagenet1k_b0/feature_vector/2",
     224, 1280, False),
    ("efficientnet_v2_s", _TFHUB + "imagenet/efficientnet_v2_imagenet1k_s/feature_vector/2",
     384, 1280, False),
    ("efficientnet_v2_b0_21k", _TFHUB + "imagenet/efficientnet_v2_imagenet21k_b0/feature_vector/2",
     224, 1280, False),
    ("bit_s_r50x1", _TFHUB + "bit/s-r50x1/1", 224, 2048, False),
    ("bit_m_r50x1", _TFHUB + "bit/m-r50x1/1", 224, 2048, False),
    ("resnet_v2_50", _TFHUB + "imagenet/resnet_v2_50/feature-vector/4", 224, 2048, False),
    ("inception_v3", _TFHUB + "imagenet/inception_v3/feature-vector/4", 299, 2048, False),
    ("mobilenet_v2_035_128_tf1", _TFHUB + "imagenet/mobilenet_v2_035_128/feature_vector/2",
     128, 1280, True),
)
_KNOWN_HANDLES = frozenset(handle for _, handle, *_ in KNOWN_HUB_BACKBONES)
