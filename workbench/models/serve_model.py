"""An OpenAI-compatible endpoint for one loaded model (`workbench serve-model`): `GET /v1/models` and
`POST /v1/chat/completions` (plain or streamed as server-sent events in OpenAI's chunk format, with
token usage), so a team's own app, the `openai` client or a judge run can talk to a fine-tuned model.

It answers with trainers.chat.ChatModel, the generation code of evaluation: at temperature 0 (the
default here, unlike OpenAI's 1) an answer is the one `workbench eval` stores for the same prompt. One
model is loaded; requests are answered one at a time (a lock), others wait. Errors come back in OpenAI's
shape, `{"error": {"message", "type", "param", "code"}}`, with 400 for a bad request and 404 for a
model this server does not have. Standard library only (http.server), bound to 127.0.0.1 by default.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY_BYTES = 10_000_000
DEFAULT_MAX_TOKENS = 256


class RequestError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.param, self.code, self.kind = status, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


class ModelEndpoint:
    """The model and what the handler needs of it: its name, the lock, the request checks."""

    def __init__(self, model, name: str):
        self.model, self.name = model, name
        self.lock = threading.Lock()
        self.created = int(time.time())

    def listing(self) -> dict:
        return {"object": "list", "data": [self.card()]}

    def card(self) -> dict:
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "workbench"}

    def request(self, body: dict) -> dict:
        """The checked request: messages and generation settings (RequestError for anything else)."""
        from trainers.chat import check_messages
        from trainers.config import ConfigError

        if not isinstance(body, dict):
            raise RequestError(400, "the request body must be a JSON object")
        model = body.get("model")
        if model != self.name:
            raise RequestError(404, f"The model `{model}` does not exist; this server has `{self.name}` "
                                    "(see /v1/models)", param="model", code="model_not_found")
        try:
            messages = check_messages(body.get("messages"))
        except ConfigError as exc:
            raise RequestError(400, str(exc), param="messages") from None
        if body.get("n") not in (None, 1):
            raise RequestError(400, "n: only one choice per request is supported", param="n")
        if body.get("stop") not in (None, [], ""):
            raise RequestError(400, "stop sequences are not supported; generation stops at the model's end of "
                                    "turn or at max_tokens", param="stop")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens")) or DEFAULT_MAX_TOKENS
        temperature = body.get("temperature")
        top_p = body.get("top_p")
        settings = {"max_new_tokens": max_tokens, "temperature": 0.0 if temperature is None else temperature,
                    "top_p": 1.0 if top_p is None else top_p, "seed": body.get("seed")}
        for key, value in settings.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise RequestError(400, f"{key}: {value!r}; expected a number", param=key)
        if not isinstance(max_tokens, int) or not 1 <= max_tokens <= 8192:
            raise RequestError(400, f"max_tokens: {max_tokens!r}; expected a whole number from 1 to 8192",
                               param="max_tokens")
        options = body.get("stream_options") or {}
        return {"messages": messages, "settings": settings, "stream": bool(body.get("stream")),
                "include_usage": bool(isinstance(options, dict) and options.get("include_usage"))}

    def pieces(self, req: dict):
        """The answer's text pieces (streaming); self.model.last holds the totals after the last one."""
        from trainers.config import ConfigError

        try:
            yield from self.model.stream(req["messages"], **req["settings"])
        except ConfigError as exc:
            raise RequestError(400, str(exc)) from None

    def usage(self, req: dict) -> dict:
        prompt = len(self.model.encode(req["messages"]))
        done = int(self.model.last.get("new_tokens", 0))
        return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}

    def finish_reason(self, req: dict) -> str:
        return "length" if int(self.model.last.get("new_tokens", 0)) >= req["settings"]["max_new_tokens"] else "stop"


class _Handler(BaseHTTPRequestHandler):
    server_version = "workbench-serve-model"
    endpoint: ModelEndpoint  # set on the subclass made by make_server

    def log_message(self, format, *args):  # noqa: A002 (the base class's name); quiet: one line per request
        pass

    def _json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server's name)
        path = self.path.split("?")[0].rstrip("/")
        if path == "/v1/models":
            return self._json(200, self.endpoint.listing())
        if path.startswith("/v1/models/"):
            name = path[len("/v1/models/"):]
            if name == self.endpoint.name:
                return self._json(200, self.endpoint.card())
            return self._json(404, RequestError(404, f"The model `{name}` does not exist", param="model",
                                                code="model_not_found").body())
        return self._json(404, RequestError(404, f"no route {path}; try /v1/models or /v1/chat/completions",
                                            code="not_found").body())

    def do_POST(self):  # noqa: N802
        path = self.path.split("?")[0].rstrip("/")
        if path != "/v1/chat/completions":
            return self._json(404, RequestError(404, f"no route {path}; POST /v1/chat/completions",
                                                code="not_found").body())
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                raise RequestError(413, f"the request is {length:,} bytes; keep it under {MAX_BODY_BYTES:,}")
            try:
                body = json.loads(self.rfile.read(length).decode("utf-8") or "null")
            except (ValueError, UnicodeDecodeError):
                raise RequestError(400, "the request body is not valid JSON") from None
            req = self.endpoint.request(body)
            with self.endpoint.lock:
                if req["stream"]:
                    return self._stream(req)
                return self._complete(req)
        except RequestError as exc:
            return self._json(exc.status, exc.body())
        except (BrokenPipeError, ConnectionResetError):
            return None
        except Exception as exc:  # a failure of the model: say so in OpenAI's shape
            return self._json(500, RequestError(500, f"{type(exc).__name__}: {exc}", kind="server_error").body())

    def _complete(self, req: dict) -> None:
        text = "".join(self.endpoint.pieces(req))
        ep = self.endpoint
        self._json(200, {"id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion",
                         "created": int(time.time()), "model": ep.name,
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": ep.finish_reason(req), "logprobs": None}],
                         "usage": ep.usage(req)})

    def _stream(self, req: dict) -> None:
        ep = self.endpoint
        pieces = ep.pieces(req)
        first = next(pieces, None)  # a bad setting fails here, before the 200 goes out
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        base = {"id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": ep.name}

        def send(delta: dict, finish: str | None = None, **extra) -> None:
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                     **extra}
            self.wfile.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
            self.wfile.flush()

        try:
            send({"role": "assistant", "content": ""})
            if first is not None:
                send({"content": first})
                for piece in pieces:
                    send({"content": piece})
            send({}, ep.finish_reason(req))
            if req["include_usage"]:
                self.wfile.write(f"data: {json.dumps({**base, 'choices': [], 'usage': ep.usage(req)})}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        finally:
            pieces.close()  # a client that went away stops the generation
        self.close_connection = True


def make_server(model, *, name: str, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A server (not yet serving) for one loaded trainers.chat.ChatModel under `name`; port 0 picks a free one."""
    handler = type("ModelHandler", (_Handler,), {"endpoint": ModelEndpoint(model, name)})
    server = ThreadingHTTPServer((host, int(port)), handler)
    server.daemon_threads = True
    return server
