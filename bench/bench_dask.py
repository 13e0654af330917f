"""Benchmark `drug-nbdev predict` on a folder of Parquet files: one process, then a 2-worker Dask cluster.

Writes `--files` Parquet files of `--rows` synthetic patients each (row groups of `--chunksize`) to a temporary
folder, trains a 100-tree forest in a temporary registry, then scores the folder into one Parquet file twice,
each time as a child process (the `drug-nbdev predict` console script): once in that process, once with
`--scheduler` on a LocalCluster of 2 worker processes (1 thread each) started here. Reports wall time, rows/s,
the command's peak memory (its ru_maxrss, from os.wait4) and each worker's peak memory (ru_maxrss, asked of
the workers), and checks that both outputs are identical. The machine's load average is printed before and
after: on a shared 2-core machine other work changes the figures. Prints numbers; it is not a test.

    .venv/bin/python bench/bench_dask.py [--files 8] [--rows 1000000] [--chunksize 100000] [--trees 100]
"""
import argparse, os, resource, shutil, subprocess, sys, time
import numpy as np, pandas as pd

from common import PY, scratch_home
from drug_nbdev.config import FEATURES
from drug_nbdev.testing import synthetic_patients


def _peak_mib() -> float:
    "This process's peak resident memory in MiB (runs on a worker)."
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(cmd, env, cwd) -> tuple[float, float, str]:
    "Run `cmd`; its wall time, its own peak memory (MiB, ru_maxrss from os.wait4) and stdout, or exit with its stderr."
    out, err = cwd/'.bench.out', cwd/'.bench.err'
    t0 = time.perf_counter()
    with open(out, 'w') as o, open(err, 'w') as e: proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=o, stderr=e)
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0: sys.exit(f'{" ".join(cmd[1:3])} failed: {err.read_text()}')
    if 'rows scored' not in out.read_text(): sys.exit(f'{" ".join(cmd[:2])} printed no summary: {out.read_text()}')
    return dt, usage.ru_maxrss / 1024, out.read_text()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--files', type=int, default=8)
    ap.add_argument('--rows', type=int, default=1_000_000)
    ap.add_argument('--chunksize', type=int, default=100_000)
    ap.add_argument('--trees', type=int, default=100)
    a = ap.parse_args()
    home, env = scratch_home('drug_bench_dask_', a.trees)
    try:
        src = home/'exports'; src.mkdir()
        for k in range(a.files):
            n = a.rows
            (synthetic_patients(n, seed=k)[FEATURES].assign(patient_id=np.arange(n) + k * n)
             .to_parquet(src/f'part-{k:02d}.parquet', row_group_size=a.chunksize))
        total = a.files * a.rows
        load0 = os.getloadavg()
        cmd = [os.path.join(os.path.dirname(PY), 'drug-nbdev'), 'predict', str(src), '--chunksize', str(a.chunksize), '--out']
        t_local, m_local, _ = timed(cmd + [str(home/'local.parquet')], env, home)

        from distributed import Client, LocalCluster
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=':0',
                          memory_limit='4GiB') as cluster, Client(cluster) as client:
            t_cluster, m_client, said = timed(cmd + [str(home/'cluster.parquet'), '--scheduler', cluster.scheduler_address], env, home)
            workers = client.run(_peak_mib)
        load1 = os.getloadavg()
        same = pd.read_parquet(home/'local.parquet').equals(pd.read_parquet(home/'cluster.parquet'))

        print(f'predict on a folder: {a.files} Parquet files x {a.rows:,} rows = {total:,} rows, row groups and chunks of '
              f'{a.chunksize:,}, {a.trees}-tree forest, {os.cpu_count()} cores')
        print(f'  load average before {load0[0]:.2f}, after {load1[0]:.2f} (1 min; other work on the machine slows both runs)')
        print(f'  single process : wall {t_local:6.1f} s, {total / t_local:10,.0f} rows/s, peak {m_local:,.0f} MiB')
        print(f'  2-worker Dask  : wall {t_cluster:6.1f} s, {total / t_cluster:10,.0f} rows/s, command (client) peak '
              f'{m_client:,.0f} MiB, workers peak '
              + ', '.join(f'{v:,.0f} MiB' for v in workers.values()))
        print(f'  overhead of the cluster: {t_cluster / t_local:.2f}x the single-process wall time '
              f'({t_cluster - t_local:+.1f} s); outputs identical: {same}')
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == '__main__':
    main()
