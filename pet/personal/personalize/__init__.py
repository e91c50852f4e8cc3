"""Personalisation of the P model: an encrypted on-device store of a user's texts (``store``), selection of the
share that may leave the device (``data``), cloud augmentation by T (``augment``, reached through ``client``),
per-user LoRA on real + synthetic data (``lora``, on the shared trainer of :mod:`pet.models.lora`), held-out
perplexity and ROUGE-L (``evaluate``, with :mod:`pet.metrics`), and the whole run down to a device bundle
(``pipeline``)."""
