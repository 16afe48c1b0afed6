"""The HTTP guards (``hub.adapters.http_guard``) on a small app of their own: bodies over the limit are
refused 413 before the application parses them (on Content-Length, streamed, or with a false
Content-Length), each edge answers its own 413 shape, and every answer, a 500 included, is uncacheable
and names no server software."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from fastapi import Request, Response
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from hub.adapters.http_guard import BodyLimit, GuardedFastAPI, declared_length
from hub.adapters.problem_json import PROBLEM_JSON, install_problem_handlers

LIMIT = 4096


def _edge_too_large(limit: int) -> Response:
    return Response(orjson.dumps({"edge": "other", "limit": limit}), status_code=413, media_type="application/json")


class Seen:
    """What the application saw: how many requests reached the route, and whether the client vanished."""

    def __init__(self) -> None:
        self.calls = 0
        self.disconnected = 0


def guarded_app(seen: Seen) -> GuardedFastAPI:
    app = GuardedFastAPI(max_body_bytes=LIMIT, too_large_answers=[("/other", _edge_too_large)])
    install_problem_handlers(app)

    async def read(request: Request) -> Response:
        seen.calls += 1
        try:
            body = await request.body()
        except ClientDisconnect:
            seen.disconnected += 1
            return Response(b"the app's own answer", status_code=400)
        return Response(orjson.dumps({"size": len(body)}), media_type="application/json")

    async def boom() -> Response:
        raise RuntimeError("a bug")

    async def loud() -> Response:
        return Response(b"{}", headers={"Server": "uvicorn", "Cache-Control": "public, max-age=3600",
                                        "X-Powered-By": "FastAPI"})

    app.add_api_route("/read", read, methods=["POST"])
    app.add_api_route("/other/read", read, methods=["POST"])
    app.add_api_route("/boom", boom, methods=["GET"])
    app.add_api_route("/loud", loud, methods=["GET"])
    return app


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
async def http(seen: Seen) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=guarded_app(seen), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        yield client


async def chunks(total: int, size: int = 1000) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        sent += piece
        yield b"x" * piece


def assert_problem_413(answer: httpx.Response) -> None:
    assert 413 == answer.status_code, answer.text
    assert PROBLEM_JSON == answer.headers["content-type"]
    assert {"type": "about:blank", "title": "Content Too Large", "status": 413,
            "detail": f"the body is larger than the limit of {LIMIT} bytes"} == answer.json()


async def test_a_declared_length_over_the_limit_is_refused_before_the_application_runs(
    http: httpx.AsyncClient, seen: Seen
) -> None:
    answer = await http.post("/read", content=b"x" * (LIMIT + 1))
    assert_problem_413(answer)
    assert 0 == seen.calls


async def test_a_body_of_exactly_the_limit_reaches_the_application(http: httpx.AsyncClient, seen: Seen) -> None:
    answer = await http.post("/read", content=b"x" * LIMIT)
    assert (200, {"size": LIMIT}) == (answer.status_code, answer.json())
    streamed = await http.post("/read", content=chunks(LIMIT))
    assert (200, {"size": LIMIT}) == (streamed.status_code, streamed.json())
    assert 2 == seen.calls


async def test_a_chunked_body_is_counted_while_streaming_and_the_applications_own_answer_is_dropped(
    http: httpx.AsyncClient, seen: Seen
) -> None:
    answer = await http.post("/read", content=chunks(LIMIT * 10))
    assert "content-length" not in answer.request.headers
    assert_problem_413(answer)
    assert (1, 1) == (seen.calls, seen.disconnected)


async def test_a_false_content_length_does_not_let_more_bytes_through(http: httpx.AsyncClient, seen: Seen) -> None:
    answer = await http.post("/read", content=b"x" * (LIMIT * 3), headers={"Content-Length": "10"})
    assert_problem_413(answer)
    assert 1 == seen.disconnected


async def test_each_edge_answers_its_own_413_shape(http: httpx.AsyncClient) -> None:
    declared = await http.post("/other/read", content=b"x" * (LIMIT + 1))
    streamed = await http.post("/other/read", content=chunks(LIMIT + 1))
    assert [(413, {"edge": "other", "limit": LIMIT})] * 2 == [
        (declared.status_code, declared.json()), (streamed.status_code, streamed.json())
    ]
    assert_problem_413(await http.post("/otherwise", content=b"x" * (LIMIT + 1)))


async def test_an_application_error_after_the_refusal_is_not_raised_to_the_server() -> None:
    """The route raises once the client is gone (as a reader that does not catch ClientDisconnect would):
    the client has its 413 and the guard does not re-raise (raise_app_exceptions would surface it)."""

    async def failing(request: Request) -> Response:
        await request.body()
        raise AssertionError("unreachable: the body never completes")

    app = GuardedFastAPI(max_body_bytes=LIMIT)
    app.add_api_route("/read", failing, methods=["POST"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub.test") as client:
        answer = await client.post("/read", content=chunks(LIMIT * 2))
    assert_problem_413(answer)


async def test_every_answer_is_no_store_even_a_500_and_a_404(http: httpx.AsyncClient) -> None:
    answers = [
        await http.get("/boom"), await http.get("/nowhere"), await http.post("/read", content=b"{}"),
        await http.post("/read", content=b"x" * (LIMIT + 1)), await http.get("/loud"),
    ]
    assert [500, 404, 200, 413, 200] == [a.status_code for a in answers]
    for answer in answers:
        assert ("no-store", "no-cache") == (answer.headers["cache-control"], answer.headers["pragma"])
        assert "server" not in answer.headers
        assert "x-powered-by" not in answer.headers
    assert PROBLEM_JSON == answers[0].headers["content-type"]
    assert "a bug" not in answers[0].text


@pytest.mark.parametrize(
    ("headers", "expected"),
    [([], 0), ([(b"content-length", b"12")], 12), ([(b"Content-Length", b" 7 ")], 7),
     ([(b"content-length", "²".encode())], 0), ([(b"content-length", b"-5")], 0),
     ([(b"content-length", b"3"), (b"content-length", b"9000")], 9000)],
)
def test_the_declared_length_is_a_plain_byte_count_or_nothing(
    headers: list[tuple[bytes, bytes]], expected: int
) -> None:
    assert expected == declared_length({"type": "http", "headers": headers})


async def test_websockets_and_lifespan_pass_through_untouched() -> None:
    reached: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(str(scope["type"]))

    guard = BodyLimit(inner, max_body_bytes=1)
    for kind in ("lifespan", "websocket"):
        await guard({"type": kind, "headers": [(b"content-length", b"99")]}, _no_receive, _no_send)
    assert ["lifespan", "websocket"] == reached


async def _no_receive() -> Message:
    raise AssertionError("not called")


async def _no_send(message: Message) -> None:
    raise AssertionError("not called")
