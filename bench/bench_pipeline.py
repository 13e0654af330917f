"""Benchmark `make pipeline`'s stages: `drug-nbdev run` in a fresh scratch project, stage by stage.

Copies data/drug200.csv into a temporary project home, runs `drug-nbdev run` there (every stage on the
defaults, the same command `make pipeline` runs) in a child process, and prints each stage's wall time
from the run's run.json, the total, and the CPU time (user + sys) of the child and everything it waited
for (the papermill kernels) from os.wait4. The machine is shared: the load average before and after is
printed too, and CPU time is the number to compare when the load differs. `--runs 2` runs the pipeline
twice in the same home (the second run finds the network's grid search in its cache). Goal on the
2-core machine: stages under 90 s. Prints numbers; it is not a test.

    .venv/bin/python bench/bench_pipeline.py [--runs 1] [--only ingest,train] [--keep]
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

from common import ROOT, PY


def load() -> str:
    "The 1, 5 and 15 minute load averages."
    return ' '.join(f'{x:.2f}' for x in os.getloadavg())


def run_once(home: Path, env: dict, only: str | None) -> dict:
    "One `drug-nbdev run` in `home`: wall, cpu (user+sys of the whole process tree), stage times."
    before = {p.name for p in (home/'reports').glob('*-*')} if (home/'reports').exists() else set()
    cmd = [str(Path(PY).parent/'drug-nbdev'), 'run'] + (['--only', only] if only else [])
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors='replace'); proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0: sys.exit(f'drug-nbdev run failed:\n{err[-3000:]}')
    runs = sorted(p for p in (home/'reports').glob('*-*') if p.is_dir() and p.name not in before)
    rec = json.loads((runs[-1]/'run.json').read_text())
    return dict(wall=wall, cpu=usage.ru_utime + usage.ru_stime,
                stages={s: st.get('duration_s') for s, st in rec['stages'].items()},
                stage_cpu={s: st.get('cpu_s') for s, st in rec['stages'].items()})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', type=int, default=1, help='pipeline runs in the same project home')
    ap.add_argument('--only', default=None, help='comma list of stages (default: all)')
    ap.add_argument('--keep', action='store_true', help='keep the scratch project home')
    a = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix='drug_bench_pipeline_'))
    (home/'data').mkdir()
    shutil.copy(ROOT/'data'/'drug200.csv', home/'data'/'drug200.csv')
    # every setting takes its default under DRUG_NBDEV_HOME; none is inherited from the caller
    env = {k: v for k, v in os.environ.items() if not k.startswith('DRUG_NBDEV_') and k != 'MLFLOW_TRACKING_URI'}
    env['DRUG_NBDEV_HOME'] = str(home)
    try:
        for i in range(a.runs):
            l0 = load()
            r = run_once(home, env, a.only)
            print(f'run {i + 1}: ' + '  '.join(f'{s} {t:.1f}s' for s, t in r['stages'].items()))
            if all(v is not None for v in r['stage_cpu'].values()):   # older runners do not record it
                print('  cpu:  ' + '  '.join(f'{s} {t:.1f}s' for s, t in r['stage_cpu'].items()))
            print(f'        stages {sum(r["stages"].values()):.1f}s  wall {r["wall"]:.1f}s  '
                  f'cpu (user+sys) {r["cpu"]:.1f}s  load before {l0}  after {load()}  (cores: {os.cpu_count()})')
    finally:
        if a.keep: print(f'kept {home}')
        else: shutil.rmtree(home, ignore_errors=True)


if __name__ == '__main__':
    main()
