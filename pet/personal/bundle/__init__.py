"""The device bundle, P's unit of delivery: written by the cloud (:mod:`.write`), signed (:mod:`.sign`), read
and verified on the device (:mod:`.read`).

A bundle is a folder: ``model.onnx`` (+ external data), the tokenizer files, ``bundle.json`` (format, recipe,
sha256 of every file) and, once signed, ``bundle.sig``. :mod:`.read` imports only json/hashlib so the device
runtime stays free of torch; :mod:`.write` needs torch, transformers and onnx.
"""
