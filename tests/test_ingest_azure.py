"""AzureStore against a real Azurite blob service, and a whole ingest into it."""
import base64, hashlib, shutil, uuid
from pathlib import Path
import pytest
from azure.storage.blob import BlobServiceClient
from drug_nbdev.store import AzureStore, make_store, content_md5
from drug_nbdev.db import get_engine
from drug_nbdev.ingest import ingest_paths, load_patients

ROOT = Path(__file__).resolve().parent.parent
CSV, SAMPLES = ROOT/'data'/'drug200.csv', ROOT/'data'/'samples'


@pytest.fixture
def store(azurite):
    "A store in a fresh container of its own."
    return make_store(azurite, container=f'test-{uuid.uuid4().hex[:12]}')


def test_make_store_creates_the_container(azurite):
    name = f'new-{uuid.uuid4().hex[:12]}'
    svc = BlobServiceClient.from_connection_string(azurite)
    assert not svc.get_container_client(name).exists()
    st = make_store(azurite, container=name)
    assert isinstance(st, AzureStore)
    assert svc.get_container_client(name).exists()
    assert make_store(azurite, container=name).list() == []      # an existing container is fine


def test_make_store_from_account_url_and_key(azurite, monkeypatch):
    endpoint = azurite.split('BlobEndpoint=')[1].rstrip(';')
    key = azurite.split('AccountKey=')[1].split(';')[0]
    monkeypatch.setenv('AZURE_STORAGE_KEY', key)
    st = make_store(endpoint, container='viaurl')
    assert st.put('a/b.txt', b'hello', {}) is True
    assert st.get('a/b.txt') == b'hello'


def test_put_get_exists_list_metadata(store):
    data = CSV.read_bytes()
    assert store.exists('raw/x/one.csv') is False
    assert store.put('raw/x/one.csv', data, {'original_name': 'drug 200 – copy.csv', 'rows': 200}) is True
    assert store.exists('raw/x/one.csv') is True
    assert store.get('raw/x/one.csv') == data
    meta = store.metadata('raw/x/one.csv')
    assert meta['original_name'] == 'drug 200 – copy.csv'                # non-ASCII survives the round trip
    assert meta['rows'] == '200'
    assert meta['content_md5'] == content_md5(data)
    store.put('quarantine/x/two.csv', b'bad', {})
    assert store.list() == ['quarantine/x/two.csv', 'raw/x/one.csv']
    assert store.list('raw/') == ['raw/x/one.csv']


def test_conditional_write_never_overwrites(store):
    assert store.put('raw/k.csv', b'first', {'v': '1'}) is True
    assert store.put('raw/k.csv', b'second', {'v': '2'}) is False
    assert store.get('raw/k.csv') == b'first'
    assert store.metadata('raw/k.csv')['v'] == '1'


def test_md5_is_stored_and_checked(store):
    data = b'Age,Sex\n1,F\n'
    store.put('raw/m.csv', data, {})
    props = store.client.get_blob_client('raw/m.csv').get_blob_properties()
    assert bytes(props.content_settings.content_md5) == hashlib.md5(data).digest()
    # the service refuses an upload whose bytes do not match the Content-MD5 sent with them
    bc = store.client.get_blob_client('raw/wrong.csv')
    from azure.core.exceptions import HttpResponseError
    from azure.storage.blob import ContentSettings
    with pytest.raises(HttpResponseError):
        bc.upload_blob(data, headers={'Content-MD5': base64.b64encode(hashlib.md5(b'other').digest()).decode()})
    assert not store.exists('raw/wrong.csv')
    with pytest.raises(HttpResponseError):                                # so does a wrong stored MD5
        bc.upload_blob(data, content_settings=ContentSettings(content_md5=bytearray(hashlib.md5(b'other').digest())))
    assert not store.exists('raw/wrong.csv')
    # a blob whose stored MD5 no longer matches its bytes is refused on read
    store.client.get_blob_client('raw/m.csv').set_http_headers(
        ContentSettings(content_md5=bytearray(hashlib.md5(b'other').digest())))
    with pytest.raises(IOError, match='do not match their MD5'):
        store.get('raw/m.csv')


def test_ingest_into_azure(store, tmp_path):
    engine = get_engine(f'sqlite:///{tmp_path}/az.db')
    src = tmp_path/'in'; src.mkdir()
    shutil.copy(CSV, src/'a.csv')
    shutil.copy(SAMPLES/'drug200.parquet', src/'b.bin')                  # disguised Parquet
    shutil.copy(CSV, src/'c_again.csv')                                  # same bytes as a.csv
    (src/'d.csv').write_text('Age,Sex,BP,Cholesterol,Na_to_K,Drug\n23,F,HIGH,HIGH,25.355,drugQ\n')
    res = ingest_paths([src], store, engine)
    assert [(Path(r.path).name, r.status) for r in res] == [
        ('a.csv', 'accepted'), ('b.bin', 'accepted'), ('c_again.csv', 'duplicate'), ('d.csv', 'rejected')]
    assert "row 1, column Drug: 'drugQ' is not one of" in res[3].message
    sha = hashlib.sha256(CSV.read_bytes()).hexdigest()
    assert store.list('raw/') == sorted([f'raw/drug200/{sha}.csv', f'raw/drug200/{res[1].sha256}.parquet'])
    assert store.get(f'raw/drug200/{sha}.csv') == CSV.read_bytes()
    meta = store.metadata(f'raw/drug200/{sha}.csv')
    assert (meta['original_name'], meta['sha256'], meta['format']) == ('a.csv', sha, 'csv')
    assert 'ingested_at' in meta
    q = store.list('quarantine/')
    assert q == [f'quarantine/drug200/{res[3].sha256}.csv']
    assert "'drugQ'" in store.metadata(q[0])['reason']
    assert len(load_patients(engine)) == 200                            # b.bin carries a.csv's records
    # a second run changes nothing
    again = ingest_paths([src], store, engine)
    assert [r.status for r in again] == ['duplicate', 'duplicate', 'duplicate', 'rejected']
    assert len(store.list('raw/')) == 2 and len(load_patients(engine)) == 200
