"""schemathesis against /api/openapi.json: no request the schema allows makes a 5xx, and
every response, errors included, is what the document says it is."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core.clock import utc_now
from core.staff import create_token
from server import create_app
from tests.conftest import make_settings
from tests.test_api import screen

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.fixture
def admin_headers(db):
    with db.sessions() as session, session.begin():
        token = create_token(session, "schemathesis", "admin", now=utc_now(), actor="test")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api_schema(db, broker, admin_headers):
    app = create_app(make_settings(broker, db.url, SECRET_KEY="k" * 40))
    for n, name in enumerate(["hall", "gym", "<b>lab</b>"], start=1):
        screen(db, n, name, process_status="crashed" if n == 2 else "running")
    spec = app.test_client().get("/api/openapi.json", headers=admin_headers).get_json()
    schema = schemathesis.openapi.from_dict(spec)
    schema.app = app
    return schema


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def test_every_response_is_as_documented_and_none_is_a_server_error(api_schema,
                                                                    admin_headers):
    # Driven by hand: schemathesis' pytest plugin does not load under pytest 9.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 7
    for operation in operations:

        @given(case=operation.as_strategy())
        # derandomize: CI explores the same cases every run; for a deeper, random search run
        # schemathesis against a dev stack (see README).
        @settings(max_examples=25, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def no_server_error(case):
            case.call_and_validate(headers=admin_headers, checks=CHECKS)

        no_server_error()
