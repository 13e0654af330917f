"""The leaderboard in a real browser: opened from file:// in Debian's Chromium (never a downloaded
browser), it sorts by a metric column on a click and fetches nothing. Chromium missing is a failure,
not a skip: `make test-deps` installs it.
"""
import json
from pathlib import Path
import pytest
from drug_nbdev.reports import write_leaderboard

CHROMIUM = Path('/usr/bin/chromium')
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run']
METRICS = ('f1_macro', 'accuracy', 'log_loss', 'brier')

pytestmark = pytest.mark.timeout(180)


def fake_run(reports: Path, rid: str, model: str, f1: float | None, log_loss: float | None = None, status='succeeded'):
    "A run folder with the run.json the runner writes (only what the leaderboard reads)."
    d = reports/rid; d.mkdir(parents=True)
    train = dict(model=model, version=f'v-{rid}', cv={m: {'mean': f1, 'std': 0.01} for m in METRICS},
                 test={m: f1 for m in METRICS})
    if log_loss is not None: train['cv']['log_loss']['mean'] = train['test']['log_loss'] = log_loss
    rec = dict(run_id=rid, status=status, parameters={'model': model}, stage_names=['ingest', 'train'],
               git=dict(commit='c' * 40, dirty=False), data_sha256=dict(source='ingest.json', files={}, patients='d' * 64),
               stages={'train': {'html': '07_train.html'}}, results={'train': train} if status == 'succeeded' else {})
    if status != 'succeeded': rec['error'] = dict(stage='train', html='07_train.html', cell_index=3, ename='ValueError', evalue='bad')
    (d/'run.json').write_text(json.dumps(rec))


@pytest.fixture
def page():
    if not CHROMIUM.exists(): pytest.fail(f'{CHROMIUM} is missing: apt-get install chromium (or `make test-deps`)')
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try: yield browser.new_page()
        finally: browser.close()


def test_leaderboard_sorts_by_any_metric_column_from_file_url(tmp_path, page):
    reports = tmp_path/'reports'
    fake_run(reports, '20260101T000000Z-a-000', 'rf', 0.90, log_loss=0.30)
    fake_run(reports, '20260102T000000Z-b-000', 'network', 0.97, log_loss=0.50)
    fake_run(reports, '20260103T000000Z-c-000', 'tree', 0.95, log_loss=0.10)
    fake_run(reports, '20260104T000000Z-a-000', 'rf', 0.90, log_loss=0.30)        # a repeat of the first run
    fake_run(reports, '20260105T000000Z-x-000', 'logreg', None, status='failed')
    index = write_leaderboard(reports)
    urls = []
    page.on('request', lambda r: urls.append(r.url))
    page.goto(index.as_uri())
    heads = page.eval_on_selector_all('thead th', 'ths => ths.map(t => t.textContent.trim())')
    col = lambda name: page.eval_on_selector_all(
        'tbody tr', f'rows => rows.map(r => r.cells[{heads.index(name)}].innerText.trim().split("\\n")[0])')
    assert col('model') == ['network', 'tree', 'rf', '']             # ranked: CV macro-F1, failed last
    assert col('runs') == ['1', '1', '2', '1']                       # the repeat is one row
    page.click("th:text-is('CV log loss')")                          # best (lowest) first
    assert col('model') == ['tree', 'rf', 'network', '']             # the failed run's empty cell stays last
    page.click("th:text-is('CV log loss')")
    assert col('model') == ['network', 'rf', 'tree', '']
    page.click("th:text-is('test accuracy')")                        # best (highest) first
    assert col('model') == ['network', 'tree', 'rf', '']
    page.click("th:text-is('runs')")
    assert col('model')[0] == 'rf'
    page.click("th:text-is('#')")
    assert col('model') == ['network', 'tree', 'rf', '']
    assert urls and all(u.startswith('file://') for u in urls), urls  # nothing from the network
