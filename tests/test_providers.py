"""Which provider and endpoint a request is, cloud prices, refusal shapes, cloud interception."""

from __future__ import annotations

import json
import re
from datetime import date
from decimal import Decimal

import pytest

from ccmeter import child, config, providers, proxy
from ccmeter.eventstream import EventStreamDecoder
from ccmeter.pricing import Catalog
from ccmeter.providers import Endpoint, classify
from ccmeter.usage import Usage

CAT = Catalog.bundled()
DAY = date(2026, 11, 27)
BEDROCK_HOST = "bedrock-runtime.us-east-1.amazonaws.com"


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        ("api.anthropic.com", "/v1/messages?beta=true", providers.MESSAGES),
        (BEDROCK_HOST, "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/"
                       "invoke-with-response-stream",
         Endpoint("bedrock", "invoke-with-response-stream",
                  "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "us-east-1", "multi-region",
                  True)),
        ("bedrock-runtime.eu-west-1.amazonaws.com",
         "/model/global.anthropic.claude-opus-4-8/invoke",
         Endpoint("bedrock", "invoke", "global.anthropic.claude-opus-4-8", "eu-west-1", "global",
                  False)),
        (BEDROCK_HOST, "/model/anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke",
         Endpoint("bedrock", "invoke", "anthropic.claude-haiku-4-5-20251001-v1:0", "us-east-1",
                  "regional", False)),
        ("gw.example.com", "/bedrock/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A123456789012%3A"
                           "inference-profile%2Feu.anthropic.claude-opus-4-8/invoke",
         Endpoint("bedrock", "invoke",
                  "arn:aws:bedrock:us-west-2:123456789012:inference-profile/"
                  "eu.anthropic.claude-opus-4-8", "us-west-2", "multi-region", False)),
        (BEDROCK_HOST, "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aapplication-inference-"
                       "profile%2Fabc/invoke-with-response-stream",
         Endpoint("bedrock", "invoke-with-response-stream", None, "us-east-1", None, True)),
        ("us-east5-aiplatform.googleapis.com",
         "/v1/projects/p/locations/us-east5/publishers/anthropic/models/"
         "claude-sonnet-4-5@20250929:streamRawPredict",
         Endpoint("vertex", "streamRawPredict", "claude-sonnet-4-5@20250929", "us-east5",
                  "regional", True)),
        ("aiplatform.googleapis.com",
         "/v1/projects/p/locations/global/publishers/anthropic/models/claude-opus-4-8:rawPredict",
         Endpoint("vertex", "rawPredict", "claude-opus-4-8", "global", "global", False)),
        ("aiplatform.us.rep.googleapis.com",
         "/v1/projects/p/publishers/anthropic/models/claude-opus-4-8:rawPredict",
         Endpoint("vertex", "rawPredict", "claude-opus-4-8", "us", "multi-region", False)),
    ],
)
def test_classify(host, path, expected):
    assert classify("POST", host, path) == expected


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/messages/count_tokens"),
        ("POST", "/v1/messages/batches"),
        ("GET", "/v1/messages"),
        ("POST", "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/count-tokens"),
        ("POST", "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/converse"),
        ("POST", "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/converse-stream"),
        ("GET", "/inference-profiles?type=SYSTEM_DEFINED"),
        ("POST", "/v1/projects/p/locations/us-east5/publishers/anthropic/models/"
                 "count-tokens:rawPredict"),
        ("POST", "/v1/projects/p/locations/us-east5/publishers/google/models/gemini:predict"),
    ],
)
def test_not_metered(method, path):
    assert classify(method, BEDROCK_HOST, path) is None


def test_cloud_hosts():
    for host in (BEDROCK_HOST, "bedrock-runtime-fips.us-gov-west-1.amazonaws.com",
                 "us-east5-aiplatform.googleapis.com", "aiplatform.googleapis.com",
                 "aiplatform.eu.rep.googleapis.com", "EUROPE-WEST1-aiplatform.googleapis.com"):
        assert providers.is_cloud_host(host), host
    for host in ("bedrock.us-east-1.amazonaws.com", "api.anthropic.com",
                 "bedrock-runtime.us-east-1.amazonaws.com.evil.example",
                 "bedrock-mantle.us-east-1.api.aws", "googleapis.com"):
        assert not providers.is_cloud_host(host), host


# --- prices ---------------------------------------------------------------------------------


def price(model: str, kind: str | None, provider: str = "bedrock", **tokens) -> Decimal:
    result = CAT.price(model, Usage(**tokens), DAY, provider=provider, region_kind=kind)
    assert result.cost_usd is not None, result.note
    return result.cost_usd


@pytest.mark.parametrize(
    ("model", "regional"),
    [
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", True),
        ("global.anthropic.claude-haiku-4-5-20251001-v1:0", True),
        ("anthropic.claude-opus-4-5-20251101-v1:0", True),
        ("claude-opus-4-8", True),
        ("claude-fable-5-2", True),
        ("anthropic.claude-opus-4-1-20250805-v1:0", False),
        ("claude-opus-4@20250514", False),
        ("claude-sonnet-4@20250514", False),
        ("claude-3-5-haiku@20241022", False),
    ],
)
def test_regional_premium_is_ten_percent_on_4_5_and_later_only(model, regional):
    base = price(model, "global", input_tokens=1_000_000, output_tokens=100_000)
    assert price(model, "global", provider="anthropic", input_tokens=1_000_000,
                 output_tokens=100_000) == base
    for kind in ("regional", "multi-region", None):
        expected = base * Decimal("1.1") if regional else base
        assert price(model, kind, input_tokens=1_000_000, output_tokens=100_000) == expected


def test_regional_premium_covers_every_token_category_exactly():
    # Sonnet 4.5: 1M each of input $3, 5m write $3.75, 1h write $6, read $0.30, output $15
    tokens = dict(input_tokens=10**6, cache_write_5m_tokens=10**6, cache_write_1h_tokens=10**6,
                  cache_read_tokens=10**6, output_tokens=10**6)
    assert price("claude-sonnet-4-5@20250929", "regional", "vertex", **tokens) == Decimal(
        "30.855")  # 28.05 x 1.1
    note = CAT.price("claude-sonnet-4-5@20250929", Usage(**tokens), DAY, provider="vertex",
                     region_kind="regional").note
    assert note == "vertex regional endpoint x1.1"


def test_first_party_geo_multiplier_does_not_apply_on_clouds():
    usage = Usage(input_tokens=10**6, inference_geo="us")
    first_party = CAT.price("claude-opus-4-8", usage, DAY)
    assert first_party.cost_usd == Decimal("5.5")  # us geo x1.1 on the first-party API
    assert CAT.price("claude-opus-4-8", usage, DAY, provider="bedrock",
                     region_kind="global").cost_usd == Decimal("5")


def test_existing_callers_and_overrides_keep_working():
    assert CAT.price("us.anthropic.claude-opus-4-8", Usage(input_tokens=10**6), DAY).cost_usd \
        == Decimal("5")  # no provider given: first-party rules, as before
    custom = CAT.with_overrides({"models": {"claude-opus-4-8": {"input": "4"}}})
    assert custom.cloud_regional_multiplier == Decimal("1.1")
    assert custom.price("claude-opus-4-8", Usage(input_tokens=10**6), DAY, provider="bedrock",
                        region_kind="regional").cost_usd == Decimal("4.4")


def test_for_endpoint_fixes_provider_and_kind_for_running_costs():
    assert CAT.for_endpoint("anthropic", None) is CAT
    view = CAT.for_endpoint("bedrock", "multi-region")
    assert view.price("claude-opus-4-8", Usage(output_tokens=10**6), DAY).cost_usd == \
        Decimal("27.5")


def test_catalog_flags_exactly_the_4_5_and_later_models():
    flagged = {key for key in (row.id for row in CAT.models())
               if CAT.model(key).cloud_regional_premium_applies}
    assert flagged == {
        "claude-fable-5-2", "claude-mythos-5-2", "claude-fable-5-1", "claude-mythos-5-1",
        "claude-fable-5", "claude-mythos-5", "claude-opus-5-5", "claude-opus-5",
        "claude-opus-4-8", "claude-opus-4-7", "claude-opus-4-6", "claude-opus-4-5-20251101",
        "claude-sonnet-5-5", "claude-sonnet-5", "claude-sonnet-4-6",
        "claude-sonnet-4-5-20250929", "claude-haiku-5-5", "claude-haiku-4-5-20251001",
    }


# --- refusals ---------------------------------------------------------------------------------


def test_bedrock_refusal_is_a_throttling_exception_that_is_not_retried():
    answer = providers.refusal("bedrock", "ccmeter: daily cap reached")
    assert answer.status == 429
    assert json.loads(answer.body) == {"message": "ccmeter: daily cap reached"}
    assert answer.headers["x-amzn-errortype"] == (
        "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/")
    assert answer.headers["x-should-retry"] == "false"
    assert re.fullmatch(r"[0-9a-f-]{36}", answer.headers["x-amzn-requestid"])


@pytest.mark.parametrize("provider", ["anthropic", "vertex"])
def test_anthropic_and_vertex_refusals_use_the_anthropic_error_shape(provider):
    answer = providers.refusal(provider, "capped")
    assert answer.status == 429 and answer.headers["x-should-retry"] == "false"
    assert json.loads(answer.body) == {"type": "error", "error": {"type": "rate_limit_error",
                                                                  "message": "capped"}}


def test_bedrock_cut_frame_is_a_valid_exception_message():
    [message] = EventStreamDecoder().feed(providers.bedrock_stream_error("capped"))
    assert (message.message_type, message.exception_type) == ("exception", "throttlingException")
    assert json.loads(message.payload) == {"message": "capped"}


def test_error_of_reads_each_providers_error_shape():
    bedrock = providers.error_of("bedrock", 400, {"x-amzn-errortype": "ValidationException:http"
                                                  "://internal.amazon.com/coral/x/"},
                                 {"message": "bad"})
    assert bedrock == ("ValidationException", "bad")
    google = {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}
    assert providers.error_of("vertex", 429, {}, google) == ("RESOURCE_EXHAUSTED", "quota")
    assert providers.error_of("vertex", 429, {}, [google]) == ("RESOURCE_EXHAUSTED", "quota")
    anthropic = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    assert providers.error_of("vertex", 529, {}, anthropic) == ("overloaded_error", "busy")
    assert providers.error_of("vertex", 502, {}, "x") == ("http_502", None)


# --- ccmeter run: which hosts are decrypted -----------------------------------------------------


def test_cloud_providers_from_the_environment():
    assert child.cloud_providers({}) == ()
    assert child.cloud_providers({"CLAUDE_CODE_USE_BEDROCK": "1"}) == ("bedrock",)
    assert child.cloud_providers({"CLAUDE_CODE_USE_VERTEX": "true",
                                   "CLAUDE_CODE_USE_BEDROCK": "0"}) == ("vertex",)
    env = {"ANTHROPIC_BEDROCK_BASE_URL": "https://bedrock-gw.corp.example/v1",
           "ANTHROPIC_VERTEX_BASE_URL": "http://127.0.0.1:9999"}
    assert child.hosts_from_base_url(env) == ["bedrock-gw.corp.example", "127.0.0.1"]


def test_intercept_patterns_cover_every_region_only_when_asked(tmp_path):
    paths = config.Paths(tmp_path, tmp_path)
    plain = proxy.ProxySettings(paths=paths)
    cloud = proxy.ProxySettings(paths=paths, cloud=("bedrock", "vertex"))

    def decrypted(settings, host):
        return any(re.search(p, host) for p in settings.intercept_patterns())

    for host in ("bedrock-runtime.ap-northeast-1.amazonaws.com:443",
                 "europe-west1-aiplatform.googleapis.com", "aiplatform.googleapis.com:443"):
        assert decrypted(cloud, host) and not decrypted(plain, host), host
    assert decrypted(plain, "api.anthropic.com:443")
    assert not decrypted(cloud, "bedrock.us-east-1.amazonaws.com:443")  # control plane
    assert not decrypted(cloud, "s3.amazonaws.com:443")


# --- reports: --by provider ---------------------------------------------------------------------


def test_report_groups_by_provider(tmp_path, monkeypatch):
    from ccmeter import reports, store

    monkeypatch.setenv("CCMETER_HOME", str(tmp_path))
    db = store.connect(config.paths().db_file)
    base = 1_795_000_000.0
    rows = []
    for i, (prov, kind, cost) in enumerate([("anthropic", "messages", 100), ("bedrock",
                                            "multi-region", 110), ("bedrock", "global", 100),
                                            ("vertex", "regional", 55)] * 3):
        rows.append({"call_uid": f"c{i}", "started_at": "2026-11-19T00:00:00Z",
                     "started_ts": base + i, "provider": prov, "endpoint": kind,
                     "project": "p", "model": "claude-opus-4-8", "status": "ok",
                     "input_tokens": 10, "output_tokens": 1, "cost_picousd": cost,
                     "updated_ts": base + i})
    store.upsert_calls(db, rows)
    rep = reports.build_report(db, ["provider"], reports.Filters(), CAT)
    assert {r["provider"]: (r["calls"], r["cost"]) for r in rep.rows} == {
        "anthropic": (3, 300), "bedrock": (6, 630), "vertex": (3, 165)}
    two = reports.build_report(db, ["provider", "model"], reports.Filters(), CAT)
    assert sum(r["calls"] for r in two.rows) == 12 and len(two.rows) == 3
    assert rep.totals["calls"] == 12
