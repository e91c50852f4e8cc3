"""Export of a Hugging Face causal LM to the device's ONNX graph: the compact fused-kernel Llama graph
(``llama_graph``) or optimum's traced export (``onnx``), weight quantisation (``quantize``) and parity against
PyTorch (``parity``). Needs torch, transformers and optimum; the device side (:mod:`pet.personal`) does not.
The bundle folder around the graph is written by :func:`pet.personal.bundle.write.export_bundle`."""
