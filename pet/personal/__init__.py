"""The personal tier on the device: load a signed ONNX bundle and generate with onnxruntime alone.

    from pet.personal.runtime import load_model
    m = load_model("models/bundles/smollm2-int8b64-shared")            # runtime "ort" or "genai"
    print(m.generate("Hello!", max_new_tokens=32).text)

Two runtimes behind one interface: :class:`pet.personal.runtime.DeviceModel` (pet's own decode loop over an
onnxruntime session) and :class:`pet.personal.genai.GenaiModel` (onnxruntime-genai's generator). Nothing in this
package imports torch or transformers (a test checks ``sys.modules``); the bundle is made by :mod:`pet.personal.export`
on a machine that has them.
"""
