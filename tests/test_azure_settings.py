"""Azure and PostgreSQL settings as their users write them (README, "Configuration"):

- `DRUG_NBDEV_DB_URL=postgresql://…` — the plain URL SQLAlchemy 2.1 maps to psycopg 3 — against the real server;
- the credential each kind of `DRUG_NBDEV_STORE` gets (a managed identity through DefaultAzureCredential when an
  account URL carries no key or SAS);
- `MLFLOW_TRACKING_URI=azureml://…` resolving to the azureml-mlflow plugin's store;
- Azure SQL: no SQL Server can run here, so the schema and every statement the ingest, predict/audit and monitor
  paths execute are compiled for the mssql dialect (pyodbc and pymssql) — what a server would be sent.
"""
import os, subprocess, sys
from datetime import timedelta
from pathlib import Path
from unittest.mock import patch
import pytest
import sqlalchemy as sa
from conftest import ROOT, project_env

CLI = str(Path(sys.executable).parent/'drug-nbdev')


def test_plain_postgresql_url_ingests_and_reads_back(postgres, tmp_path):
    plain = postgres.replace('postgresql+psycopg2://', 'postgresql://')
    assert plain.startswith('postgresql://') and '+' not in plain.split('://')[0]
    env = project_env(tmp_path, DRUG_NBDEV_DB_URL=plain)
    r = subprocess.run([CLI, 'ingest', str(ROOT/'data'/'drug200.csv')], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    code = ("from drug_nbdev.db import get_engine; from drug_nbdev.ingest import load_patients; e = get_engine(); "
            "print(e.dialect.driver, len(load_patients(e)))")
    r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.split() == ['psycopg', '200'], r.stdout + r.stderr


@pytest.mark.parametrize('url, env, expect', [
    ('https://acct.blob.core.windows.net/?sv=2024&sig=abc', {}, 'none'),                       # SAS: in the URL
    ('https://acct.blob.core.windows.net', {'AZURE_STORAGE_KEY': 'a2V5'}, 'key'),               # account key
    ('https://acct.blob.core.windows.net', {'DRUG_NBDEV_STORE_CREDENTIAL': 'tok'}, 'given'),   # explicit credential
    ('https://acct.blob.core.windows.net', {}, 'identity'),                                   # nothing: managed identity
])
def test_store_credential_for_each_setting(url, env, expect):
    from azure.identity import DefaultAzureCredential
    from drug_nbdev.store import _account_credential
    clean = {k: v for k, v in os.environ.items()
             if k not in ('AZURE_STORAGE_KEY', 'AZURE_STORAGE_ACCOUNT', 'DRUG_NBDEV_STORE_CREDENTIAL')}
    with patch.dict(os.environ, {**clean, **env}, clear=True):
        cred = _account_credential(url)
        if expect == 'none': assert cred is None
        if expect == 'key': assert cred == {'account_name': 'acct', 'account_key': 'a2V5'}
        if expect == 'given': assert cred == 'tok'
        if expect == 'identity':
            assert isinstance(cred, DefaultAzureCredential)
            from azure.storage.blob import BlobServiceClient   # what make_store builds; contacting nobody yet
            assert isinstance(BlobServiceClient(url, credential=cred).credential, DefaultAzureCredential)


def test_azureml_tracking_uri_resolves_to_the_plugin():
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry
    builder = _tracking_store_registry.get_store_builder(
        'azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/s/resourceGroups/g/providers/'
        'Microsoft.MachineLearningServices/workspaces/w')
    assert builder.__module__.startswith('azureml.mlflow'), builder.__module__


def _mssql_dialects():
    from sqlalchemy.dialects.mssql import pymssql, pyodbc
    return [pyodbc.dialect(), pymssql.dialect()]


def test_azure_sql_driver_is_installed():
    "mssql+pymssql:// gets its DBAPI from the [azure] extra (pymssql's wheels carry FreeTDS: no system ODBC driver)."
    eng = sa.create_engine('mssql+pymssql://user:pw@sqlserver.example.org:1433/drug')   # imports the driver, connects to nobody
    assert eng.dialect.driver == 'pymssql' and eng.dialect.dbapi is not None


def test_schema_compiles_for_azure_sql():
    from drug_nbdev.db import metadata
    for dialect in _mssql_dialects():
        ddl = []
        eng = sa.create_mock_engine(f'mssql+{dialect.driver}://', lambda sql, *a, **k: ddl.append(str(sql.compile(dialect=dialect))))
        metadata.create_all(eng, checkfirst=False)
        text = '\n'.join(ddl)
        for table in ('ingested_files', 'patients', 'drug_summary', 'predictions'): assert f'CREATE TABLE {table}' in text
        assert 'IDENTITY' in text and 'DATETIMEOFFSET' in text and 'CONSTRAINT ck_sex CHECK' in text


def test_every_statement_of_ingest_predict_and_monitor_compiles_for_azure_sql(tmp_path):
    """Run the ingest, predict (with its audit) and monitor paths on SQLite, capture each statement object they
    execute, and compile it for mssql: a statement SQLAlchemy cannot render for SQL Server fails here."""
    from drug_nbdev.testing import scratch_project
    from drug_nbdev.predictor import Predictor
    from drug_nbdev.monitor import monitor_summary
    from drug_nbdev.config import EXAMPLE_PATIENT, utcnow
    seen = []
    with scratch_project() as p:
        sa.event.listen(p.engine, 'before_execute', lambda conn, elem, *a: seen.append(elem))
        p.ingest(200); p.train(10)
        pred = Predictor(engine=p.engine)
        pred.predict(EXAMPLE_PATIENT); pred.close()
        monitor_summary(utcnow() - timedelta(days=1), utcnow() + timedelta(seconds=1), engine=p.engine)
    kinds = {type(e).__name__ for e in seen}
    assert {'Select', 'Insert'} <= kinds, kinds
    for dialect in _mssql_dialects():
        for elem in seen:
            if isinstance(elem, sa.TextClause): continue   # dialect-specific text is guarded by dialect name
            str(elem.compile(dialect=dialect))
