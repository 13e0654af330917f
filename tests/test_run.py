"""`drug-nbdev run` on the real stage notebooks, in a throw-away project home.

The runner executes the notebooks on the registered `drug-nbdev` kernel, so these tests need it:
they fail (not skip) when it is missing — `make install` registers it. Each test gets its own
DRUG_NBDEV_HOME (database, blob store, models, MLflow store, reports), so the project's own files
are never touched.
"""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest
from drug_nbdev.config import project_root
from drug_nbdev.reports import build_leaderboard
from drug_nbdev.run import run_main
from conftest import project_env

REPO = project_root()
NBS = REPO/'nbs'
# small but real: the real notebook path (no IN_TEST), a quick forest, no tuning
SMALL = dict(model='rf', cv_folds=3, cv_repeats=1, tune=False, seed=0, promote=True)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def home(tmp_path, monkeypatch):
    "A fresh project home: the input data files and nothing else; every setting points inside it."
    (tmp_path/'data').mkdir()
    shutil.copy(REPO/'data'/'drug200.csv', tmp_path/'data'/'drug200.csv')
    env = project_env(tmp_path)
    for k in set(os.environ) - set(env): monkeypatch.delenv(k)
    for k, v in env.items(): monkeypatch.setenv(k, v)
    return tmp_path


def write_params(path: Path, doc: dict) -> str:
    import yaml
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def runs(reports: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(reports.glob('*/run.json')) if not p.parent.is_symlink()]


def test_same_parameters_give_same_metrics(home):
    params = write_params(home/'small.yaml', SMALL)
    assert run_main(params, only='ingest,train', nbs=NBS) == 0
    assert run_main(params, only='ingest,train', nbs=NBS) == 0
    a, b = runs(home/'reports')
    assert a['run_id'] != b['run_id'] and a['status'] == b['status'] == 'succeeded'
    ta, tb = a['results']['train'], b['results']['train']
    assert ta['cv'] == tb['cv'] and ta['test'] == tb['test']
    assert ta['version'] != tb['version']           # two registrations of the same model
    assert set(ta['cv']) >= {'accuracy', 'f1_macro', 'log_loss', 'brier'}
    assert 0.5 < ta['cv']['f1_macro']['mean'] <= 1 and ta['cv']['f1_macro']['std'] >= 0
    assert a['data_sha256'] == b['data_sha256'] and a['data_sha256']['source'] == 'ingest.json'
    assert a['parameters'] == SMALL and a['stages']['train']['parameters']['model'] == 'rf'
    assert a['git']['commit'] and a['packages']['sklearn']
    # the default (non-grid) run is `latest`, with each notebook and its HTML without code
    latest = home/'reports'/'latest'
    assert latest.resolve().name == b['run_id']
    names = {p.name for p in latest.iterdir()}
    assert {'03_ingest.ipynb', '03_ingest.html', '07_train.ipynb', '07_train.html', 'run.json', 'train.json'} <= names
    page = (latest/'07_train.html').read_text()
    assert 'jp-mod-noInput' in page and 'hl-ipython3' not in page    # cells are there, their code is not
    # the confusion and calibration figures are images in the report, not a Figure's text repr
    assert page.count('src="data:image/png;base64,') >= 2 and '&lt;Figure size' not in page
    lb = build_leaderboard(home/'reports')
    assert len(lb) == 2 and set(lb.status) == {'succeeded'}
    assert (home/'reports'/'index.html').read_text().count(a['run_id']) >= 1


def test_a_failing_run_is_reported_and_the_others_complete(home):
    grid = {k: v for k, v in SMALL.items() if k != 'model'} | {'promote': False, 'name': 'typo test',
                                                                'grid': {'model': ['rf', 'nonexistent_model']}}
    params = write_params(home/'grid.yaml', grid)
    assert run_main(params, only='ingest,train', nbs=NBS, jobs=2) == 1     # side by side
    recs = {r['parameters']['model']: r for r in runs(home/'reports')}
    ok, bad = recs['rf'], recs['nonexistent_model']
    assert ok['status'] == 'succeeded' and ok['results']['train']['cv']['f1_macro']['mean'] > 0.5
    assert bad['status'] == 'failed' and bad['stages']['ingest']['status'] == 'succeeded'
    assert bad['stages']['train']['status'] == 'failed'
    err = bad['error']
    assert err['stage'] == 'train' and isinstance(err['cell_index'], int) and err['ename']
    assert 'nonexistent_model' in err['evalue']
    html = (home/'reports'/bad['run_id']/'07_train.html').read_text()
    assert 'papermill-error-cell' in html and 'nonexistent_model' in html
    assert not (home/'reports'/'latest').exists()          # grid runs leave `latest` alone
    index = (home/'reports'/'index.html').read_text()
    assert ok['run_id'] in index and bad['run_id'] in index and f"{bad['run_id']}/07_train.html#papermill-error-cell" in index
    lb = build_leaderboard(home/'reports')
    assert lb.status.tolist() == ['succeeded', 'failed'] and lb['rank'].tolist() == [1, 2]


def test_cli_refuses_unknown_and_ill_typed_parameters_before_running(home):
    exe = Path(sys.executable).parent/'drug-nbdev'
    assert exe.exists(), 'the drug-nbdev console script is not installed; run `make install`'
    for doc, words in [({'smoet': True}, ["unknown parameter 'smoet'", 'bad.yaml']),
                       ({'grid': {'smote': [False, 'yes']}}, ["parameter 'smote'", 'bool', 'bad.yaml']),
                       ({'seed': 0.5}, ["parameter 'seed'", 'must be int', 'bad.yaml']),
                       ({'model_version': 'x'}, ["unknown parameter 'model_version'"])]:
        params = write_params(home/'bad.yaml', doc)
        r = subprocess.run([str(exe), 'run', '--params', params, '--only', 'ingest,preprocess,train'],
                           capture_output=True, text=True, cwd=REPO, timeout=300)
        assert r.returncode == 2, r.stderr
        for w in words: assert w in r.stderr, (w, r.stderr)
    r = subprocess.run([str(exe), 'run', '--only', 'ingest,serve'], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 2 and 'unknown stage(s): serve' in r.stderr
    assert not (home/'reports').exists() or not any((home/'reports').iterdir())


def test_pipeline_reports_open_with_their_result_and_pass_the_report_check(home):
    """All five stages, as `make pipeline` runs them (`drug-nbdev run`; here with few folds, no tuning): each
    report opens with its result, leaves out setup and tests, and `drug-nbdev report` finds nothing to fix."""
    exe = Path(sys.executable).parent/'drug-nbdev'
    params = write_params(home/'small.yaml', dict(model='all', cv_folds=3, cv_repeats=1, tune=False))
    r = subprocess.run([str(exe), 'run', '--params', params], capture_output=True, text=True, cwd=REPO, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    check = subprocess.run([str(exe), 'report'], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    assert '7 report(s) checked, 0 with problems' in check.stderr        # five stages, the model card, the leaderboard
    from drug_nbdev.reports import visible_text
    latest = home/'reports'/'latest'
    text = {nb: visible_text((latest/f'{nb}.html').read_text()) for nb in ('04_explore', '07_train', '09_explain')}
    # the result sits under the title, before the notebook's own introduction (the method) and the detail
    for nb, intro, result in (('04_explore', 'Before choosing models', 'Na_to_K threshold'),
                              ('07_train', 'This stage turns the ingested patients', 'Champion:'),
                              ('09_explain', 'A recommendation a clinician cannot question', 'Three patients explained')):
        t = text[nb]
        assert t.index('Result') < t.index(result) < t.index(intro), nb
    for nb, t in text.items():
        assert 'nbdev_test' not in t and 'Results for the' not in t, nb    # test and setup cells are left out
    rj = json.loads((latest/'run.json').read_text())
    version = rj['results']['train']['version']
    assert f'Model card: {rj["results"]["train"]["model"]} ({version})' in (latest/'model_card.html').read_text()
    figures = sorted(p.name for p in (latest/'figures').iterdir())
    assert {'07_train-confusion-matrix-held-out-test.png', '07_train-calibration-out-of-fold.png',
            '09_explain-mean-shap-per-field-and-drug.png', '04_explore-patients-per-drug.png'} <= set(figures), figures
    index = (home/'reports'/'index.html').read_text()
    rid = rj['run_id']
    assert f"{rid}/model_card.html'" in index and f"{rid}/figures/07_train-confusion-matrix-held-out-test.png'" in index
    assert rj['data_sha256']['patients'][:12] in index and rj['git']['commit'][:12] in index
    # what a reviewer sees on the first screen (1280 × 900) of each report, in Debian's Chromium
    chromium = Path('/usr/bin/chromium')
    assert chromium.exists(), f'{chromium} is missing: apt-get install chromium (or `make test-deps`)'
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'])
        try:
            page = browser.new_page(viewport={'width': 1280, 'height': 900})
            for nb in text:
                page.goto((latest/f'{nb}.html').as_uri())
                top = page.eval_on_selector('img[data-figure]', 'e => e.getBoundingClientRect().top')
                assert top < 900, (nb, top)                             # the summary's figures start on the first screen
        finally: browser.close()


def test_cli_refuses_values_that_would_become_code(home):
    """A parameters file whose values papermill would write as code (issue 8.2) exits 2 with one clear line,
    before any notebook starts: nothing runs, no payload executes, no report folder is made."""
    exe = Path(sys.executable).parent/'drug-nbdev'
    marker = home/'payload-ran'
    payload = f'x"+str(__import__("pathlib").Path("{marker}").touch())+"'
    cases = [  # file text, what the message must say
        (f"paths: [!!set {{'{payload}': null}}]\n", "YAML type 'set' is not accepted"),   # a list default: passed the old type check
        ('paths: [!!binary aGk=]\n', "YAML type 'binary' is not accepted"),
        ('paths: [2024-01-01]\n', "YAML type 'timestamp' is not accepted (quote it"),
        ("paths: [!!python/object/apply:os.system ['touch " + str(marker) + "']]\n", "python/object/apply:os.system"),
        ('paths: &a [x]\ndataset: *a\n', 'aliases (*a) are not accepted'),
    ]
    for text, says in cases:
        f = home/'hostile.yaml'
        f.write_text(text)
        r = subprocess.run([str(exe), 'run', '--params', str(f), '--only', 'ingest'],
                           capture_output=True, text=True, cwd=REPO, timeout=300)
        assert r.returncode == 2, (text, r.returncode, r.stderr)
        assert says in r.stderr and str(f) in r.stderr, (says, r.stderr)
        assert 'Traceback' not in r.stderr and r.stdout == '', r.stderr
    r = subprocess.run([str(exe), 'run', '--only', 'ingest', '-p', f"paths=[!!set {{'{payload}': null}}]"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 2 and "-p paths: not accepted" in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert not marker.exists()
    assert not (home/'reports').exists() or not any((home/'reports').iterdir())


def test_accepted_values_reach_the_notebook_as_the_same_literals():
    """Every value the checker accepts is written by papermill's own translator as a plain literal that
    parses back (ast.literal_eval) to the value given — strings with quotes, backslashes, newlines,
    NULs and any Unicode; deep lists and maps; extreme numbers (hypothesis draws them)."""
    import ast, keyword
    from hypothesis import given, settings, strategies as st, HealthCheck
    from papermill.translators import PythonTranslator
    from drug_nbdev.run import check_value, check_codified
    leaf = (st.none() | st.booleans() | st.integers(min_value=-10**300, max_value=10**300)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text())
    value = st.recursive(leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                         max_leaves=20)
    names = st.from_regex(r'[a-z_][a-z0-9_]{0,10}', fullmatch=True).filter(lambda s: s.isidentifier() and not keyword.iskeyword(s))

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.dictionaries(names, value, min_size=1, max_size=4))
    def roundtrip(params):
        for k, v in params.items(): check_value(v, k)
        check_codified(params)                                        # raises if anything differs
        cell = PythonTranslator.codify(params)
        got = {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse(cell).body}
        assert repr(got) == repr(params)
    roundtrip()
