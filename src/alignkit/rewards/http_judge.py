"""The HTTP judge: an OpenAI-compatible ``/chat/completions`` endpoint compares or rates responses (see
:mod:`.judge` for the rules). Standard library only; nothing is sent anywhere unless the user gives a URL."""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from .judge import DEFAULT_RUBRIC, PAIRWISE_TEMPLATE, SCORE_TEMPLATE, Judge, JudgeError, _clip

__all__ = ["HTTPChatJudge", "parse_label_probs"]


def _dig(obj: Any, *keys: Any) -> Any:
    """``obj[k0][k1]...`` or None when any step is missing or of the wrong type."""
    for k in keys:
        if isinstance(k, int):
            if not isinstance(obj, list) or not -len(obj) <= k < len(obj):
                return None
        elif not isinstance(obj, dict) or k not in obj:
            return None
        obj = obj[k]
    return obj


def parse_label_probs(body: bytes | str, labels: Sequence[str], where: str, source: str = "judge") -> list[float]:
    """Label probabilities from an OpenAI-style chat completion response body. ``-> K floats summing to 1``.

    Prefers ``choices[0].logprobs.content[0].top_logprobs``: the probability of label k is the sum of
    ``exp(logprob)`` over the listed tokens equal to it after stripping whitespace (``"A"`` and ``" A"``),
    renormalised over the labels (a label missing from the top-k list gets 0). Without usable log-probs,
    ``choices[0].message.content`` (stripped of whitespace and ``.:)*"'```) must be one of the labels, which
    then gets probability 1. Anything else is a ValueError quoting the (truncated) answer and ``where``.

    >>> body = '{"choices": [{"logprobs": {"content": [{"top_logprobs": ['
    >>> body += '{"token": " A", "logprob": -0.2231}, {"token": "B", "logprob": -1.6094}]}]}}]}'
    >>> [round(p, 3) for p in parse_label_probs(body, ("A", "B"), "prompt index 0")]
    [0.8, 0.2]
    >>> parse_label_probs('{"choices": [{"message": {"content": "B."}}]}', ("A", "B"), "prompt index 0")
    [0.0, 1.0]
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"{source} answered {where} with something that is not JSON: {_clip(body)!r}") from None
    choice = _dig(data, "choices", 0)
    if not isinstance(choice, dict):
        raise ValueError(f"{source} answer for {where} has no choices[0]: {_clip(json.dumps(data))!r}")
    stripped = [x.strip() for x in labels]
    top = _dig(choice, "logprobs", "content", 0, "top_logprobs")
    if isinstance(top, list):
        mass = [0.0] * len(labels)
        for entry in top:
            token, logprob = _dig(entry, "token"), _dig(entry, "logprob")
            if isinstance(token, str) and token.strip() in stripped and isinstance(logprob, (int, float)):
                if not isinstance(logprob, bool) and not math.isnan(logprob):
                    mass[stripped.index(token.strip())] += math.exp(min(float(logprob), 0.0))
        total = sum(mass)
        if total > 0:
            return [m / total for m in mass]
    content = _dig(choice, "message", "content")
    if not isinstance(content, str):
        raise ValueError(
            f"{source} answer for {where} has neither label log-probs nor a message content: "
            f"{_clip(json.dumps(choice))!r}"
        )
    answer = content.strip().strip(".:)*\"'` \n\t")
    if answer not in stripped:
        raise ValueError(f"{source} answer for {where} is {_clip(content)!r}, not one of the labels {list(labels)}")
    return [1.0 if x == answer else 0.0 for x in stripped]


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """urllib follows 301/302/303/307/308 by default, headers (the API key) included: refuse them all."""

    def __init__(self, url: str):
        self.url = url

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise JudgeError(f"judge endpoint {self.url} answered HTTP {code} redirecting to {_clip(newurl)!r}; "
                         "redirects are not followed (the API key would be sent there): set base_url to the "
                         "endpoint's final address")


class HTTPChatJudge(Judge):
    """A judge behind an OpenAI-compatible chat endpoint (vLLM, SGLang, llama.cpp server, hosted APIs).

    Each judge prompt is one request ``POST {base_url}/chat/completions`` with the JSON body
    ``{model, messages: [{role: "user", content: prompt}], temperature: 0, max_tokens, logprobs: true,
    top_logprobs}``; label probabilities are read by :func:`parse_label_probs`. Only the standard library
    is used (``urllib.request``, ``json``), and nothing is sent until :meth:`prefer` or :meth:`score` is
    called on a judge the user built.

    Failures: HTTP 429/5xx, connection errors and timeouts are retried ``max_retries`` times (sleeping
    ``retry_backoff * attempt`` seconds); then a timeout raises ``TimeoutError`` naming the URL and the
    ``timeout`` setting, anything else :class:`JudgeError`. Other HTTP statuses raise :class:`JudgeError`
    at once. A reply that is not JSON, lacks the fields, or names no allowed label raises ``ValueError``
    quoting it and naming the prompt index. The API key is sent as ``Authorization: Bearer`` and never
    appears in messages. Redirects are never followed (a redirect would carry the key to whatever host
    the reply names): a 3xx reply raises :class:`JudgeError` naming where it pointed.

    Args:
        base_url: e.g. ``"http://127.0.0.1:8000/v1"`` (``/chat/completions`` is appended).
        model: the model name the endpoint expects.
        api_key: optional bearer token (pass it explicitly; no environment variable is read).
        timeout: seconds per request attempt.
        max_retries: extra attempts after a retryable failure (>= 0).
        retry_backoff: seconds; attempt k waits ``retry_backoff * k`` before retrying.
        top_logprobs: how many alternatives to request for the first answer token.
        max_tokens: answer length cap (1: just the label).
        max_concurrency: requests in flight at once (threads).
        max_response_bytes: a longer reply is an error (the body is never read past this).
        system_prompt: optional system message sent before the judge prompt.
        proxies: ``urllib`` proxy mapping; None uses the environment's (``http_proxy``...), ``{}`` none.
        rubric, labels, template, score_labels, score_template, score_values: see :class:`Judge`.
    """

    RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 2,
        retry_backoff: float = 1.0,
        top_logprobs: int = 5,
        max_tokens: int = 1,
        max_concurrency: int = 4,
        max_response_bytes: int = 1 << 20,
        system_prompt: str | None = None,
        proxies: dict[str, str] | None = None,
        rubric: str = DEFAULT_RUBRIC,
        labels: Sequence[str] = ("A", "B"),
        template: str = PAIRWISE_TEMPLATE,
        score_labels: Sequence[str] | None = ("1", "2", "3", "4", "5"),
        score_template: str = SCORE_TEMPLATE,
        score_values: Sequence[float] | None = None,
    ):
        super().__init__(rubric, labels, template, score_labels, score_template, score_values)
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        for name, value, low in (("max_retries", max_retries, 0), ("top_logprobs", top_logprobs, 0),
                                 ("max_tokens", max_tokens, 1), ("max_concurrency", max_concurrency, 1),
                                 ("max_response_bytes", max_response_bytes, 1)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if retry_backoff < 0:
            raise ValueError(f"retry_backoff must be >= 0, got {retry_backoff}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout, self.max_retries = model, float(timeout), max_retries
        self.retry_backoff, self.top_logprobs, self.max_tokens = float(retry_backoff), top_logprobs, max_tokens
        self.max_concurrency, self.system_prompt, self.proxies = max_concurrency, system_prompt, proxies
        self.max_response_bytes = max_response_bytes
        self._api_key = api_key

    def __repr__(self) -> str:
        return f"HTTPChatJudge(url={self.url!r}, model={self.model!r})"

    def request_body(self, text: str) -> dict[str, Any]:
        """The JSON body sent for one judge prompt."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        body = {
            "model": self.model,
            "messages": [*messages, {"role": "user", "content": text}],
            "temperature": 0,
            "max_tokens": self.max_tokens,
            "logprobs": self.top_logprobs > 0,
        }
        if self.top_logprobs > 0:
            body["top_logprobs"] = self.top_logprobs
        return body

    def _post(self, text: str, where: str) -> bytes:
        from http.client import HTTPException

        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        data = json.dumps(self.request_body(text)).encode("utf-8")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler(self.proxies), _RefuseRedirects(self.url))
        attempts = self.max_retries + 1
        last = ""
        for attempt in range(1, attempts + 1):
            if attempt > 1 and self.retry_backoff:
                time.sleep(self.retry_backoff * (attempt - 1))
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with opener.open(request, timeout=self.timeout) as response:
                    body = response.read(self.max_response_bytes + 1)
                if len(body) > self.max_response_bytes:
                    raise JudgeError(f"judge endpoint {self.url} sent more than max_response_bytes="
                                     f"{self.max_response_bytes} for {where}; a label reply is a few KiB")
                return body
            except JudgeError:
                raise
            except urllib.error.HTTPError as e:
                detail = _clip(e.read() if e.fp is not None else b"")
                if e.code not in self.RETRY_STATUSES:
                    raise JudgeError(
                        f"judge endpoint {self.url} answered HTTP {e.code} for {where}: {detail!r}"
                    ) from None
                last = f"HTTP {e.code}: {detail!r}"
            except (OSError, HTTPException) as e:  # URLError and TimeoutError are OSErrors
                reason = e.reason if isinstance(e, urllib.error.URLError) else e
                if isinstance(reason, TimeoutError):
                    last = "timeout"
                else:
                    last = f"{type(reason).__name__}: {reason}"
        if last == "timeout":
            raise TimeoutError(
                f"judge endpoint {self.url} did not answer {where} within timeout={self.timeout}s "
                f"({attempts} attempts, max_retries={self.max_retries}); increase HTTPChatJudge(timeout=...) "
                "or check the server"
            )
        raise JudgeError(f"judge endpoint {self.url} failed for {where} after {attempts} attempts: {last}")

    def _ask(self, item: tuple[str, str, tuple[str, ...]]) -> list[float]:
        text, where, labels = item
        return parse_label_probs(self._post(text, where), labels, where, source=f"judge endpoint {self.url}")

    def label_probs(self, texts: list[str], labels: tuple[str, ...], where: list[str]) -> torch.Tensor:
        items = [(t, w, labels) for t, w in zip(texts, where, strict=True)]
        workers = min(self.max_concurrency, len(items))
        if workers <= 1:
            rows = [self._ask(item) for item in items]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                rows = list(pool.map(self._ask, items))
        return torch.tensor(rows, dtype=torch.float32).view(len(items), len(labels))
