"""Built-in models, generated on first use (ONNX; TorchScript where torch is installed)."""
