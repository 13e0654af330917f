"""Session fixtures that start the real services the tests need: Azurite (blob storage) and PostgreSQL.

Each fixture starts its server on 127.0.0.1 on a free port, in a temporary folder, waits until it
answers, and stops it at teardown even when tests fail. A missing binary is an error, not a skip:
`make test-deps` installs them.
"""
import glob, os, shutil, signal, socket, subprocess, tempfile, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent

# Azurite's well-known development account (public, documented by Microsoft; not a secret).
AZURITE_ACCOUNT = 'devstoreaccount1'
AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='


def project_env(home, **extra) -> dict:
    """os.environ for a drug_nbdev project living in `home`: DRUG_NBDEV_HOME points there and every other
    setting (store, database, registry, reports, MLflow) takes its default under it; none is inherited."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith('DRUG_NBDEV_') and k not in ('MLFLOW_TRACKING_URI', 'IN_TEST')}
    return {**env, 'DRUG_NBDEV_HOME': str(home), **extra}


def free_port() -> int:
    "A TCP port nobody listens on right now."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30) -> None:
    "Wait until 127.0.0.1:`port` accepts connections; fail with the server's output if it dies or times out."
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors='replace') if proc.stdout else ''
            pytest.fail(f'{what} exited with code {proc.returncode} before listening on port {port}:\n{out}')
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=0.5): return
        except OSError: time.sleep(0.1)
    pytest.fail(f'{what} did not listen on 127.0.0.1:{port} within {timeout}s')


def stop(proc: subprocess.Popen, grace: float = 2.0) -> None:
    "SIGTERM, then SIGKILL after `grace` seconds (Azurite ignores SIGTERM)."
    if proc.poll() is not None: return
    proc.send_signal(signal.SIGTERM)
    try: proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope='session')
def azurite():
    "A connection string for a fresh Azurite blob service on 127.0.0.1:<free port>."
    exe = ROOT/'node_modules'/'.bin'/'azurite-blob'
    if not exe.exists():
        pytest.fail(f'{exe} is missing: run `npm ci` (or `make test-deps`) in {ROOT}')
    port, where = free_port(), tempfile.mkdtemp(prefix='drug_azurite_')
    proc = subprocess.Popen([str(exe), '--blobHost', '127.0.0.1', '--blobPort', str(port), '--location', where,
                             '--skipApiVersionCheck', '--silent', '--loose'],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, 'azurite-blob')
        yield (f'DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};'
               f'BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};')
    finally:
        stop(proc)
        shutil.rmtree(where, ignore_errors=True)


def _pg_bin() -> Path:
    found = sorted(glob.glob('/usr/lib/postgresql/*/bin/initdb'), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        pytest.fail('PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): '
                    'apt-get install postgresql (or `make test-deps`)')
    return Path(found[-1]).parent


@pytest.fixture
def fresh_postgres(postgres):
    "The URL of a new, empty database in the session's PostgreSQL cluster: for tests that compare whole tables."
    import uuid
    import sqlalchemy as sa
    name = f'drug_{uuid.uuid4().hex[:12]}'
    eng = sa.create_engine(postgres, isolation_level='AUTOCOMMIT')
    with eng.connect() as c: c.execute(sa.text(f'CREATE DATABASE {name}'))
    eng.dispose()
    return postgres.rsplit('/', 1)[0] + '/' + name


@pytest.fixture(scope='session')
def postgres():
    "A SQLAlchemy URL of a fresh database `drug_test` in a throwaway PostgreSQL cluster on 127.0.0.1:<free port>."
    bin_ = _pg_bin()
    base = Path(tempfile.mkdtemp(prefix='drug_pg_'))
    data, port = base/'data', free_port()
    # PostgreSQL refuses to run as root: run it as the `postgres` OS user, who must own the folder.
    as_pg = []
    if os.geteuid() == 0:
        shutil.chown(base, 'postgres', 'postgres')
        as_pg = ['runuser', '-u', 'postgres', '--']
    run = lambda *cmd: subprocess.run(as_pg + [str(c) for c in cmd], check=True, capture_output=True, text=True, cwd=base)
    started = False
    try:
        try:
            run(bin_/'initdb', '-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8')
            run(bin_/'pg_ctl', '-D', data, '-l', base/'log', '-w', '-t', '30', 'start',
                '-o', f'-h 127.0.0.1 -p {port} -k {base} -c fsync=off')
            started = True
            run(bin_/'createdb', '-h', '127.0.0.1', '-p', port, '-U', 'postgres', 'drug_test')
        except subprocess.CalledProcessError as e:
            log = (base/'log').read_text() if (base/'log').exists() else ''
            pytest.fail(f'starting PostgreSQL failed: {e.cmd}\n{e.stdout}\n{e.stderr}\n{log}')
        yield f'postgresql+psycopg2://postgres@127.0.0.1:{port}/drug_test'
    finally:
        if started: subprocess.run(as_pg + [str(bin_/'pg_ctl'), '-D', str(data), 'stop', '-m', 'immediate'],
                                   capture_output=True, cwd=base)
        shutil.rmtree(base, ignore_errors=True)
