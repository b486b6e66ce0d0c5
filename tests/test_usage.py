"""Usage accumulation: message_start, cumulative message_delta (later wins, never added)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from standin import fallback_events, message_events, message_json

from ccmeter.usage import MessageState, Usage, merge_usage


def state_from(events) -> MessageState:
    state = MessageState()
    for name, data in events:
        state.apply_event(name, data)
    return state


def test_stream_usage_takes_input_from_start_and_final_counts_from_delta():
    state = state_from(message_events("claude-opus-4-8", input_tokens=120, cache_write_5m=300,
                                      cache_write_1h=700, cache_read=5000, output_tokens=42))
    u = state.usage
    assert (u.input_tokens, u.cache_write_5m_tokens, u.cache_write_1h_tokens,
            u.cache_read_tokens, u.output_tokens) == (120, 300, 700, 5000, 42)
    assert state.model == "claude-opus-4-8" and state.stopped and state.stop_reason == "end_turn"
    assert state.message_id and state.message_id.startswith("msg_")


def test_deltas_overwrite_and_are_never_summed():
    u = merge_usage(None, {"input_tokens": 10, "output_tokens": 1})
    u = merge_usage(u, {"output_tokens": 30})
    u = merge_usage(u, {"output_tokens": 45, "input_tokens": None})
    assert u.output_tokens == 45 and u.input_tokens == 10


def test_cache_total_without_split_counts_as_five_minute():
    u = merge_usage(None, {"cache_creation_input_tokens": 900})
    assert (u.cache_write_5m_tokens, u.cache_write_1h_tokens) == (900, 0)


def test_delta_total_larger_than_start_split_puts_the_extra_in_five_minute():
    u = merge_usage(None, {"cache_creation_input_tokens": 100,
                           "cache_creation": {"ephemeral_5m_input_tokens": 40,
                                              "ephemeral_1h_input_tokens": 60}})
    u = merge_usage(u, {"cache_creation_input_tokens": 150})
    assert (u.cache_write_5m_tokens, u.cache_write_1h_tokens) == (90, 60)
    same = merge_usage(u, {"cache_creation_input_tokens": 150})
    assert (same.cache_write_5m_tokens, same.cache_write_1h_tokens) == (90, 60)


def test_server_tools_tier_geo_speed_thinking_and_advisor_hops():
    u = merge_usage(None, {
        "input_tokens": 5, "service_tier": "batch", "inference_geo": "us", "speed": "fast",
        "server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 2},
        "output_tokens_details": {"thinking_tokens": 7},
        "iterations": [
            {"type": "message", "input_tokens": 5, "output_tokens": 2},
            {"type": "advisor_message", "model": "claude-opus-5-5", "input_tokens": 50,
             "output_tokens": 9, "cache_read_input_tokens": 4},
        ],
    })
    assert (u.service_tier, u.inference_geo, u.speed) == ("batch", "us", "fast")
    assert (u.web_search_requests, u.web_fetch_requests, u.thinking_tokens) == (3, 2, 7)
    assert len(u.hops) == 1 and u.hops[0].model == "claude-opus-5-5"
    assert u.hops[0].tokens.input_tokens == 50 and u.hops[0].tokens.cache_read_tokens == 4


def test_error_event_and_unknown_events():
    state = state_from(message_events(error_after_start=("overloaded_error", "Overloaded")))
    assert state.error_type == "overloaded_error" and state.error_message == "Overloaded"
    assert not state.stopped
    state.apply_event("brand_new_event", {})
    assert "brand_new_event" in state.unknown_events


def test_non_streaming_message_body_and_error_body():
    state = MessageState()
    state.apply_message(message_json("claude-haiku-4-5-20251001", input_tokens=11,
                                     output_tokens=3, cache_read=8))
    assert state.usage.input_tokens == 11 and state.usage.cache_read_tokens == 8
    assert state.model == "claude-haiku-4-5-20251001" and state.stopped
    err = MessageState()
    err.apply_message({"type": "error", "error": {"type": "invalid_request_error",
                                                  "message": "bad"}})
    assert err.error_type == "invalid_request_error" and err.usage is None


def test_a_fallback_block_relabels_the_answer_to_the_model_that_served_it():
    # As the official SDK's stream accumulator does (anthropic lib/streaming: a ``fallback``
    # content block sets the message's model to its ``to.model``).
    state = state_from(fallback_events("claude-opus-4-7", "claude-sonnet-4-5",
                                       input_tokens=25, output_tokens=8))
    assert (state.model, state.fallback_from) == ("claude-sonnet-4-5", "claude-opus-4-7")
    assert (state.usage.input_tokens, state.usage.output_tokens) == (25, 8)
    assert state.stopped and state.unknown_events == set()
    assert state_from(message_events("claude-opus-4-7")).fallback_from is None
    # Two hops: the last block names the model that served; the first, the one asked.
    hops = fallback_events("claude-opus-4-7", "claude-sonnet-4-5")
    second = {"type": "fallback", "from": {"model": "claude-sonnet-4-5"},
              "to": {"model": "claude-haiku-4-5"}, "trigger": {"type": "refusal"}}
    hops.insert(3, ("content_block_start", {"type": "content_block_start", "index": 1,
                                            "content_block": second}))
    assert (state_from(hops).model, state_from(hops).fallback_from) == (
        "claude-haiku-4-5", "claude-opus-4-7")
    # A non-streaming body names the served model already; its block names the one asked.
    body = message_json("claude-sonnet-4-5", input_tokens=25, output_tokens=8)
    body["content"].insert(0, fallback_events()[1][1]["content_block"])
    whole = MessageState()
    whole.apply_message(body)
    assert (whole.model, whole.fallback_from) == ("claude-sonnet-4-5", "claude-opus-4-7")


@given(st.lists(st.integers(min_value=0, max_value=10**7), min_size=1, max_size=8))
def test_the_last_output_count_wins_whatever_came_before(counts):
    usage = Usage()
    for count in counts:
        usage = merge_usage(usage, {"output_tokens": count})
    assert usage.output_tokens == counts[-1]
