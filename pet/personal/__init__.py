"""The personal tier (P): the small model that runs on the user's device, and everything in its life.

Runtime on the device (onnxruntime only; nothing here imports torch or transformers, a test checks
``sys.modules``):

- :mod:`.runtime` (``DeviceModel``, pet's decode loop over an onnxruntime session) and :mod:`.genai`
  (``GenaiModel``, onnxruntime-genai's generator): two :class:`pet.models.tier.TierBackend` runtimes,
  ``load_model(bundle, runtime="ort"|"genai")``; :mod:`.sampling` and :mod:`.chat` (chat template) serve them.
- :mod:`.device` (``DeviceClient``): P answers, the router decides whether the answer stays on the device,
  and what does not is sent HPKE-encrypted to the gateway.
- :mod:`.bench` / :mod:`.bench_worker`: device latency and memory, each run in a fresh process.

Lifecycle in the cloud or on a workstation (needs torch):

- :mod:`.distill`: a smaller student distilled from T or an expert.
- :mod:`.export`: ONNX export with KV cache, weight quantisation, parity against the source model.
- :mod:`.bundle`: the device bundle, written (:mod:`.bundle.write`), signed (:mod:`.bundle.sign`), read and
  verified on the device (:mod:`.bundle.read`); :mod:`.bundle.default` is the default P of the configuration.
- :mod:`.personalize`: the user's encrypted on-device store, the shared fraction T augments, per-user LoRA,
  merge and export of the personal bundle.

    from pet.personal.runtime import load_model
    m = load_model("models/bundles/smollm2-135m-instruct-int8")   # verified against the cloud's signing key
    print(m.generate("Hello!", max_new_tokens=32).text)
"""
