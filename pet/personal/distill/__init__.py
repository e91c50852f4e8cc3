"""Distillation of the personal (P) model: a K-layer student of the teacher's architecture trained with
KL at a temperature plus cross-entropy (``pet distill``). See :mod:`pet.personal.distill.train`."""
