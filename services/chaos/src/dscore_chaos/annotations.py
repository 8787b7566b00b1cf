"""Optional: each injected fault posted to Grafana's HTTP annotation API (`POST /api/annotations`, a
service account token with `annotations:write`). The dashboards show faults without it, from
`dscore_chaos_faults_injected_total`; this adds the exact time, the target and what was done.

Posting never holds an injection up: each post is a task of its own, at most `MAX_PENDING` at once
(beyond, and on any failure, it is counted in `dscore_chaos_annotations_failed_total` and dropped).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx

log = logging.getLogger("dscore_chaos.annotations")

MAX_PENDING = 16
TAGS = ("dscore", "chaos")


class GrafanaAnnotator:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        dashboard_uid: str | None,
        timeout_s: float,
        on_failure: Callable[[], None],
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._endpoint = url.rstrip("/") + "/api/annotations"
        self._headers = {"Authorization": f"Bearer {token}"}
        self._dashboard_uid = dashboard_uid
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._on_failure = on_failure
        self._pending: set[asyncio.Task[None]] = set()

    def annotate(self, at_s: float, kind: str, text: str) -> None:
        """Post one annotation in the background."""
        if len(self._pending) >= MAX_PENDING:
            self._on_failure()
            log.warning("grafana annotation dropped: %d posts pending", len(self._pending))
            return
        body: dict[str, object] = {"time": int(at_s * 1000), "tags": [*TAGS, kind], "text": text}
        if self._dashboard_uid is not None:
            body["dashboardUID"] = self._dashboard_uid
        task = asyncio.get_running_loop().create_task(self._post(body))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _post(self, body: dict[str, object]) -> None:
        try:
            response = await self._client.post(self._endpoint, json=body, headers=self._headers)
            if response.status_code != 200:
                raise httpx.HTTPStatusError(
                    f"status {response.status_code}", request=response.request, response=response
                )
        except httpx.HTTPError as error:
            self._on_failure()
            log.warning("grafana annotation not posted: %r", error)

    async def drain(self) -> None:
        """Wait for the posts in flight (tests, shutdown)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        await self._client.aclose()
