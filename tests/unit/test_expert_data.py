"""Domain data loading and validation, T-synthesis parsing/filtering, and the offline recipes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pet.expert.data import (
    DataError,
    Sample,
    chunk_text,
    load_domain_data,
    load_queries,
    sample_queries,
    split_heldout,
)
from pet.expert.synth import SynthStats, filter_pairs, parse_pair, synthesize


def write(path, data: bytes | str):
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def test_txt_is_chunked_on_paragraphs(tmp_path):
    paras = [f"Paragraph {i} " + "word " * 30 for i in range(12)]
    dd = load_domain_data(write(tmp_path / "d.txt", "\n\n".join(paras)), chunk_chars=400)
    assert dd.kind == "text" and all(not s.is_pair for s in dd.samples)
    assert all(len(s.text) <= 400 for s in dd.samples)
    assert " ".join(s.text for s in dd.samples).split() == " ".join(paras).split()  # nothing lost or duplicated
    assert len(dd.sha256) == 64 and dd.bytes == len("\n\n".join(paras).encode())


def test_long_lines_are_cut():
    chunks = chunk_text("x" * 2500, chunk_chars=1000)
    assert [len(c) for c in chunks] == [1000, 1000, 500]


def test_jsonl_text_and_pairs(tmp_path, tiny_lm):
    rows = [{"text": f"note {i}"} for i in range(3)] + [{"prompt": f"q{i}?", "response": f"a{i}."} for i in range(3)]
    dd = load_domain_data(write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n"))
    assert dd.stats["samples"] == 6 and dd.stats["pairs"] == 3
    pair = dd.samples[3]
    rendered = pair.render(tiny_lm.tokenizer)
    assert rendered.startswith("<|im_start|>user\nq0?<|im_end|>")
    assert "<|im_start|>assistant\na0.<|im_end|>" in rendered
    assert pair.query() == "q0?" and dd.samples[0].render(None) == "note 0"
    # Training/evaluation items: a pair scores only the response after the templated prompt.
    from pet.expert.train import encode_items
    from pet.metrics import perplexity

    prefix, full = pair.item(tiny_lm.tokenizer)
    assert full == rendered and prefix.endswith("<|im_start|>assistant\n")
    assert dd.samples[0].item(tiny_lm.tokenizer) == "note 0"
    (ids, labels), (ids_text, labels_text) = encode_items(tiny_lm.tokenizer, [(prefix, full), full], 256)
    skip = sum(x == -100 for x in labels)
    assert ids == ids_text and labels_text == ids_text and labels[skip:] == ids[skip:]
    assert skip == len(tiny_lm.tokenizer(prefix, add_special_tokens=False)["input_ids"]) > 0
    pad = tiny_lm.tokenizer.pad_token_id
    ppl_resp, n_resp = perplexity(tiny_lm.model, [(ids, labels)], pad)
    ppl_all, n_all = perplexity(tiny_lm.model, [(ids, ids)], pad)
    assert n_resp == len(ids) - skip and n_all == len(ids) - 1 and ppl_resp != ppl_all


@pytest.mark.parametrize("name,content,message", [
    ("e.txt", b"", "is empty"),
    ("w.txt", b"  \n\n\t \n", "is empty"),
    ("b.txt", b"caf\xe9 au lait " * 10, "not UTF-8 text (invalid byte at offset 3)"),
    ("n.txt", b"a\x00b " * 50, "NUL bytes"),
    ("x.csv", b"a,b\n", "must end in .txt or .jsonl"),
    ("j.jsonl", b'{"text": "ok"}\n{"text": "ok2"}\nnot json\n', "j.jsonl:3: not valid JSON"),
    ("k.jsonl", b'{"text": "ok"}\n{"body": "x"}\n', "k.jsonl:2: needs a 'text' field or 'prompt' and 'response'"),
    ("p.jsonl", b'{"prompt": "q", "response": ""}\n', "p.jsonl:1: 'prompt' and 'response' must both be non-empty"),
    ("l.jsonl", b'[1, 2]\n', "l.jsonl:1: expected a JSON object"),
    ("s.txt", b"only one paragraph", "at least 4 are needed"),
])
def test_bad_data_files(tmp_path, name, content, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_domain_data(write(tmp_path / name, content), chunk_chars=50)


def test_oversized_and_missing(tmp_path):
    with pytest.raises(DataError, match="is 2,000 bytes; the limit is 1,000"):
        load_domain_data(write(tmp_path / "big.txt", "a" * 2000), max_bytes=1000)
    with pytest.raises(DataError, match="does not exist"):
        load_domain_data(tmp_path / "nope.txt")
    (tmp_path / "dir.txt").mkdir()
    with pytest.raises(DataError, match="not a regular file"):
        load_domain_data(tmp_path / "dir.txt")


def test_queries_split_and_sampling(tmp_path):
    assert load_queries(write(tmp_path / "q.txt", "a?\n\nb?\na?\n")) == ["a?", "b?"]
    jl = write(tmp_path / "q.jsonl", '{"prompt": "p?", "response": "r"}\n{"text": "t"}\n')
    assert load_queries(jl) == ["p?", "t"]
    with pytest.raises(DataError, match="is empty"):
        load_queries(write(tmp_path / "e.txt", "\n"))
    samples = [Sample(text=f"s{i}") for i in range(20)]
    train, held = split_heldout(samples, 0.25, seed=3)
    assert len(held) == 5 and len(train) == 15 and not set(map(id, train)) & set(map(id, held))
    assert split_heldout(samples, 0.25, seed=3) == (train, held)  # deterministic
    assert len(split_heldout(samples, 0.5, max_heldout=3)[1]) == 3
    assert len(split_heldout(samples[:2], 0.9)[0]) == 1  # both sides non-empty
    qs = sample_queries(samples, 7, seed=1)
    assert len(qs) == 7 and len(set(qs)) == 7


# ----------------------------------------------------------------------------------------------------------------
# Synthesis


class BagEmbedder:
    """Deterministic bag-of-words hashing embedder (64 dims) so the filters are testable without MiniLM."""

    dim = 64

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, sum(map(ord, w.strip(".?!,"))) % self.dim] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_parse_pair():
    assert parse_pair("Question: What is a list?\nAnswer: A mutable sequence.") == ("What is a list?",
                                                                                   "A mutable sequence.")
    assert parse_pair("question:  Why?\n\nanswer: Because.\nQuestion: again?\nAnswer: no") == ("Why?", "Because.")
    assert parse_pair("no structure here") is None and parse_pair("Question: q\nAnswer: ") is None


def test_filter_pairs_length_dedupe_and_domain():
    emb = BagEmbedder()
    centroid = emb.encode(["python list dict function module import"])[0]
    cands = [
        ("How do I import a python module?", "Use the import statement with the module name."),
        ("How do I import a Python module??", "Same question again, different punctuation."),  # exact dup (normalised)
        ("Hi", "Too short a question."),  # length
        ("What is the best pizza topping in town?", "Cheese and basil on a thin crust, baked hot."),  # off-domain
        ("Which python function returns a dict from a module?", "vars(module) returns the module dict."),
    ]
    st = SynthStats()
    kept = filter_pairs(cands, centroid, emb, min_similarity=0.2, stats=st)
    assert [q for q, _ in kept] == [cands[0][0], cands[4][0]]
    assert st.dropped == {"unparsed": 0, "length": 1, "duplicate": 1, "off_domain": 1}
    assert filter_pairs(cands, None, emb)[:1] == cands[:1]  # no centroid: only length/dedupe


def test_synthesize_with_tiny_t_model(tiny_lm):
    samples = [Sample(text=f"def f{i}(x): return x + {i}") for i in range(6)]
    pairs, st = synthesize(tiny_lm, samples, 2, BagEmbedder(), max_new_tokens=8, max_rounds=1, progress=False,
                           log=lambda m: None)
    # A random tiny model does not follow the format: every output is counted, none is kept blindly.
    assert st.requested == 2 and st.generated == 4
    assert st.kept == len(pairs) and st.dropped["unparsed"] + st.dropped["length"] + st.kept >= 0
    assert all(p.is_pair for p in pairs)


# ----------------------------------------------------------------------------------------------------------------
# Recipes (real text installed with the project)


def test_python_recipe_writes_pydoc_text(tmp_path, monkeypatch):
    from pet.expert import recipes

    monkeypatch.setattr(recipes, "PY_MODULES", ("json", "textwrap", "bisect", "heapq"))
    r = recipes.get_recipe("python")
    out = r.write(tmp_path / "py.txt", tmp_path / "q.txt", n_examples=10)
    text = out.data_path.read_text()
    assert "json.dumps" in text or "dumps(obj" in text
    assert "MODULE REFERENCE" not in text and " at 0x" not in text
    qs = out.examples_path.read_text().splitlines()
    assert len(qs) == 10 and all(q.strip() for q in qs)
    held = r.heldout_queries(20)
    assert held and not set(held) & set(qs)
    assert load_domain_data(out.data_path).stats["samples"] >= 4
    with pytest.raises(ValueError, match=r"\*\.txt"):
        r.write(tmp_path / "py.jsonl")
    with pytest.raises(ValueError, match="known: chitchat, python"):
        recipes.get_recipe("cooking")


def test_chitchat_recipe_pairs(tmp_path, monkeypatch):
    from pet.expert import recipes

    monkeypatch.setattr(recipes.ChitchatRecipe, "n_conversations", 20)
    r = recipes.get_recipe("chitchat")
    out = r.write(tmp_path / "c.jsonl", tmp_path / "q.txt", n_examples=8)
    dd = load_domain_data(out.data_path)
    assert dd.stats["pairs"] == dd.stats["samples"] == out.samples > 20
    assert not set(r.heldout_queries(30)) & {s.prompt for s in dd.samples}
