"""Device side of personalisation on a tiny P and T: share selection, data files, LoRA training and merge,
bad input (nothing written), and privacy: unshared messages never reach the send path nor any log."""

from __future__ import annotations

import json
import logging

import pytest

from pet.config.schema import PetConfig
from pet.config.schema.personal import AugmentFilterConfig, PersonalizationConfig
from pet.personal.personalize.data import example_messages, load_data_file, select_share
from pet.personal.personalize.store import PersonalStore, StoreError, StoreKey

SHARED_TOPIC = [f"shareable note {i} about hiking with my dog" for i in range(6)]
PRIVATE = [f"PRIVATE-{i} my bank pin is {1000 + i}" for i in range(6)]


@pytest.fixture(scope="module")
def embedder():
    from tests.unit.personal_helpers import minilm

    return minilm()


@pytest.fixture
def cfg(tiny_lm_dir) -> PetConfig:
    c = PetConfig()
    c.personalization = PersonalizationConfig(
        base_model=str(tiny_lm_dir), steps=4, batch_size=4, max_seq_len=48, gen_max_new_tokens=6,
        lora_rank=4, lora_layers=2, filter=AugmentFilterConfig(min_similarity=-1.0, max_similarity=0.999),
    )
    return c


def test_select_share():
    texts = [f"m{i}" for i in range(10)] + ["hiking 1", "hiking 2"]
    assert select_share(texts, 0.0) == []
    assert select_share(texts, 1.0) == list(range(12))
    assert len(select_share(texts, 0.5)) == 6 and select_share(texts, 0.5, seed=3) == select_share(texts, 0.5, seed=3)
    assert select_share(texts, 1.0, r"^hiking") == [10, 11]
    assert len(select_share(texts, 0.01, r"hiking")) == 1  # a positive share shares at least one candidate
    assert select_share(texts, 1.0, r"nomatch") == []
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(StoreError, match=r"\[0, 1\]"):
            select_share(texts, bad)
    with pytest.raises(StoreError, match="regular expression"):
        select_share(texts, 0.5, "(")


def test_load_data_file_formats_and_errors(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\n two \n")
    assert [r["text"] for r in load_data_file(tmp_path / "a.txt", 1000)] == ["one", "two"]
    (tmp_path / "b.jsonl").write_text('"x"\n{"text": "y", "context": [{"role": "user", "content": "q"}]}\n')
    recs = load_data_file(tmp_path / "b.jsonl", 1000)
    assert recs[1]["context"] == [{"role": "user", "content": "q"}]
    (tmp_path / "c.json").write_text('["p", "q"]')
    assert len(load_data_file(tmp_path / "c.json", 1000)) == 2
    for name, body, msg in [("e.txt", "\n \n", "no messages"), ("f.jsonl", "{bad\n", "line 1 is not valid JSON"),
                            ("g.json", '{"a": 1}', "JSON list"), ("h.jsonl", '{"txt": "x"}\n', "string 'text'"),
                            ("big.txt", "z" * 2000, "limit is 1000")]:
        (tmp_path / name).write_text(body)
        with pytest.raises(StoreError, match=msg):
            load_data_file(tmp_path / name, 1000)
    with pytest.raises(StoreError, match="does not exist"):
        load_data_file(tmp_path / "missing.txt", 1000)


def test_example_format_puts_message_last():
    msgs = example_messages({"text": "on my way", "context": [{"role": "user", "content": "where are you?"}]}, 3)
    assert msgs[-1] == {"role": "assistant", "content": "on my way"} and msgs[-2]["content"] == "where are you?"
    assert example_messages({"text": "hey"}, 3)[1]["role"] == "user"


def test_lora_trains_top_layers_and_merges(tiny_lm_dir, cfg, tmp_path):
    import torch

    from pet.models.lora import load_base, save_merged
    from pet.personal.personalize.lora import merge, tokenize_examples, train_lora

    pcfg = cfg.personalization.model_copy(update={"steps": 12, "learning_rate": 5e-3})
    model, tok = load_base(tiny_lm_dir)
    ids = torch.tensor([tok("hello there", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        before = model(input_ids=ids).logits.clone()
    examples = tokenize_examples(tok, [{"text": t} for t in SHARED_TOPIC], pcfg, ["a synthetic line"])
    assert sum(e.synthetic for e in examples) == 1 and all(len(e.input_ids) <= 48 for e in examples)
    res = train_lora(model, tok, examples, pcfg, progress=False)
    trainable = [n for n, p in res.model.named_parameters() if p.requires_grad]
    assert trainable and all(".layers.2." in n or ".layers.3." in n for n in trainable)  # top 2 of 4 layers
    assert res.steps == 12 and sum(res.losses[-3:]) < sum(res.losses[:3])
    merged = merge(res.model)
    with torch.no_grad():
        after = merged(input_ids=ids).logits
    assert not torch.allclose(before, after)
    out = save_merged(merged, tok, tmp_path / "merged")
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    with pytest.raises(ValueError, match="no training examples"):
        train_lora(merged, tok, [], pcfg, progress=False)


def test_only_the_share_leaves_the_device_and_nothing_is_logged(cfg, tiny_lm, embedder, caplog, tmp_path):
    from pet.personal.personalize.client import LocalAugmentClient
    from pet.personal.personalize.pipeline import personalize

    records = [{"text": t} for pair in zip(SHARED_TOPIC, PRIVATE, strict=True) for t in pair]
    client = LocalAugmentClient(tiny_lm, embedder, cfg.personalization)
    sent: list[dict] = []
    client.on_send.append(lambda payload: sent.append(json.loads(json.dumps(payload))))
    caplog.set_level(logging.DEBUG)
    report = personalize(cfg, "u1", records, share=1.0, share_filter="^shareable", synthetic=2, out=None,
                         client=client, progress=False, model_out=tmp_path / "merged")
    assert len(sent) == 1 and sorted(sent[0]["shared"]) == sorted(SHARED_TOPIC)
    wire = json.dumps(sent)
    logs = caplog.text + " ".join(str(r.args) for r in caplog.records)
    for secret in PRIVATE:
        assert secret not in wire and secret not in logs
    for text in SHARED_TOPIC:
        assert text not in logs
    assert report.messages == 12 and report.shared == 6 and report.train["real_examples"] == 12
    assert report.train["synthetic_examples"] == report.synthetic_received
    assert (tmp_path / "merged" / "config.json").is_file()

    # A fraction of an unfiltered share: still only the selected ones, and the record of them is exact.
    sent.clear()
    personalize(cfg, "u1", records, share=0.25, synthetic=1, out=None, client=client, progress=False)
    chosen = [records[i]["text"] for i in select_share([r["text"] for r in records], 0.25, None, 0)]
    assert sent[0]["shared"] == chosen and len(chosen) == 3


def test_bad_input_writes_nothing(cfg, tmp_path):
    from pet.personal.personalize.pipeline import personalize

    class Refuse:  # any request would be a bug: bad input must fail before anything is sent
        def request(self, payload):
            raise AssertionError("sent despite bad input")

    out = tmp_path / "bundle"
    recs = [{"text": "hello"}]
    for kwargs, err, msg in [
        (dict(records=[], share=0.5), StoreError, "empty"),
        (dict(records=recs, share=1.5), StoreError, r"\[0, 1\]"),
        (dict(records=recs, share=-0.1), StoreError, r"\[0, 1\]"),
        (dict(records=recs, share=0.5, synthetic=10**6), StoreError, "synthetic"),
    ]:
        with pytest.raises(err, match=msg):
            personalize(cfg, "u1", out=out, client=Refuse(), progress=False, **kwargs)
    out.mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        personalize(cfg, "u1", recs, 0.5, out=out, client=Refuse(), progress=False)
    assert list(tmp_path.iterdir()) == [out] and not list(out.iterdir())


def test_personalize_cli_bad_input_keeps_store(cfg, tmp_path, capsys):
    from pet.cli.main import main

    key = StoreKey.generate(tmp_path / "k.key")
    store = PersonalStore(tmp_path / "s", StoreKey.from_file(key))
    store.append("alice", ["one", "two"])
    before = store.path("alice").read_bytes()
    common = ["personalize", "--store", str(tmp_path / "s"), "--key-file", str(key), "--out", str(tmp_path / "b")]
    assert main([*common, "--user", "bob", "--share", "0.5"]) == 2
    assert "no personal data for user 'bob'" in capsys.readouterr().err
    assert main([*common, "--user", "alice", "--share", "2"]) == 2
    assert "[0, 1]" in capsys.readouterr().err
    big = tmp_path / "big.txt"
    big.write_text("q" * 1_100_000)
    assert main(["personalize", "--data", str(big), "--user", "alice", "--share", "0.5",
                 "--out", str(tmp_path / "b")]) == 2
    assert "limit is 1000000" in capsys.readouterr().err
    assert store.path("alice").read_bytes() == before and not (tmp_path / "b").exists()


def test_personalize_exports_a_loadable_device_bundle(cfg, tiny_lm, embedder, tmp_path):
    from pet.personal.personalize.client import LocalAugmentClient
    from pet.personal.personalize.pipeline import personalize
    from pet.personal.runtime import DeviceModel

    cfg.personalization.export_quantize = "none"
    client = LocalAugmentClient(tiny_lm, embedder, cfg.personalization)
    out = tmp_path / "bundle"
    report = personalize(cfg, "u2", [{"text": t} for t in SHARED_TOPIC], share=0.5, synthetic=2, out=out,
                         client=client, progress=False)
    assert report.bundle == str(out) and (out / "bundle.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the merged temp folder is gone
    gen = DeviceModel.load(out, num_threads=1).generate("Hi", max_new_tokens=4)
    assert gen.usage.completion_tokens <= 4
    with pytest.raises(FileExistsError):
        personalize(cfg, "u2", [{"text": "x"}], share=0.0, out=out, client=client, progress=False)
