"""The language server's remote engine: a `coda-lsp serve` elsewhere does the denoising.

`RemoteJob` has the interface of the local `InfillJob` (blocking `step() -> (partial text, step, steps,
masked count, done)`, `.done`, `.num_steps`, `.texts()`, `.model_s`), so the scheduler, cancellation,
partial-completion streaming and post-processing stay local and cannot tell the two apart. It sends the
context text (the server tokenizes and trims to the same budget) and the job's exact `DecodeConfig`, and
reads the `stream_denoise` SSE stream: one `step()` = one denoise event.

A remote that is down, slow or answers garbage raises `RemoteUnavailable` with one line saying which;
the next request simply connects again (httpx pools and re-opens connections).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Optional

import httpx


class RemoteUnavailable(ConnectionError):
    """The remote engine could not answer; the message is one line for the status bar."""


@dataclass
class RemoteEngine:
    url: str                               # http://HOST:PORT of a `coda-lsp serve`
    api_key: Optional[str] = None          # sent as a Bearer key (from CODA_API_KEY or --api-key)
    connect_s: float = 3.0                 # a remote that does not accept the connection in this time is down
    read_s: float = 30.0                   # ... and one silent for this long between events is too slow
    _client: Optional[httpx.Client] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"engine URL must start with http:// or https://, got {self.url!r}")

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            logging.getLogger("httpx").setLevel(logging.WARNING)   # not a line per request in the server's log
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(self.read_s, connect=self.connect_s))
        return self._client

    def describe(self, exc: Exception) -> str:
        """One line for any failure talking to the remote."""
        if isinstance(exc, RemoteUnavailable):
            return str(exc)
        if isinstance(exc, httpx.ConnectError):
            return f"remote engine {self.url} is not reachable ({exc.__class__.__name__})"
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):   # a reset is the same as a close
            return f"remote engine {self.url} closed the connection mid-answer"
        if isinstance(exc, httpx.TimeoutException):
            return f"remote engine {self.url} did not answer within {self.read_s:g}s"
        if isinstance(exc, httpx.HTTPError):
            return f"remote engine {self.url} failed: {exc.__class__.__name__}: {exc}"[:300]
        return f"remote engine {self.url} answered garbage: {exc.__class__.__name__}: {exc}"[:300]

    def health(self) -> str:
        """'ok' / 'loading' / 'error' as the remote says; RemoteUnavailable when it cannot be asked."""
        try:
            return str(self.client.get(f"{self.url}/health").json().get("status", "error"))
        except Exception as exc:
            raise RemoteUnavailable(self.describe(exc)) from None

    def open(self, request: Any) -> "RemoteJob":
        """The job for one `InferRequest` (pipeline.infer calls this for a remote engine)."""
        return RemoteJob(self, request)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event name, data) from SSE lines; unnamed events are 'message'."""
    name, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
    if data:
        yield name, "\n".join(data)


class RemoteJob:
    """One hole on a remote engine, read one denoise step per `step()` call (blocking)."""

    def __init__(self, remote: RemoteEngine, request: Any) -> None:
        """`request`: a `coda_lsp.pipeline.InferRequest` (text, hole length, candidates, decode, budget)."""
        self.remote, self.request, self.num_candidates = remote, request, request.num_candidates
        self.body = {"input_extra": [{"filename": "", "text": request.extra}] if request.extra else [],
                     "input_prefix": request.prefix, "input_suffix": request.suffix, "n_predict": request.length,
                     "n_cmpl": request.num_candidates, "stream_denoise": True,
                     "context_tokens": request.context_tokens, "decode": asdict(request.decode),
                     "min_confidence": 0, "min_shown_confidence": 0}   # the raw text: the gate runs here
        self.done = False
        self.num_steps = 0
        self.model_s = 0.0            # time waiting for the remote's steps
        self.prepare_s = self.prepare_cpu_s = 0.0
        self._response: Optional[httpx.Response] = None
        self._events: Optional[Iterator[tuple[str, str]]] = None
        self._content = [""] * self.num_candidates
        self._pieces: list[Optional[list]] = [None] * self.num_candidates   # the final event's confidences
        self._finished: set[int] = set()
        self._partial = ("", 0, 0, 0)
        self._settled: list = []      # candidate 0's settled run as [text, confidence] pieces (last step)

    def step(self) -> tuple[str, int, int, int, bool]:
        """(partial text, step, steps, masked count, done) after the remote's next denoise step."""
        t0 = time.perf_counter()
        try:
            return self._step()
        except Exception as exc:
            self.close()
            raise RemoteUnavailable(self.remote.describe(exc)) from None
        finally:
            self.model_s += time.perf_counter() - t0

    def _step(self) -> tuple[str, int, int, int, bool]:
        if self._events is None:
            self._open()
        assert self._events is not None
        for name, data in self._events:
            if name == "error":
                raise RemoteUnavailable(f"remote engine {self.remote.url}: {json.loads(data)['error']['message']}")
            event = json.loads(data)
            if name == "denoise":
                if event["index"] == 0:
                    self.num_steps += 1
                    self._partial = (event["text"], int(event["step"]), int(event["steps"]), int(event["masked_count"]))
                    self._settled = event.get("settled") if isinstance(event.get("settled"), list) else []
                    if not event["done"]:   # a finished step is returned with the final text, as InfillJob does
                        return (*self._partial, False)
                continue
            i = int(event["index"])
            self._content[i] += event["content"]
            if event["stop"]:
                self._finished.add(i)
                if isinstance(event.get("confidences"), list):
                    self._pieces[i] = event["confidences"]
            if len(self._finished) == self.num_candidates:
                self.done = True
                self.close()
                return self._content[0], self.num_steps, max(self.num_steps, self._partial[2]), 0, True
        raise RemoteUnavailable(f"remote engine {self.remote.url} closed the stream before the answer")

    def _open(self) -> None:
        client = self.remote.client
        request = client.build_request("POST", f"{self.remote.url}/infill", json=self.body)
        response = client.send(request, stream=True)
        if response.status_code != 200:
            response.read()
            try:
                message = response.json()["error"]["message"]
            except Exception:
                message = response.text[:200]
            response.close()
            raise RemoteUnavailable(f"remote engine {self.remote.url}: HTTP {response.status_code}: {message}")
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            response.close()
            raise RemoteUnavailable(f"remote engine {self.remote.url} answered garbage: not an event stream")
        self._response = response
        self._events = sse_events(response.iter_lines())

    def texts(self) -> list[str]:
        return list(self._content) if self.done else []

    def candidates(self) -> list:
        """The texts as token pieces with their confidences (the stream's `confidences` extension), so the
        confidence gate acts as on a local engine; a server that sends none gives candidates the gate
        leaves as they are."""
        from coda_lsp.gate import Candidate
        out = []
        for text, pieces in zip(self.texts(), self._pieces):
            ok = pieces is not None and "".join(str(p[0]) for p in pieces) == text
            out.append(Candidate.of(pieces) if ok else Candidate.sure(text))
        return out

    def prefix(self, gate: Any) -> str:
        """Candidate 0's settled text (before its first still-masked token) cut by the gate's
        minConfidence, from the denoise event's `settled` pieces: what Tab accepts while it streams."""
        from coda_lsp.gate import Candidate, cut
        try:
            return cut(Candidate.of(self._settled), gate.min_confidence)[0]
        except (TypeError, ValueError):   # a server that sends something else: nothing to accept
            return ""

    def close(self) -> None:
        """Stop reading (a superseded job): the server drops the request at its next step."""
        if self._response is not None:
            self._response.close()
            self._response = None
