"""Evaluation: metrics, calibration, predictions and the HTML report."""

from tltf.evaluation.calibration import calibrate
from tltf.evaluation.metrics import EvaluationReport, evaluate
from tltf.evaluation.prediction import predict

__all__ = ["EvaluationReport", "calibrate", "evaluate", "predict"]
