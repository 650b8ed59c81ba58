"""Evaluation: metrics, calibration, predictions and the HTML report."""

from tltf.evaluation.metrics import EvaluationReport, calibrate, evaluate, predict

__all__ = ["EvaluationReport", "calibrate", "evaluate", "predict"]
