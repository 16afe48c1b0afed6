"""ASGI guards around the whole HTTP application: bounded request bodies and answers no cache keeps.

* :class:`BodyLimit`: a request body over ``max_body_bytes`` is answered 413 before the application
  parses it. A Content-Length over the limit is refused before a byte is read; a body without one
  (chunked) or with a false one is counted as it arrives and refused as soon as the count passes the
  limit: the application then sees the client as gone, and whatever it answers or raises afterwards is
  dropped. The 413's body depends on the path: each edge names its own (the FHIR API an
  OperationOutcome, the CDS Hooks service LEAP's error), every other path gets problem+json.
* :class:`NoStore`: every answer (errors included) carries ``Cache-Control: no-store`` and
  ``Pragma: no-cache``: answers carry PHI and the hub serves nothing a cache should keep. It also drops a
  ``Server`` header an application might set (uvicorn's own is switched off in ``hub.app``).
* :class:`GuardedFastAPI`: a FastAPI application whose whole middleware stack, Starlette's
  ``ServerErrorMiddleware`` included, runs inside both guards, so a 500 is uncacheable too and a body
  limit holds for every route, including routes added later.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from fastapi import FastAPI
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.adapters.problem_json import too_large

#: The 413 answer for a limit of so many bytes.
TooLarge = Callable[[int], Response]

_DISCONNECT: Final[Message] = {"type": "http.disconnect"}
_NO_STORE: Final = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
_DROPPED: Final = frozenset({b"cache-control", b"pragma", b"server", b"x-powered-by"})


class BodyLimit:
    """Refuse request bodies over ``max_body_bytes`` with a 413 chosen by path prefix (``answers``; the
    first matching prefix wins, ``default`` otherwise)."""

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, answers: Sequence[tuple[str, TooLarge]] = (),
        default: TooLarge = too_large,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.answers = tuple(answers)
        self.default = default

    def answer_for(self, path: str) -> TooLarge:
        """The 413 answer of the edge that serves ``path``."""
        for prefix, answer in self.answers:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return answer
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        answer = self.answer_for(str(scope.get("path", "")))
        if declared_length(scope) > limit:
            await answer(limit)(scope, receive, send)
            return
        received = 0
        overflowed = refused = started = False

        async def counted_receive() -> Message:
            nonlocal received, overflowed, refused
            if overflowed:
                return _DISCONNECT
            message = await receive()
            if message["type"] != "http.request":
                return message
            received += len(message.get("body", b""))
            if received <= limit:
                return message
            overflowed = True
            if not started:
                refused = True
                await answer(limit)(scope, receive, send)
            return _DISCONNECT

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the client has its 413; what the app answers to a vanished client goes nowhere
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not refused:
                raise
            # the application failed reading the body it was refused: the client already has its 413


class NoStore:
    """Mark every HTTP answer uncacheable and anonymous (no ``Server`` or ``X-Powered-By`` header)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(name, value) for name, value in message.get("headers", ()) if name.lower() not in _DROPPED]
                message = {**message, "headers": [*headers, *_NO_STORE]}
            await send(message)

        await self.app(scope, receive, send_no_store)


class GuardedFastAPI(FastAPI):
    """FastAPI inside :class:`NoStore` and :class:`BodyLimit` (outermost first), around its whole stack."""

    def __init__(
        self, *, max_body_bytes: int, too_large_answers: Sequence[tuple[str, TooLarge]] = (), **options: Any
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.too_large_answers = tuple(too_large_answers)
        super().__init__(**options)

    def build_middleware_stack(self) -> ASGIApp:
        inner = super().build_middleware_stack()
        return NoStore(BodyLimit(inner, max_body_bytes=self.max_body_bytes, answers=self.too_large_answers))


def declared_length(scope: Scope) -> int:
    """The request's Content-Length (the largest if several); 0 when absent or not a byte count (the
    server refuses those, and the count while reading still holds)."""
    declared = 0
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length" and value.strip().isdigit():
            declared = max(declared, int(value.strip()))
    return declared
