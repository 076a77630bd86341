"""Reduced precision: FP16 / calibrated INT8 ONNX variants, and accuracy validation against FP32."""
