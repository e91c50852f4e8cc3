"""Models shared by the tiers: offline preparation of the packaged weights (``prepare``), the causal-LM
interface every torch tier uses (``lm``, a :class:`~pet.models.tier.TierBackend`; the backend table in
``tier``), the batched engine (``engine``), confidence signals (``signals``), chat messages (``messages``),
the one LoRA trainer (``lora``: load a base, attach peft LoRA, train, save or merge; expert registration and
personalisation both use it) and sentence embeddings (``embed``: one loader honouring ``embedding.model``)."""
