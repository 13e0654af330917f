"""Give the image a served model: ingest drug200 and register a raw-feature random forest as `current`.

Runs in the build stage with DRUG_NBDEV_HOME pointing at the image's project folder; a forest that fails the
quality gate fails the build (an image must not ship without a model that answers /predict).
"""
import shutil, sys
from drug_nbdev.config import get_settings
from drug_nbdev.ingest import ingest_main
from drug_nbdev.train import retrain_forest

if ingest_main(sys.argv[1:] or ['data/drug200.csv']): sys.exit('image model: ingest failed')
res = retrain_forest(n_estimators=100, seed=0, min_accuracy=0.9)
print(res['reason'])
if not res['promoted']: sys.exit(f"image model: {res['reason']}")
shutil.rmtree(get_settings().root/'mlruns', ignore_errors=True)   # the build's tracking store: not shipped
