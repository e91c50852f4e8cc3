"""Starter experts: pack a registered domain (fp16 weights), install it into an empty registry, and the PEFT
adapter it ships loads onto the fp32 base with the same outputs (to fp16 precision); tampering is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pet.expert.registry import CorruptAdapterError, ExpertRegistry
from pet.expert.starter import PACK_FILE, STARTERS, available, install_starters, pack, read_pack


@pytest.fixture
def registered(tmp_path, tiny_lm_dir):
    """A registry with a real (tiny) LoRA adapter registered as 'python'."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(tmp_path / "adapter")
    reg = ExpertRegistry(tmp_path / "reg")
    reg.add("python", tmp_path / "adapter", np.eye(3, 8, dtype=np.float32), {"ppl_base": 9.0, "ppl_expert": 5.0},
            "smollm2-135m-instruct", data_sha256="ab" * 32, extra={"data": {"samples": 12}})
    return reg


def test_pack_then_install_round_trip(registered, tmp_path, tiny_lm_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    root = tmp_path / "starter"
    out = pack(registered, "python", root)
    meta = json.loads((out / PACK_FILE).read_text())
    assert meta["base_model"] == "smollm2-135m-instruct" and meta["data_sha256"] == "ab" * 32
    assert available(root) == ["python"]
    from safetensors.numpy import load_file

    shipped = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert all(v.dtype == np.float16 for v in shipped.values())

    fresh = ExpertRegistry(tmp_path / "fresh")
    logs = []
    assert install_starters(fresh, root=root, log=logs.append) == ["python"] and logs
    assert install_starters(fresh, root=root) == []  # never overwrites a registered domain
    rec = fresh.get("python")
    assert rec.manifest["starter"]["source"] == registered.get("python").fingerprint
    np.testing.assert_array_equal(fresh.exemplars("python"), registered.exemplars("python"))

    ids = torch.tensor([[1, 5, 9, 3]])
    outs = []
    for reg in (registered, fresh):
        base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float32)
        m = PeftModel.from_pretrained(base, str(reg.adapter_dir("python"))).eval()
        with torch.no_grad():
            outs.append(m(ids).logits)
    assert outs[1].dtype == torch.float32 and torch.allclose(outs[0], outs[1], atol=1e-3)


def test_a_tampered_starter_is_refused(registered, tmp_path):
    root = tmp_path / "starter"
    out = pack(registered, "python", root)
    with open(out / "exemplars.npy", "ab") as f:
        f.write(b"\0")
    with pytest.raises(CorruptAdapterError, match="does not match"):
        read_pack("python", root)
    with pytest.raises(CorruptAdapterError):
        install_starters(ExpertRegistry(tmp_path / "fresh"), root=root)


def test_the_shipped_starters_are_intact():
    """Whatever the package ships verifies against its own starter.json (both default domains once packed)."""
    for name in available():
        assert name in STARTERS
        read_pack(name)
