"""A save killed with SIGKILL at any moment leaves `current` loadable, and the next save cleans up.

A child process registers versions back to back (each one made current), for a scikit-learn pipeline
and for the Keras network; the test kills it at several moments after it started saving, then checks
that the registry's current version loads from disk, passes its checksums and predicts, that the
kills did land inside saves (a `.tmp-*` folder was left at least once), and that one more save leaves
no `.tmp-*` folder or `.current-*` link behind.

The check loads in this process (`load_model` reads everything from disk and keeps no cache), so TensorFlow
is imported once rather than once per round. Each kill is timed from the moment a save's `.tmp-*` folder
appears (not from the child's start, which depends on the machine's load), at offsets that spread the kills
over a save: four for scikit-learn (a forest's save takes a few tenths of a second), three for Keras (about a
second); the larger ones also land after a save, while `current` moves or the next one starts.
"""
import os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent("""
    import sys, pandas as pd
    from drug_nbdev.config import checkout_root, validate_frame, FEATURES, TARGET
    from drug_nbdev.registry import register_model, new_version_id
    kind, models = sys.argv[1], sys.argv[2]
    p = validate_frame(pd.read_csv(checkout_root()/'data'/'drug200.csv'), 'drug200.csv')
    X, y = p[FEATURES], p[TARGET]
    if kind == 'keras':
        from drug_nbdev.network import KerasDrugClassifier
        est = KerasDrugClassifier(hidden_units=4, feature_units=4, epochs=1).fit(X, y)
    else:
        from sklearn.ensemble import RandomForestClassifier
        from drug_nbdev.preprocess import build_pipeline
        est = build_pipeline(RandomForestClassifier(n_estimators=200)).fit(X, y)
    cv = {m: dict(mean=0.9, std=0.01) for m in ('accuracy', 'f1_macro', 'log_loss', 'brier')}
    meta = dict(name='rf', params={}, metrics=dict(cv=cv, test=None), input_ranges={'Age': [15, 74], 'Na_to_K': [6.3, 38.2]},
                trained_at='2026-01-01T00:00:00', data_sha256='0' * 64, n_train=len(X), model_classes=[str(c) for c in est.classes_])
    print('ready', flush=True)
    while True:
        print(register_model(est, dict(meta, version=new_version_id()), models_dir=models), flush=True)
        if sys.argv[3:] == ['once']: break
""")


def registry_state(models: Path):
    "Load the current version (checksums verified) and predict one patient; its version."
    import pandas as pd
    from drug_nbdev.registry import load_model
    from drug_nbdev.testing import EXAMPLE_PATIENT
    m = load_model(models_dir=models)
    assert m.predict_proba(pd.DataFrame([EXAMPLE_PATIENT])).shape == (1, 5)
    return m.version


def started_saving(models: Path, before: set, timeout: float = 120) -> None:
    "Wait until a save's `.tmp-*` folder not in `before` appears: the kill that follows lands inside a save."
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if models.exists() and set(models.glob('.tmp-*')) - before: return
        time.sleep(0.002)
    pytest.fail(f'no save started within {timeout:g} s')


@pytest.mark.timeout(900)
@pytest.mark.parametrize('kind,delays', [('sklearn', (0.0, 0.02, 0.1, 0.3)), ('keras', (0.0, 0.3, 1.0))])
def test_kill_during_save_leaves_current_loadable(tmp_path, kind, delays):
    models = tmp_path/'models'
    leftovers_seen, saved = 0, []
    for delay in delays:
        child = subprocess.Popen([sys.executable, '-c', CHILD, kind, str(models)], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == 'ready'
            if not saved:                      # the first round: let one save complete so there is a current version
                saved.append(child.stdout.readline().strip())
            started_saving(models, before=set(models.glob('.tmp-*')) if models.exists() else set())
            time.sleep(delay)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            if child.poll() is None: child.kill()
            child.wait(30)
        leftovers_seen += any(models.glob('.tmp-*'))
        assert registry_state(models)          # current loads, its checksums hold, it predicts
    assert leftovers_seen, 'no kill landed inside a save: the test did not test anything'
    # one more complete save cleans what the killed ones left
    r = subprocess.run([sys.executable, '-c', CHILD, kind, str(models), 'once'], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    last = r.stdout.split()[-1]
    test_left = sorted(p.name for p in models.iterdir() if p.name.startswith(('.tmp-', '.current-')))
    assert test_left == [], test_left
    assert registry_state(models) == last
