"""Distillation on tiny models: evenly spaced and block layer init, bf16 autocast, the student learns (loss
and held-out perplexity drop), checkpoints resume to the same result, and a finished student exports to a
working bundle."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY_CORPUS


def test_layer_map():
    from pet.personal.distill.student import layer_map

    assert layer_map(30, 10) == [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]
    assert layer_map(4, 2) == [0, 3]
    assert layer_map(4, 4) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        layer_map(4, 5)


def test_student_init_copies_teacher_layers(tiny_lm):
    import torch

    from pet.personal.distill.student import build_student

    student, keep = build_student(tiny_lm.model, 2)
    assert keep == [0, 3] and student.config.num_hidden_layers == 2
    t, s = tiny_lm.model.state_dict(), student.state_dict()
    assert torch.equal(s["model.layers.1.mlp.up_proj.weight"], t["model.layers.3.mlp.up_proj.weight"])
    assert torch.equal(s["model.embed_tokens.weight"], t["model.embed_tokens.weight"])


def test_block_to_drop_finds_the_unchanged_span():
    import torch

    from pet.personal.distill.student import block_to_drop

    g = torch.Generator().manual_seed(0)
    hs = [torch.randn(2, 5, 8, generator=g) for _ in range(7)]  # embeddings + 6 layers
    hs[4] = hs[2] + 1e-3 * torch.randn(2, 5, 8, generator=g)  # layers 2 and 3 leave the stream as it was
    mask = torch.ones(2, 5, dtype=torch.long)
    start, scores = block_to_drop(hs, mask, 2)
    assert start == 2 and len(scores) == 3 and min(scores) == scores[1] < 0.01
    with pytest.raises(ValueError, match="block"):
        block_to_drop(hs, mask, 5)  # would drop the first or last layer


@pytest.mark.parametrize("dead", [1, 2])
def test_block_selection_drops_a_layer_that_does_nothing(tiny_lm, dead):
    """Zeroing a layer's output projections makes it the identity on the residual stream: block selection
    must drop exactly that layer (the first and last are never candidates)."""
    import copy

    import torch

    from pet.personal.distill.student import build_student, select_layers

    model = copy.deepcopy(tiny_lm.model)
    with torch.no_grad():
        layer = model.model.layers[dead]
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    keep = select_layers(model, tiny_lm.tokenizer, 3, "block", texts=TINY_CORPUS[:4])
    assert keep == [i for i in range(4) if i != dead]
    student, kept = build_student(model, 3, keep)
    assert kept == keep and student.config.num_hidden_layers == 3
    assert select_layers(model, tiny_lm.tokenizer, 3, "even") == [0, 2, 3]
    with pytest.raises(ValueError, match="unknown layer selection"):
        select_layers(model, tiny_lm.tokenizer, 3, "random")
    with pytest.raises(ValueError, match="sample texts"):
        select_layers(model, tiny_lm.tokenizer, 3, "block")
    with pytest.raises(ValueError, match="distinct"):
        build_student(model, 3, [0, 0, 3])


def test_distill_bf16_block_run_and_refusals(tiny_lm_dir, tmp_path):
    import math

    from pet.personal.distill.train import distill

    kw = dict(log=lambda m: None, progress=False, train_texts=TINY_CORPUS * 4, eval_texts=TINY_CORPUS)
    s = _settings(4, 4, layers=3)
    s.precision, s.layer_selection = "bf16", "block"
    r = distill(str(tiny_lm_dir), tmp_path / "b", s, **kw)
    assert r["precision"] == "bf16" and r["layer_selection"] == "block" and len(r["layers_kept"]) == 3
    assert r["steps"] == 4 and r["seconds_per_step_this_run"] > 0
    assert all(math.isfinite(v) for v in r["last_loss"]) and math.isfinite(r["ppl_student"])
    s.layer_selection = "even"  # resuming with another init would mislabel the student
    with pytest.raises(ValueError, match="block selection"):
        distill(str(tiny_lm_dir), tmp_path / "b", s, **kw)
    with pytest.raises(ValueError, match="precision"):  # the schema refuses it before any run
        s.precision = "fp16"


def _settings(steps, every, stop_after=None, layers=2):
    from pet.config.schema.personal import DistillConfig

    # A high learning rate so that a few steps on the tiny corpus visibly move the student.
    return DistillConfig(student_layers=layers, steps=steps, batch_size=4, seq_len=24, lr=3e-2, warmup=1,
                         teacher_samples=2, teacher_new_tokens=6, checkpoint_every=every, threads=1,
                         max_steps_this_run=stop_after)


def test_distill_learns_and_resumes(tiny_lm_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    from pet.personal.distill.train import distill

    texts = TINY_CORPUS * 4
    kw = dict(log=lambda m: None, progress=False, train_texts=texts, eval_texts=TINY_CORPUS)
    full = distill(str(tiny_lm_dir), tmp_path / "full", _settings(16, 8), **kw)
    losses = json.loads((tmp_path / "full" / "checkpoint" / "state.json").read_text())["losses"]
    first, last = sum(sum(x) for x in losses[:3]), sum(sum(x) for x in losses[-3:])
    assert last < first  # distillation + CE loss goes down
    assert full["ppl_student"] < full["ppl_truncated_init"]
    assert full["params_student"] < full["params_teacher"]
    assert (tmp_path / "full" / "model" / "config.json").is_file()
    assert json.loads((tmp_path / "full" / "report.json").read_text())["steps"] == 16

    # Stop after 5 steps (a checkpoint), then rerun: the same weights as the straight run.
    part = distill(str(tiny_lm_dir), tmp_path / "split", _settings(16, 8, stop_after=5), **kw)
    assert part["steps"] == 5
    resumed = distill(str(tiny_lm_dir), tmp_path / "split", _settings(16, 8), **kw)
    assert resumed["steps"] == 16
    a = load_file(tmp_path / "full" / "model" / "model.safetensors")
    b = load_file(tmp_path / "split" / "model" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)

    with pytest.raises(ValueError, match="another run"):
        distill(str(tiny_lm_dir), tmp_path / "split", _settings(16, 8, layers=3), **kw)


def test_teacher_logits_per_row(tiny_lm_dir, tmp_path):
    """Rows of the domain data take the domain teacher's logits, the other rows the main teacher's."""
    import torch
    from transformers import AutoModelForCausalLM

    from pet.personal.distill.train import _teacher_logits

    t = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, local_files_only=True).eval()
    d = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, local_files_only=True).eval()
    with torch.no_grad():
        for p in d.parameters():
            p.add_(0.05 * torch.randn_like(p))
        x = torch.randint(0, t.config.vocab_size, (3, 7))
        mask = torch.tensor([True, False, True])
        mixed = _teacher_logits(t, d, x, mask)
        torch.testing.assert_close(mixed[0], d(input_ids=x).logits[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(mixed[1], t(input_ids=x).logits[1], atol=1e-5, rtol=1e-4)
        assert not torch.allclose(mixed[0], t(input_ids=x).logits[0], atol=1e-3)
        torch.testing.assert_close(_teacher_logits(t, d, x, torch.zeros(3, dtype=torch.bool)), t(input_ids=x).logits)
        torch.testing.assert_close(_teacher_logits(t, None, x, mask), t(input_ids=x).logits)


def test_distill_with_domain_teacher(tiny_lm_dir, tmp_path):
    """A domain teacher's data enters the mix; held-out texts found in it are counted and left out of the
    'clean' perplexities; a checkpoint of another mix is refused, and so is a share without data."""
    from pet.personal.distill.train import distill

    domain = [f"The domain teacher knows fact number {i}: " + TINY_CORPUS[i % len(TINY_CORPUS)]
              for i in range(12)]
    heldout = [TINY_CORPUS[0], domain[3] + "\n\n" + "x" * 10]  # the second one occurs in the domain data
    kw = dict(log=lambda m: None, progress=False, train_texts=TINY_CORPUS * 4, eval_texts=heldout)
    s = _settings(6, 6).updated(domain_teacher=str(tiny_lm_dir), domain_share=0.5)
    r = distill(str(tiny_lm_dir), tmp_path / "dom", s, domain_texts=domain, **kw)
    assert r["domain_teacher"] == str(tiny_lm_dir) and r["domain_share"] == 0.5 and r["domain_tokens"] > 24
    assert r["heldout_in_domain_data"] == 1 and r["heldout_clean_texts"] == 1
    assert r["ppl_student_clean"] > 0 and r["ppl_teacher_clean"] > 0
    with pytest.raises(ValueError, match="another run"):
        distill(str(tiny_lm_dir), tmp_path / "dom", s.updated(domain_share=0.2, steps=8),
                domain_texts=domain, **kw)
    with pytest.raises(ValueError, match="domain teacher and its data"):
        distill(str(tiny_lm_dir), tmp_path / "other", s, **kw)
    with pytest.raises(ValueError, match="domain_share"):  # the schema refuses it before any run
        s.updated(domain_share=1.0)


@pytest.mark.parametrize("spec, message", [("python", "NAME=DATA"), ("=data.txt", "NAME=DATA")])
def test_cli_domain_teacher_spec_errors(tmp_path, capsys, spec, message):
    from pet.cli.main import main

    rc = main(["distill", "--domain-teacher", spec, "--out", str(tmp_path / "o")])
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
