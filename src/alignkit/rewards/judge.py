"""AI judges: a language model compares or rates responses (RLAIF).

RLAIF (Lee et al. 2023, "RLAIF vs. RLHF: Scaling Reinforcement Learning from Human Feedback with AI
Feedback") replaces human preference labels by an LLM's: the judge sees a rubric (a "constitution", Bai
et al. 2022, "Constitutional AI"), the prompt and two responses, and the preference is read from the
probability of the next token, not from sampled text:

    P(A preferred) = softmax(z_A, z_B)_A = exp(z_A) / (exp(z_A) + exp(z_B))        z = next-token logits

LLM judges prefer whichever response is shown first (or second) more often than they should; Lee et al.
("addressing position bias") cancel this by asking in both orders and averaging. With
p_AB = P(label A | a shown as A, b as B) and p_BA = P(label A | b shown as A, a as B):

    prefer(x, a, b) = (p_AB + (1 - p_BA)) / 2          so that   prefer(x, a, b) = 1 - prefer(x, b, a).

Scoring a single response (direct RLAIF, "d-RLAIF", of Lee et al., who rate 1..10 and rescale the
expected rating to [-1, 1]; here the values are yours) asks for a rating among labels ``l_1..l_K``
with values ``v_k`` and returns the expected value under the next-token distribution renormalised over
the label tokens:  score = sum_k v_k * softmax(z_{l_1..l_K})_k.

Two judges share templates and these two rules:

- :class:`LocalLMJudge` runs a causal LM held in memory (batched, left-padded, ``torch.no_grad``).
- :class:`HTTPChatJudge` asks an OpenAI-compatible ``/chat/completions`` endpoint, standard library only.
  Nothing is sent anywhere unless the user constructs it with a URL.

Each judge is a :class:`~alignkit.rewards.base.RewardFn` in score mode (``judge(prompts, completions)``);
``judge.as_reward_fn(reference_column=...)`` gives the pairwise reward P(completion beats the reference).
"""

from __future__ import annotations

import inspect
import json
import math
import string
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "DEFAULT_RUBRIC",
    "PAIRWISE_TEMPLATE",
    "SCORE_TEMPLATE",
    "Judge",
    "LocalLMJudge",
    "HTTPChatJudge",
    "JudgeError",
    "PairwiseJudgeReward",
    "parse_label_probs",
]

DEFAULT_RUBRIC = (
    "A good response is helpful, honest and harmless: it does what the user asked, accurately and clearly, "
    "admits uncertainty instead of inventing facts, and contains nothing harmful, unethical or deceptive."
)

PAIRWISE_TEMPLATE = (
    "{rubric}\n\n"
    "Prompt:\n{prompt}\n\n"
    "Response {label_a}:\n{response_a}\n\n"
    "Response {label_b}:\n{response_b}\n\n"
    "Which response is better? Answer with {label_a} or {label_b}.\n"
    "Preferred response:"
)
"""Placeholders: rubric, prompt, response_a, response_b, label_a, label_b. Ends where the label comes."""

SCORE_TEMPLATE = (
    "{rubric}\n\n"
    "Prompt:\n{prompt}\n\n"
    "Response:\n{response}\n\n"
    "Rate the response from {lowest} (worst) to {highest} (best). Answer with one of: {labels}.\n"
    "Rating:"
)
"""Placeholders: rubric, prompt, response, labels (comma-separated), lowest, highest."""

_PAIRWISE_FIELDS = {"rubric", "prompt", "response_a", "response_b", "label_a", "label_b"}
_SCORE_FIELDS = {"rubric", "prompt", "response", "labels", "lowest", "highest"}


class JudgeError(RuntimeError):
    """The judge endpoint could not be reached or refused the request (HTTP error status)."""


def _clip(text: Any, width: int = 200) -> str:
    text = text.decode("utf-8", "replace") if isinstance(text, (bytes, bytearray)) else str(text)
    return text if len(text) <= width else text[: width - 3] + "..."


def _check_template(template: str, fields: set[str], required: set[str], what: str) -> str:
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise ValueError(f"{what} is not a valid format string: {e}") from None
    unknown = used - fields
    if unknown:
        raise ValueError(f"{what} has unknown placeholders {sorted(unknown)}; available: {sorted(fields)}")
    missing = required - used
    if missing:
        raise ValueError(f"{what} must contain the placeholders {sorted(missing)}")
    return template


def _check_labels(labels: Sequence[str], what: str, n: int | None = None) -> tuple[str, ...]:
    labels = tuple(labels)
    if n is not None and len(labels) != n:
        raise ValueError(f"{what} must be {n} strings, got {labels!r}")
    if len(labels) < 2 or any(not isinstance(x, str) or not x.strip() for x in labels):
        raise ValueError(f"{what} must be at least two non-blank strings, got {labels!r}")
    if len({x.strip() for x in labels}) != len(labels):
        raise ValueError(f"{what} must be distinct, got {labels!r}")
    return labels


class Judge(ABC):
    """Shared by the judges: templates, the two-order preference and expected-value scoring.

    Subclasses implement :meth:`label_probs`. See the module docstring for the equations.

    Args:
        rubric: the criteria (constitution) shown to the judge.
        labels: the two answer labels for pairwise comparison (first = "response A").
        template: pairwise prompt (see :data:`PAIRWISE_TEMPLATE` for the placeholders); it should end
            where the label is expected.
        score_labels: rating labels for :meth:`score`, worst to best; None disables score mode.
        score_template: single-response prompt (see :data:`SCORE_TEMPLATE`).
        score_values: the value of each score label; default: the labels read as numbers when they all
            are, else 0..K-1.
    """

    def __init__(
        self,
        rubric: str = DEFAULT_RUBRIC,
        labels: Sequence[str] = ("A", "B"),
        template: str = PAIRWISE_TEMPLATE,
        score_labels: Sequence[str] | None = ("1", "2", "3", "4", "5"),
        score_template: str = SCORE_TEMPLATE,
        score_values: Sequence[float] | None = None,
    ):
        self.rubric = str(rubric)
        self.labels = _check_labels(labels, "labels", n=2)
        self.template = _check_template(template, _PAIRWISE_FIELDS, {"response_a", "response_b"}, "template")
        self.score_labels = None if score_labels is None else _check_labels(score_labels, "score_labels")
        self.score_template = _check_template(score_template, _SCORE_FIELDS, {"response"}, "score_template")
        if self.score_labels is None:
            self.score_values = None
        elif score_values is not None:
            if len(score_values) != len(self.score_labels):
                raise ValueError(f"score_values has {len(score_values)} entries for {len(self.score_labels)} labels")
            self.score_values = tuple(float(v) for v in score_values)
        else:
            try:
                self.score_values = tuple(float(x) for x in self.score_labels)
            except ValueError:
                self.score_values = tuple(float(k) for k in range(len(self.score_labels)))

    # -- prompts ---------------------------------------------------------------------------------
    def pairwise_prompt(self, prompt: str, response_a: str, response_b: str) -> str:
        """The judge prompt showing ``response_a`` as label A and ``response_b`` as label B."""
        return self.template.format(
            rubric=self.rubric, prompt=prompt, response_a=response_a, response_b=response_b,
            label_a=self.labels[0], label_b=self.labels[1],
        )

    def score_prompt(self, prompt: str, response: str) -> str:
        """The judge prompt asking for a rating of one response."""
        labels = self._require_score_labels()
        return self.score_template.format(
            rubric=self.rubric, prompt=prompt, response=response,
            labels=", ".join(labels), lowest=labels[0], highest=labels[-1],
        )

    def _require_score_labels(self) -> tuple[str, ...]:
        if self.score_labels is None:
            raise ValueError("this judge was built with score_labels=None; score mode is disabled")
        return self.score_labels

    # -- the one thing a backend provides --------------------------------------------------------
    @abstractmethod
    def label_probs(self, texts: list[str], labels: tuple[str, ...], where: list[str]) -> torch.Tensor:
        """``[M, K]`` float32 probabilities of the K labels as the judge's next answer to each of the M
        texts, renormalised over the labels (rows sum to 1). ``where[m]`` names text m in errors."""

    # -- the two rules ---------------------------------------------------------------------------
    def prefer(self, prompts: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str]) -> torch.Tensor:
        """P(response a is better than response b), asked in both orders and averaged. ``-> [N]`` float32.

        ``p = (p_AB + 1 - p_BA) / 2``; hence ``prefer(x, a, b) = 1 - prefer(x, b, a)``, whatever position
        bias the judge has. The 2N judge prompts are interleaved (row 2i: a first, row 2i+1: b first), so
        swapping a and b swaps rows within the same batch.
        """
        n = len(prompts)
        if len(responses_a) != n or len(responses_b) != n:
            raise ValueError(f"got {n} prompts, {len(responses_a)} responses_a and {len(responses_b)} responses_b")
        if n == 0:
            return torch.zeros(0, dtype=torch.float32)
        texts, where = [], []
        for i, (x, a, b) in enumerate(zip(prompts, responses_a, responses_b, strict=True)):
            texts += [self.pairwise_prompt(x, a, b), self.pairwise_prompt(x, b, a)]
            where += [f"prompt index {i} ({order} shown as {self.labels[0]})" for order in ("a", "b")]
        p = self.label_probs(texts, self.labels, where)[:, 0].double().view(n, 2)
        return (0.5 * (p[:, 0] + (1.0 - p[:, 1]))).float()

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """Expected rating ``sum_k v_k P(label_k)`` of each completion (d-RLAIF). ``-> list of N floats``."""
        labels = self._require_score_labels()
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        if not prompts:
            return []
        texts = [self.score_prompt(x, y) for x, y in zip(prompts, completions, strict=True)]
        probs = self.label_probs(texts, labels, [f"prompt index {i}" for i in range(len(texts))]).double()
        values = torch.tensor(self.score_values, dtype=torch.float64)
        return (probs @ values).tolist()

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
        """RewardFn in score mode: :meth:`score` (columns are ignored)."""
        return self.score(prompts, completions)

    def as_reward_fn(self, reference_column: str | None = None):
        """This judge as a RewardFn: score mode (``reference_column=None``, the judge itself), or pairwise:
        reward = :meth:`prefer` (prompt, completion, the reference response in ``reference_column``)."""
        if reference_column is None:
            self._require_score_labels()
            return self
        return PairwiseJudgeReward(self, reference_column)


@dataclass(frozen=True)
class PairwiseJudgeReward:
    """RewardFn: ``r_i = judge.prefer(prompt_i, completion_i, columns[reference_column][i])`` in [0, 1]."""

    judge: Judge
    reference_column: str

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
        if self.reference_column not in columns:
            raise ValueError(
                f"the pairwise judge reward needs the column {self.reference_column!r}; "
                f"the batch has columns {sorted(columns)}"
            )
        return self.judge.prefer(prompts, completions, list(columns[self.reference_column])).tolist()


class LocalLMJudge(Judge):
    """A causal LM in memory as the judge (any ``transformers`` causal LM and its tokenizer).

    Each label must be a single token of ``tokenizer``. When the template ends without whitespace (the
    default ends with ``"Preferred response:"``) the space-prefixed variant (``" A"``) is tried first,
    then the bare label; otherwise the other way round. A label that is neither is an error at
    construction. The model runs in eval mode (its previous mode is restored afterwards) under
    ``torch.no_grad``; prompts are left-padded here, whatever ``tokenizer.padding_side`` says (the
    tokenizer is not modified), with position ids counting real tokens only.

    Args:
        model: causal LM returning ``.logits`` ``[B, T, V]``; called with ``input_ids``,
            ``attention_mask``, ``position_ids`` (and ``logits_to_keep=1`` when it accepts it).
        tokenizer: its tokenizer (``encode``, ``convert_ids_to_tokens``, pad/eos/unk ids).
        batch_size: judge prompts per forward pass.
        add_special_tokens: passed to ``tokenizer.encode`` for the judge prompts (BOS for Llama).
        rubric, labels, template, score_labels, score_template, score_values: see :class:`Judge`.
    """

    def __init__(
        self,
        model,
        tokenizer,
        rubric: str = DEFAULT_RUBRIC,
        labels: Sequence[str] = ("A", "B"),
        template: str = PAIRWISE_TEMPLATE,
        *,
        score_labels: Sequence[str] | None = ("1", "2", "3", "4", "5"),
        score_template: str = SCORE_TEMPLATE,
        score_values: Sequence[float] | None = None,
        batch_size: int = 8,
        add_special_tokens: bool = True,
    ):
        super().__init__(rubric, labels, template, score_labels, score_template, score_values)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.add_special_tokens = batch_size, add_special_tokens
        self._token_ids: dict[tuple[str, ...], list[int]] = {
            self.labels: self._label_token_ids(self.labels, self.template, "labels")
        }
        if self.score_labels is not None:
            self._token_ids[self.score_labels] = self._label_token_ids(
                self.score_labels, self.score_template, "score_labels (pass score_labels=None to disable score mode)"
            )
        try:
            params = inspect.signature(model.forward).parameters
            self._keep_last = "logits_to_keep" in params
        except (TypeError, ValueError, AttributeError):
            self._keep_last = False

    def _label_token_ids(self, labels: tuple[str, ...], template: str, what: str) -> list[int]:
        tok = self.tokenizer
        spaced_first = not template[-1:].isspace()
        ids = []
        for label in labels:
            tried = []
            for variant in ([" " + label, label] if spaced_first else [label, " " + label]):
                enc = tok.encode(variant, add_special_tokens=False)
                if len(enc) == 1 and (tok.unk_token_id is None or enc[0] != tok.unk_token_id):
                    ids.append(enc[0])
                    break
                tried.append(f"{variant!r} -> {tok.convert_ids_to_tokens(enc)}")
            else:
                raise ValueError(
                    f"judge {what}: label {label!r} is not a single known token of this tokenizer "
                    f"({'; '.join(tried)}); choose labels that are single tokens"
                )
        if len(set(ids)) != len(ids):
            raise ValueError(f"judge {what}: labels {labels!r} map to the same token ids {ids}")
        return ids

    def label_probs(self, texts: list[str], labels: tuple[str, ...], where: list[str]) -> torch.Tensor:
        from alignkit.generation.base import left_pad

        label_ids = self._token_ids[labels]
        tok = self.tokenizer
        pad_id = next((t for t in (tok.pad_token_id, tok.eos_token_id) if t is not None), 0)
        encoded = [tok.encode(t, add_special_tokens=self.add_special_tokens) for t in texts]
        param = next(self.model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        kwargs = {"logits_to_keep": 1} if self._keep_last else {}
        index = torch.tensor(label_ids, device=device)
        out = []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(encoded), self.batch_size):
                    ids, mask = left_pad(encoded[start : start + self.batch_size], pad_id, device=device)
                    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
                    logits = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids, **kwargs).logits
                    # left padding: the last column is every row's last real token. [B, V] -> [B, K]
                    out.append(torch.softmax(logits[:, -1, :].index_select(-1, index).float(), dim=-1).cpu())
        finally:
            self.model.train(was_training)
        return torch.cat(out)


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
