"""From IR to detector: the backbone compiler, FPN + RPN + Cascade R-CNN, data, training, metrics."""

from spnas.detect.compile import Backbone, compile_backbone, export_inference, lift
from spnas.detect.detector import build_detector

__all__ = ["Backbone", "build_detector", "compile_backbone", "export_inference", "lift"]
