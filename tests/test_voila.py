"""The clinicians' Voila app (nbs/15_form.ipynb) in a real Voila server, driven by a real Chromium.

A small forest is trained into a temporary registry (the project's data, a throwaway database and
models folder); Voila serves the notebook with sources stripped and a preheated kernel whose
environment points at that registry; Debian's Chromium (never a downloaded browser) fills the
form as a clinician would. Voila and Chromium missing is a failure, not a skip: `make test-deps`.
"""
import os, signal, socket, subprocess, sys, tempfile, time
from pathlib import Path
import pytest
from unittest.mock import patch
from conftest import free_port, project_env

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path('/usr/bin/chromium')
VOILA = Path(sys.executable).parent/'voila'
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run']
SEED = dict(Age='45', Sex='M', BP='HIGH', Cholesterol='NORMAL', Na_to_K='15.5')   # the seed docs' patient: DrugY

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope='module')
def registry():
    "Environment variables of a temporary project: drug200 ingested into SQLite, a small forest made current."
    from drug_nbdev.db import get_engine
    from drug_nbdev.store import make_store
    from drug_nbdev.ingest import ingest_paths
    from drug_nbdev.train import retrain_forest
    with tempfile.TemporaryDirectory(prefix='drug_voila_') as tmp:
        tmp = Path(tmp)
        env = project_env(tmp)
        with patch.dict(os.environ, env, clear=True):
            engine = get_engine()
            ingest_paths([ROOT/'data'/'drug200.csv'], store=make_store(), engine=engine)
            res = retrain_forest(n_estimators=30, seed=0, min_accuracy=0.0, engine=engine)
            assert res['promoted'], res
            engine.dispose()
        yield env


def settings_of(env: dict):
    "The drug_nbdev settings a process with environment `env` sees."
    from drug_nbdev.config import get_settings
    with patch.dict(os.environ, env, clear=True): return get_settings()


@pytest.fixture(scope='module')
def voila(registry):
    "URL of Voila serving nbs/15_form.ipynb on 127.0.0.1:<free port>, stopped (whole process group) at teardown."
    if not VOILA.exists(): pytest.fail(f'{VOILA} is missing: install the dev requirements (make install)')
    port = free_port()
    env = {**registry, 'DRUG_NBDEV_ALLOWED_HOSTS': 'form.ward.example'}   # no IN_TEST: the app runs as clinicians get it
    log = tempfile.TemporaryFile()
    # as `make app` (and the image) start it: `drug-nbdev form`; the settings (loopback, sources and prose stripped,
    # preheated kernel, no files served) come from voila.json in the repo root, read from the working directory
    proc = subprocess.Popen([str(VOILA.parent/'drug-nbdev'), 'form', str(ROOT/'nbs'/'15_form.ipynb'), '--port', str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    def output():
        log.seek(0)
        return log.read().decode(errors='replace')[-5000:]
    try:
        end = time.monotonic() + 60
        while True:
            if proc.poll() is not None: pytest.fail(f'voila exited with {proc.returncode}:\n{output()}')
            try:
                with socket.create_connection(('127.0.0.1', port), timeout=0.5): break
            except OSError:
                if time.monotonic() > end: pytest.fail(f'voila did not listen on {port} within 60 s:\n{output()}')
                time.sleep(0.2)
        yield f'http://127.0.0.1:{port}/', output
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)    # voila and the kernels it started
            try: proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()


@pytest.fixture(scope='module')
def page(voila):
    "A Chromium page with the app loaded and its widgets rendered."
    if not CHROMIUM.exists(): pytest.fail(f'{CHROMIUM} is missing: apt-get install chromium (or `make test-deps`)')
    from playwright.sync_api import sync_playwright
    url, output = voila
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport={'width': 1000, 'height': 1100})
            pg.goto(url, timeout=60_000)
            try: pg.get_by_role('button', name='Predict').wait_for(timeout=60_000)
            except Exception: pytest.fail(f'the form did not appear; page text:\n{pg.inner_text("body")[:2000]}\nvoila:\n{output()}')
            yield pg
        finally: browser.close()


def _fill(pg, **fields):
    for name, v in fields.items():
        box = pg.locator(f'.dn-field-{name.lower()}')
        if name in ('Age', 'Na_to_K'):
            box.locator('input').fill(v)
            box.locator('input').press('Tab')           # ipywidgets syncs a text field on change
        else: box.locator('select').select_option(v)


def _clear_result(pg):
    "Forget the previous answer, so each test waits for its own."
    pg.evaluate("document.querySelectorAll('#dn-prediction, #dn-error').forEach(e => e.remove())")


def test_form_shows_widgets_not_code(page):
    text = page.inner_text('body')
    for label in ('Age', 'Sex', 'BP', 'Cholesterol', 'Na_to_K'): assert page.get_by_text(label, exact=True).count() >= 1, label
    assert page.get_by_role('button', name='Ask').count() == 1
    assert 'nbdev_test' not in text and 'make app' not in text        # the developers' prose is not shown
    assert page.locator('.jp-InputArea, .jp-CodeMirrorEditor, .cm-editor, .highlight').count() == 0
    for code in ('import ', 'PredictForm(', 'def ', 'IN_TEST', 'Traceback'): assert code not in text, code


def test_predict_the_seed_patient(page, registry, tmp_path):
    from drug_nbdev.registry import current_version
    _clear_result(page)
    _fill(page, **SEED)
    page.get_by_role('button', name='Predict').click()
    page.locator('#dn-drug').wait_for(timeout=30_000)
    assert page.locator('#dn-drug').inner_text().strip() == 'DrugY'
    assert page.locator('#dn-probs tr').count() == 5
    assert page.locator('#dn-probs tr').first.inner_text().split()[0] == 'DrugY'    # the tallest bar first
    assert page.locator('#dn-error').count() == 0
    # the kernel Voila started imported drug_nbdev and serves the fixture's registry, not the project's
    assert current_version(settings_of(registry).models_dir) in page.locator('.dn-meta').inner_text()
    page.screenshot(path=str(tmp_path/'voila.png'), full_page=True)


def test_invalid_input_gives_a_clear_message(page):
    _clear_result(page)
    _fill(page, **{**SEED, 'Na_to_K': '0'})
    page.get_by_role('button', name='Predict').click()
    err = page.locator('#dn-error')
    err.wait_for(timeout=30_000)
    assert 'Na_to_K' in err.inner_text() and 'outside' in err.inner_text()
    assert page.locator('#dn-drug').count() == 0
    assert 'Traceback' not in page.inner_text('body')


def test_forgotten_age_is_reported_not_defaulted(page):
    "An empty Age box is 'missing' — never read as 0 (a newborn)."
    _clear_result(page)
    assert page.locator('.dn-field-age input').get_attribute('placeholder') == 'years'
    _fill(page, **{**SEED, 'Age': ''})
    page.get_by_role('button', name='Predict').click()
    err = page.locator('#dn-error')
    err.wait_for(timeout=30_000)
    assert 'Age: is missing' in err.inner_text(), err.inner_text()
    assert page.locator('#dn-drug').count() == 0


def test_natural_language_query(page):
    _clear_result(page)
    page.locator('.dn-query textarea').fill('A 45-year-old man with high blood pressure and normal cholesterol; Na/K 15.5')
    page.get_by_role('button', name='Ask').click()
    page.locator('#dn-drug').wait_for(timeout=30_000)
    assert page.locator('#dn-drug').inner_text().strip() == 'DrugY'
    read = page.locator('#dn-read').inner_text()
    assert 'Age 45' in read and 'Na_to_K 15.5' in read, read
    _clear_result(page)
    page.locator('.dn-query textarea').fill('a man with high blood pressure')
    page.get_by_role('button', name='Ask').click()
    page.locator('#dn-error').wait_for(timeout=30_000)
    assert 'Age, Cholesterol, Na_to_K' in page.locator('#dn-error').inner_text()


def test_answers_are_audited_with_their_channel(page, registry):
    "The form's answers reach the audit table as channel 'form', the text box's as 'query' (written in the background)."
    import sqlalchemy as sa
    engine = sa.create_engine(settings_of(registry).db_url)
    try:
        end, channels = time.monotonic() + 10, []
        while time.monotonic() < end:
            with engine.connect() as c:
                if sa.inspect(c).has_table('predictions'):
                    channels = [r[0] for r in c.execute(sa.text('select channel from predictions'))]
            if 'form' in channels and 'query' in channels: break
            time.sleep(0.3)
    finally: engine.dispose()
    assert channels.count('form') == 1 and channels.count('query') == 1, channels   # the refused inputs are not predictions


# ---- limits (issue 8.11): a second Voila, as `make app` starts it, with a small cap and quick culling

def _kernels(pid: int) -> int:
    "Kernel processes under the Voila process `pid`."
    import psutil
    def is_kernel(c) -> bool:
        try: return c.status() != psutil.STATUS_ZOMBIE and 'ipykernel' in ' '.join(c.cmdline())
        except psutil.Error: return False     # it exited (or became a zombie) while we looked: not a live kernel
    return sum(map(is_kernel, psutil.Process(pid).children(recursive=True)))


def _get(port: int, host: str, timeout: float = 120):
    import http.client
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
    try:
        c.request('GET', '/', headers={'Host': host})
        r = c.getresponse()
        return r.status, r.read().decode(errors='replace')
    finally: c.close()


def test_form_answers_its_configured_host_names_only(voila):
    "`drug-nbdev form` adds DRUG_NBDEV_ALLOWED_HOSTS to Voila's host check (a container is reached by its public name)."
    url, output = voila
    port = int(url.rstrip('/').rsplit(':', 1)[1])
    assert _get(port, f'form.ward.example:{port}')[0] == 200, output()
    for host in ('evil.example', f'ward.example:{port}', f'form.ward.example.evil.test:{port}'):
        assert _get(port, host)[0] == 403, (host, output())


def test_voila_limits_kernels_culls_idle_ones_and_checks_the_host(registry):
    """voila.json's settings, with the cap lowered to 2 and culling to seconds: a foreign Host header is refused
    before any kernel starts; page loads beyond the cap get 503; idle kernels are culled, after which a page loads again."""
    import json
    cfg = json.loads((ROOT/'voila.json').read_text())
    assert cfg['Voila']['ip'] == '127.0.0.1' and cfg['Voila']['tornado_settings']['allow_remote_access'] is False
    assert cfg['VoilaConfiguration']['multi_kernel_manager_class'] == 'drug_nbdev.form_server.CappedKernelManager'
    mkm = cfg['MappingKernelManager']
    assert 0 < mkm['cull_idle_timeout'] <= 3600 and mkm['cull_connected'] is True and cfg['CappedKernelManager']['max_kernels'] >= 1
    port = free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([str(VOILA), str(ROOT/'nbs'/'15_form.ipynb'), f'--port={port}',
                             '--CappedKernelManager.max_kernels=2', '--MappingKernelManager.cull_idle_timeout=5',
                             '--MappingKernelManager.cull_interval=1'],
                            cwd=ROOT, env=dict(registry), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    def output():
        log.seek(0); return log.read().decode(errors='replace')[-4000:]
    try:
        end = time.monotonic() + 60
        while True:
            assert proc.poll() is None, output()
            try:
                with socket.create_connection(('127.0.0.1', port), timeout=0.5): break
            except OSError:
                assert time.monotonic() < end, output(); time.sleep(0.2)
        while _kernels(proc.pid) < 1 and time.monotonic() < end: time.sleep(0.2)    # the pre-heated spare
        n0 = _kernels(proc.pid)
        for host in ('evil.example', f'evil.example:{port}', f'attacker.test:{port}', f'10.0.0.1:{port}'):
            status, _ = _get(port, host)
            assert status == 403, (host, status)
        time.sleep(1)
        assert _kernels(proc.pid) == n0 == 1, (n0, output())                           # no kernel for a refused host
        statuses = [_get(port, f'localhost:{port}')[0] for _ in range(3)] + [_get(port, f'127.0.0.1:{port}')[0]]
        assert statuses[0] == 200, (statuses, output())
        assert 503 in statuses, (statuses, output())
        time.sleep(2)
        assert _kernels(proc.pid) <= 2, output()
        end = time.monotonic() + 60                                                     # idle kernels are culled
        while _kernels(proc.pid) >= 2 and time.monotonic() < end: time.sleep(0.5)
        assert _kernels(proc.pid) < 2, output()
        end = time.monotonic() + 60          # a page loads again (the pre-heat pool may be refilling its spare first)
        while True:
            status, body = _get(port, f'localhost:{port}')
            if status != 503 or time.monotonic() > end: break
            time.sleep(1)
        assert status == 200 and 'Traceback' not in body, (status, output())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try: proc.wait(10)
            except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait(10)
        log.close()
