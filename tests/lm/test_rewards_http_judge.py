"""alignkit.rewards.http_judge.HTTPChatJudge against real HTTP servers on 127.0.0.1 started inside each test.

No other address is ever contacted: every judge here points at a server bound to 127.0.0.1 on an
ephemeral port, proxies are disabled (``proxies={}``), and every wait is bounded.
"""

import contextlib
import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from alignkit.rewards import HTTPChatJudge, JudgeError, call_reward_fn, contains, parse_label_probs

MARKER = "MARKER"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address):  # a client that gave up is not a test failure
        pass


@contextlib.contextmanager
def serve(answer):
    """Run ``answer(request_json) -> (status, body bytes[, headers])`` as ``POST /v1/chat/completions`` on
    127.0.0.1.

    Yields (base_url, log) where log lists (path, headers, request_json) of every request received.
    """
    log = []
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            request = json.loads(raw)
            log.append((self.path, dict(self.headers), request))
            status, body, *extra = answer(request, stop)
            self.send_response(status)
            for key, value in (extra[0] if extra else {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", log
    finally:
        stop.set()  # releases handlers that are sleeping on purpose
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _judge(url, **kwargs):
    kwargs = {"timeout": 5.0, "max_retries": 0, "retry_backoff": 0.0, "proxies": {}, **kwargs}
    return HTTPChatJudge(url, "judge-model", **kwargs)


def _completion(content, top=None):
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "length"}
    if top is not None:
        choice["logprobs"] = {"content": [{"token": content, "logprob": top[0]["logprob"], "top_logprobs": top}]}
    return json.dumps({"id": "x", "object": "chat.completion", "choices": [choice]}).encode()


def _between(text, start, end):
    return text.split(start, 1)[1].split(end, 1)[0]


def marker_rule_endpoint(request, stop):
    """Emulates a judge that follows a rule: answers A iff response A contains MARKER, with log-probs
    log 0.9 / log 0.1; rates a single response 5 if it contains MARKER else 1, as text only."""
    text = request["messages"][-1]["content"]
    if "Response A:" in text:
        a_marked = MARKER in _between(text, "Response A:\n", "\n\nResponse B:")
        win, lose = ("A", " B") if a_marked else ("B", " A")  # the other label space-prefixed: still matched
        top = [{"token": win, "logprob": math.log(0.9)}, {"token": lose, "logprob": math.log(0.1)},
               {"token": "The", "logprob": -6.0}]  # not a label: ignored
        return 200, _completion(win, top)
    rating = "5" if MARKER in _between(text, "Response:\n", "\n\nRate") else "1"
    return 200, _completion(rating)  # no log-probs: the content is parsed


def test_http_judge_follows_the_rule_in_both_modes():
    prompts = ["q0", "q1", "q2", "q3"]
    a = [f"yes {MARKER}", "plain", f"{MARKER}!", "plain"]
    b = ["plain", f"{MARKER} too", f"also {MARKER}", "nothing"]
    with serve(marker_rule_endpoint) as (url, log):
        judge = _judge(url, api_key="sk-test-secret", max_concurrency=3, top_logprobs=3)
        got = judge.prefer(prompts, a, b)
        swapped = judge.prefer(prompts, b, a)
        scores = call_reward_fn(judge, prompts, a).tolist()
    # a marked only: p_AB = 0.9, p_BA = P(A | b shown first) = 0.1  ->  (0.9 + 1 - 0.1) / 2 = 0.9
    # b marked only: 0.1;  both or neither: p_AB = p_BA  ->  0.5
    assert got.tolist() == pytest.approx([0.9, 0.1, 0.5, 0.5], abs=1e-6)
    torch.testing.assert_close(got, 1 - swapped, atol=1e-6, rtol=0)
    rule = contains(MARKER)
    assert [p > 0.5 for p in got.tolist()] == [x > y for x, y in zip(rule(prompts, a), rule(prompts, b), strict=True)]
    assert scores == [1.0 + 4.0 * r for r in rule(prompts, a)] == [5.0, 1.0, 5.0, 1.0]
    # what went over the wire
    assert len(log) == 2 * 8 + 4
    path, headers, body = log[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-test-secret"
    assert headers["Content-Type"] == "application/json"
    assert {k: body[k] for k in ("model", "temperature", "max_tokens", "logprobs", "top_logprobs")} == {
        "model": "judge-model", "temperature": 0, "max_tokens": 1, "logprobs": True, "top_logprobs": 3}
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert body["messages"][0]["content"].endswith("Preferred response:")


def test_pairwise_reward_against_a_reference_column():
    with serve(marker_rule_endpoint) as (url, _):
        reward = _judge(url).as_reward_fn(reference_column="chosen")
        out = call_reward_fn(reward, ["q", "q"], [f"{MARKER}", "plain"], chosen=["plain", f"{MARKER}"])
    assert out.tolist() == pytest.approx([0.9, 0.1], abs=1e-6)


def test_timeout_names_the_url_and_the_setting():
    def sleepy(request, stop):
        stop.wait(3.0)  # far past the judge's timeout; released when the server stops
        return 200, _completion("A")

    with serve(sleepy) as (url, log):
        judge = _judge(url, timeout=0.2, max_retries=1, max_concurrency=1)
        start = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            judge.prefer(["q"], ["a"], ["b"])
        elapsed = time.monotonic() - start
    message = str(info.value)
    assert f"{url}/chat/completions" in message and "timeout=0.2s" in message
    assert "2 attempts, max_retries=1" in message and "prompt index 0" in message
    assert len(log) == 2  # one retry
    assert elapsed < 2.0


@pytest.mark.parametrize(
    ("reply", "fragments"),
    [
        (b"<html>502 Bad Gateway</html>", ["is not JSON", "<html>502 Bad Gateway</html>"]),
        (b'{"error": "overloaded"}', ["has no choices[0]", "overloaded"]),
        (b'{"choices": [{"message": {"role": "assistant"}}]}', ["neither label log-probs nor a message content"]),
        (_completion("C"), ["is 'C', not one of the labels ['A', 'B']"]),
        (_completion("C", [{"token": "C", "logprob": -0.01}]), ["is 'C', not one of the labels"]),
        (_completion("x" * 5000), ["not one of the labels", "xxx..."]),
    ],
    ids=["html", "no-choices", "no-content", "bad-label", "bad-label-logprobs", "long-garbage"],
)
def test_garbage_answers_are_quoted_with_the_prompt_index(reply, fragments):
    def garbage_for_second_prompt(request, stop):
        text = request["messages"][-1]["content"]
        return 200, (reply if "second prompt" in text else marker_rule_endpoint(request, stop)[1])

    with serve(garbage_for_second_prompt) as (url, _):
        judge = _judge(url, max_concurrency=2)
        with pytest.raises(ValueError) as info:
            judge.prefer(["first prompt", "second prompt", "third prompt"], ["a"] * 3, ["b"] * 3)
    message = str(info.value)
    assert "prompt index 1 (" in message and url in message
    for fragment in fragments:
        assert fragment in message
    assert len(message) < 600  # long answers are truncated


def test_retryable_status_is_retried_and_others_are_not():
    calls = {"n": 0}

    def flaky(request, stop):
        calls["n"] += 1
        if calls["n"] == 1:
            return 503, b'{"error": "warming up"}'
        return marker_rule_endpoint(request, stop)

    with serve(flaky) as (url, log):
        assert _judge(url, max_retries=1).score(["q"], [MARKER]) == [5.0]
    assert len(log) == 2

    with serve(lambda request, stop: (401, b'{"error": "bad key"}')) as (url, log):
        with pytest.raises(JudgeError, match=r"answered HTTP 401 for prompt index 0: .*bad key") as info:
            _judge(url, api_key="sk-do-not-leak", max_retries=3).score(["q"], ["r"])
    assert len(log) == 1
    assert "sk-do-not-leak" not in str(info.value)


def test_unreachable_endpoint_is_a_clear_error():
    with socket.socket() as s:  # a port on 127.0.0.1 that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(JudgeError, match=f"judge endpoint {url}/chat/completions failed for prompt index 0 "
                                         "after 2 attempts"):
        _judge(url, timeout=1.0, max_retries=1).score(["q"], ["r"])


def test_constructor_checks_and_sends_nothing():
    with serve(marker_rule_endpoint) as (url, log):
        judge = _judge(url)
        assert "chat/completions" in repr(judge)
        assert log == []  # constructing a judge contacts nobody
    with pytest.raises(ValueError, match="base_url must start with http:// or https://"):
        HTTPChatJudge("127.0.0.1:8000", "m")
    for kwargs, msg in [({"timeout": 0}, "timeout must be > 0"), ({"max_retries": -1}, "max_retries must be"),
                        ({"max_concurrency": 0}, "max_concurrency must be")]:
        with pytest.raises(ValueError, match=msg):
            HTTPChatJudge("http://127.0.0.1:1/v1", "m", **kwargs)


def test_parse_label_probs_sums_variants_and_renormalises():
    top = [{"token": "A", "logprob": math.log(0.3)}, {"token": " A", "logprob": math.log(0.3)},
           {"token": "B", "logprob": math.log(0.2)}, {"token": "\n", "logprob": math.log(0.2)}]
    assert parse_label_probs(_completion("A", top), ("A", "B"), "p") == pytest.approx([0.75, 0.25])
    # log-probs present but no label among them: fall back to the content
    assert parse_label_probs(_completion(" B", [{"token": "x", "logprob": 0.0}]), ("A", "B"), "p") == [0.0, 1.0]
    assert parse_label_probs(_completion("**4**"), ("1", "2", "3", "4", "5"), "p") == [0, 0, 0, 1.0, 0]


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_refused_and_the_key_never_reaches_the_other_host(status):
    with serve(marker_rule_endpoint) as (elsewhere, elsewhere_log):
        def redirect(request, stop):
            return status, b"", {"Location": elsewhere + "/chat/completions"}

        with serve(redirect) as (url, log):
            judge = _judge(url, api_key="SECRET-KEY", max_retries=2)
            with pytest.raises(JudgeError, match=rf"HTTP {status} redirecting to .*127\.0\.0\.1.*not followed"):
                judge.score(["p"], ["a MARKER"])  # one request
    assert len(log) == 1 and log[0][1]["Authorization"] == "Bearer SECRET-KEY"  # a redirect is not retried
    assert elsewhere_log == []


def test_a_reply_longer_than_max_response_bytes_is_an_error():
    with serve(lambda request, stop: (200, b"x" * 5000)) as (url, _):
        with pytest.raises(JudgeError, match="more than max_response_bytes=4096"):
            _judge(url, max_response_bytes=4096).prefer(["p"], ["a"], ["b"])
    with pytest.raises(ValueError, match="max_response_bytes must be an integer >= 1"):
        _judge("http://127.0.0.1:9/v1", max_response_bytes=0)
