"""Personalisation of the P model: an encrypted on-device store of a user's texts, selection of the share
that may leave the device, cloud augmentation by T (:mod:`pet.personal.personalize.augment`), per-user LoRA training
on real + synthetic data, merge and export of a device bundle (:mod:`pet.personal.personalize.pipeline`)."""
