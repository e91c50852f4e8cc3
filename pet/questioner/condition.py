"""A questioner profile turned into conditioning for E and T (cloud side).

    conditioner = Conditioner.from_config(cfg, lm, base_fingerprint=model_fingerprint(folder))
    payload = conditioner.apply(payload)      # inside the tier, before the payload joins a batch

``apply`` removes the ``questioner`` field from the payload in every case (so it goes no further than this
function) and, when a valid profile is present:

- ``in_context``: the exemplars go into a system message in front of the conversation;
- ``learned``: the encoder's soft-prompt vectors are attached as ``soft_prompt`` ([k, hidden], never serialised;
  ``pet.models.engine.run_batch`` hands them to ``CausalLM.generate_batch``).

If the learned encoder cannot be used (missing, damaged, another T, another fingerprint) the tier says so once in
its log (the reason, never a profile) and conditions in context instead. Nothing here logs or stores a profile.
"""

from __future__ import annotations

import logging
from typing import Any

from pet.questioner.profile import ProfileError, QuestionerProfile, parse_profile

log = logging.getLogger("ray.serve")

HEADER = "You are chatting with one person. Some messages this person wrote before:"
FOOTER = "Reply to this person in a way that suits them."


def in_context_messages(prompt: str | list[dict[str, str]], profile: QuestionerProfile) -> list[dict[str, str]]:
    """The conversation with the profile's exemplars in its system message (added, or appended to)."""
    msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    if not profile.exemplars:
        return msgs
    block = "\n".join([HEADER, *(f"- {' '.join(t.split())}" for t in profile.exemplars), FOOTER])
    if msgs and msgs[0].get("role") == "system":
        msgs[0] = {"role": "system", "content": f"{msgs[0]['content']}\n\n{block}"}
        return msgs
    return [{"role": "system", "content": block}, *msgs]


def soft_prompts(encoder: Any, profiles: list[QuestionerProfile]) -> Any:
    """The encoder's soft prompts [n, k, hidden] for ``profiles`` (no gradients)."""
    import numpy as np
    import torch

    prof = torch.tensor(np.stack([p.vector() for p in profiles]))
    ex = torch.tensor(np.stack([p.exemplar_vector() for p in profiles]))
    with torch.inference_mode():
        return encoder(prof, ex)


class Conditioner:
    """Applies a request's profile in a tier, in the configured mode (see the module docstring)."""

    def __init__(self, qcfg: Any, encoder: Any = None, why_not_learned: str | None = None):
        self.qcfg = qcfg
        self.encoder = encoder
        self.why_not_learned = why_not_learned

    @classmethod
    def from_config(cls, cfg: Any, base_fingerprint: str | None) -> Conditioner:
        """The conditioner of ``cfg.questioner``; in learned mode the encoder is loaded, its fingerprints checked."""
        from pet.config.schema.questioner import ConditioningMode

        q = cfg.questioner
        if q.mode is not ConditioningMode.learned:
            return cls(q)
        if not q.encoder:
            why = "questioner.mode is learned but questioner.encoder is not set"
        else:
            from pet.questioner.encoder import EncoderError, encoder_dir, load_encoder

            try:
                enc, _ = load_encoder(encoder_dir(q.encoder, cfg.models_dir), base_fingerprint, q.encoder_fingerprint)
                return cls(q, enc)
            except EncoderError as err:
                why = str(err)
        log.warning("pet questioner: learned profiles unavailable (%s); using exemplars in context", why)
        return cls(q, None, why)

    @property
    def mode(self) -> str:
        """The mode in force: ``learned`` only when an encoder is loaded."""
        mode = str(self.qcfg.mode)
        return "in_context" if mode == "learned" and self.encoder is None else mode

    def apply(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``payload`` without its ``questioner`` field, conditioned on it when present and valid."""
        raw = payload.get("questioner")
        out = {k: v for k, v in payload.items() if k != "questioner"}
        if raw is None or self.mode == "off":
            return out
        try:
            profile = parse_profile(raw, self.qcfg)  # the gateway validated it; a tier never trusts that blindly
        except ProfileError:
            return out
        if self.mode == "learned":
            out["soft_prompt"] = soft_prompts(self.encoder, [profile])[0]
        else:
            out["prompt"] = in_context_messages(out["prompt"], profile)
        return out
