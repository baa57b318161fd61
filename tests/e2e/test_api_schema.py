"""Schemathesis against the app's own OpenAPI schema: no 500s, every answer as documented.

The real app (under uvicorn, in a thread of the test process) on the real Postgres and Redis of the ``services``
fixture. Cases per operation are bounded (``EXAMPLES``); the total is printed at the end
of the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from conftest import API_KEY, FUZZ_COUNTS
from wanotify.web.app import create_app

EXAMPLES = 40

# The schema document needs no database; the app that answers is made once the test
# services are up (``live_app``).
SCHEMA = schemathesis.openapi.from_dict(create_app().openapi())


LIVE: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def live_server(services: dict[str, str]) -> Iterator[str]:
    """The real app under a real uvicorn, in a thread of this process."""
    import uvicorn

    from wanotify.devtools.procs import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    LIVE["url"] = f"http://127.0.0.1:{port}"
    try:
        yield LIVE["url"]
    finally:
        server.should_exit = True
        thread.join(10)


@SCHEMA.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_answers_as_documented(case: Any) -> None:
    # positive_data_acceptance is off: a schema-valid job body can still name an unknown
    # template or an impossible phone number, which the app rightly answers with 422.
    # Unknown query parameters are ignored (as by most HTTP APIs), so for GETs the
    # negative-data check, whose only lever there is extra query parameters, is off too.
    excluded = [positive_data_acceptance]
    if case.method == "GET":
        excluded.append(negative_data_rejection)
    case.call_and_validate(base_url=LIVE["url"], headers={"Authorization": f"Bearer {API_KEY}"},
                           excluded_checks=excluded)
    FUZZ_COUNTS["schemathesis"] = FUZZ_COUNTS.get("schemathesis", 0) + 1
