"""`schemathesis run --checks all` against the live server: the OpenAPI document is the contract.

Every check schemathesis has (status codes, content types, response schemas, negative data rejected,
positive data accepted, authentication not ignored, no 5xx…) runs against a real uvicorn server
(api_server.py) with the bearer token given, so valid `/retrain` requests really start (small) jobs.
The one documented exception, in tests/schemathesis.toml: `/query` may answer 422 (`missing`) to a
schema-valid text that names no patient, and `/retrain` answers 409 while a job runs.
"""
import subprocess
from pathlib import Path
import pytest
from api_server import PY, start_api

TOKEN = 'schemathesis-token-0c1d'
HERE = Path(__file__).resolve().parent
MAX_EXAMPLES = 25   # per operation and phase


@pytest.fixture(scope='module')
def api():
    yield from start_api(token=TOKEN)


def test_schemathesis_checks_all(api):
    exe = str(Path(PY).parent/'schemathesis')
    r = subprocess.run([exe, '--no-color', '--config-file', str(HERE/'schemathesis.toml'), 'run', f'{api.url}/openapi.json',
                        '--checks', 'all', '-H', f'Authorization: Bearer {TOKEN}', '--max-examples', str(MAX_EXAMPLES),
                        '--workers', '1', '--suppress-health-check', 'all', '--request-timeout', '30', '--seed', '1'],
                       capture_output=True, text=True, timeout=900, cwd=api.home, env=api.env)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-12000:]
    assert 'No issues found' in out or 'passed' in out, out[-3000:]
