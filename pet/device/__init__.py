"""The personal tier on the device: load an ONNX bundle and generate with onnxruntime alone.

    from pet.device.runtime import DeviceModel
    m = DeviceModel.load("models/bundles/smollm2-int8")
    print(m.generate("Hello!", max_new_tokens=32).text)

Nothing in this package imports torch or transformers (a test checks ``sys.modules``); the bundle is made
by :mod:`pet.export` on a machine that has them.
"""
