"""`make lab`: the researchers' JupyterLab, started as a researcher starts it (through make), on loopback.

It must answer, offer the project's `drug-nbdev` kernel as the default, serve the notebooks folder, and
have nbdev's clean-on-save hook configured for these notebooks (settings.ini `jupyter_hooks = True`).
"""
import os, secrets, signal, subprocess
from pathlib import Path
import httpx, pytest
from conftest import ROOT, free_port, wait_for_port

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope='module')
def lab():
    "URL and token of `make lab` on a free port; the whole process group is stopped at teardown."
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, 'JUPYTER_TOKEN': token}
    proc = subprocess.Popen(['make', '--no-print-directory', 'lab', f'LAB_PORT={port}'], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, proc, 'make lab', timeout=90)
        yield f'http://127.0.0.1:{port}', token
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try: proc.wait(20)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL)


def test_lab_offers_the_project_kernel(lab):
    url, token = lab
    auth = {'Authorization': f'token {token}'}
    specs = httpx.get(f'{url}/api/kernelspecs', headers=auth, timeout=30).json()
    assert specs['default'] == 'drug-nbdev', specs['default']
    spec = specs['kernelspecs']['drug-nbdev']['spec']
    assert Path(spec['argv'][0]).parent == ROOT/'.venv'/'bin', spec['argv']   # the project's venv
    page = httpx.get(f'{url}/lab', headers=auth, timeout=30)
    assert page.status_code == 200 and 'JupyterLab' in page.text
    nbs = httpx.get(f'{url}/api/contents/nbs', headers=auth, timeout=30).json()
    assert '00_config.ipynb' in {c['name'] for c in nbs['content']}
    assert httpx.get(f'{url}/api/kernelspecs', timeout=30).status_code == 403   # no token, no access


def test_saving_a_notebook_cleans_it(lab):
    "nbdev's pre-save hook (installed by `make install`) strips execution counts and cell metadata other than tags."
    url, token = lab
    auth = {'Authorization': f'token {token}'}
    name = 'nbs/_lab_save_test.ipynb'
    (ROOT/name).write_text((ROOT/'nbs'/'02_db.ipynb').read_text())       # a notebook being edited
    nb = httpx.get(f'{url}/api/contents/{name}', headers=auth, timeout=30).json()['content']
    code = next(c for c in nb['cells'] if c['cell_type'] == 'code')
    code['execution_count'], code['metadata'] = 7, {'scrolled': True, 'tags': ['keep-me']}
    try:
        r = httpx.put(f'{url}/api/contents/{name}', headers=auth, json={'type': 'notebook', 'format': 'json', 'content': nb},
                      timeout=30)
        assert r.status_code == 200, r.text
        saved = (ROOT/name).read_text()
        assert '"execution_count": 7' not in saved and '"scrolled"' not in saved and 'keep-me' in saved
    finally:
        (ROOT/name).unlink(missing_ok=True)
