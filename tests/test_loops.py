"""The loop detector (ccmeter.loops): pure."""

from __future__ import annotations

from ccmeter import loops


def test_counts_per_session_and_tool_call_retries_once():
    d = loops.LoopDetector()
    seen = [d.observe("s", messages=2 * n + 1, tool_call="Read:ab", failed_result=None)
            for n in range(1, 4)]
    assert [s.repeats for s in seen] == [1, 2, 3]
    assert d.observe("s", messages=7, tool_call="Read:ab", failed_result=None).repeats == 3
    assert d.observe("t", messages=3, tool_call="Read:ab", failed_result=None).repeats == 1
    assert d.observe("s", messages=9, tool_call="Bash:cd", failed_result=None).repeats == 1
    assert seen[0].tool_name == "Read"


def test_warnings_once_per_call_and_for_failures():
    d = loops.LoopDetector()
    texts = []
    for n in range(1, 8):
        seen = d.observe("s", messages=n * 2, tool_call="Bash:aa", failed_result=None)
        texts.append(d.first_warning(seen, 5))
    assert [t is not None for t in texts] == [False, False, False, False, True, False, False]
    assert texts[4] == "session s made the same Bash call 5 times: a loop?"
    d2 = loops.LoopDetector()
    for n in range(1, 4):
        seen = d2.observe("s", messages=n * 2, tool_call=f"Bash:{n}", failed_result="err")
    assert d2.first_warning(seen, 3) == (
        "session s got the same failing Bash result 3 times: a loop?")


def test_forgive_starts_counting_anew():
    d = loops.LoopDetector()
    for n in range(1, 4):
        d.observe("s", messages=n * 2, tool_call="Read:x", failed_result=None)
    d.forgive("s")
    assert d.observe("s", messages=20, tool_call="Read:x", failed_result=None).repeats == 1


def test_spend_rate_far_above_the_sessions_own():
    d = loops.LoopDetector()
    t = 1_000_000.0
    dollar = 10**12
    for minute in range(0, 30):  # half an hour at $0.01 a minute
        assert d.spent("s", t + minute * 60, dollar // 100) is None
    warning = None
    for second in range(0, 300, 10):  # then $0.50 every ten seconds
        warning = d.spent("s", t + 1800 + second, dollar // 2) or warning
    assert warning is not None and warning.startswith("session s is spending ")
    assert "x its own average: a loop?" in warning


def test_refusal_message_names_the_way_out():
    seen = loops.Seen("3f2a", "Read:ab", 8, 0)
    assert loops.refusal_message(seen, 8) == (
        "ccmeter: loop guard: this session made the same Read call 8 times (loop cap 8); its "
        "requests are refused. To let it continue: ccmeter caps pause --session 3f2a --for 10m")


def test_the_rate_alarm_alone():
    hour = 3600.0
    assert loops.rate_alarm(None, 10**12, 0, hour) is None
    assert loops.rate_alarm(0.0, 10**12, 10**12, 600.0) is None  # too little history
    # $1 over 55 minutes before, then $1 in 5 minutes: 11x its own rate, $12/h
    assert round(loops.rate_alarm(0.0, 10**12, 10**12, hour)) == 11
    assert loops.rate_alarm(0.0, 10**10, 10**10, hour) is None  # $0.12/h: never an alarm
