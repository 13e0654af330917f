"""Benchmark streaming ingest (`drug-nbdev ingest`) of 1 M (and 10 M) synthetic rows from CSV and Parquet into SQLite.

For each size and format: writes the rows to a temporary file, then ingests it in a child process (a fresh
store and SQLite database in a temporary folder) and reports wall time, rows/s and peak memory (the child's
ru_maxrss, from os.wait4). The same rows are also loaded the bare way — pandas reads the whole file, SQLite
executemany inserts it — in another child, and the ratio printed. Goals on the 2-core machine (issue 11):
1 M rows in < 6 s with a peak < 400 MiB, and a peak flat from 1 M to 10 M rows. Prints numbers; not a test.

    .venv/bin/python bench/bench_ingest.py [--rows 1000000 10000000] [--formats csv parquet] [--no-bare]
"""
import argparse, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

from common import PY

INGEST = """
import sys
from drug_nbdev.ingest import ingest_paths
from drug_nbdev.store import LocalStore
from drug_nbdev.db import get_engine
r = ingest_paths([sys.argv[1]], LocalStore(sys.argv[2]), get_engine('sqlite:///' + sys.argv[3]))[0]
print(r.status, r.rows, r.new_records, r.message[:200], file=sys.stderr)
sys.exit(r.status != 'accepted')
"""
BARE = """
import sqlite3, sys
import pandas as pd
df = pd.read_parquet(sys.argv[1]) if sys.argv[1].endswith('.parquet') else pd.read_csv(sys.argv[1])
con = sqlite3.connect(sys.argv[3])
con.execute('CREATE TABLE p (Age INTEGER, Sex TEXT, BP TEXT, Cholesterol TEXT, Na_to_K REAL, Drug TEXT)')
con.executemany('INSERT INTO p VALUES (?, ?, ?, ?, ?, ?)', df.itertuples(index=False, name=None))
con.commit()
"""


def write(src: str, n: int) -> None:
    "Write `n` synthetic patients to `src` (.csv or .parquet), a million at a time."
    import pyarrow as pa, pyarrow.parquet as pq
    from drug_nbdev.testing import synthetic_patients
    w = None
    for i, s in enumerate(range(0, n, 1_000_000)):
        part = synthetic_patients(min(1_000_000, n - s), seed=i)
        if src.endswith('.csv'): part.to_csv(src, mode='a', header=i == 0, index=False)
        else:
            t = pa.Table.from_pandas(part, preserve_index=False)
            w = w or pq.ParquetWriter(src, t.schema)
            w.write_table(t, row_group_size=200_000)
    if w: w.close()


def run(code: str, *args) -> tuple[float, float]:
    "Wall time (s) and peak memory (MiB) of `code` run with `args` in a child process."
    t0 = time.perf_counter()
    proc = subprocess.Popen([PY, '-c', code, *map(str, args)], stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    dt, err = time.perf_counter() - t0, proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0: sys.exit(f'child failed: {err[-2000:]}')
    return dt, usage.ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rows', type=int, nargs='+', default=[1_000_000, 10_000_000])
    ap.add_argument('--formats', nargs='+', default=['csv', 'parquet'], choices=['csv', 'parquet'])
    ap.add_argument('--no-bare', action='store_true', help='skip the bare pandas + SQLite comparison')
    a = ap.parse_args()
    print(f'bench_ingest: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start')
    peaks = {}
    for n in a.rows:
        for fmt in a.formats:
            tmp = Path(tempfile.mkdtemp(prefix='drug_bench_ingest_'))
            try:
                src = tmp/f'patients.{fmt}'
                # written by a child: ru_maxrss counts a forked child's pages before exec, so this process stays small
                run(f'import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); from bench_ingest import write; write(sys.argv[1], int(sys.argv[2]))', src, n)
                dt, peak = run(INGEST, src, tmp/'lake', tmp/'db.sqlite')
                peaks[fmt, n] = peak
                line = (f'  ingest {n:>10,} rows from {fmt:<7} ({src.stat().st_size / 2**20:,.0f} MiB): {dt:6.2f} s, '
                        f'{n / dt:>9,.0f} rows/s, peak {peak:,.0f} MiB')
                if not a.no_bare:
                    bdt, bpeak = run(BARE, src, '', tmp/'bare.sqlite')
                    line += f' | bare pandas + SQLite insert: {bdt:.2f} s, peak {bpeak:,.0f} MiB -> time ×{dt / bdt:.2f}, peak ×{peak / bpeak:.2f}'
                print(line, flush=True)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    for fmt in a.formats:                              # the goal: a peak flat in the number of rows
        sizes = sorted(n for f, n in peaks if f == fmt)
        if len(sizes) > 1:
            print(f'  peak {fmt}: {sizes[-1]:,} rows / {sizes[0]:,} rows = ×{peaks[fmt, sizes[-1]] / peaks[fmt, sizes[0]]:.2f}')
    print(f'load average {os.getloadavg()[0]:.2f} at end')


if __name__ == '__main__':
    main()
