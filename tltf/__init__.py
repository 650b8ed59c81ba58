"""tltf: transfer learning for image classification on TensorFlow, correct by default.

The public names are imported from their modules on first use (PEP 562), so `import tltf`
and `tltf --help` do not pay for TensorFlow; `from tltf import build_classifier` and
`tltf.evaluate(...)` work as if they had been imported here.
"""

import importlib
import sys
import types

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
    "EvaluationReport": "tltf.evaluate",
    "calibrate": "tltf.evaluate",
    "evaluate": "tltf.evaluate",
    "predict": "tltf.evaluate",
    "export_best": "tltf.export",
    "export_saved_model": "tltf.export",
    "export_tflite": "tltf.export",
    "verify_tflite": "tltf.export",
    "HubLayer": "tltf.hub",
    "hub_backbone": "tltf.hub",
    "build_classifier": "tltf.models",
    "compile_classifier": "tltf.models",
    "load_model": "tltf.models",
    "FineTuneResult": "tltf.train",
    "fine_tune": "tltf.train",
    "freeze_backbone": "tltf.train",
    "unfreeze": "tltf.train",
    "TransferHyperModel": "tltf.tune",
    "search": "tltf.tune",
}

__all__ = [
    "BackboneSpec",
    "EvaluationReport",
    "FineTuneResult",
    "HubLayer",
    "ImageDataset",
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
    "predict",
    "register_backbone",
    "search",
    "unfreeze",
    "verify_tflite",
]

# A wrong KERAS_BACKEND fails `import tltf` at once; the Keras configuration itself is
# checked where Keras is first imported (`_backend.check_backend`).
_backend.check_requested_backend()


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tltf' has no attribute {name!r}")
    _backend.check_backend()
    if module == "tltf.backbones":  # the built-in sources: `hub:` names and the well-known hub specs
        importlib.import_module("tltf.hub")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Keeps `tltf.evaluate` and `tltf.audit` the functions, as the eager import did.

    Importing the submodule `tltf.evaluate` (or `tltf.audit`) makes the import system set the
    package attribute of that name to the module; the public name is the function.
    """

    def __setattr__(self, name, value):
        if name in _EXPORTS and getattr(value, "__name__", None) == f"tltf.{name}":
            value = getattr(value, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
