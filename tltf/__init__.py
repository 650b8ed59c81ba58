"""tltf: transfer learning for image classification on TensorFlow, correct by default."""

from tltf._backend import check_backend as _check_backend

_check_backend()

__version__ = "0.1.0"

from tltf.backbones import BackboneSpec, get_backbone, list_backbones, register_backbone  # noqa: E402
from tltf.models import build_classifier, compile_classifier  # noqa: E402
from tltf.train import FineTuneResult, fine_tune, freeze_backbone, unfreeze  # noqa: E402
from tltf.hub import HubLayer, hub_backbone  # noqa: E402
from tltf.data import ImageDataset, audit, load_arrays, load_csv, load_image_folder, load_tfds  # noqa: E402
from tltf.export import export_best, export_saved_model, export_tflite, verify_tflite  # noqa: E402
from tltf.evaluate import EvaluationReport, calibrate, evaluate, predict  # noqa: E402
