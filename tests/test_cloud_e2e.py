"""Claude on Amazon Bedrock and Google Vertex AI, metered through a real mitmdump.

Real HTTP(S) from a plain client through ``mitmdump -s addons/ccmeter.py`` to the cloud
stand-ins in tests/standin_cloud.py, in forward mode (TLS interception of the real cloud host
names, routed to the stand-in with ``ccmeter_upstream``) and in reverse mode; then the real
Claude Code CLI with ``CLAUDE_CODE_USE_BEDROCK`` / ``CLAUDE_CODE_USE_VERTEX`` under
``ccmeter run``. Expected costs are worked out by hand in each test from list prices.
"""

from __future__ import annotations

import http.client
import json
import ssl
import struct
from decimal import Decimal
from pathlib import Path

import pytest
from capsproxy import write_caps
from mitm import MitmDump, db_rows
from realclients import claude_bin
from standin import Recorded, message_events, message_json, serialize_events, sse_reply
from standin_cloud import (
    EVENTSTREAM,
    CloudStandIn,
    bedrock_error_reply,
    bedrock_exception,
    bedrock_frames,
    bedrock_json_reply,
    bedrock_stream_reply,
    cloud_answer,
    json_reply,
    metrics_for,
)
from test_run_cli import ccmeter, claude_env

from ccmeter.eventstream import EventStreamDecoder, message_ends

BEDROCK_HOST = "bedrock-runtime.us-east-1.amazonaws.com"
VERTEX_HOST = "us-east5-aiplatform.googleapis.com"
SONNET_45_US = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
VERTEX_PATH = ("/v1/projects/test/locations/{region}/publishers/anthropic/models/"
               "{model}:{op}")
SESSION = "0e5b8c1d-7d2a-4a55-9f0e-5f1c2b3a4d5e"

# What the Anthropic Bedrock SDK sends (model and stream are in the URL, not the body).
SIGNED_HEADERS = {
    "content-type": "application/json",
    "accept": "application/json",
    "user-agent": "claude-cli/2.1.197 (external, sdk-cli)",
    "x-claude-code-session-id": SESSION,
    "x-amz-date": "20261127T091502Z",
    "x-amz-security-token": "FwoGZXIvYXdzEXAMPLE//token+with/slashes==",
    "x-amz-content-sha256": "3f1c4e0f0d8b9a0e2b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a",
    "authorization": ("AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20261127/us-east-1/bedrock/"
                      "aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;"
                      "x-amz-date;x-amz-security-token, Signature=" + "ab" * 32),
    "x-ccmeter-project": "signed-tag",  # even this header is signed and must stay
}


def usd(value: str) -> int:
    return int(Decimal(value) * 10**12)


def cost(rates: tuple[str, str, str, str, str], tokens: tuple[int, int, int, int, int],
         multiplier: str = "1") -> int:
    """Tokens (input, 5m write, 1h write, read, output) at per-MTok rates, then a multiplier."""
    dollars = sum(Decimal(r) * t for r, t in zip(rates, tokens, strict=True)) / 10**6
    return int(dollars * Decimal(multiplier) * 10**12)


SONNET_4_5 = ("3", "3.75", "6", "0.3", "15")
HAIKU_4_5 = ("1", "1.25", "2", "0.1", "5")
OPUS_4_1 = ("15", "18.75", "30", "1.5", "75")
OPUS_4_8 = ("5", "6.25", "10", "0.5", "25")


def bedrock_body(**extra) -> bytes:
    metadata = json.dumps({"device_id": "d" * 64, "session_id": SESSION})
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "anthropic_beta": ["claude-code-20250219"],
        "max_tokens": 32000,
        "metadata": {"user_id": metadata},
        "system": [{"type": "text", "text": "You are Claude Code.\n - Primary working "
                                            "directory: /home/dev/src/cloudproj\nSECRET"}],
        "tools": [{"name": "Read", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "PROMPT SECRET: héllo"}],
    }
    body.update(extra)
    return json.dumps(body, ensure_ascii=False).encode()


def vertex_body(stream: bool = True) -> bytes:
    body = json.loads(bedrock_body())
    body["anthropic_version"] = "vertex-2023-10-16"
    del body["anthropic_beta"]
    body["stream"] = stream
    return json.dumps(body).encode()


def tls_post(proxy: MitmDump, host: str, path: str, body: bytes,
             headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """POST over a CONNECT tunnel to ``host:443``, trusting the proxy's CA."""
    context = ssl.create_default_context(cafile=str(proxy.ca_cert))
    conn = http.client.HTTPSConnection("127.0.0.1", proxy.port, timeout=30, context=context)
    conn.set_tunnel(host, 443)
    conn.request("POST", path, body=body, headers={"host": host, **headers})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def plain_post(proxy: MitmDump, path: str, body: bytes, headers: dict[str, str]
               ) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    conn.request("POST", path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


@pytest.fixture
def cloud():
    with CloudStandIn() as server:
        yield server


@pytest.fixture
def forward(cloud, isolated_home):
    with MitmDump(isolated_home, "regular", sets={"ccmeter_upstream": cloud.url}) as proxy:
        yield proxy


@pytest.fixture
def reverse(cloud, isolated_home):
    with MitmDump(isolated_home, f"reverse:{cloud.url}") as proxy:
        yield proxy


# --- Bedrock: streams ------------------------------------------------------------------------


def test_bedrock_stream_forward_mode_is_byte_exact_signed_and_priced_regionally(
        cloud, forward, isolated_home):
    events = message_events("claude-sonnet-4-5-20250929", input_tokens=1200,
                            cache_write_5m=3000, cache_write_1h=2000, cache_read=40000,
                            output_tokens=512, message_id="msg_bdrk_01StreamForward")
    frames = bedrock_frames(events, metrics=metrics_for(1200, 512))
    cloud.enqueue(bedrock_stream_reply(body=frames, chunk_sizes="random", seed=11))
    body = bedrock_body()
    path = f"/model/{SONNET_45_US}/invoke-with-response-stream"
    status, headers, data = tls_post(forward, BEDROCK_HOST, path, body, SIGNED_HEADERS)

    assert status == 200
    assert data == frames  # every frame byte for byte
    assert headers["content-type"] == EVENTSTREAM  # never dropped or rewritten
    [sent] = cloud.model_requests()
    assert sent.body == body  # the signed payload, unchanged
    assert sent.path == path  # the signed path, unchanged (":" not re-encoded)
    assert sent.headers["host"] == BEDROCK_HOST  # the signed Host, unchanged
    for name, value in SIGNED_HEADERS.items():
        assert sent.headers[name] == value, name

    row = db_rows(isolated_home, expect=1)[0]
    assert (row["provider"], row["endpoint"], row["host"]) == ("bedrock", "multi-region",
                                                               BEDROCK_HOST)
    assert row["model"] == "claude-sonnet-4-5-20250929"
    assert row["requested_model"] == SONNET_45_US
    assert (row["input_tokens"], row["cache_write_5m_tokens"], row["cache_write_1h_tokens"],
            row["cache_read_tokens"], row["output_tokens"]) == (1200, 3000, 2000, 40000, 512)
    assert row["status"] == "ok" and row["stop_reason"] == "end_turn" and row["stream"] == 1
    assert row["message_id"] == "msg_bdrk_01StreamForward"
    assert row["session_id"] == SESSION and row["project"] == "signed-tag"
    assert row["request_id"] in (headers.get("request-id"), headers["x-amzn-requestid"])
    # Sonnet 4.5 list: 1200x3 + 3000x3.75 + 2000x6 + 40000x0.3 + 512x15 = 46,530 µ$ = $0.04653;
    # a us. (multi-region) profile pays +10 %: $0.051183.
    assert cost(SONNET_4_5, (1200, 3000, 2000, 40000, 512)) == usd("0.04653")
    assert row["cost_picousd"] == usd("0.051183")
    assert "bedrock multi-region endpoint x1.1" in row["pricing_note"]


def test_bedrock_global_profile_is_list_price(cloud, forward, isolated_home):
    events = message_events("claude-haiku-4-5-20251001", input_tokens=10_000, output_tokens=2000)
    cloud.enqueue(bedrock_stream_reply(events, metrics=metrics_for(10_000, 2000), chunk_sizes=1))
    path = "/model/global.anthropic.claude-haiku-4-5-20251001-v1:0/invoke-with-response-stream"
    status, _, data = tls_post(forward, BEDROCK_HOST, path, bedrock_body(), SIGNED_HEADERS)
    assert status == 200 and data == bedrock_frames(events, metrics=metrics_for(10_000, 2000))
    row = db_rows(isolated_home, expect=1)[0]
    assert row["endpoint"] == "global"
    # Haiku 4.5: 10,000 x $1 + 2,000 x $5 per MTok = $0.02, no premium on a global profile.
    assert row["cost_picousd"] == usd("0.02") == cost(HAIKU_4_5, (10_000, 0, 0, 0, 2000))
    assert row["pricing_note"] is None


def test_bedrock_reverse_mode_opus_4_1_has_no_regional_premium(cloud, reverse, isolated_home):
    model_id = "anthropic.claude-opus-4-1-20250805-v1:0"
    events = message_events("claude-opus-4-1-20250805", input_tokens=1000, output_tokens=100)
    cloud.enqueue(bedrock_stream_reply(events, metrics=metrics_for(1000, 100)))
    status, _, _ = plain_post(reverse, f"/model/{model_id}/invoke-with-response-stream",
                              bedrock_body(), SIGNED_HEADERS)
    assert status == 200
    row = db_rows(isolated_home, expect=1)[0]
    assert (row["provider"], row["endpoint"]) == ("bedrock", "regional")
    # Opus 4.1 keeps its old price everywhere: 1000 x $15 + 100 x $75 per MTok = $0.0225.
    assert row["cost_picousd"] == usd("0.0225") == cost(OPUS_4_1, (1000, 0, 0, 0, 100))


def test_bedrock_invocation_metrics_stand_in_for_missing_usage(cloud, forward, isolated_home):
    events = message_events("claude-sonnet-4-5-20250929", input_tokens=1, output_tokens=1)
    frames = bedrock_frames(events, metrics=metrics_for(5000, 300), usage=False)
    cloud.enqueue(bedrock_stream_reply(body=frames))
    path = f"/model/{SONNET_45_US}/invoke-with-response-stream"
    status, _, data = tls_post(forward, BEDROCK_HOST, path, bedrock_body(), SIGNED_HEADERS)
    assert status == 200 and data == frames
    row = db_rows(isolated_home, expect=1)[0]
    assert (row["input_tokens"], row["output_tokens"]) == (5000, 300)
    # 5000 x $3 + 300 x $15 = $0.0195, x1.1 = $0.02145
    assert row["cost_picousd"] == usd("0.02145") and row["status"] == "ok"


def test_bedrock_application_inference_profile_takes_the_model_from_message_start(
        cloud, forward, isolated_home):
    arn = "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fa1b2c3"
    events = message_events("claude-opus-4-8", input_tokens=100, output_tokens=10)
    cloud.enqueue(bedrock_stream_reply(events, metrics=metrics_for(100, 10)))
    status, _, _ = tls_post(forward, BEDROCK_HOST, f"/model/{arn}/invoke-with-response-stream",
                            bedrock_body(), SIGNED_HEADERS)
    assert status == 200
    assert cloud.model_requests()[0].path.startswith(f"/model/{arn}/")  # still encoded
    row = db_rows(isolated_home, expect=1)[0]
    assert row["model"] == "claude-opus-4-8" and row["requested_model"] is None
    assert row["endpoint"] == "unknown"
    # 100 x $5 + 10 x $25 = $0.00075; the endpoint kind is unknown: priced as regional, x1.1.
    assert row["cost_picousd"] == usd("0.000825") == cost(OPUS_4_8, (100, 0, 0, 0, 10), "1.1")


def test_bedrock_exception_frame_is_recorded_as_the_error(cloud, reverse, isolated_home):
    events = message_events("claude-sonnet-4-5-20250929", input_tokens=700, output_tokens=50)
    frames = bedrock_frames(events[:4])  # message_start, ping, a block start, one delta
    tail = bedrock_exception("modelStreamErrorException", "The model stopped unexpectedly.")
    cloud.enqueue(bedrock_stream_reply(body=frames, tail=tail))
    status, _, data = plain_post(reverse, f"/model/{SONNET_45_US}/invoke-with-response-stream",
                                 bedrock_body(), SIGNED_HEADERS)
    assert status == 200 and data == frames + tail
    row = db_rows(isolated_home, expect=1)[0]
    assert row["status"] == "upstream_error" and row["error_type"] == "modelStreamErrorException"
    assert row["input_tokens"] == 700  # the input was billed from message_start
    assert row["cost_picousd"] == cost(SONNET_4_5, (700, 0, 0, 0, 1), "1.1")


def test_bedrock_corrupt_crc_marks_the_row_and_never_alters_bytes(cloud, reverse, isolated_home):
    events = message_events("claude-sonnet-4-5-20250929", input_tokens=300, output_tokens=20)
    frames = bytearray(bedrock_frames(events, metrics=metrics_for(300, 20)))
    second = struct.unpack_from(">I", frames, 0)[0]  # the second frame starts here
    frames[second + 9] ^= 0xFF  # its prelude CRC
    cloud.enqueue(bedrock_stream_reply(body=bytes(frames)))
    status, headers, data = plain_post(reverse, f"/model/{SONNET_45_US}/"
                                       "invoke-with-response-stream", bedrock_body(),
                                       SIGNED_HEADERS)
    assert status == 200 and data == bytes(frames)
    assert headers["content-type"] == EVENTSTREAM
    row = db_rows(isolated_home, expect=1)[0]
    assert "prelude CRC mismatch" in row["metering_error"]
    assert row["input_tokens"] == 300  # what came before the break still counts


# --- Bedrock: InvokeModel (non-streaming), errors, count-tokens -------------------------------


def test_bedrock_invoke_json_and_its_count_headers(cloud, forward, isolated_home):
    model_id = "anthropic.claude-haiku-4-5-20251001-v1:0"
    message = message_json("claude-haiku-4-5-20251001", input_tokens=4000, output_tokens=800,
                           message_id="msg_bdrk_01Invoke")
    cloud.enqueue(bedrock_json_reply(message))
    cloud.enqueue(bedrock_json_reply(message, with_usage=False))
    for _ in range(2):
        status, _, data = tls_post(forward, BEDROCK_HOST, f"/model/{model_id}/invoke",
                                   bedrock_body(), SIGNED_HEADERS)
        assert status == 200 and json.loads(data)["id"] == "msg_bdrk_01Invoke"
    rows = db_rows(isolated_home, expect=2)
    # Haiku 4.5: 4000 x $1 + 800 x $5 = $0.008; a bare anthropic. id is in-region: x1.1
    for row in rows:
        assert (row["provider"], row["endpoint"], row["stream"]) == ("bedrock", "regional", 0)
        assert (row["input_tokens"], row["output_tokens"]) == (4000, 800)
        assert row["cost_picousd"] == usd("0.0088")


def test_bedrock_error_answer_is_recorded_with_its_type(cloud, forward, isolated_home):
    cloud.enqueue(bedrock_error_reply(400, "ValidationException", "max_tokens: too large"))
    status, _, data = tls_post(forward, BEDROCK_HOST,
                               f"/model/{SONNET_45_US}/invoke-with-response-stream",
                               bedrock_body(), SIGNED_HEADERS)
    assert status == 400 and json.loads(data) == {"message": "max_tokens: too large"}
    row = db_rows(isolated_home, expect=1)[0]
    assert row["status"] == "upstream_error" and row["error_type"] == "ValidationException"
    assert row["cost_picousd"] == 0


def test_count_tokens_is_free_and_not_recorded(cloud, forward, isolated_home):
    status, _, _ = tls_post(forward, BEDROCK_HOST, f"/model/{SONNET_45_US}/count-tokens",
                            bedrock_body(), SIGNED_HEADERS)
    assert status == 200
    path = VERTEX_PATH.format(region="us-east5", model="count-tokens", op="rawPredict")
    status, _, _ = tls_post(forward, VERTEX_HOST, path, vertex_body(), {})
    assert status == 200
    cloud.enqueue(bedrock_json_reply(message_json("claude-sonnet-4-5-20250929")))
    tls_post(forward, BEDROCK_HOST, f"/model/{SONNET_45_US}/invoke", bedrock_body(),
             SIGNED_HEADERS)
    rows = db_rows(isolated_home, expect=1)
    assert len(rows) == 1 and rows[0]["stream"] == 0  # only the real call
    assert len(cloud.requests) == 3


# --- Vertex ---------------------------------------------------------------------------------


def test_vertex_regional_stream_forward_mode(cloud, forward, isolated_home):
    events = message_events("claude-sonnet-4-5-20250929", input_tokens=2000, cache_read=8000,
                            output_tokens=400, message_id="msg_vrtx_01Regional")
    cloud.enqueue(sse_reply(events, chunk_sizes="random", seed=3))
    path = VERTEX_PATH.format(region="us-east5", model="claude-sonnet-4-5@20250929",
                              op="streamRawPredict")
    auth = {"authorization": "Bearer ya29.EXAMPLE", "content-type": "application/json"}
    status, _, data = tls_post(forward, VERTEX_HOST, path, vertex_body(), auth)
    assert status == 200 and data == serialize_events(events)
    row = db_rows(isolated_home, expect=1)[0]
    assert (row["provider"], row["endpoint"], row["host"]) == ("vertex", "regional", VERTEX_HOST)
    assert row["requested_model"] == "claude-sonnet-4-5@20250929"
    assert row["model"] == "claude-sonnet-4-5-20250929" and row["stream"] == 1
    assert row["message_id"] == "msg_vrtx_01Regional" and row["auth_kind"] == "bearer"
    # 2000 x $3 + 8000 x $0.30 + 400 x $15 = $0.0144; us-east5 is regional: x1.1 = $0.01584
    assert row["cost_picousd"] == usd("0.01584") == cost(SONNET_4_5, (2000, 0, 0, 8000, 400),
                                                         "1.1")
    assert "vertex regional endpoint x1.1" in row["pricing_note"]


def test_vertex_global_and_multi_region_and_raw_predict(cloud, forward, isolated_home):
    model = "claude-opus-4-8"
    cloud.enqueue(sse_reply(message_events(model, input_tokens=1000, output_tokens=100)))
    cloud.enqueue(json_reply(message_json(model, input_tokens=1000, output_tokens=100)))
    global_path = VERTEX_PATH.format(region="global", model=model, op="streamRawPredict")
    status, _, _ = tls_post(forward, "aiplatform.googleapis.com", global_path, vertex_body(), {})
    assert status == 200
    eu_path = VERTEX_PATH.format(region="eu", model=model, op="rawPredict")
    status, _, data = tls_post(forward, "aiplatform.eu.rep.googleapis.com", eu_path,
                               vertex_body(stream=False), {})
    assert status == 200 and json.loads(data)["usage"]["input_tokens"] == 1000
    rows = db_rows(isolated_home, expect=2)
    by_kind = {r["endpoint"]: r for r in rows}
    # Opus 4.8: 1000 x $5 + 100 x $25 = $0.0075 at list (global), $0.00825 (multi-region eu)
    assert by_kind["global"]["cost_picousd"] == usd("0.0075")
    assert by_kind["multi-region"]["cost_picousd"] == usd("0.00825")
    assert by_kind["multi-region"]["stream"] == 0


# --- caps: refusals in each provider's shape ---------------------------------------------------


def spend_then_cap(home: Path) -> None:
    write_caps(home, {"daily": "0.0001", "notify": False})


def test_bedrock_and_vertex_refusals_have_their_sdks_shapes(cloud, forward, isolated_home):
    cloud.enqueue(bedrock_json_reply(message_json("claude-sonnet-4-5-20250929")))
    tls_post(forward, BEDROCK_HOST, f"/model/{SONNET_45_US}/invoke", bedrock_body(),
             SIGNED_HEADERS)
    db_rows(isolated_home, expect=1)
    spend_then_cap(Path(isolated_home))
    status, headers, data = tls_post(forward, BEDROCK_HOST,
                                     f"/model/{SONNET_45_US}/invoke-with-response-stream",
                                     bedrock_body(), SIGNED_HEADERS)
    assert status == 429
    assert headers["x-amzn-errortype"].startswith("ThrottlingException:")
    assert headers["x-should-retry"] == "false"
    message = json.loads(data)["message"]
    assert "daily" in message and "cap" in message, message
    path = VERTEX_PATH.format(region="us-east5", model="claude-sonnet-4-5@20250929",
                              op="streamRawPredict")
    status, headers, data = tls_post(forward, VERTEX_HOST, path, vertex_body(), {})
    assert status == 429 and headers["x-should-retry"] == "false"
    assert json.loads(data)["error"]["type"] == "rate_limit_error"
    assert len(cloud.model_requests()) == 1  # the refused calls never left the proxy
    rows = db_rows(isolated_home, expect=3)
    blocked = [r for r in rows if r["status"] == "blocked"]
    assert {r["provider"] for r in blocked} == {"bedrock", "vertex"}
    assert all(r["cost_picousd"] == 0 and r["error_type"] == "cap_reached" for r in blocked)


def test_bedrock_hard_cap_cuts_between_frames_with_a_throttling_exception(cloud, isolated_home):
    write_caps(Path(isolated_home), {"daily": "0.01", "mode": "hard", "notify": False})
    text = "word " * 4000  # ~20 kB: far more Sonnet output than $0.01 buys
    events = message_events("claude-sonnet-4-5-20250929", text=text, output_tokens=5000)
    full = bedrock_frames(events, metrics=metrics_for(27, 5000))
    cloud.enqueue(bedrock_stream_reply(body=full, chunk_sizes=200))
    with MitmDump(isolated_home, f"reverse:{cloud.url}") as proxy:
        status, headers, data = plain_post(proxy, f"/model/{SONNET_45_US}/"
                                           "invoke-with-response-stream", bedrock_body(),
                                           SIGNED_HEADERS)
        rows = db_rows(isolated_home, expect=1)
    assert status == 200 and headers["content-type"] == EVENTSTREAM
    decoder = EventStreamDecoder()
    messages = decoder.feed(data)
    assert decoder.error is None and decoder.pending == 0  # whole, valid frames only
    last = messages[-1]
    assert (last.message_type, last.exception_type) == ("exception", "throttlingException")
    assert json.loads(last.payload)["message"].startswith("ccmeter: daily cap $0.01 reached")
    forwarded = data[: message_ends(data)[-2]]  # everything before the exception frame
    assert full.startswith(forwarded) and len(forwarded) < len(full) // 2
    assert rows[0]["error_type"] == "cap_cut" and rows[0]["cost_picousd"] >= 10**10


def test_bedrock_hard_mode_passes_a_corrupt_stream_through_whole(cloud, isolated_home):
    write_caps(Path(isolated_home), {"daily": "10", "mode": "hard", "notify": False})
    events = message_events("claude-sonnet-4-5-20250929", input_tokens=300, output_tokens=20)
    frames = bytearray(bedrock_frames(events, metrics=metrics_for(300, 20)))
    second = struct.unpack_from(">I", frames, 0)[0]
    frames[second + 9] ^= 0xFF  # no frame boundary can be found after this
    cloud.enqueue(bedrock_stream_reply(body=bytes(frames), chunk_sizes=50))
    with MitmDump(isolated_home, f"reverse:{cloud.url}") as proxy:
        status, _, data = plain_post(proxy, f"/model/{SONNET_45_US}/"
                                     "invoke-with-response-stream", bedrock_body(),
                                     SIGNED_HEADERS)
        row = db_rows(isolated_home, expect=1)[0]
    assert status == 200 and data == bytes(frames)  # all of it, unchanged, not cut
    assert "prelude CRC mismatch" in row["metering_error"]


# --- the real Claude Code CLI -----------------------------------------------------------------


def claude_code_cloud_handler(file_to_read: str, answer: str):
    """Tools offered and no tool_result yet: ask for Read; afterwards answer ``answer``."""

    def handle(rec: Recorded):
        body = rec.json or {}
        if not body.get("tools"):
            return cloud_answer(rec, text="OK.", input_tokens=80, output_tokens=6)
        last = body["messages"][-1]["content"]
        if isinstance(last, list) and any(isinstance(b, dict) and b.get("type") == "tool_result"
                                          for b in last):
            return cloud_answer(rec, text=answer, input_tokens=400, cache_read=12000,
                                output_tokens=35)
        return cloud_answer(rec, text="Let me read it.", input_tokens=3000,
                            cache_write_1h=2000, output_tokens=120,
                            tool_use={"name": "Read", "input": {"file_path": file_to_read}})

    return handle


CLOUD_ENVS = {
    "bedrock": {"CLAUDE_CODE_USE_BEDROCK": "1", "CLAUDE_CODE_SKIP_BEDROCK_AUTH": "1",
                "AWS_REGION": "us-east-1"},
    "vertex": {"CLAUDE_CODE_USE_VERTEX": "1", "CLAUDE_CODE_SKIP_VERTEX_AUTH": "1",
               "CLOUD_ML_REGION": "us-east5", "ANTHROPIC_VERTEX_PROJECT_ID": "test"},
}


# Usage the stand-in serves for each kind of call (see claude_code_cloud_handler).
TOOL_TURN = (3000, 0, 2000, 0, 120)
FINAL_TURN = (400, 0, 0, 12000, 35)
AUX_TURN = (80, 0, 0, 0, 6)


@pytest.mark.realclient
@pytest.mark.parametrize("provider", ["bedrock", "vertex"])
def test_real_claude_code_on_a_cloud_is_metered_then_capped(provider, tmp_path, isolated_home):
    claude = claude_bin()
    repo = tmp_path / "cloud-repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "notes.txt").write_text("the secret word is pumpkin\n")
    answer = "The file says: pumpkin."
    env = claude_env(tmp_path, **CLOUD_ENVS[provider])
    env.pop("ANTHROPIC_API_KEY", None)
    with CloudStandIn() as cloud:
        cloud.default = claude_code_cloud_handler(str(repo / "notes.txt"), answer)
        result = ccmeter("run", "--upstream", cloud.url, "--", claude, "-p",
                         "What does notes.txt say?", "--allowedTools", "Read", env=env, cwd=repo)
        calls = cloud.model_requests()
        everything = [(r.method, r.route) for r in cloud.requests]
        assert result.returncode == 0, (result.stdout, result.stderr, everything)
        assert result.stdout.strip() == answer
        rows = db_rows(isolated_home, expect=len(calls))

        # Now a daily cap below what was spent: the next call is refused at once, no retry.
        write_caps(Path(isolated_home), {"daily": "0.01", "notify": False})
        refused = ccmeter("run", "--upstream", cloud.url, "--", claude, "-p", "say hi",
                          env=env, cwd=repo)
        assert len(cloud.model_requests()) == len(calls)  # nothing more reached the cloud

    assert len(rows) == len(calls) >= 2, everything
    assert {r["provider"] for r in rows} == {provider}
    assert all(r["status"] == "ok" for r in rows), rows
    host = BEDROCK_HOST if provider == "bedrock" else VERTEX_HOST
    assert {r["host"] for r in rows} == {host}
    assert {c.headers["host"] for c in calls} == {host}  # routed, Host untouched
    assert {r["project"] for r in rows} == {"cloud-repo"}
    # Claude Code 2.1.197 asks for Sonnet 4.5 on both clouds: a us. profile on Bedrock
    # (multi-region), us-east5 on Vertex (regional); both pay Sonnet 4.5 list x1.1.
    assert {r["model"] for r in rows} == {"claude-sonnet-4-5-20250929"}
    assert {r["endpoint"] for r in rows} == {"multi-region" if provider == "bedrock"
                                             else "regional"}
    for row in rows:
        turn = {3000: TOOL_TURN, 400: FINAL_TURN, 80: AUX_TURN}[row["input_tokens"]]
        assert row["cost_picousd"] == cost(SONNET_4_5, turn, "1.1"), row
    # Tool turn 3000x3 + 2000x6 + 120x15 = 22,800 µ$; final 400x3 + 12000x0.3 + 35x15 =
    # 5,325 µ$; auxiliary 80x3 + 6x15 = 330 µ$; each x1.1.
    assert cost(SONNET_4_5, TOOL_TURN, "1.1") == usd("0.02508")
    assert cost(SONNET_4_5, FINAL_TURN, "1.1") == usd("0.0058575")
    assert cost(SONNET_4_5, AUX_TURN, "1.1") == usd("0.000363")
    total = sum(r["cost_picousd"] for r in rows)
    assert f"${total / 10**12:.4f}" in result.stderr

    # What Claude Code shows for the refusal: its own line with our message, exit 1.
    assert refused.returncode == 1
    assert refused.stdout.startswith("API Error: Request rejected (429) · ccmeter: daily cap")
    after = db_rows(isolated_home)
    blocked = [r for r in after if r["status"] == "blocked"]
    assert len(blocked) == 1 and blocked[0]["provider"] == provider  # one attempt, no retry
