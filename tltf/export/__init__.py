"""Export: `.tflite` conversion and quantization, the best-file selection, SavedModel,
verification against Keras, and the metadata MediaPipe reads."""

from tltf.export.saved_model import export_saved_model, exportable_model
from tltf.export.selection import export_best
from tltf.export.tflite import ExportResult, export_tflite
from tltf.export.verify import VerificationReport, verify_tflite

__all__ = ["ExportResult", "VerificationReport", "export_best", "export_saved_model",
           "export_tflite", "exportable_model", "verify_tflite"]
