"""Export a Hugging Face causal LM to a device bundle (ONNX with KV cache, optional int8/int4 quantisation,
parity numbers). Needs torch, transformers and optimum; the device side (:mod:`pet.personal`) does not."""
