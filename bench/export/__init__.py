"""Export a trained checkpoint (TorchScript, ONNX through ONNX Runtime, torch.export) with numerical parity
checked against fp64; the formats also run inference cells (:mod:`bench.infer`)."""
