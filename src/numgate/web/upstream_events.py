"""``POST /upstreams/{name}/events``: where vendors that answer later send their answers.

The URL the vendor calls is built from ``NUMGATE_PUBLIC_URL``, and a vendor's signature covers the
URL it called — so the signature is checked against that public URL (plus this request's path and
query), not the host this server happens to see behind a proxy. The body is read up to
``NUMGATE_MAX_BODY``; the answer is short and fast (vendors time webhooks out and retry): 200 when
the event was taken (or is of no interest any more), 403 for a bad signature or job token, 404 for
an unknown upstream, 503 when the job is not stored yet (the vendor retries)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from numgate.core import Core
from numgate.numbers.live import receive
from numgate.upstreams.base import Inbound


def upstream_event_routes(core: Callable[[], Core]) -> list[Route]:
    async def events(request: Request) -> Response:
        c = core()
        chunks, size = [], 0
        async for chunk in request.stream():  # never more than NUMGATE_MAX_BODY held
            size += len(chunk)
            if size > c.settings.max_body:
                return PlainTextResponse(
                    "request body too large", status_code=413, headers={"Connection": "close"}
                )
            chunks.append(chunk)
        body = b"".join(chunks)
        name = request.path_params["name"]
        base = (c.settings.public_url or f"{request.url.scheme}://{request.url.netloc}").rstrip("/")
        query = request.url.query
        url = f"{base}{request.url.path}" + (f"?{query}" if query else "")
        inbound = Inbound(
            url,
            {k.lower(): v for k, v in request.headers.items()},
            body,
            request.headers.get("content-type", "").lower(),
        )
        got = await receive(c, name, inbound, request.query_params.get("job"))
        return PlainTextResponse(got.message, status_code=got.status)

    return [Route("/upstreams/{name}/events", events, methods=["POST"])]
