"""The quality gate through the real API and CLI: an operator's rollback that lands while a retrain runs wins.

A retrain compares its candidate with the version that was current when it began, and promotes only if
`current` is still that version (compare-and-swap). Here `drug-nbdev promote` rolls back while a slow
`POST /retrain` is running: the job must end unpromoted, saying why, the server must keep serving the
operator's choice, and `drug-nbdev models` must list the refused candidate with the reason.
"""
import subprocess, time
from pathlib import Path
import httpx, pytest
from api_server import PY, start_api

TOKEN = 'test-token-9a7e'


@pytest.fixture(scope='module')
def api():
    yield from start_api(token=TOKEN)


def wait_job(client, job_id, headers, states=('succeeded', 'failed'), timeout=600):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = client.get(f'/retrain/{job_id}', headers=headers)
        assert r.status_code == 200, r.text
        if r.json()['state'] in states: return r.json()
        time.sleep(0.05)
    pytest.fail(f'retrain job {job_id} did not reach {states} in {timeout}s')


def cli(api, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(PY).parent/'drug-nbdev'), *args], env=api.env, cwd=api.home,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.timeout(900)
def test_rollback_during_retrain_wins(api):
    with httpx.Client(base_url=api.url, timeout=30) as c:
        # a second version, promoted by the gate (same recipe as the served one: a tie)
        job = wait_job(c, c.post('/retrain', json={'n_estimators': 30}, headers=api.auth()).json()['job_id'], api.auth())
        assert job['state'] == 'succeeded' and job['promoted'] is True, job
        v1, v2 = api.first_version, job['version']
        # a slow retrain compared with v2; the operator rolls back to v1 while it runs
        r = c.post('/retrain', json={'n_estimators': 1000}, headers=api.auth())
        assert r.status_code == 202, r.text
        wait_job(c, r.json()['job_id'], api.auth(), states=('running', 'succeeded', 'failed'))
        rollback = cli(api, 'promote', v1)
        assert rollback.returncode == 0, rollback.stderr
        job = wait_job(c, r.json()['job_id'], api.auth())
        assert job['state'] == 'succeeded', job
        assert job['promoted'] is False, job
        assert f'current changed from {v2} to {v1}' in job['reason'], job
        end = time.monotonic() + 30            # the server follows `current` within about a second
        while c.get('/model/info').json()['version'] != v1 and time.monotonic() < end: time.sleep(0.2)
        assert c.get('/model/info').json()['version'] == v1
    listed = cli(api, 'models')
    assert listed.returncode == 0, listed.stderr
    line = next(l for l in listed.stdout.splitlines() if job['version'] in l)
    assert 'refused: ' in line and 'current changed' in line, listed.stdout
    assert next(l for l in listed.stdout.splitlines() if v1 in l).startswith('*'), listed.stdout
