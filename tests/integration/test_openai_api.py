"""The official ``openai`` Python client against the running gateway on 127.0.0.1 (real Ray Serve, real
SmolLM2): non-streaming and streaming chat completions, the model list, OpenAI errors, and ledger metering."""

from __future__ import annotations

import uuid

import openai
import pytest

from pet.ledger import Ledger

pytestmark = pytest.mark.integration

MSGS = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(serve_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{serve_url}/v1", api_key="not-needed", max_retries=0, timeout=120.0)


def ledger_rows(cfg, rid: str) -> list[dict]:
    led = Ledger.from_config(cfg)
    try:
        return [e for e in led.events() if e["id"] == rid]
    finally:
        led.close()


def test_non_streaming_and_streaming_t_agree_and_are_metered(client, serve_config):
    rid, user = f"it-oa-{uuid.uuid4().hex}", f"it-user-{uuid.uuid4().hex[:8]}"
    resp = client.chat.completions.create(model="pet-t", messages=MSGS, max_tokens=8, user=user,
                                          extra_headers={"X-Request-Id": rid})
    text = resp.choices[0].message.content
    assert resp.id == f"chatcmpl-{rid}" and text.strip()
    assert resp.pet["tier"] == "t" and resp.pet["escalation"] == ["t"] and resp.pet["metered"] is True
    assert 0 < resp.usage.completion_tokens <= 8 and resp.usage.prompt_tokens > 5
    [row] = ledger_rows(serve_config, rid)
    assert (row["user"], row["tier"], row["prompt_tokens"], row["completion_tokens"]) == (
        user, "t", resp.usage.prompt_tokens, resp.usage.completion_tokens)

    srid = f"it-oa-s-{uuid.uuid4().hex}"
    chunks = list(client.chat.completions.create(
        model="pet-t", messages=MSGS, max_tokens=8, stream=True, user=user,
        stream_options={"include_usage": True}, extra_headers={"X-Request-Id": srid}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2  # tokens arrive as T generates them, not as one block
    # greedy decoding: the streamed answer is the same text as the non-streamed one
    assert "".join(pieces).strip() == text.strip()
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    assert final.pet["tier"] == "t" and final.pet["streamed"] == "tokens" and final.pet["metered"] is True
    assert chunks[-1].usage.completion_tokens == pytest.approx(resp.usage.completion_tokens, abs=1)
    [srow] = ledger_rows(serve_config, srid)
    assert srow["user"] == user and srow["completion_tokens"] == chunks[-1].usage.completion_tokens

    # the client retries with the same id: answered again, billed once
    again = client.chat.completions.create(model="pet-t", messages=MSGS, max_tokens=8, user=user,
                                           extra_headers={"X-Request-Id": rid})
    assert again.pet["metered"] is False and len(ledger_rows(serve_config, rid)) == 1


def test_models_experts_auto_stream_and_errors(client, serve_config):
    ids = [m.id for m in client.models.list()]
    assert ids[:2] == ["pet-auto", "pet-t"] and "pet-e-python" in ids
    rid = f"it-oa-e-{uuid.uuid4().hex}"
    resp = client.chat.completions.create(
        model="pet-e-python", max_tokens=6, extra_headers={"X-Request-Id": rid, "X-Pet-User": "it-bob"},
        messages=[{"role": "user", "content": "How do I sort a list in Python?"}])
    assert resp.pet["tier"] == "e" and resp.pet["domain"] == "python" and resp.choices[0].message.content.strip()
    [row] = ledger_rows(serve_config, rid)
    assert (row["user"], row["tier"]) == ("it-bob", "e")

    chunks = list(client.chat.completions.create(
        model="pet-auto", max_tokens=6, stream=True,
        messages=[{"role": "user", "content": "How do I read a text file line by line in Python?"}]))
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    assert final.pet["escalation"][0] == "e" and final.pet["streamed"] == "finished_answer"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()

    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="pet-e-nonexistent", messages=MSGS)
    assert exc.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="pet-t", messages=MSGS, max_tokens=100000)
    assert exc.value.body["type"] == "invalid_request_error"
