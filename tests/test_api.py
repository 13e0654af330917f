"""The REST API as a client sees it: a real uvicorn server (see api_server.py) with a small model.

Covers seed 003's contract, readable 422s, batch and query, token-protected background retraining,
and that predictions keep being answered (all 200) while a retrain swaps the model.
"""
import json, sqlite3, threading, time
import httpx, pytest
from api_server import start_api

TOKEN = 'test-token-5b1c'
SEED_PATIENT = {'Age': 45, 'Sex': 'M', 'BP': 'HIGH', 'Cholesterol': 'NORMAL', 'Na_to_K': 15.5}


@pytest.fixture(scope='module')
def api():
    yield from start_api(token=TOKEN)


@pytest.fixture
def client(api):
    with httpx.Client(base_url=api.url, timeout=30) as c: yield c


def wait_job(client, job_id, headers, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = client.get(f'/retrain/{job_id}', headers=headers)
        assert r.status_code == 200, r.text
        if r.json()['state'] in ('succeeded', 'failed'): return r.json()
        time.sleep(0.1)
    pytest.fail(f'retrain job {job_id} did not finish in {timeout}s')


def test_seed_contract(client):
    "A client written only from seed 003's contract keeps working."
    r = client.post('/predict', json=SEED_PATIENT)
    assert r.status_code == 200
    body = r.json()
    assert body['prediction'] == 'DrugY'
    assert body['patient_data'] == SEED_PATIENT
    assert body['status'] == 'success'
    assert client.get('/health').json()['status'] == 'healthy'
    assert client.get('/docs').status_code == 200


def test_extended_answer(client, api):
    body = client.post('/predict', json={**SEED_PATIENT, 'Age': 90, 'Sex': 'm'}).json()
    assert body['model_version'] == client.get('/model/info').json()['version']
    assert set(body['probabilities']) == {'DrugY', 'drugA', 'drugB', 'drugC', 'drugX'}
    assert abs(sum(body['probabilities'].values()) - 1) < 1e-4
    assert body['patient_data']['Sex'] == 'M'
    lo, hi = client.get('/model/info').json()['input_ranges']['Age']
    assert body['warnings'] == [f'Age 90 is outside the range seen in training ({lo:g}–{hi:g})']
    assert [set(f) for f in body['explanation']] == [{'feature', 'value', 'contribution'}] * 3
    info = client.get('/model/info').json()
    assert info['features'] == ['Age', 'Sex', 'BP', 'Cholesterol', 'Na_to_K'] and info['type'] == 'RandomForestClassifier'


@pytest.mark.parametrize('body, detail', [
    ({**SEED_PATIENT, 'BP': 'VERY HIGH'}, "BP: 'VERY HIGH' is not one of HIGH, LOW, NORMAL"),
    ({**SEED_PATIENT, 'Sex': 'X'}, "Sex: 'X' is not one of F, M"),
    ({**SEED_PATIENT, 'Age': 'forty'}, 'Age: input should be a valid integer'),
    ({**SEED_PATIENT, 'Age': 121}, 'Age: input should be less than or equal to 120'),
    ({**SEED_PATIENT, 'Na_to_K': 0}, 'Na_to_K: input should be greater than 0'),
    ({'Age': 45, 'Sex': 'M'}, 'BP: field required; Cholesterol: field required; Na_to_K: field required'),
    ([SEED_PATIENT], 'body: input should be a valid dictionary'),
])
def test_invalid_input_is_422_with_a_sentence(client, body, detail):
    r = client.post('/predict', json=body)
    assert r.status_code == 422
    assert r.json()['status'] == 'error'
    assert detail in r.json()['detail'], r.json()
    assert r.json()['errors']


def test_batch(client):
    rows = [SEED_PATIENT, {**SEED_PATIENT, 'Na_to_K': 8.0, 'BP': 'LOW', 'Cholesterol': 'HIGH'}] * 50
    r = client.post('/predict/batch', json=rows)
    assert r.status_code == 200
    assert r.json()['count'] == 100
    assert [p['prediction'] for p in r.json()['predictions'][:2]] == ['DrugY', 'drugC']
    bad = client.post('/predict/batch', json=rows[:3] + [{**SEED_PATIENT, 'BP': 'SKY'}])
    assert bad.status_code == 422 and "row 4, column BP: 'SKY'" in bad.json()['detail']
    assert client.post('/predict/batch', json=[]).status_code == 422
    assert client.post('/predict/batch', json=[SEED_PATIENT] * 10_001).status_code == 422


def test_query(client):
    r = client.post('/query', json={'text': 'A 45 year old male, high blood pressure, normal cholesterol, Na_to_K 15.5'})
    assert r.status_code == 200, r.text
    assert (r.json()['prediction'], r.json()['patient_data']) == ('DrugY', SEED_PATIENT)
    m = client.post('/query', json={'text': '45 year old man with high blood pressure'})
    assert m.status_code == 422
    assert m.json()['missing'] == ['Cholesterol', 'Na_to_K']
    assert 'Na_to_K' in m.json()['detail']


def test_audit_rows_are_written(client, api):
    client.post('/predict', json={**SEED_PATIENT, 'Age': 33})
    end = time.monotonic() + 10
    while time.monotonic() < end:
        with sqlite3.connect(api.home/'data'/'drug_nbdev.db') as db:
            rows = db.execute("select channel, model_version, input, output from predictions where input like '%\"Age\": 33%'").fetchall()
        if rows: break
        time.sleep(0.2)
    assert rows, 'no audit row for the prediction'
    channel, version, inp, out = rows[0]
    assert channel == 'api' and json.loads(inp)['Age'] == 33 and json.loads(out)['model_version'] == version


def test_retrain_needs_the_token(client):
    assert client.post('/retrain', json={'n_estimators': 10}).status_code == 401
    assert client.post('/retrain', json={'n_estimators': 10}, headers={'Authorization': 'Bearer nope'}).status_code == 401
    assert client.get('/retrain/whatever').status_code == 401
    r = client.post('/retrain', json={'n_estimators': 0}, headers={'Authorization': f'Bearer {TOKEN}'})
    assert r.status_code == 422 and 'n_estimators' in r.json()['detail']


def test_retrain_while_predicting(api, client):
    "8 clients keep predicting while a retrain runs: no request is lost, the new model is served afterwards."
    before = client.get('/model/info').json()['version']
    stop_at, results, errors = threading.Event(), [], []

    def hammer():
        with httpx.Client(base_url=api.url, timeout=30) as c:
            while not stop_at.is_set():
                try:
                    r = c.post('/predict', json=SEED_PATIENT)
                    results.append((r.status_code, r.json().get('model_version')))
                except Exception as e: errors.append(repr(e))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads: t.start()
    try:
        time.sleep(0.3)
        r = client.post('/retrain', json={'n_estimators': 40, 'test_size': 0.25}, headers=api.auth())
        assert r.status_code == 202, r.text
        assert client.post('/retrain', json={}, headers=api.auth()).status_code == 409
        job = wait_job(client, r.json()['job_id'], api.auth())
        time.sleep(0.3)
    finally:
        stop_at.set()
        for t in threads: t.join(30)
    assert job['state'] == 'succeeded', job
    assert job['promoted'] is True and job['version'] != before
    assert client.get('/model/info').json()['version'] == job['version']
    assert not errors, errors[:3]
    assert len(results) > 50
    assert {s for s, _ in results} == {200}
    versions = [v for _, v in results]
    assert versions[0] == before and versions[-1] == job['version']
