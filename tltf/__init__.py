"""tltf: transfer learning for image classification on TensorFlow, correct by default."""

from tltf._backend import check_backend as _check_backend

_check_backend()

__version__ = "0.1.0"

# ruff: noqa: E402
from tltf.backbones import BackboneSpec, get_backbone, list_backbones, register_backbone
from tltf.data import ImageDataset, audit, load_arrays, load_csv, load_image_folder, load_tfds
from tltf.evaluate import EvaluationReport, calibrate, evaluate, predict
from tltf.export import export_best, export_saved_model, export_tflite, verify_tflite
from tltf.hub import HubLayer, hub_backbone
from tltf.models import build_classifier, compile_classifier, load_model
from tltf.train import FineTuneResult, fine_tune, freeze_backbone, unfreeze
from tltf.tune import TransferHyperModel, search

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
