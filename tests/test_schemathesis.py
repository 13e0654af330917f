"""Property-based tests from the live server's OpenAPI document: whatever schemathesis sends — valid,
boundary or malformed — the API never answers with a 5xx.

The server runs with a token, so generated `/retrain` requests stop at the 401 check and no
training is started (keeping the run short); the token path itself is covered in test_api.py.
(schemathesis' `from_fixture` lazy mode breaks on pytest 9 — `Function._nodeid` — so the test
walks the operations itself and runs one hypothesis search per operation.)
"""
import pytest, schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from api_server import start_api

MAX_EXAMPLES = 30   # per operation


@pytest.fixture(scope='module')
def api():
    yield from start_api(token='schemathesis-token')


def test_no_server_errors(api):
    schema = schemathesis.openapi.from_url(f'{api.url}/openapi.json')
    operations = [r.ok() for r in schema.get_all_operations()]
    seen = {f'{op.method.upper()} {op.path}' for op in operations}
    assert {'POST /predict', 'POST /predict/batch', 'POST /query', 'POST /retrain', 'GET /model/info'} <= seen, seen
    failures = {}
    for op in operations:
        @given(case=op.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            case.call_and_validate(checks=[not_a_server_error])
        try: check()
        except Exception as e: failures[f'{op.method.upper()} {op.path}'] = str(e)[:2000]
    assert not failures, '\n\n'.join(f'{k}:\n{v}' for k, v in failures.items())
