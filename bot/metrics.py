"""The /metrics endpoint of every channel's server: Prometheus text, for a bearer token or,
without one, for clients on this machine only."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the server is imported only when one is served
    from starlette.requests import Request
    from starlette.responses import Response

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def label_value(v: str) -> str:
    """A Prometheus label value: backslash, quote and new line escaped (ids are user input)."""
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def spend_lines(budgets: Any) -> list[str]:
    """This month's spending per user (the budgets' counters), largest first."""
    lines = ["# TYPE batchjob_bot_spend_month gauge"]
    for user, spent in (await budgets.spent_this_month()).items():
        lines.append(f'batchjob_bot_spend_month{{user="{label_value(user)}"}} {spent}')
    return lines


def endpoint(
    render: Callable[[], Awaitable[str]], token: str | None
) -> Callable[[Request], Awaitable[Response]]:
    from starlette.responses import PlainTextResponse

    secret = token.encode() if token else b""

    async def metrics(request: Request) -> Response:
        if secret:
            got = request.headers.get("authorization", "").removeprefix("Bearer ").encode()
            if not hmac.compare_digest(got, secret):
                return PlainTextResponse("unauthorized", status_code=401)
        elif not request.client or request.client.host not in LOOPBACK:
            return PlainTextResponse("forbidden: set BOT_METRICS_TOKEN", status_code=403)
        return PlainTextResponse(await render(), media_type="text/plain; version=0.0.4")

    return metrics
