"""Answer bodies in the two dialects: llama.cpp (`/infill`) and OpenAI (`/v1/completions`), plus SSE framing.

JSON is written compactly (`"content":"..."`): llama.vim checks a raw answer with the pattern
`"content"\\s*:"` before decoding it, so `"content": "..."` (a space after the colon) would be dropped.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Optional

from coda_lsp.http.schemas import HoleSpec
from coda_lsp.http.worker import Candidate, Progress


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def sse(data: Any, event: Optional[str] = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data if isinstance(data, str) else dumps(data)}\n\n"


def error_body(status: int, message: str) -> dict:
    kind = {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error",
            503: "unavailable_error"}.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"code": status, "message": message, "type": kind}}


def denoise_events(progress: Progress) -> list[str]:
    """The `stream_denoise` extension: one `event: denoise` per candidate and step."""
    return [sse({"index": i, "text": c.partial, "step": progress.step, "steps": progress.steps,
                 "masked_count": c.masked_count, "done": c.final is not None,
                 "settled": [[t, p] for t, p in c.settled_pieces]}, "denoise")
            for i, c in enumerate(progress.candidates)]


def deltas(progress: Progress, sent: list[str]) -> list[tuple[int, str]]:
    """(candidate, new settled text) since what was sent; `sent` is updated."""
    out = []
    for i, c in enumerate(progress.candidates):
        if c.settled.startswith(sent[i]) and len(c.settled) > len(sent[i]):
            out.append((i, c.settled[len(sent[i]):]))
            sent[i] = c.settled
    return out


def gate_outcome(spec: HoleSpec, c: Candidate) -> str:
    """Extension field: "off", "shown" (passed whole), "cut" (ends before an unsure token) or "hidden"
    (empty content: the first line was too unsure)."""
    return "off" if spec.gate.off else (c.gated or "shown")


def _text(c: Candidate) -> str:
    return c.final.text if c.final is not None else c.settled


# ------------------------------------------------------------------------------------------- llama.cpp
def _pick_fields(body: dict, fields: Optional[tuple[str, ...]]) -> dict:
    """llama.cpp's response_fields: keep the listed paths; "a/b" is moved to the top level as "a/b"."""
    if fields is None:
        return body
    out = {}
    for path in fields:
        node: Any = body
        for part in path.split("/"):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            out[path] = node
    return out


class LlamaDialect:
    """`/infill` answers as llama-server's `/completion` family writes them."""

    def __init__(self, model: str) -> None:
        self.model = model

    def result(self, spec: HoleSpec, p: Progress, index: int) -> dict:
        """No `tokens_cached`: llama-server's count of tokens kept in a slot's KV cache has no counterpart
        (every request decodes from its own text), and a client must never read a made-up figure."""
        c, t = p.candidates[index], p.timings
        assert t is not None and c.final is not None
        n, pred_ms = c.num_tokens, max(t.predicted_ms, 1e-3)
        timings = {"prompt_n": t.prompt_n, "prompt_ms": t.prompt_ms,
                   "prompt_per_token_ms": t.prompt_ms / max(1, t.prompt_n),
                   "prompt_per_second": 1e3 * t.prompt_n / max(t.prompt_ms, 1e-3),
                   "predicted_n": n, "predicted_ms": t.predicted_ms,
                   "predicted_per_token_ms": t.predicted_ms / max(1, n), "predicted_per_second": 1e3 * n / pred_ms,
                   "cache_n": 0, "queue_ms": t.queue_ms, "steps": t.steps}
        body = {"index": index, "content": c.final.text, "tokens": [], "id_slot": 0, "stop": True,
                "model": self.model, "tokens_predicted": n, "tokens_evaluated": t.prompt_n,
                "has_new_line": "\n" in c.final.text,
                # extension (llama.cpp / OpenAI clients ignore it): each token's confidence, for the gate
                "confidences": [[t, p] for t, p in c.pieces],
                "gate": gate_outcome(spec, c), "truncated": t.truncated, "stop_type": c.final.stop_type,
                "stopping_word": c.final.stopping_word, "prompt": "",
                "generation_settings": {"n_predict": spec.length, "temperature": spec.decode.temperature,
                                        "top_k": spec.decode.top_k or 0, "top_p": spec.decode.top_p or 1.0,
                                        "steps": spec.decode.steps, "n_indent": spec.n_indent,
                                        "stop": list(spec.stop), "model": self.model},
                "timings": timings}
        return _pick_fields(body, spec.response_fields)

    def final(self, spec: HoleSpec, p: Progress) -> Any:
        results = [self.result(spec, p, i) for i in range(len(p.candidates))]
        return results[0] if len(results) == 1 else results

    def chunks(self, spec: HoleSpec, p: Progress, sent: list[str]) -> list[str]:
        out = [sse({"index": i, "content": d, "tokens": [], "stop": False}) for i, d in deltas(p, sent)]
        if p.finished:
            out += [sse({**self.result(spec, p, i), "content": _text(c)[len(sent[i]):]})
                    for i, c in enumerate(p.candidates)]
        return out


# ------------------------------------------------------------------------------------------- OpenAI
class OpenAIDialect:
    """`/v1/completions` answers in the OpenAI text_completion shape."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = f"cmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def _head(self) -> dict:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model}

    @staticmethod
    def _reason(c: Candidate) -> str:
        return "length" if c.final is not None and c.final.stop_type == "limit" else "stop"

    def _chunk(self, index: int, text: str, reason: Optional[str]) -> str:
        """A stream chunk; the text is also in `delta.content`, where FIM clients of `fim/completions` read it."""
        return sse({**self._head(), "choices": [{"text": text, "delta": {"content": text}, "index": index,
                                                 "logprobs": None, "finish_reason": reason}]})

    def final(self, spec: HoleSpec, p: Progress) -> dict:
        assert p.timings is not None
        choices = [{"text": _text(c), "index": i, "logprobs": None, "finish_reason": self._reason(c),
                    "gate": gate_outcome(spec, c)} for i, c in enumerate(p.candidates)]
        done = sum(c.num_tokens for c in p.candidates)
        return {**self._head(), "choices": choices,
                "usage": {"prompt_tokens": p.timings.prompt_n, "completion_tokens": done,
                          "total_tokens": p.timings.prompt_n + done}}

    def chunks(self, spec: HoleSpec, p: Progress, sent: list[str]) -> list[str]:
        out = [self._chunk(i, d, None) for i, d in deltas(p, sent)]
        if p.finished:
            out += [self._chunk(i, _text(c)[len(sent[i]):], self._reason(c)) for i, c in enumerate(p.candidates)]
            out.append(sse("[DONE]"))
        return out
