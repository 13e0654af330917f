"""Benchmark batch scoring (`drug-nbdev predict`, i.e. serve.predict_main) on a million rows.

Writes 1 000 000 synthetic patients (plus an id column) to a Parquet file in a temporary folder,
trains a 100-tree forest on 300 synthetic patients in a temporary registry, then runs predict_main in
a child process and reports its wall time, rows/s and peak memory (the child's ru_maxrss, from
os.wait4). Goal on the 2-core machine: under 10 s and 1 GiB. Prints numbers; it is not a test.

    .venv/bin/python bench/bench_predict.py [--rows 1000000] [--chunksize 100000] [--out csv|parquet] [--trees 100]
"""
import argparse, os, shutil, subprocess, sys, time
import numpy as np, pandas as pd

from common import PY, scratch_home
from drug_nbdev.config import FEATURES
from drug_nbdev.testing import synthetic_patients


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rows', type=int, default=1_000_000)
    ap.add_argument('--chunksize', type=int, default=100_000)
    ap.add_argument('--out', choices=['csv', 'parquet'], default='parquet')
    ap.add_argument('--trees', type=int, default=100)
    a = ap.parse_args()
    home, env = scratch_home('drug_bench_predict_', a.trees)
    try:
        n = a.rows
        df = synthetic_patients(n, seed=0)[FEATURES].assign(patient_id=np.arange(n))
        src, dst = home/'patients.parquet', home/f'scored.{a.out}'
        df.to_parquet(src, row_group_size=a.chunksize)
        del df
        t0 = time.perf_counter()
        proc = subprocess.Popen([PY, '-c', 'import sys; from drug_nbdev.batch import predict_main; '
                                 f'sys.exit(predict_main({str(src)!r}, {str(dst)!r}, chunksize={a.chunksize}))'],
                                env=env, cwd=home)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        dt = time.perf_counter() - t0
        if proc.returncode != 0: sys.exit(f'predict_main failed with exit code {proc.returncode}')
        rows = pd.read_parquet(dst, columns=['prediction']).shape[0] if a.out == 'parquet' else sum(1 for _ in open(dst)) - 1
        assert rows == n, (rows, n)
        print(f'predict_main: {n:,} rows, Parquet in -> {a.out} out, chunks of {a.chunksize:,}, {a.trees}-tree forest, '
              f'{os.cpu_count()} cores')
        print(f'  wall time {dt:.2f} s (process start and imports included), {n / dt:,.0f} rows/s, '
              f'peak memory {usage.ru_maxrss / 1024:,.0f} MiB (child ru_maxrss), input {src.stat().st_size / 2**20:.1f} MiB, '
              f'output {dst.stat().st_size / 2**20:.1f} MiB')
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == '__main__':
    main()
