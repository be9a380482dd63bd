"""From IR to detector: the backbone compiler, FPN + RPN + Cascade R-CNN, data, training, metrics."""

from spnas.detect.compile import Backbone, compile_backbone, export_inference, lift, register_builder

__all__ = ["Backbone", "compile_backbone", "export_inference", "lift", "register_builder"]
