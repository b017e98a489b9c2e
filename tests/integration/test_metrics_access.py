"""Who may read ``GET /metrics``: anyone on a loopback bind, nobody on a public bind without a
token (404 saying how to turn it on), and with ``NUMGATE_METRICS_TOKEN`` only a bearer of it."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families


def test_loopback_bind_serves_metrics(make_server: Any) -> None:
    srv = make_server()
    r = httpx.get(srv.base_url + "/metrics")
    assert r.status_code == 200
    names = {f.name for f in text_string_to_metric_families(r.text)}
    assert {"numgate_checks", "numgate_callbacks", "numgate_ledger_available"} <= names


def test_a_public_bind_without_a_token_serves_no_metrics(make_server: Any) -> None:
    srv = make_server(host="0.0.0.0")  # the setting; the test server itself listens on loopback
    r = httpx.get(srv.base_url + "/metrics")
    assert r.status_code == 404
    assert "NUMGATE_METRICS_TOKEN" in r.json()["message"]


def test_a_token_is_asked_for_when_set(make_server: Any) -> None:
    srv = make_server(host="0.0.0.0", metrics_token="s3cret-token")
    assert httpx.get(srv.base_url + "/metrics").status_code == 401
    wrong = httpx.get(srv.base_url + "/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
    ok = httpx.get(srv.base_url + "/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200 and "numgate_checks" in ok.text
