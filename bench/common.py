"""What both benchmarks share: a scratch project home with a forest trained on synthetic patients."""
import os, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT/'.venv'/'bin'/'python') if (ROOT/'.venv'/'bin'/'python').exists() else sys.executable
_SETUP = """
import os, sys
from drug_nbdev.testing import synthetic_patients
from drug_nbdev.ingest import ingest_paths
from drug_nbdev.train import retrain_forest
p = os.path.join(os.environ['DRUG_NBDEV_HOME'], 'patients.csv')
synthetic_patients(300, seed=0).to_csv(p, index=False)
ingest_paths([p])
print(retrain_forest(n_estimators=int(sys.argv[1]), min_accuracy=0.0)['version'])
"""


def scratch_home(prefix: str, trees: int) -> tuple[Path, dict]:
    "A temporary project home whose registry serves a `trees`-tree forest, and the environment pointing at it."
    home = Path(tempfile.mkdtemp(prefix=prefix))
    # every setting takes its default under DRUG_NBDEV_HOME; none is inherited from the caller
    env = {k: v for k, v in os.environ.items() if not k.startswith('DRUG_NBDEV_') and k != 'MLFLOW_TRACKING_URI'}
    env['DRUG_NBDEV_HOME'] = str(home)
    subprocess.run([PY, '-c', _SETUP, str(trees)], env=env, cwd=home, check=True, capture_output=True)
    return home, env
