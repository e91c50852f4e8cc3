"""Questioner profiles (issue 26) without Ray: the profile's caps, the device's opt-in, the gateway refusing bad
profiles with 422/400, the tiers' conditioning (in context, soft prompts from a tiny encoder), the encoder's
artifact and fingerprints, one training step on a tiny model, and the canary: a profile's text never reaches a
log line, a metric or the ledger."""

from __future__ import annotations

import asyncio
import hashlib
import logging

import numpy as np
import pytest
from fastapi.testclient import TestClient

from pet.config.schema import PetConfig
from pet.config.schema.questioner import QuestionerConfig
from pet.ledger import Meter
from pet.questioner.condition import Conditioner, in_context_messages
from pet.questioner.profile import (
    ProfileBuilder,
    ProfileError,
    QuestionerProfile,
    make_profile,
    parse_profile,
    payload_bytes,
)
from pet.serve.dispatch import Dispatcher
from pet.serve.gateway import GatewayReplica
from pet.serve.guard import Admission
from tests.unit.test_serve_hardening import _Resp

CANARY = "zebra-canary-7731 my secret allotment by the old mill"
DIM = 384


class HashEmbedder:
    """Deterministic unit vectors from text hashes (stands in for MiniLM)."""

    dim = DIM

    def encode(self, texts):
        out = []
        for t in texts:
            seed = int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)
            v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out) if out else np.zeros((0, DIM), np.float32)


def _profile(exemplars=(CANARY,), dim=DIM) -> dict:
    v = np.ones(dim, dtype=np.float32)
    return make_profile(v, list(exemplars), np.stack([v] * len(exemplars)) if exemplars else None, 280).to_payload()


# -- the profile ----------------------------------------------------------------------------------------------------


def test_a_valid_profile_parses_and_its_size_is_counted():
    p = parse_profile(_profile(), QuestionerConfig())
    assert len(p.embedding) == DIM and p.exemplars == [CANARY]
    assert p.nbytes() == payload_bytes(_profile()) < QuestionerConfig().max_profile_bytes


@pytest.mark.parametrize("mutate,field", [
    (lambda p: p.update(embedding=p["embedding"][:100]), "questioner.embedding"),
    (lambda p: p.update(exemplar_embedding=p["exemplar_embedding"][:100]), "questioner.exemplar_embedding"),
    (lambda p: p.update(exemplars=[CANARY] * 4), "questioner.exemplars"),
    (lambda p: p.update(exemplars=[CANARY * 20]), "questioner.exemplars"),
    (lambda p: p.update(embedding=[float("nan")] * DIM), "questioner.embedding"),
    (lambda p: p.update(embedding=[3.0] * DIM), "questioner.embedding"),
    (lambda p: p.update(embedding=["0.1"] * DIM), "questioner.embedding"),
    (lambda p: p.update(extra=CANARY), "questioner.extra"),
    (lambda p: p.update(version=2), "questioner.version"),
    (lambda p: p.update(exemplars=["x\ud800"]), "questioner.exemplars"),
])
def test_malformed_profiles_are_refused_naming_the_field_never_the_content(mutate, field):
    p = _profile()
    mutate(p)
    with pytest.raises(ProfileError) as err:
        parse_profile(p, QuestionerConfig())
    assert field in str(err.value) and CANARY not in str(err.value) and "zebra" not in str(err.value)


def test_an_oversized_profile_is_refused_by_its_byte_count():
    with pytest.raises(ProfileError, match="bytes; the limit is 2000"):
        parse_profile(_profile(), QuestionerConfig(max_profile_bytes=2000))


def test_the_builder_picks_the_nearest_messages_and_fits_the_byte_cap():
    texts = ["I love hiking in the alps", "my cat is called Tom", "hiking boots on sale", "rainy day"]
    emb = HashEmbedder()
    b = ProfileBuilder(texts, emb, QuestionerConfig(exemplars=2))
    p = b.for_query("hiking boots on sale")  # the query itself is never its own exemplar
    assert len(p.exemplars) == 2 and "hiking boots on sale" not in p.exemplars
    assert abs(np.linalg.norm(p.vector()) - 1) < 1e-3
    bare = ProfileBuilder(texts, emb, QuestionerConfig(exemplars=0)).for_query("anything").nbytes()
    tight = ProfileBuilder(texts, emb, QuestionerConfig(exemplars=3, max_profile_bytes=bare + 40))
    small = tight.for_query("anything")  # exemplars (and their embedding) are dropped until the profile fits
    assert small.nbytes() <= bare + 40 and len(small.exemplars) < 3
    with pytest.raises(ProfileError):
        ProfileBuilder([" "], emb, QuestionerConfig())


def test_in_context_puts_exemplars_in_the_system_message():
    prof = QuestionerProfile.model_validate(_profile(("likes tea", "hates rain")))
    msgs = in_context_messages("hello", prof)
    assert msgs[0]["role"] == "system" and "- likes tea" in msgs[0]["content"] and msgs[1]["content"] == "hello"
    sys_first = in_context_messages([{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "hi"}], prof)
    assert sys_first[0]["content"].startswith("Be brief.") and "hates rain" in sys_first[0]["content"]
    assert len(sys_first) == 2


# -- the device: nothing is sent without opt-in -----------------------------------------------------------------


class _Gateway:
    def __init__(self):
        self.payloads = []

    def call(self, path, payload):
        self.payloads.append(payload)
        return {"text": "hi", "tier": "t", "escalation": ["t"], "usage": {}}, True


def _device(questioner=None):
    from pet.personal.device import DeviceClient
    from pet.router.router import Router

    class _P:
        def generate(self, prompt, max_new_tokens=64, temperature=0.0, top_p=1.0):
            raise AssertionError("P should not run for an always-escalate router")

    router = Router.from_config(PetConfig())
    client = DeviceClient(_P(), router, None, questioner=questioner)
    client.gateway = _Gateway()
    return client


def test_without_opt_in_no_profile_is_sent_and_with_it_one_is():
    from pet.router.policy import Action, Decision

    for builder in (None, ProfileBuilder(["tea is lovely", "rain again"], HashEmbedder(), QuestionerConfig())):
        client = _device(builder)
        d = Decision(Action.ESCALATE, "test")
        from pet.personal.device import _Steps
        from pet.router.policy import RouteState

        ans = client._cloud_answer("what to drink?", 8, d, _Steps(client.router, RouteState(query="q")), 0.0)
        sent = client.gateway.payloads[-1]
        if builder is None:
            assert "questioner" not in sent and ans.shared_bytes == 0
        else:
            assert parse_profile(sent["questioner"], QuestionerConfig()).exemplars
            assert ans.shared_bytes == payload_bytes(sent["questioner"])


def test_sharing_is_off_by_default_in_the_config_and_the_chat_command():
    from pet.cli.main import build_parser

    assert QuestionerConfig().share is False
    args = build_parser().parse_args(["chat", "--bundle", "b"])
    assert args.share_profile is False


# -- the gateway: validation, forwarding, the ledger and the canary ------------------------------------------------


class _T:
    """T's handle: records the payloads it gets."""

    def __init__(self):
        self.payloads = []
        self.generate = self

    def remote(self, payload):
        self.payloads.append(payload)

        async def answer():
            return {"text": "ok", "signals": {"mean_logprob": -0.1, "min_token_prob": 0.5, "mean_entropy": 1.0},
                    "finish_reason": "stop", "usage": {"prompt_tokens": 3, "completion_tokens": 2, "seconds": 0.0}}

        return _Resp(answer())

    def options(self, **kw):
        return self


class _Replica(GatewayReplica):
    def __init__(self, cfg, t):
        Dispatcher.__init__(self, cfg, t, t)
        self.admission = Admission(cfg.serve.gateway.max_inflight, cfg.serve.gateway.retry_after_s)
        self.meter = Meter.from_config(cfg)
        self.augmenter = None
        self.pending = []

    def crypto(self):
        return None

    def in_background(self, coro):
        self.pending.append(coro)


@pytest.fixture
def gateway(tmp_path):
    cfg = PetConfig.model_validate({
        "crypto": {"allow_plaintext": True, "keys_dir": str(tmp_path / "keys")},
        "expert": {"registry_dir": str(tmp_path / "reg")},
        "ledger": {"path": str(tmp_path / "ledger.sqlite")}})
    t = _T()
    gw = _Replica(cfg, t)
    return TestClient(gw.api(), raise_server_exceptions=False), gw, t, tmp_path / "ledger.sqlite"


def test_bad_profiles_are_refused_with_422_naming_the_field(gateway):
    client, _, t, _ = gateway
    short = _profile()
    short["embedding"] = short["embedding"][:10]
    many = _profile((CANARY,) * 4)
    long = {**_profile(), "exemplars": [CANARY * 9] * 3}
    huge = {**_profile(), "exemplars": [CANARY * 36] * 3, "embedding": [0.0123456789012345] * DIM,
            "exemplar_embedding": [0.0123456789012345] * DIM}
    for bad, field in [(short, "questioner.embedding"), (many, "questioner.exemplars"),
                       ("not an object", "questioner"), (long, "questioner.exemplars"),
                       (huge, "questioner: the profile is")]:
        r = client.post("/v1/generate", json={"prompt": "hi", "tier": "t", "questioner": bad})
        assert r.status_code == 422, r.text
        assert field in r.json()["error"]["message"] and "zebra" not in r.text
    assert t.payloads == []  # nothing reached T


def test_a_request_without_a_profile_is_unchanged(gateway):
    client, _, t, _ = gateway
    r = client.post("/v1/generate", json={"prompt": "hi", "tier": "t"})
    assert r.status_code == 200 and "questioner" not in t.payloads[-1]


def test_the_profile_reaches_t_and_only_its_size_reaches_the_ledger_logs_and_metrics(gateway, caplog):
    from pet.ledger import Ledger

    client, gw, t, ledger_path = gateway
    caplog.set_level(logging.DEBUG)
    r = client.post("/v1/generate", json={"prompt": "hi", "tier": "t", "user": "alice", "questioner": _profile()})
    assert r.status_code == 200
    assert t.payloads[-1]["questioner"]["exemplars"] == [CANARY]
    for coro in gw.pending:
        asyncio.run(coro)
    rows = Ledger(ledger_path).summary(user="alice")
    assert [r.shared_bytes for r in rows] == [payload_bytes(_profile())]
    metrics = client.get("/metrics").text
    raw = b"".join(p.read_bytes() for p in ledger_path.parent.glob("ledger.sqlite*"))
    for where in (caplog.text, metrics, raw.decode("latin-1"), r.text):
        assert "zebra" not in where and "allotment" not in where


def test_the_openai_route_takes_the_extension_field_and_refuses_a_bad_one(tmp_path):
    from fastapi import FastAPI

    from pet.serve.routes import add_routes
    from tests.unit.test_openai_routes import FakeGateway, build_tiny_tokenizer

    folder = tmp_path / "tok"
    build_tiny_tokenizer().save_pretrained(folder)
    cfg = PetConfig.model_validate({"traditional": {"model": str(folder)}, "crypto": {"allow_plaintext": True},
                                    "ledger": {"path": str(tmp_path / "ledger.sqlite")}})
    gw = FakeGateway(cfg)
    app = FastAPI()
    add_routes(app, gw)
    client = TestClient(app)
    body = {"model": "pet-auto", "messages": [{"role": "user", "content": "hi"}], "pet_questioner": _profile()}
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    assert gw.payloads[-1]["questioner"]["exemplars"] == [CANARY]
    plain = {"model": "pet-auto", "messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/v1/chat/completions", json=plain).status_code == 200
    assert "questioner" not in gw.payloads[-1]
    bad = {**body, "model": "pet-t", "stream": True, "pet_questioner": {"embedding": [0.1] * 3}}
    r = client.post("/v1/chat/completions", json=bad)
    assert r.status_code == 400 and r.json()["error"]["param"] == "pet_questioner" and "zebra" not in r.text


# -- the tiers' conditioning, the encoder and its training (tiny model) ---------------------------------------------


def _tiny_encoder(tiny_lm, soft_tokens=2):
    from pet.questioner.encoder import build_encoder

    hidden = tiny_lm.model.get_input_embeddings().weight.shape[1]
    return build_encoder(DIM, 8, hidden, soft_tokens)


def test_conditioner_in_context_and_learned_modes(tiny_lm):
    from pet.models.engine import run_batch

    cfg = PetConfig()
    payload = {"prompt": "hello", "max_new_tokens": 3, "temperature": 0.0, "top_p": 1.0, "questioner": _profile()}
    out = Conditioner.from_config(cfg, None).apply(payload)
    assert "questioner" not in out and out["prompt"][0]["role"] == "system" and CANARY in out["prompt"][0]["content"]
    learned = Conditioner(cfg.questioner.updated(mode="learned"), _tiny_encoder(tiny_lm))
    soft = learned.apply(payload)
    assert "questioner" not in soft and soft["prompt"] == "hello" and tuple(soft["soft_prompt"].shape)[0] == 2
    plain = {k: v for k, v in payload.items() if k != "questioner"}
    res = run_batch(tiny_lm, [soft, plain])
    assert all("text" in r for r in res)
    assert res[0]["usage"]["prompt_tokens"] == res[1]["usage"]["prompt_tokens"] + 2
    off = Conditioner(cfg.questioner.updated(mode="off")).apply(payload)
    assert off == plain
    broken = Conditioner.from_config(PetConfig.model_validate({"questioner": {"mode": "learned"}}), None)
    assert broken.mode == "in_context" and "encoder" in broken.why_not_learned


def test_encoder_artifact_is_checked_by_both_fingerprints(tiny_lm, tmp_path):
    from pet.questioner.encoder import EncoderError, load_encoder, save_encoder

    enc = _tiny_encoder(tiny_lm)
    m = save_encoder(enc, tmp_path / "enc", "a" * 64, {"steps": 1})
    loaded, manifest = load_encoder(tmp_path / "enc", "a" * 64, m["fingerprint"])
    assert manifest["soft_tokens"] == 2
    with pytest.raises(EncoderError, match="another T"):
        load_encoder(tmp_path / "enc", "b" * 64)
    with pytest.raises(EncoderError, match="configured"):
        load_encoder(tmp_path / "enc", "a" * 64, "c" * 64)
    with pytest.raises(FileExistsError):
        save_encoder(enc, tmp_path / "enc", "a" * 64, {})
    w = tmp_path / "enc" / "encoder.safetensors"
    w.write_bytes(w.read_bytes()[:-1] + b"\0")
    with pytest.raises(EncoderError, match="fingerprint"):
        load_encoder(tmp_path / "enc")


def test_soft_prompts_change_the_score_and_one_training_step_runs(tiny_lm):
    from pet.questioner.data import Dialogue, Questioner
    from pet.questioner.score import encode_row, reply_nll
    from pet.questioner.train import Example, profile_questioners, train_encoder

    emb = HashEmbedder()
    qs = [Questioner(f"q{i}", history=[f"message {i} {j}" for j in range(4)]) for i in range(3)]
    for q in qs:
        q.dialogues = [Dialogue(q.id, "c", [], f"question {j} from {q.id}", f"reply {j}") for j in range(3)]
    profiled = profile_questioners(qs, emb, 10, None)
    examples = []
    for q in qs:
        for d in q.dialogues:
            examples.append(Example(d, emb.encode([d.query])[0], encode_row(tiny_lm, d.messages(), d.reply, 64, 8)))
    qcfg = QuestionerConfig(soft_tokens=2, train={"steps": 2, "batch_size": 2, "contrastive_batch": 6,
                                                  "clusters": 1, "hidden": 8})
    logs = []
    enc, facts = train_encoder(tiny_lm, examples, profiled, qcfg, logs.append)
    assert facts["steps"] == 2 and logs and np.isfinite(facts["final_lm_loss"])
    rows = [e.row for e in examples[:2]]
    base, n = reply_nll(tiny_lm, rows)
    import torch

    soft = torch.ones(2, 2, tiny_lm.model.get_input_embeddings().weight.shape[1])
    with_soft, n2 = reply_nll(tiny_lm, rows, soft=soft)
    assert n.tolist() == n2.tolist() and not torch.allclose(base, with_soft)
    assert all(p.requires_grad is False for p in tiny_lm.model.parameters())
    for p in tiny_lm.model.parameters():  # the session's tiny model is shared with other tests
        p.requires_grad_(True)


def test_the_store_keeps_the_opt_in_and_pet_chat_follows_it(tmp_path, monkeypatch, capsys):
    import argparse

    from pet.cli.chat import _questioner
    from pet.cli.main import build_parser
    from pet.personal.personalize.store import PersonalStore, StoreAuthError, StoreKey

    key_file = StoreKey.generate(tmp_path / "device.key")
    store = PersonalStore(tmp_path / "store", StoreKey.from_file(key_file))
    store.append("alice", ["tea is lovely", "rain again today"])
    assert store.share_profile("alice") is False  # off until the user turns it on
    monkeypatch.setattr("pet.models.embed.embedder_from_config", lambda cfg: HashEmbedder())
    cli = ["--store", str(tmp_path / "store"), "--key-file", str(key_file), "--user", "alice"]

    def chat_args(*extra):
        return build_parser().parse_args(["chat", "--bundle", "b", *cli, *extra])

    assert _questioner(chat_args(), PetConfig()) is None
    args = build_parser().parse_args(["store", "share-profile", *cli, "on"])
    assert args.func(args) == 0 and "shared with escalated requests" in capsys.readouterr().out
    assert store.share_profile("alice") is True and len(store.records("alice")) == 2
    store.append("alice", "one more")  # later writes keep the choice
    assert isinstance(_questioner(chat_args(), PetConfig()), ProfileBuilder)
    args = build_parser().parse_args(["store", "share-profile", *cli, "off"])
    assert args.func(args) == 0 and _questioner(chat_args(), PetConfig()) is None
    assert _questioner(argparse.Namespace(**{**vars(chat_args()), "key_file": None}), PetConfig()) is None

    # the choice is authenticated: flipping it in the file without the key breaks the store, it does not opt in
    path = store.path("alice")
    path.write_bytes(path.read_bytes().replace(b'"share_profile": false', b'"share_profile": true'))
    with pytest.raises(StoreAuthError):
        store.share_profile("alice")


def test_questioners_split_by_time_with_the_replies_they_received():
    """The earlier half of a sender's conversations is their history (own messages, replies received), the later
    half their dialogues; a sender with too few conversations is left out."""
    from pet.questioner.data import load_questioners

    def conv(i: int, who: str, other: str) -> dict:
        return {"start": f"2020-01-{i + 1:02d}", "messages": [
            [{"sender": who, "text": f"q{i} from {who}"}], [{"sender": other, "text": f"reply{i} to {who}"}]]}

    data = {f"c{i}": conv(i, "alice", "bob" if i % 2 else "carol") for i in range(4)}
    data["x"] = conv(9, "dave", "erin")
    qs = load_questioners(min_conversations=4, data=data)
    assert set(qs) == {"alice"}  # bob/carol have 2 conversations each, dave/erin 1
    a = qs["alice"]
    assert a.history == ["q0 from alice", "q1 from alice"]
    assert a.received == ["reply0 to alice", "reply1 to alice"]
    assert [d.reply for d in a.dialogues] == ["reply2 to alice", "reply3 to alice"]
