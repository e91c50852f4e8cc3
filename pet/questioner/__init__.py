"""Questioner-aware cloud answers: E and T answer the person who asks, from a profile the device makes.

- :mod:`.profile` (device side, numpy only): :class:`QuestionerProfile`, the capped profile schema the gateway
  validates, and :class:`ProfileBuilder`, which derives it from the user's encrypted store (a MiniLM questioner
  embedding plus the k messages nearest the query).
- :mod:`.condition` (cloud side): a profile turned into (a) exemplars in the prompt or (b) soft-prompt vectors.
- :mod:`.encoder`: the learned soft-prompt encoder (a questioner tower and a cross-questioner tower), its atomic
  artifact with a fingerprint; :mod:`.train` trains it over a frozen T with a questioner-contrastive term.
- :mod:`.data`: chitchat-dataset questioners, their dialogues, the train / held-out split.

See docs/questioner.md.
"""
