"""Export pipeline: the core's prefix (and expert step) to ONNX and TensorRT, gated by measured parity.

Imports only the core package (``vla_policy``), never the ROS adapter.
"""
