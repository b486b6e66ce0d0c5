"""Real HTTP(S) through a real mitmproxy running the addon, into a real SQLite file.

The stand-in server (tests/standin.py) plays the Anthropic API; ``mitmdump -s
addons/ccmeter.py`` sits between it and a plain http.client client, exactly as a user runs it.
Expected costs are computed by hand from the catalog's list prices.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitm import MitmDump, db_rows
from standin import (
    StandIn,
    compress,
    decompress,
    error_reply,
    json_reply,
    message_events,
    message_json,
    serialize_events,
    sse_reply,
)

SECRET_KEY = "sk-ant-api03-SECRET-never-store-me"
SESSION = "5b0c6a4e-1d2f-4e3a-9a7b-123456789abc"


def usd(value: str) -> int:
    """Dollars as exact picodollars."""
    return int(Decimal(value) * 10**12)


def request_body(model="claude-opus-4-8", *, stream=True, cwd="/home/dev/src/proj", **extra):
    metadata = json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": SESSION})
    body = {
        "model": model,
        "max_tokens": 64000,
        "stream": stream,
        "metadata": {"user_id": metadata},
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197.123;"},
            {"type": "text", "text": f"You are Claude Code.\n - Primary working directory: {cwd}\n"
                                     " - Is a git repository: true\nPROMPT TEXT SECRET"},
        ],
        "tools": [{"name": "Read", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "PROMPT TEXT SECRET: fix the bug"}],
    }
    body.update(extra)
    return json.dumps(body).encode()


HEADERS = {
    "content-type": "application/json",
    "x-api-key": SECRET_KEY,
    "user-agent": "claude-cli/2.1.197 (external, sdk-cli)",
    "accept-encoding": "gzip, deflate, br, zstd",
}


def post(proxy: MitmDump, path="/v1/messages?beta=true", body=None, headers=None):
    """POST through a reverse-mode proxy; returns (status, headers, raw body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    conn.request("POST", path, body=body if body is not None else request_body(),
                 headers={**HEADERS, **(headers or {})})
    response = conn.getresponse()
    try:
        data = response.read()
    except http.client.IncompleteRead as exc:
        data = exc.partial
    conn.close()
    return response.status, dict(response.getheaders()), data


@pytest.fixture
def standin():
    with StandIn() as server:
        yield server


@pytest.fixture
def reverse_proxy(standin, isolated_home):
    with MitmDump(isolated_home, f"reverse:{standin.url}") as proxy:
        yield proxy


# --- the basic promise -----------------------------------------------------------------------


def test_streamed_call_is_byte_exact_and_priced_exactly(standin, reverse_proxy, isolated_home):
    events = message_events("claude-opus-4-8", input_tokens=1200, cache_write_5m=3000,
                            cache_write_1h=2000, cache_read=40000, output_tokens=512)
    standin.enqueue(sse_reply(events, chunk_sizes="random", seed=7))
    status, headers, data = post(reverse_proxy)

    assert status == 200
    assert data == serialize_events(events)  # exactly the upstream's bytes
    row = db_rows(isolated_home, expect=1)[0]
    # Opus 4.8: input $5, 5m write $6.25, 1h write $10, read $0.50, output $25 per MTok.
    expected = (1200 * Decimal(5) + 3000 * Decimal("6.25") + 2000 * Decimal(10)
                + 40000 * Decimal("0.5") + 512 * Decimal(25)) / 10**6
    assert row["cost_picousd"] == int(expected * 10**12)  # $0.07755 exactly
    assert row["status"] == "ok" and row["http_status"] == 200
    assert (row["input_tokens"], row["cache_write_5m_tokens"], row["cache_write_1h_tokens"],
            row["cache_read_tokens"], row["output_tokens"]) == (1200, 3000, 2000, 40000, 512)
    assert row["model"] == "claude-opus-4-8" and row["stop_reason"] == "end_turn"
    assert row["session_id"] == SESSION
    assert row["project"] == "proj"  # from the system prompt's working directory
    assert row["request_id"] == headers["request-id"]
    assert row["message_id"].startswith("msg_")
    assert row["auth_kind"] == "api_key"
    assert (row["client_name"], row["client_version"]) == ("claude-cli", "2.1.197")
    assert row["call_kind"] == "main" and row["stream"] == 1
    assert row["ttfb_ms"] > 0 and row["duration_ms"] >= row["ttfb_ms"]
    assert row["catalog_version"].startswith("20")
    view = db_rows(isolated_home, "SELECT * FROM calls")[0]
    assert view["cost_usd"] == pytest.approx(0.07755)
    assert view["started_at"].endswith("Z") and "T" in view["started_at"]


def test_non_streaming_json_in_every_encoding(standin, reverse_proxy, isolated_home):
    encodings = [None, "gzip", "br", "zstd", "deflate"]
    for encoding in encodings:
        body = message_json("claude-sonnet-4-6", input_tokens=1000, output_tokens=100)
        standin.enqueue(json_reply(body, encoding=encoding))
        status, headers, data = post(reverse_proxy, body=request_body("claude-sonnet-4-6",
                                                                      stream=False))
        assert status == 200 and headers.get("content-encoding") == encoding
        assert json.loads(decompress(data, encoding)) == body  # passed on still encoded
    rows = db_rows(isolated_home, expect=len(encodings))
    assert len(rows) == len(encodings)
    # Sonnet 4.6: 1000 x $3 + 100 x $15 per MTok = $0.0045
    assert {r["cost_picousd"] for r in rows} == {usd("0.0045")}
    assert all(r["status"] == "ok" and r["stream"] == 0 for r in rows)


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd", "deflate"])
def test_compressed_event_stream_is_metered_and_passed_through_compressed(
        encoding, standin, reverse_proxy, isolated_home):
    events = message_events("claude-haiku-4-5-20251001", input_tokens=2000, output_tokens=300)
    standin.enqueue(sse_reply(events, encoding=encoding, chunk_sizes=5, seed=3))
    status, headers, data = post(reverse_proxy)
    assert status == 200 and headers["content-encoding"] == encoding
    assert data == compress(serialize_events(events), encoding)  # still compressed, untouched
    row = db_rows(isolated_home, expect=1)[0]
    # Haiku 4.5: 2000 x $1 + 300 x $5 per MTok = $0.0035
    assert row["cost_picousd"] == usd("0.0035") and row["status"] == "ok"


def test_a_whole_stream_in_one_chunk_is_metered(standin, reverse_proxy, isolated_home):
    """The first chunk is metered just after it is forwarded; here it is also the last."""
    events = message_events("claude-opus-4-8", input_tokens=70, output_tokens=30)
    standin.enqueue(sse_reply(events, chunk_sizes=1_000_000))
    _, _, data = post(reverse_proxy)
    assert data == serialize_events(events)
    row = db_rows(isolated_home, expect=1)[0]
    assert (row["status"], row["input_tokens"], row["output_tokens"]) == ("ok", 70, 30)


def test_crlf_stream_with_tool_use(standin, reverse_proxy, isolated_home):
    events = message_events("claude-opus-4-8", input_tokens=10, output_tokens=20,
                            tool_use={"name": "Read", "input": {"file_path": "/etc/hosts"}})
    standin.enqueue(sse_reply(events, crlf=True, chunk_sizes=3))
    _, _, data = post(reverse_proxy)
    assert data == serialize_events(events, crlf=True)
    row = db_rows(isolated_home, expect=1)[0]
    assert row["stop_reason"] == "tool_use" and row["output_tokens"] == 20


# --- failures upstream --------------------------------------------------------------------


def test_cut_stream_keeps_the_billed_input_as_incomplete(standin, reverse_proxy, isolated_home):
    events = message_events("claude-opus-4-8", input_tokens=5000, cache_read=10000,
                            output_tokens=999)
    body = serialize_events(events)
    cut = body.index(b"content_block_delta") + 40  # after message_start, mid-answer
    standin.enqueue(sse_reply(events, cut_after_bytes=cut, chunk_sizes=50))
    _, _, data = post(reverse_proxy)
    assert data == body[:cut]
    row = db_rows(isolated_home, expect=1)[0]
    assert row["status"] == "incomplete"
    assert row["input_tokens"] == 5000 and row["cache_read_tokens"] == 10000
    # The input side is billed: 5000 x $5 + 10000 x $0.50 per MTok (+ the 1-token placeholder
    # output message_start carries: 1 x $25 per MTok).
    assert row["cost_picousd"] == usd("0.030025")
    assert row["error_type"] == "stream_cut"


def test_error_event_mid_stream_and_http_errors(standin, reverse_proxy, isolated_home):
    standin.enqueue(sse_reply(message_events("claude-opus-4-8", input_tokens=100,
                                             error_after_start=("overloaded_error", "Overloaded"))))
    standin.enqueue(error_reply(529, "overloaded_error", "Overloaded"))
    standin.enqueue(error_reply(400, "invalid_request_error", "max_tokens too large"))
    post(reverse_proxy)
    status_529, _, _ = post(reverse_proxy)
    status_400, _, body_400 = post(reverse_proxy)
    assert (status_529, status_400) == (529, 400)
    assert json.loads(body_400)["error"]["type"] == "invalid_request_error"
    rows = db_rows(isolated_home, expect=3)
    assert [r["status"] for r in rows] == ["upstream_error"] * 3
    assert [r["error_type"] for r in rows] == ["overloaded_error", "overloaded_error",
                                               "invalid_request_error"]
    assert rows[0]["input_tokens"] == 100 and rows[0]["cost_picousd"] > 0
    assert rows[1]["cost_picousd"] == 0 and rows[2]["http_status"] == 400


def test_a_broken_meter_never_costs_the_client_a_byte(standin, reverse_proxy, isolated_home):
    # Claims gzip but is not: the meter's decoder fails, the bytes must pass untouched.
    raw = serialize_events(message_events(input_tokens=10, output_tokens=5))
    standin.enqueue(sse_reply(raw, headers={"content-encoding": "gzip"}, chunk_sizes=17))
    _, _, data = post(reverse_proxy)
    assert data == raw
    row = db_rows(isolated_home, expect=1)[0]
    assert row["metering_error"] and "stream parse failed" in row["metering_error"]


# --- which calls --------------------------------------------------------------------------


def test_only_messages_calls_are_recorded(standin, reverse_proxy, isolated_home):
    for path in ("/api/claude_code/policy_limits", "/api/event_logging/v2/batch",
                 "/v1/messages/count_tokens?beta=true", "/v1/messages/batches"):
        status, _, _ = post(reverse_proxy, path=path, body=b"{}")
        assert status == 200
    conn = http.client.HTTPConnection("127.0.0.1", reverse_proxy.port, timeout=10)
    conn.request("GET", "/api/claude_cli/bootstrap")
    assert conn.getresponse().status == 200
    post(reverse_proxy, path="/v1/messages")  # no query string: metered too
    rows = db_rows(isolated_home, expect=1)
    assert len(rows) == 1 and len(standin.requests) == 6


def test_unknown_model_is_unpriced_not_free(standin, reverse_proxy, isolated_home):
    standin.enqueue(sse_reply(message_events("claude-opus-9-9", input_tokens=10,
                                             output_tokens=5)))
    post(reverse_proxy, body=request_body("claude-opus-9-9"))
    row = db_rows(isolated_home, expect=1)[0]
    assert row["cost_picousd"] is None and row["input_tokens"] == 10
    assert "unknown model" in row["pricing_note"]
    assert db_rows(isolated_home, "SELECT cost_usd FROM calls")[0]["cost_usd"] is None


# --- attribution and privacy ----------------------------------------------------------------


def test_attribution_headers_project_tag_and_git_top(standin, reverse_proxy, isolated_home,
                                                     tmp_path):
    repo = tmp_path / "my-repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "pkg" / "sub").mkdir(parents=True)
    post(reverse_proxy, body=request_body(cwd=str(repo / "pkg" / "sub")))
    post(reverse_proxy, headers={"x-ccmeter-project": "tagged", "x-claude-code-agent-id": "ag1",
                                 "x-claude-code-parent-agent-id": "ag0"})
    legacy = json.loads(request_body())
    legacy["metadata"]["user_id"] = "user_abc_account_def_session_" + SESSION
    del legacy["tools"]
    post(reverse_proxy, body=json.dumps(legacy).encode(),
         headers={"x-api-key": "", "authorization": "Bearer sk-ant-oat01-SECRETTOKEN"})
    rows = db_rows(isolated_home, expect=3)
    assert rows[0]["project"] == "my-repo"
    assert (rows[1]["project"], rows[1]["call_kind"]) == ("tagged", "subagent")
    assert (rows[1]["agent_id"], rows[1]["parent_agent_id"]) == ("ag1", "ag0")
    assert rows[2]["session_id"] == SESSION and rows[2]["call_kind"] == "auxiliary"
    assert rows[2]["auth_kind"] == "subscription"
    assert rows[2]["cost_basis"] == "subscription_list_equivalent"
    # The launcher's tag never reaches the API.
    assert all("x-ccmeter-project" not in r.headers for r in standin.requests)


def test_calls_without_a_working_directory_take_their_sessions_project(
        standin, reverse_proxy, isolated_home):
    post(reverse_proxy, body=request_body(cwd="/srv/checkout/billing"))
    title_call = json.loads(request_body())
    del title_call["system"], title_call["tools"]
    post(reverse_proxy, body=json.dumps(title_call).encode())
    rows = db_rows(isolated_home, expect=2)
    assert [r["project"] for r in rows] == ["billing", "billing"]
    assert rows[1]["call_kind"] == "auxiliary"


def test_no_secret_or_prompt_text_lands_on_disk(standin, reverse_proxy, isolated_home):
    post(reverse_proxy)
    post(reverse_proxy, headers={"x-api-key": "", "authorization": "Bearer sk-ant-oat01-TOKEN"})
    db_rows(isolated_home, expect=2)
    reverse_proxy.stop()
    for path in Path(isolated_home).rglob("*"):
        if path.is_file() and path.suffix in ("", ".db", ".log", ".db-wal", ".toml"):
            blob = path.read_bytes()
            for secret in (SECRET_KEY.encode(), b"sk-ant-oat01-TOKEN", b"PROMPT TEXT SECRET"):
                assert secret not in blob, (path, secret)


def test_subscription_plan_headers_are_recorded(standin, reverse_proxy, isolated_home):
    plan = {
        "anthropic-ratelimit-unified-status": "allowed",
        "anthropic-ratelimit-unified-5h-utilization": "0.42",
        "anthropic-ratelimit-unified-5h-reset": "1796000000",
        "anthropic-ratelimit-unified-7d-utilization": "0.13",
        "anthropic-ratelimit-unified-7d-reset": "1796500000",
        "anthropic-ratelimit-unified-representative-claim": "five_hour",
        "anthropic-ratelimit-unified-overage-status": "rejected",
        "anthropic-ratelimit-unified-brand-new": "kept",
    }
    standin.enqueue(sse_reply(message_events(), headers=plan))
    post(reverse_proxy, headers={"x-api-key": "", "authorization": "Bearer sk-ant-oat01-T"})
    row = db_rows(isolated_home, expect=1)[0]
    assert row["plan_status"] == "allowed" and row["plan_5h_utilization"] == 0.42
    assert row["plan_7d_utilization"] == 0.13 and row["plan_5h_reset"] == 1796000000
    assert row["plan_binding_window"] == "five_hour"
    assert row["plan_overage_status"] == "rejected"
    assert json.loads(row["plan_headers_json"])["anthropic-ratelimit-unified-brand-new"] == "kept"
    assert row["cost_basis"] == "subscription_list_equivalent"


# --- forward (TLS-intercepting) mode ------------------------------------------------------


def tls_post(proxy: MitmDump, host: str, port: int, body: bytes, cafile: Path):
    context = ssl.create_default_context(cafile=str(cafile))
    conn = http.client.HTTPSConnection("127.0.0.1", proxy.port, context=context, timeout=30)
    conn.set_tunnel(host, port)
    conn.request("POST", "/v1/messages?beta=true", body=body, headers=HEADERS)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def test_forward_mode_intercepts_api_host_and_routes_to_upstream(standin, isolated_home):
    events = message_events("claude-opus-4-8", input_tokens=100, output_tokens=10)
    standin.enqueue(sse_reply(events))
    with MitmDump(isolated_home, "regular", sets={"ccmeter_upstream": standin.url}) as proxy:
        status, data = tls_post(proxy, "api.anthropic.com", 443, request_body(), proxy.ca_cert)
    assert status == 200 and data == serialize_events(events)
    assert standin.messages_requests()[0].headers["host"].startswith("127.0.0.1")
    row = db_rows(isolated_home, expect=1)[0]
    assert row["host"] == "api.anthropic.com"
    # 100 x $5 + 10 x $25 per MTok = $0.00075
    assert row["cost_picousd"] == usd("0.00075")


def test_forward_mode_to_a_tls_upstream_configured_as_extra_host(isolated_home):
    with StandIn(tls=True) as upstream:
        events = message_events("claude-sonnet-5", input_tokens=1000, output_tokens=1000)
        upstream.enqueue(sse_reply(events))
        sets = {"ccmeter_hosts": "localhost", "ssl_insecure": "true"}
        with MitmDump(isolated_home, "regular", sets=sets) as proxy:
            status, data = tls_post(proxy, "localhost", upstream.port, request_body(),
                                    proxy.ca_cert)
    assert status == 200 and data == serialize_events(events)
    row = db_rows(isolated_home, expect=1)[0]
    assert row["cost_picousd"] == usd("0.012")  # Sonnet 5: 1000 x $2 + 1000 x $10 per MTok


# --- properties and load ------------------------------------------------------------------


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 10_000), encoding=st.sampled_from([None, "gzip", "br"]),
       crlf=st.booleans())
def test_property_client_bytes_identical_and_usage_unchanged_by_chunking(
        standin, reverse_proxy, seed, encoding, crlf):
    events = message_events("claude-opus-4-8", input_tokens=seed, output_tokens=seed % 97,
                            message_id=f"msg_prop_{seed}_{encoding}_{crlf}")
    standin.enqueue(sse_reply(events, seed=seed, encoding=encoding, crlf=crlf))
    _, _, data = post(reverse_proxy)
    assert data == compress(serialize_events(events, crlf=crlf), encoding)
    row = db_rows(reverse_proxy.home, "SELECT * FROM api_calls WHERE message_id = ?",
                  (f"msg_prop_{seed}_{encoding}_{crlf}",), expect=1)[0]
    assert (row["input_tokens"], row["output_tokens"]) == (seed, seed % 97)


def test_several_proxy_processes_one_database_every_call_once(standin, isolated_home):
    proxies = [MitmDump(isolated_home, f"reverse:{standin.url}") for _ in range(3)]
    per_thread, threads_per_proxy = 25, 4
    errors: list[BaseException] = []

    def client(proxy: MitmDump) -> None:
        try:
            for _ in range(per_thread):
                status, _, _ = post(proxy)
                assert status == 200
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=client, args=(p,)) for p in proxies
                   for _ in range(threads_per_proxy)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = len(proxies) * threads_per_proxy * per_thread
        rows = db_rows(isolated_home, expect=total, timeout=30)
    finally:
        for p in proxies:
            p.stop()
    assert not errors
    assert len(rows) == total == 300
    assert len({r["call_uid"] for r in rows}) == total
    assert len({r["request_id"] for r in rows}) == total
    assert all(r["status"] == "ok" for r in rows)
    for p in proxies:
        assert "locked" not in p.log_text()
