"""Distillation of the personal (P) model (``pet distill``): a K-layer student of the teacher's architecture
(``student``: layer selection, truncation, teacher loading) trained with KL at a temperature plus
cross-entropy on real text, teacher answers and optionally a domain teacher's data (``data``) by
:func:`pet.personal.distill.train.distill`, configured by :class:`pet.config.schema.personal.DistillConfig`."""
