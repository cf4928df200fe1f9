"""Property-based run of the OpenAPI schema (schemathesis): no input produces a 5xx, every answer conforms.

Every operation of the published schema is called with inputs schemathesis
generates from it, valid ones and invalid ones, under an admin token so every
route runs past auth. (schemathesis' pytest plugin does not run under pytest 9
yet, so this drives its Hypothesis strategies directly.) The stream is left
out: it never ends by design, and its filters are tested in
test_dispatch_and_stream. Examples are bounded per operation (``EXAMPLES``).
Generated writes name unknown sites and nodes (404) or are refused
(422); a valid one changes nothing the other tests of this package look at.
Every answer must conform to the schema: a documented status, the documented
content type (``application/problem+json`` for every 4xx/5xx, RFC 9457), a
body that fits its schema and the documented headers; and every operation
that declares the bearer scheme must refuse the same request without it
(``ignored_auth`` re-sends each case unauthenticated). Not checked:
``negative_data_rejection``, whose "invalid" cases here are valid requests
(a single string for a repeatable query parameter is a one-element list, and
the token this test adds to every call restores the header a case dropped).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import checks
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode

from tests.api.conftest import Api

pytestmark = pytest.mark.integration

#: Examples per operation and mode, as few as reach what more examples reach. Counted over the 44
#: operations as distinct (operation, status) pairs, two runs each (2026-12-01): valid cases reach
#: 58-59 pairs with 4-6 examples and 60-61 with 12 (what 12 adds is a 422 of a semantic refusal that
#: a run meets or not by chance), so 6; invalid cases reach 92 with 4, 98 with 6 and 110-115 with 12,
#: still growing, so 12 stays.
EXAMPLES = {GenerationMode.POSITIVE: 6, GenerationMode.NEGATIVE: 12}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_input_produces_a_server_error(api: Api, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    headers = {"Authorization": f"Bearer {api.tokens['admin']}"}
    server_errors: list[str] = []
    nonconforming: list[str] = []
    conformance = [checks.status_code_conformance, checks.content_type_conformance,
                   checks.response_schema_conformance, checks.response_headers_conformance,
                   checks.ignored_auth]
    operations = 0
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the published schema is invalid: {result.err()}"
        operation = result.ok()
        if operation.path == "/v1/stream":
            continue
        operations += 1

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES[mode], deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def call(case: Any) -> None:
            response = case.call(base_url=api.url, headers=headers, timeout=30)
            if response.status_code >= 500:
                server_errors.append(f"{case.method} {case.formatted_path} query={case.query} "
                                     f"body={case.body} -> {response.status_code} {response.text[:300]}")
            content_type = {k.lower(): v for k, v in response.headers.items()}.get("content-type", [""])[0]
            if response.status_code >= 400 and not content_type.startswith("application/problem+json"):
                nonconforming.append(f"{case.method} {case.formatted_path} -> {response.status_code} "
                                     f"{content_type}: not problem+json")
            try:
                case.validate_response(response, checks=conformance)
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis' failures (one or a group)
                nonconforming.append(f"{case.method} {case.formatted_path} query={case.query} -> "
                                     f"{response.status_code}: {str(exc)[:400]}")

        try:
            call()
        except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
            assert mode is GenerationMode.NEGATIVE, operation.path
    assert operations >= 20
    assert not server_errors, "\n".join(server_errors[:10])
    assert not nonconforming, "\n".join(sorted(set(nonconforming))[:15])
