"""tltf: transfer learning for image classification on TensorFlow, correct by default.

The public names are imported from their subpackages on first use (PEP 562), so
`import tltf` and `tltf --help` do not pay for TensorFlow; `from tltf import build_classifier`
works as if it had been imported here. No public name is also a module: `tltf.evaluate` is
the function, and its module is `tltf.evaluation.metrics`.
"""

import importlib

from tltf import _backend

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "BackboneSpec": "tltf.backbones",
    "get_backbone": "tltf.backbones",
    "list_backbones": "tltf.backbones",
    "register_backbone": "tltf.backbones",
    "ImageDataset": "tltf.data",
    "audit": "tltf.data",
    "load_arrays": "tltf.data",
    "load_csv": "tltf.data",
    "load_image_folder": "tltf.data",
    "load_tfds": "tltf.data",
    "EvaluationReport": "tltf.evaluation",
    "calibrate": "tltf.evaluation",
    "evaluate": "tltf.evaluation",
    "predict": "tltf.evaluation",
    "export_best": "tltf.export",
    "export_saved_model": "tltf.export",
    "export_tflite": "tltf.export",
    "verify_tflite": "tltf.export",
    "HubLayer": "tltf.backbones",
    "hub_backbone": "tltf.backbones",
    "build_classifier": "tltf.models",
    "compile_classifier": "tltf.models",
    "load_model": "tltf.models",
    "FineTuneResult": "tltf.training",
    "fine_tune": "tltf.training",
    "freeze_backbone": "tltf.training",
    "LRFindResult": "tltf.training",
    "lr_find": "tltf.training",
    "unfreeze": "tltf.training",
    "TransferHyperModel": "tltf.tune",
    "search": "tltf.tune",
}

__all__ = [
    "BackboneSpec",
    "EvaluationReport",
    "FineTuneResult",
    "HubLayer",
    "ImageDataset",
    "LRFindResult",
    "TransferHyperModel",
    "__version__",
    "audit",
    "build_classifier",
    "calibrate",
    "compile_classifier",
    "evaluate",
    "export_best",
    "export_saved_model",
    "export_tflite",
    "fine_tune",
    "freeze_backbone",
    "get_backbone",
    "hub_backbone",
    "list_backbones",
    "load_arrays",
    "load_csv",
    "load_image_folder",
    "load_model",
    "load_tfds",
    "lr_find",
    "predict",
    "register_backbone",
    "search",
    "unfreeze",
    "verify_tflite",
]

# A wrong KERAS_BACKEND fails `import tltf` at once; the Keras configuration itself is
# checked where Keras is first imported (`_backend.check_backend`).
_backend.check_requested_backend()


# The subpackages, also imported on first use: `import tltf; tltf.export.verify_tflite`.
_SUBPACKAGES = ("backbones", "data", "evaluation", "export", "models", "runs", "training", "tune")


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        _backend.check_backend()
        return importlib.import_module(f"tltf.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tltf' has no attribute {name!r}")
    _backend.check_backend()
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
