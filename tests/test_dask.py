"""Scoring and ingest on a real Dask cluster on loopback: a `dask scheduler` and two `dask worker` processes.

The cluster is started by the `cluster` fixture with the project's venv, each worker with a nanny (so a
killed worker process is replaced), and stopped at the end even when a test fails. The workers' environment
points the blob store at Azurite, as worker pods would point it at Azure Blob Storage: they read `abfs://`
inputs and upload ingested files with their own credentials. `drug-nbdev` runs as a subprocess, as a user
would run it.
"""
import json, os, shutil, signal, subprocess, sys, tempfile, time, uuid
from pathlib import Path
import numpy as np, pandas as pd
import pytest

from conftest import ROOT, free_port, project_env, stop, wait_for_port

BIN = Path(sys.executable).parent
CLI = str(BIN/'drug-nbdev') if (BIN/'drug-nbdev').exists() else 'drug-nbdev'
DASK = str(BIN/'dask') if (BIN/'dask').exists() else 'dask'

pytestmark = pytest.mark.timeout(900)

_SETUP = """
import os, sys
from drug_nbdev.testing import synthetic_patients
from drug_nbdev.ingest import ingest_paths
from drug_nbdev.train import retrain_forest
from drug_nbdev.store import LocalStore
from drug_nbdev.db import get_engine
p = os.path.join(os.environ['DRUG_NBDEV_HOME'], 'train.csv')
synthetic_patients(300, seed=0).to_csv(p, index=False)
ingest_paths([p], store=LocalStore(os.path.join(os.environ['DRUG_NBDEV_HOME'], 'trainlake')), engine=get_engine())
print(retrain_forest(n_estimators=30, min_accuracy=0.0)['version'])
"""


@pytest.fixture(scope='module')
def home(azurite):
    "A project home whose registry serves a 30-tree forest; its blob store is a container in Azurite."
    h = Path(tempfile.mkdtemp(prefix='drug_dask_home_'))
    # the database by absolute URL: the workers, whose DRUG_NBDEV_HOME differs, write to the same one (ingest checks it)
    env = project_env(h, DRUG_NBDEV_STORE=azurite, DRUG_NBDEV_CONTAINER=f'dask-{uuid.uuid4().hex[:10]}',
                      DRUG_NBDEV_DB_URL=f'sqlite:///{h}/data/drug_nbdev.db')
    # the model is trained from a database of its own, so the project's database starts empty for the ingest test
    subprocess.run([sys.executable, '-c', _SETUP], env={**env, 'DRUG_NBDEV_DB_URL': f'sqlite:///{h}/train.db'},
                   cwd=h, check=True, capture_output=True, text=True)
    yield h, env
    shutil.rmtree(h, ignore_errors=True)


class Cluster:
    def __init__(self, address, procs, env):
        self.address, self.procs, self.env = address, procs, env

    def client(self):
        from distributed import Client
        return Client(self.address, timeout=20, set_as_default=False)


@pytest.fixture(scope='module')
def cluster(home):
    "`dask scheduler` and two `dask worker` processes (1 thread each, with nannies) on 127.0.0.1."
    _, env = home
    wenv = {**env, 'DRUG_NBDEV_HOME': tempfile.mkdtemp(prefix='drug_dask_worker_')}   # workers share no project folder
    where, port = Path(tempfile.mkdtemp(prefix='drug_dask_')), free_port()
    address, procs = f'tcp://127.0.0.1:{port}', []
    try:
        procs.append(subprocess.Popen([DASK, 'scheduler', '--host', '127.0.0.1', '--port', str(port), '--dashboard-address', ':0'],
                                      cwd=where, env=wenv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        wait_for_port(port, procs[0], 'dask scheduler')
        for n in (1, 2):
            procs.append(subprocess.Popen([DASK, 'worker', address, '--name', f'w{n}', '--nthreads', '1', '--nworkers', '1',
                                           '--host', '127.0.0.1', '--dashboard-address', ':0', '--memory-limit', '2GiB',
                                           '--local-directory', str(where/f'w{n}')],
                                          cwd=where, env=wenv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        c = Cluster(address, procs, wenv)
        with c.client() as client: client.wait_for_workers(2, timeout=120)
        yield c
    finally:
        for p in reversed(procs): stop(p, grace=10)
        shutil.rmtree(where, ignore_errors=True)
        shutil.rmtree(wenv['DRUG_NBDEV_HOME'], ignore_errors=True)


def drug_nbdev(*args, env, cwd, timeout=600):
    return subprocess.run([CLI, *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def write_months(folder: Path, files: int, rows: int, row_group: int) -> Path:
    "`files` Parquet files of `rows` synthetic patients each (row groups of `row_group`), with an id and a note column."
    from drug_nbdev.testing import synthetic_patients
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(files):
        df = synthetic_patients(rows, seed=100 + k, spread='contract').drop(columns='Drug')
        df.insert(0, 'patient_id', np.arange(rows) + k * rows)
        df['note'] = np.where(np.arange(rows) % 7 == 0, '=HYPERLINK("http://x.example")', 'ok')
        df.to_parquet(folder/f'2026-{k + 1:02d}.parquet', row_group_size=row_group)
    return folder


def unpacked(client) -> dict:
    import drug_nbdev.distributed as module
    return client.run(module.unpacked)


def test_folder_scored_on_the_cluster_equals_single_process(home, cluster, tmp_path):
    h, env = home
    src = write_months(tmp_path/'months', files=5, rows=3000, row_group=500)
    with cluster.client() as c: before = unpacked(c)
    r = drug_nbdev('predict', src, '--out', tmp_path/'cluster.parquet', '--chunksize', 1000, '--scheduler', cluster.address,
                   env=env, cwd=h)
    assert r.returncode == 0, r.stderr
    assert f'on the Dask cluster at {cluster.address} (2 workers)' in r.stdout
    local = drug_nbdev('predict', src, '--out', tmp_path/'local.parquet', '--chunksize', 1000, env=env, cwd=h)
    assert local.returncode == 0, local.stderr
    a, b = pd.read_parquet(tmp_path/'cluster.parquet'), pd.read_parquet(tmp_path/'local.parquet')
    assert len(a) == 15_000
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    with cluster.client() as c:      # 15 partitions, and each worker received the model once
        assert {w: n - before.get(w, 0) for w, n in unpacked(c).items()} == {w: 1 for w in before}

    # DASK_SCHEDULER_ADDRESS works like --scheduler; a CSV output is the same rows, formulas neutralised
    r = drug_nbdev('predict', src, '--out', tmp_path/'cluster.csv', '--chunksize', 1000,
                   env={**env, 'DASK_SCHEDULER_ADDRESS': cluster.address}, cwd=h)
    assert r.returncode == 0 and 'on the Dask cluster' in r.stdout, r.stderr
    csv = pd.read_csv(tmp_path/'cluster.csv')
    assert csv.prediction.tolist() == b.prediction.tolist()
    assert set(csv.note) == {'ok', '\'=HYPERLINK("http://x.example")'}


def test_dataset_output_and_abfs_input(home, cluster, tmp_path, azurite):
    from azure.storage.blob import BlobServiceClient
    h, env = home
    src = write_months(tmp_path/'months', files=3, rows=2000, row_group=1000)
    container = f'in-{uuid.uuid4().hex[:10]}'
    cc = BlobServiceClient.from_connection_string(azurite).get_container_client(container)
    cc.create_container()
    for f in sorted(src.iterdir()): cc.upload_blob(f'exports/{f.name}', f.read_bytes())
    cc.upload_blob('exports/.hidden.parquet', b'not a table')
    r = drug_nbdev('predict', f'abfs://{container}/exports', '--out', tmp_path/'ds', '--chunksize', 1000,
                   '--scheduler', cluster.address, env=env, cwd=h)
    assert r.returncode == 0, r.stderr
    local = drug_nbdev('predict', src, '--out', tmp_path/'local_ds', '--chunksize', 1000, env=env, cwd=h)
    assert local.returncode == 0, local.stderr
    names = sorted(p.name for p in (tmp_path/'ds').iterdir())
    assert names == [f'part-{i:05d}.parquet' for i in range(6)] == sorted(p.name for p in (tmp_path/'local_ds').iterdir())
    for n in names: pd.testing.assert_frame_equal(pd.read_parquet(tmp_path/'ds'/n), pd.read_parquet(tmp_path/'local_ds'/n))
    # a glob over the container, single process: hidden blobs are left out as in a folder
    r = drug_nbdev('predict', f'abfs://{container}/exports/*.parquet', '--out', tmp_path/'all.parquet', env=env, cwd=h)
    assert r.returncode == 0, r.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path/'all.parquet'), pd.read_parquet(tmp_path/'local_ds'))
    r = drug_nbdev('predict', f'abfs://{container}/exports/nothing-*.parquet', '--out', tmp_path/'none.parquet', env=env, cwd=h)
    assert (r.returncode, r.stderr.strip()) == (1, f'abfs://{container}/exports/nothing-*.parquet: no blob matches')


def test_unreachable_scheduler_is_one_sentence(home, tmp_path):
    h, env = home
    src = write_months(tmp_path/'m', files=1, rows=10, row_group=10)
    r = drug_nbdev('predict', src, '--out', tmp_path/'o.parquet', '--scheduler', f'tcp://127.0.0.1:{free_port()}', env=env, cwd=h)
    assert r.returncode == 1
    assert 'cannot reach the Dask scheduler at tcp://127.0.0.1:' in r.stderr and 'Traceback' not in r.stderr
    assert not list(tmp_path.glob('*o.parquet*'))


def test_folder_with_a_bad_file_ingested_on_the_cluster(home, cluster, tmp_path, azurite):
    "Same outcome as a local ingest of the same folder: good files recorded, the copy skipped, the bad file rejected alone."
    from drug_nbdev.testing import synthetic_patients
    h, env = home
    drop = tmp_path/'drop'; drop.mkdir()
    for k in range(3): synthetic_patients(500, seed=40 + k).to_parquet(drop/f'good-{k}.parquet')
    synthetic_patients(200, seed=50).to_csv(drop/'good-3.csv', index=False)
    shutil.copy(drop/'good-3.csv', drop/'same-as-3.csv')
    synthetic_patients(300, seed=51).assign(Na_to_K=[15.0] * 299 + [-4.0]).to_parquet(drop/'bad.parquet')
    r = drug_nbdev('ingest', '--scheduler', cluster.address, drop, env=env, cwd=h)
    assert r.returncode == 1, r.stderr
    assert 'ingest: 6 file(s): 4 accepted (1700 rows' in r.stdout, r.stdout
    assert '1 skipped as duplicate, 1 rejected, 0 failed (on the Dask cluster' in r.stdout, r.stdout
    bad_line = next(l for l in r.stdout.splitlines() if 'bad.parquet' in l)
    assert bad_line.startswith('rejected') and 'row 300, column Na_to_K' in bad_line and 'quarantine/' in bad_line
    # the same folder ingested locally into a fresh project: the same records, the same files
    other = tmp_path/'local'; other.mkdir()
    lenv = project_env(other)
    local = drug_nbdev('ingest', drop, env=lenv, cwd=other)
    assert local.returncode == 1 and 'ingest: 6 file(s): 4 accepted (1700 rows' in local.stdout
    assert '1 skipped as duplicate, 1 rejected' in local.stdout
    q = ("import json, sqlalchemy as sa; from drug_nbdev.ingest import load_patients; from drug_nbdev.db import get_engine;"
         "e = get_engine(); p = load_patients(e);"
         "files = sorted(r[0] for r in e.connect().execute(sa.text('select sha256 from ingested_files')));"
         "print(json.dumps([files, sorted(map(str, p.itertuples(index=False)))]))")
    seen = lambda env_: subprocess.run([sys.executable, '-c', q], env=env_, capture_output=True, text=True, check=True).stdout
    before = json.loads(seen(env))
    assert len(before[0]) == 4 and len(before[1]) >= 1000
    assert before == json.loads(seen(lenv))
    # ingesting the folder again on the cluster: every good file is a duplicate, the bad one rejected again
    again = drug_nbdev('ingest', '--scheduler', cluster.address, drop, env=env, cwd=h)
    assert '0 accepted (0 rows' in again.stdout and '5 skipped as duplicate, 1 rejected' in again.stdout, again.stdout
    assert json.loads(seen(env)) == before


def test_ingest_refuses_workers_that_write_elsewhere(home, cluster, tmp_path):
    h, env = home
    (tmp_path/'x.csv').write_text('Age\n1\n')
    r = drug_nbdev('ingest', '--scheduler', cluster.address, tmp_path/'x.csv', env={**env, 'DRUG_NBDEV_DB_URL': f'sqlite:///{tmp_path}/other.db'},
                   cwd=h)
    assert r.returncode == 1 and 'the workers would ingest elsewhere than this command' in r.stderr, r.stderr
    assert 'Traceback' not in r.stderr


def _written(folder: Path, prefix: str) -> bool:
    "Whether the run has written scored rows under its temporary name (so it is mid-run)."
    return any(p.stat().st_size > 0 for p in folder.glob(f'{prefix}*'))


def test_worker_killed_mid_run_never_leaves_partial_output(home, cluster, tmp_path):
    "SIGKILL one worker process while partitions are being scored: the run completes (the nanny restarts the worker and"
    " the scheduler recomputes its tasks) with the single-process result, or fails with a sentence and nothing at OUT."
    h, env = home
    src = write_months(tmp_path/'months', files=6, rows=20_000, row_group=1000)
    ref = drug_nbdev('predict', src, '--out', tmp_path/'ref.parquet', '--chunksize', 1000, env=env, cwd=h)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path/'killed.parquet'
    proc = subprocess.Popen([CLI, 'predict', str(src), '--out', str(out), '--chunksize', '1000', '--scheduler', cluster.address],
                            env=env, cwd=h, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    with cluster.client() as c:
        end = time.monotonic() + 240
        while time.monotonic() < end and proc.poll() is None and not _written(tmp_path, '.killed.parquet.'): time.sleep(0.05)
        assert proc.poll() is None, f'the run ended before a worker could be killed: {proc.communicate()}'
        pids = c.run(os.getpid)
        killed = sorted(pids)[0]
        os.kill(pids[killed], signal.SIGKILL)
        partial = [p.name for p in tmp_path.iterdir() if p.name.startswith('.killed.parquet.')]
        stdout, stderr = proc.communicate(timeout=600)
    assert partial, 'the output is written under a temporary name while the run goes on'
    print(f"worker {killed} killed mid-run: exit code {proc.returncode}; {stderr.strip() or stdout.strip()}")
    if proc.returncode == 0:
        pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(tmp_path/'ref.parquet'), check_exact=True)
    else:
        assert 'error:' in stderr and 'Traceback' not in stderr, stderr
        assert not out.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith('.killed')], 'no temporary file is left behind'
    with cluster.client() as c: c.wait_for_workers(2, timeout=120)   # the nanny replaced the killed worker


def test_ingest_on_the_cluster_into_postgresql(home, fresh_postgres, tmp_path, monkeypatch):
    "Two workers ingest files with overlapping records into PostgreSQL at once: every file accepted, the records as a local ingest's."
    from distributed import LocalCluster
    from drug_nbdev.testing import synthetic_patients
    h, env = home
    drop = tmp_path/'drop'; drop.mkdir()
    shared = synthetic_patients(100, seed=60)
    for k in range(4):      # each file: 100 records of its own and the same 100 shared ones
        pd.concat([synthetic_patients(100, seed=61 + k), shared]).to_csv(drop/f'f{k}.csv', index=False)
    store = tmp_path/'lake'
    penv = {**env, 'DRUG_NBDEV_DB_URL': fresh_postgres, 'DRUG_NBDEV_STORE': str(store)}   # its own database: it compares whole tables
    for k, v in penv.items(): monkeypatch.setenv(k, v)       # the workers LocalCluster spawns inherit this environment
    monkeypatch.setenv('DRUG_NBDEV_HOME', str(tmp_path))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=':0') as c:
        r = drug_nbdev('ingest', '--scheduler', c.scheduler_address, drop, env=penv, cwd=h)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'ingest: 4 file(s): 4 accepted (800 rows' in r.stdout and '0 rejected, 0 failed' in r.stdout, r.stdout
    q = ("import json; from drug_nbdev.ingest import load_patients, load_summary; from drug_nbdev.db import get_engine;"
         "e = get_engine(); print(json.dumps([sorted(map(str, load_patients(e).itertuples(index=False))),"
         " load_summary(e).to_dict('records')]))")
    got = json.loads(subprocess.run([sys.executable, '-c', q], env=penv, capture_output=True, text=True, check=True).stdout)
    other = tmp_path/'local'; other.mkdir()
    lenv = project_env(other)
    assert drug_nbdev('ingest', drop, env=lenv, cwd=other).returncode == 0
    want = json.loads(subprocess.run([sys.executable, '-c', q], env=lenv, capture_output=True, text=True, check=True).stdout)
    assert len(got[0]) == 500 and got[0] == want[0]
    # the summary: the same counts and extremes; means equal up to how each database rounds its sums
    pd.testing.assert_frame_equal(pd.DataFrame(got[1]), pd.DataFrame(want[1]), check_exact=False, rtol=1e-6)
