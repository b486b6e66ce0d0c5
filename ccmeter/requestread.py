"""Reading what a metered call sent, and an answer that came whole: bounded, and never
raising on what a client or an upstream sent.

- :func:`read_request`: a call's attribution (session, project, agent, model, kind) from its
  request's headers and JSON body (:func:`attribute_request`), the project from the working
  directory's git repository (:func:`git_top`) when the request names none;
- :func:`take_streamed_body`: a request that streamed upstream gets its body (the tee's copy);
  :func:`keep_unsent_request`: a call that ends before its request did keeps what came;
- :func:`read_json_body`: usage, or the upstream's error, from an answer that did not stream;
- :func:`body_kind` / :func:`decoded_body`: a message's content type and encoding, and its
  body decoded within the meter's budget.

Prompt text is parsed here and never kept: only what :mod:`ccmeter.attribution` picks out.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from mitmproxy import http

from ccmeter import attribution, providers, untrusted
from ccmeter.callrow import Call
from ccmeter.decompress import MAX_DECODED_BYTES, incremental_decoder
from ccmeter.gitroot import git_top
from ccmeter.sse import SSEDecoder, looks_like_event_stream
from ccmeter.tees import RequestTee
from ccmeter.usage import merge_usage

#: Largest request body the meter reads (the API refuses requests over 32 MB).
MAX_REQUEST_BYTES = 40 * 1024 * 1024


def decoded_body(message: http.Message, budget: int = MAX_DECODED_BYTES) -> bytes:
    """A whole body decoded from its content-encoding, within the meter's budget
    (``get_content`` would expand a compression bomb to any size, on the event loop).
    Raises ValueError for a body that is not what its encoding says, or too large."""
    raw = message.raw_content or b""
    encoding = body_kind(message.headers)[1]
    if not encoding or not raw:
        return raw
    try:
        return incremental_decoder(encoding, budget)(raw)
    except ValueError:
        raise
    except Exception as exc:  # zlib.error, brotli.error, a zstd error: not ValueErrors
        raise ValueError(f"{encoding}: {type(exc).__name__}: {exc}") from exc


def body_kind(headers: http.Headers) -> tuple[str, str]:
    """(content-type, content-encoding lower-cased, "" for identity), in one pass over the
    raw fields: ``Headers.get`` scans every field for each name, and this runs before a
    call's first byte."""
    content_type = encoding = ""
    for name, value in headers.fields:
        lowered = name.lower()
        if lowered == b"content-type" and not content_type:  # a media type is case-blind
            content_type = value.decode("utf-8", "surrogateescape").strip().lower()
        elif lowered == b"content-encoding" and not encoding:
            encoding = value.decode("utf-8", "surrogateescape").strip().lower()
    return content_type, "" if encoding == "identity" else encoding


#: Called with a request's parsed body and its attribution, before the body is dropped.
BodyReader = Callable[[dict[str, Any], attribution.Attribution], None]


def attribute_request(request: http.Request,
                      on_body: BodyReader | None = None) -> attribution.Attribution:
    """The attribution of a request, with the garbage collector held off while its JSON is
    alive: Claude Code's 100–500 KB requests decode to thousands of containers, which would
    set off collections (each a scan of everything young: 0.2 ms, in some call's latency)
    although every one of them is freed, by reference counting, when the parse is done."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _attribute_request(request, on_body)  # the parsed body dies inside this call
    finally:
        if enabled:
            gc.enable()


def _attribute_request(request: http.Request,
                       on_body: BodyReader | None) -> attribution.Attribution:
    try:
        content = request.raw_content or b""
        if len(content) > MAX_REQUEST_BYTES:
            raise ValueError("request too large to read")
        content = decoded_body(request, MAX_REQUEST_BYTES)
        body = untrusted.loads(content) if content else {}
    except ValueError:  # not JSON, too large, or a bomb (JSON too deep is still read)
        body = {}
    body = body if isinstance(body, dict) else {}
    who = attribution.attribute(request.headers, body)
    if on_body is not None and body:
        on_body(body, who)
    return who


def read_request(call: Call, option_project: Callable[[], str | None],
                 on_body: BodyReader | None = None) -> bool:
    """Fill in the call's attribution and project from its pending request, once: False
    when there is none to read. The project is the launcher's tag (read with the headers),
    the request's own, then ``option_project()`` (the ``ccmeter_project`` option), else the
    working directory's repository folder; the addon then resolves it through the session."""
    request, call.pending = call.pending, None
    if request is None:
        return False
    who = attribute_request(request, on_body)
    endpoint = call.endpoint
    if endpoint.provider != providers.ANTHROPIC:  # the model and mode are in the URL
        who = replace(who, requested_model=endpoint.model,
                      stream=who.stream if endpoint.stream is None else endpoint.stream)
    # The launcher's tag header was read (and removed from the request) up front.
    project = call.project or who.project or option_project()
    if not project and who.working_dir:
        project = attribution.project_from_dir(who.working_dir, git_top(who.working_dir))
    call.attribution = who
    call.project = project
    return True


def take_streamed_body(request: http.Request) -> bool:
    """Give a streamed request its body (the tee's copy), as a buffered one has it."""
    if not isinstance(request.stream, RequestTee):
        return False
    body = request.stream.take()
    if request.raw_content is None:
        request.raw_content = body
    return True


def keep_unsent_request(call: Call, request: http.Request) -> None:
    """A call that ends before its ``request`` hook (upstream unreachable, an answer
    before the whole body went, the client gone mid-upload) is recorded with what there
    is: the headers, and the body if all of it arrived. (mitmproxy stamps
    ``timestamp_end`` just before the ``request`` hook.)"""
    if request.timestamp_end is None:
        take_streamed_body(request)
        call.pending = request


def read_json_body(call: Call, response: http.Response) -> None:
    """Usage, or the upstream's error, from an answer that did not stream: a JSON body,
    or an event stream without its content-type; a body that is neither marks the row."""
    try:
        content = decoded_body(response)
    except ValueError as exc:
        call.metering_error = f"cannot decode body: {exc}"[:300]
        return
    if not content:
        return
    if looks_like_event_stream(content):  # no content-type (or a wrong one): sniffed
        for event in [*(decoder := SSEDecoder()).feed(content), *decoder.flush()]:
            if event.data is not None:
                call.state.apply_event(event.name, event.data)
                if event.unread and call.metering_error is None:  # read in part
                    call.metering_error = f"{event.name} {event.unread}"
            elif event.unread:
                call.state.unread(event.name, event.unread)
        return
    try:
        body = untrusted.loads(content)
    except ValueError:
        if response.status_code < 400:
            call.metering_error = "answer is neither an event stream nor JSON"
        return
    provider = call.endpoint.provider
    if response.status_code >= 400 and provider != providers.ANTHROPIC:
        kind, text = providers.error_of(provider, response.status_code, response.headers, body)
        call.state.error_type = untrusted.text(kind, 100) or "error"
        call.state.error_message = untrusted.text(text, 500)
        return
    if isinstance(body, dict):
        call.state.apply_message(body)
    if provider == providers.BEDROCK and call.state.usage is None:
        counts = providers.usage_from_headers(response.headers)  # x-amzn-bedrock-*-count
        if counts:
            call.state.usage = merge_usage(None, counts)
