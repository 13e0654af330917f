"""A real drug_nbdev API server for the tests: a temporary registry and database with a small trained
model, uvicorn (one worker) on 127.0.0.1:<free port>, stopped at teardown even when tests fail.

Not a conftest fixture (conftest.py belongs to the shared suite): test modules call `start_api()`
from a module-scoped fixture.
"""
import os, subprocess, sys, tempfile, shutil, time
from dataclasses import dataclass
from pathlib import Path
import httpx
from conftest import ROOT, free_port, project_env, stop, wait_for_port

PY = str(ROOT/'.venv'/'bin'/'python') if (ROOT/'.venv'/'bin'/'python').exists() else sys.executable

SETUP = """
from drug_nbdev.testing import synthetic_patients
from drug_nbdev.ingest import ingest_paths
from drug_nbdev.train import retrain_forest
import os
p = os.path.join(os.environ['DRUG_NBDEV_HOME'], 'patients.csv')
synthetic_patients(300, seed=0).to_csv(p, index=False)
assert all(r.status != 'error' for r in ingest_paths([p])), 'ingest failed'
r = retrain_forest(n_estimators=30, min_accuracy=0.0)
print(r['version'])
"""

@dataclass
class ApiServer:
    url: str
    home: Path
    env: dict
    token: str | None
    first_version: str
    proc: subprocess.Popen

    def auth(self) -> dict:
        return {'Authorization': f'Bearer {self.token}'} if self.token else {}


def api_env(home: Path, token: str | None, **extra) -> dict:
    return project_env(home, PYTHONUNBUFFERED='1', **({'DRUG_NBDEV_API_TOKEN': token} if token else {}), **extra)


def start_api(token: str | None = None, **extra_env):
    """Generator for a fixture: yields a running ApiServer, stops it and removes its folder afterwards.
    Without `token` the server makes one itself; `ApiServer.token` is then the one `drug-nbdev token` prints."""
    home = Path(tempfile.mkdtemp(prefix='drug_api_'))
    env = api_env(home, token, **extra_env)
    proc = None
    try:
        r = subprocess.run([PY, '-c', SETUP], env=env, cwd=home, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f'could not build the test registry:\n{r.stdout}\n{r.stderr}'
        first = r.stdout.strip().splitlines()[-1]
        port = free_port()
        # the console script `make serve` runs, so the CLI's wiring is under test too
        proc = subprocess.Popen([str(Path(PY).parent/'drug-nbdev'), 'serve', '--host', '127.0.0.1', '--port', str(port)],
                                env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_for_port(port, proc, 'drug_nbdev API (uvicorn)', timeout=120)
        url = f'http://127.0.0.1:{port}'
        end = time.monotonic() + 30
        while httpx.get(f'{url}/health').status_code != 200 and time.monotonic() < end: time.sleep(0.1)
        if token is None:
            r = subprocess.run([str(Path(PY).parent/'drug-nbdev'), 'token'], env=env, cwd=home, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            token = r.stdout.strip()
        yield ApiServer(url=url, home=home, env=env, token=token, first_version=first, proc=proc)
    finally:
        if proc is not None: stop(proc, grace=10)
        shutil.rmtree(home, ignore_errors=True)
