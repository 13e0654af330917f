"""`drug-nbdev monitor` end to end: audited predictions in a scratch project, the notebook run by papermill, the
report written to reports/monitoring/<stamp>/, and the exit code a scheduler alerts on (0 ok, 3 drift, 2 bad input)."""
import json, os, subprocess, sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
import pytest
from drug_nbdev.config import FEATURES, rule_drug
from drug_nbdev.db import predictions
from drug_nbdev.testing import scratch_project, synthetic_patients

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).parent/'drug-nbdev')
DAY1 = datetime(2026, 11, 2, 9, tzinfo=timezone.utc)   # traffic like the training data
DAY2 = datetime(2026, 11, 3, 9, tzinfo=timezone.utc)   # the same kind of patients with Na_to_K raised by a third
DAY3 = datetime(2026, 11, 4, 9, tzinfo=timezone.utc)   # 20 predictions only


def _audit(engine, at, df, channel='api'):
    rows = [dict(created_at=at + timedelta(seconds=i), channel=channel, model_version='v',
                 input=json.dumps({c: (r[c].item() if hasattr(r[c], 'item') else r[c]) for c in FEATURES}),
                 output=json.dumps({'prediction': str(d)}))
            for i, ((_, r), d) in enumerate(zip(df.iterrows(), rule_drug(df, na_cut=15, age_cut=50)))]
    with engine.begin() as conn: conn.execute(predictions.insert(), rows)


@pytest.fixture(scope='module')
def project():
    p = scratch_project(patients=400, trees=30)
    try:
        predictions.create(p.engine, checkfirst=True)
        like = synthetic_patients(300, seed=1)[FEATURES]
        _audit(p.engine, DAY1, like.iloc[:200]); _audit(p.engine, DAY1, like.iloc[200:], channel='batch')
        _audit(p.engine, DAY2, like.assign(Na_to_K=(like.Na_to_K * 1.35).round(3)))
        _audit(p.engine, DAY3, like.iloc[:20])
        yield p
    finally: p.close()


def monitor(*args):
    return subprocess.run([CLI, 'monitor', *args], capture_output=True, text=True, timeout=600, env=os.environ.copy())


def _report(p, out):
    line = [l for l in out.splitlines() if 'report: ' in l][-1]
    html = Path(line.split('report: ')[1].strip())
    return html, json.loads((html.parent/'monitor.json').read_text())


def test_traffic_like_training_is_no_drift(project):
    from drug_nbdev.config import get_settings
    from drug_nbdev.reports import write_leaderboard
    Path(get_settings().reports_dir).mkdir(parents=True, exist_ok=True)
    runs_index = write_leaderboard()                     # the runs' leaderboard, before any monitoring report
    assert 'monitoring/index.html' not in runs_index.read_text()
    r = monitor('--start', '2026-11-02', '--end', '2026-11-03')
    assert r.returncode == 0, r.stdout + r.stderr
    html, s = _report(project, r.stdout)
    assert s['status'] == 'ok' and s['n_records'] == 300
    assert [(f['feature'], f['drift']) for f in s['features']] == [(c, False) for c in FEATURES]
    assert all(set(f) >= {'statistic', 'p_value', 'drift', 'test'} for f in s['features'])
    assert {(v['channel'], v['n']) for v in s['volume']} == {('api', 200), ('batch', 100)}
    text = html.read_text()
    assert 'Drift per feature' in text and 'monitor_summary(' not in text and 'import ' not in text   # no code
    assert (html.parent/'monitor.ipynb').exists()
    assert html.parent.name in (html.parent.parent/'index.html').read_text()
    assert "href='monitoring/index.html'" in runs_index.read_text()    # and the leaderboard now links them


def test_one_shifted_feature_is_flagged_alone(project):
    r = monitor('--start', '2026-11-03', '--end', '2026-11-04')
    assert r.returncode == 3, r.stdout + r.stderr
    _, s = _report(project, r.stdout)
    assert s['status'] == 'drift'
    assert [f['feature'] for f in s['features'] if f['drift']] == ['Na_to_K']
    assert 'Na_to_K' in r.stdout


def test_few_records_are_not_enough_data(project):
    r = monitor('--start', '2026-11-04', '--end', '2026-11-05')
    assert r.returncode == 0, r.stdout + r.stderr
    _, s = _report(project, r.stdout)
    assert (s['status'], s['n_records'], s['features']) == ('not enough data', 20, [])


@pytest.mark.parametrize('args, says', [(['--start', 'yesterday'], "start 'yesterday' is not an ISO date"),
                                        (['--start', '2026-11-05', '--end', '2026-11-01'], 'the window is empty'),
                                        (['--since', '0'], 'since_days must be'),
                                        (['--since', 'abc'], "invalid float value: 'abc'")])
def test_bad_arguments_exit_2(project, args, says):
    r = monitor(*args)
    assert r.returncode == 2 and says in r.stderr and 'Traceback' not in r.stderr, (r.returncode, r.stderr)
