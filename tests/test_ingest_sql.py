"""The ingest database layer on SQLite and on a real PostgreSQL: accepted, duplicate, rejected, atomic."""
import hashlib, multiprocessing as mp, shutil, uuid
from pathlib import Path
import pandas as pd
import pytest
import sqlalchemy as sa
from drug_nbdev import ingest
from drug_nbdev.config import COLUMNS, DTYPES, validate_frame
from drug_nbdev.store import LocalStore
from drug_nbdev.db import get_engine, ingested_files, patients, patient_sources, drug_summary
from drug_nbdev.ingest import ingest_paths, ingest_main, load_patients, load_summary, load_sources

ROOT = Path(__file__).resolve().parent.parent
CSV, SAMPLES = ROOT/'data'/'drug200.csv', ROOT/'data'/'samples'
KEYS = ['Drug', 'Sex', 'BP', 'Cholesterol']


@pytest.fixture(params=['sqlite', 'postgresql'])
def db_url(request, tmp_path):
    "A URL of an empty database: a SQLite file, or a fresh database in the session's PostgreSQL cluster."
    if request.param == 'sqlite':
        yield f'sqlite:///{tmp_path}/ingest.db'
        return
    base = request.getfixturevalue('postgres')
    name = f'ingest_{uuid.uuid4().hex[:10]}'
    admin = sa.create_engine(base, isolation_level='AUTOCOMMIT')
    with admin.connect() as c: c.execute(sa.text(f'CREATE DATABASE {name}'))
    yield base.rsplit('/', 1)[0] + '/' + name
    with admin.connect() as c: c.execute(sa.text(f'DROP DATABASE {name} WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def env(db_url, tmp_path):
    "An engine on `db_url` and a local store."
    engine = get_engine(db_url)
    yield engine, LocalStore(tmp_path/'lake')
    engine.dispose()


def counts(engine):
    with engine.connect() as c:
        return tuple(c.execute(sa.select(sa.func.count()).select_from(t)).scalar() for t in (ingested_files, patients, drug_summary))


def expected_summary(df):
    g = (df.groupby(KEYS).agg(n=('Age', 'size'), age_mean=('Age', 'mean'), age_min=('Age', 'min'), age_max=('Age', 'max'),
                              na_to_k_mean=('Na_to_K', 'mean'), na_to_k_min=('Na_to_K', 'min'), na_to_k_max=('Na_to_K', 'max')))
    return g.reset_index().sort_values(KEYS).reset_index(drop=True)


def test_ingest_then_duplicate(env, tmp_path):
    engine, store = env
    shutil.copy(CSV, tmp_path/'renamed.txt')
    res = ingest_paths([CSV, tmp_path/'renamed.txt', SAMPLES/'drug200.h5'], store, engine)
    assert [r.status for r in res] == ['accepted', 'duplicate', 'accepted']
    assert res[0].sha256 == res[1].sha256 == hashlib.sha256(CSV.read_bytes()).hexdigest()
    assert counts(engine)[:2] == (2, 200)                 # the HDF5 file carries the same 200 records
    pts = load_patients(engine)
    assert list(pts.columns) == COLUMNS and {c: str(t) for c, t in pts.dtypes.items()} == DTYPES
    pd.testing.assert_frame_equal(pts, validate_frame(pd.read_csv(CSV)))
    with engine.connect() as c:
        row = c.execute(sa.select(ingested_files).where(ingested_files.c.sha256 == res[0].sha256)).one()
    assert (row.name, row.format, row.rows, row.stored_path) == ('drug200.csv', 'csv', 200, f'raw/drug200/{res[0].sha256}.csv')
    assert store.list('raw/') == sorted([res[0].stored_path, res[2].stored_path])


def test_lower_case_categories_are_stored_canonical(env, tmp_path):
    engine, store = env
    df = pd.read_csv(CSV).head(10)
    low = df.assign(Sex=df.Sex.str.lower(), BP=df.BP.str.lower(), Cholesterol=' ' + df.Cholesterol.str.title(), Drug=df.Drug.str.upper())
    low.to_csv(tmp_path/'low.csv', index=False)
    assert ingest_paths(tmp_path/'low.csv', store, engine)[0].status == 'accepted'
    pd.testing.assert_frame_equal(load_patients(engine), validate_frame(df))


def test_rejected_files_leave_db_and_raw_unchanged(env, tmp_path):
    engine, store = env
    ingest_paths(CSV, store, engine)
    before, raw = counts(engine), store.list('raw/')
    text = CSV.read_text()
    bad = {'empty.csv': b'', 'header.csv': text.splitlines()[0] + '\n', 'cut.parquet': (SAMPLES/'drug200.parquet').read_bytes()[:2000],
           'rows.csv': text.replace('28,F,NORMAL,HIGH,7.798,drugX', '28,F,NORMAL,HIGH,-7.798,drugX')}
    for n, b in bad.items(): (tmp_path/n).write_bytes(b if isinstance(b, bytes) else b.encode())
    res = ingest_paths([tmp_path/n for n in bad], store, engine)
    assert [r.status for r in res] == ['rejected'] * 4
    assert 'empty.csv: is empty (0 bytes)' in res[0].message
    assert 'header.csv: has no rows' in res[1].message
    assert 'cut.parquet: unreadable Parquet file' in res[2].message
    assert "rows.csv: 1 invalid row(s): row 4, column Na_to_K: '-7.798' is outside (0, 100]" in res[3].message
    assert counts(engine) == before and store.list('raw/') == raw
    # only tables of patients (the six columns) with bad rows are kept in quarantine; unreadable bytes never are
    assert [bool(r.stored_path) for r in res] == [False, True, False, True]
    assert store.list('quarantine/') == sorted(r.stored_path for r in res if r.stored_path)


def test_drug_summary_matches_pandas(env, tmp_path):
    engine, store = env
    df = pd.read_csv(CSV)
    df.sample(37, random_state=3).assign(Na_to_K=lambda d: d.Na_to_K + 0.0005).to_parquet(tmp_path/'extra.parquet')
    ingest_paths([CSV, tmp_path/'extra.parquet', SAMPLES/'drug200.feather'], store, engine)   # the summary grows file by file
    pts = load_patients(engine)
    assert len(pts) == 237
    got, want = load_summary(engine), expected_summary(pts)
    assert got[KEYS + ['n', 'age_min', 'age_max']].values.tolist() == want[KEYS + ['n', 'age_min', 'age_max']].values.tolist()
    pd.testing.assert_frame_equal(got[['age_mean', 'na_to_k_mean', 'na_to_k_min', 'na_to_k_max']],
                                  want[['age_mean', 'na_to_k_mean', 'na_to_k_min', 'na_to_k_max']], check_dtype=False)


def test_failure_between_upload_and_commit_rolls_back(env, monkeypatch):
    engine, store = env
    ingest_paths(SAMPLES/'drug200.feather', store, engine)
    before = counts(engine)
    summary_before = load_summary(engine)
    real = ingest._add_to_summary
    def fail_after_summary(conn, sha, *groups):   # everything of the file is written, then the commit never comes
        real(conn, sha, *groups)
        raise RuntimeError('connection lost before commit')
    monkeypatch.setattr(ingest, '_add_to_summary', fail_after_summary)
    res = ingest_paths(CSV, store, engine)[0]
    assert res.status == 'error' and 'connection lost before commit' in res.message
    assert store.exists(res.stored_path)          # the upload happened: an orphan blob is allowed
    assert counts(engine) == before
    pd.testing.assert_frame_equal(load_summary(engine), summary_before)
    monkeypatch.setattr(ingest, '_add_to_summary', real)
    retry = ingest_paths(CSV, store, engine)[0]
    assert retry.status == 'accepted' and retry.stored_path == res.stored_path
    assert (retry.rows, retry.new_records) == (200, 0)    # the Feather file brought the same records
    assert counts(engine)[:2] == (before[0] + 1, before[1])
    assert ingest_paths(CSV, store, engine)[0].status == 'duplicate'
    assert len(store.list('raw/')) == 2


def _race(url, lake, path, barrier, out):
    "One of two processes ingesting the same file; both pass the duplicate check before either commits."
    real = ingest._already_ingested
    def check_then_wait(conn, sha):
        seen = real(conn, sha)
        if not seen: barrier.wait(30)
        return seen
    ingest._already_ingested = check_then_wait
    try:
        r = ingest.ingest_file(path, LocalStore(lake), get_engine(url))
        out.put((r.status, r.message))
    except BaseException as e: out.put(('crash', repr(e)))


def test_concurrent_ingest_of_the_same_file(db_url, tmp_path):
    # both processes also create the schema at the same time, as two parallel first runs would
    ctx = mp.get_context('fork')
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(db_url, tmp_path/'lake', CSV, barrier, out)) for _ in range(2)]
    for p in procs: p.start()
    try: results = sorted(out.get(timeout=90) for _ in procs)
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive(): p.kill()
    assert [s for s, _ in results] == ['accepted', 'duplicate'], results
    assert 'concurrent run' in results[1][1]
    engine = get_engine(db_url)
    assert counts(engine)[:2] == (1, 200)
    assert LocalStore(tmp_path/'lake').list() == [f'raw/drug200/{hashlib.sha256(CSV.read_bytes()).hexdigest()}.csv']
    engine.dispose()


def test_ingest_main_uses_the_environment(db_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('DRUG_NBDEV_STORE', str(tmp_path/'envlake'))
    monkeypatch.setenv('DRUG_NBDEV_DB_URL', db_url)
    (tmp_path/'bad.csv').write_text('Age,Sex\n1,F\n')
    assert ingest_main([str(CSV)]) == 0
    assert ingest_main([str(CSV), str(tmp_path/'bad.csv')]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith('accepted') and out[2].startswith('skipped (duplicate)')
    assert 'bad.csv: missing column(s): BP, Cholesterol, Na_to_K, Drug' in out[3]
    assert out[-1] == 'ingest: 2 file(s): 0 accepted (0 rows, 0 new records), 1 skipped as duplicate, 1 rejected, 0 failed'
    assert len(LocalStore(tmp_path/'envlake').list('raw/')) == 1
    engine = get_engine(db_url)
    assert len(load_patients(engine)) == 200
    engine.dispose()


def test_same_records_in_four_formats_are_stored_once(env, tmp_path):
    "drug200.csv and the same records as Parquet, Feather and HDF5: 200 patients with their provenance, not 800."
    engine, store = env
    res = ingest_paths([CSV, SAMPLES], store, engine)
    assert [r.status for r in res] == ['accepted'] * 4 and [r.new_records for r in res] == [200, 0, 0, 0]
    assert counts(engine)[:2] == (4, 200)
    pts = load_patients(engine)
    assert len(pts) == 200 and not pts.duplicated().any()          # what training reads: no record twice
    with engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(patient_sources)).scalar() == 800
        per_record = c.execute(sa.select(sa.func.count(sa.distinct(patient_sources.c.file_sha256)))
                               .group_by(patient_sources.c.patient_id)).scalars().all()
    assert set(per_record) == {4}
    assert load_sources(engine).duplicate_rows.tolist() == [0, 200, 200, 200]
    assert load_summary(engine).n.sum() == 200


def _concurrent(url, lake, path, barrier, out):
    "One of two processes ingesting different files; both have staged their rows before either merges."
    real = ingest.Staging.commit
    def commit_together(self, *a, **k):
        barrier.wait(60)
        return real(self, *a, **k)
    ingest.Staging.commit = commit_together
    try:
        r = ingest.ingest_file(path, LocalStore(lake), get_engine(url))
        out.put((str(path), r.status, r.message))
    except BaseException as e: out.put((str(path), 'crash', repr(e)))


def test_concurrent_ingests_of_different_files(db_url, tmp_path):
    "Two processes merging different files at the same moment both succeed (main: UniqueViolation on drug_summary)."
    df = pd.read_csv(CSV)
    a, b = tmp_path/'a.csv', tmp_path/'b.parquet'
    df.iloc[:120].to_csv(a, index=False)
    df.iloc[80:].assign(Na_to_K=lambda d: d.Na_to_K.where(d.index < 120, d.Na_to_K + 0.0005)).to_parquet(b)  # 40 shared records
    get_engine(db_url).dispose()
    ctx = mp.get_context('fork')
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_concurrent, args=(db_url, tmp_path/'lake', p, barrier, out)) for p in (a, b)]
    for p in procs: p.start()
    try: results = sorted(out.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive(): p.kill()
    assert [s for _, s, _ in results] == ['accepted', 'accepted'], results
    engine = get_engine(db_url)
    pts = load_patients(engine)
    assert len(pts) == 200 and not pts.duplicated().any()
    assert counts(engine)[:2] == (2, 200)
    got, want = load_summary(engine), expected_summary(pts)
    assert got[KEYS + ['n', 'age_min', 'age_max']].values.tolist() == want[KEYS + ['n', 'age_min', 'age_max']].values.tolist()
    pd.testing.assert_frame_equal(got[['age_mean', 'na_to_k_mean']], want[['age_mean', 'na_to_k_mean']], check_dtype=False)
    engine.dispose()


def test_bad_last_chunk_leaves_nothing(env, tmp_path):
    "A file whose last chunk breaks the contract leaves no row, even though its first chunks were staged."
    engine, store = env
    from drug_nbdev.config import IngestLimits
    df = pd.read_csv(CSV)
    pd.concat([df, df.tail(1).assign(BP='VERY HIGH')]).to_csv(tmp_path/'tail.csv', index=False)
    r = ingest_paths(tmp_path/'tail.csv', store, engine, limits=IngestLimits(chunk_rows=40))[0]
    assert r.status == 'rejected' and "row 201, column BP: 'VERY HIGH'" in r.message
    assert counts(engine) == (0, 0, 0) and store.list('raw/') == []
