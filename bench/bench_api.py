"""Benchmark the REST API: /predict latency with one client and throughput with 8 and 32 clients.

Starts a real uvicorn server (one worker, `serve_main`) on a free loopback port, with a forest trained
on 300 synthetic patients in a temporary registry, and drives it with httpx clients (one keep-alive
connection per client thread). Every answer waits for its audit row to be committed (`--audit-sync`
chooses SQLite's durability: `full` flushes the disk at each group commit, `normal` survives a crash of
the process but not of the machine). The load average is printed: on a shared machine it explains
much of the spread; so is the server's CPU time per request (from /proc), which other processes on the
machine change much less than they change the wall-clock numbers. Patients are drawn at random (each one-client run sees each
patient once, so none of its answers comes from the cache) unless
--same is given. One client is measured in --runs runs of --requests requests with httpx (what a Python caller
sees), then with Python's stdlib http.client (a lean client),
then for --seconds with one wrk connection (a C client, sending each request the moment the last answer arrives).
The one-client goal (p99 <= 2 ms) is judged on the http.client runs: httpx spends more CPU per request than the
server does (both are printed), and wrk's percentiles are corrected for coordinated omission, i.e. they describe
a client sending at a fixed rate rather than one that waits for each answer. Prints numbers; it is not a test.

With many clients the httpx client is the bottleneck, not the server: one Python process whose threads share the
GIL spends about 800 us of CPU per request at 32 clients, against the server's ~350 us, on the same 2 cores — so
the throughput it reports caps near 1,600 requests/s whatever the server does. The throughput runs are therefore
also made with wrk (a C load generator, one thread, one keep-alive connection per client, the same request bodies
in turn through a Lua script) when it is installed (`make bench` installs Debian's wrk); the goal of the issue is
judged on wrk's figure, and both are printed. The httpx runs cycle through 5,000 patients, so after the first pass
the server's answer cache answers them (as in the figure the project's goal was first stated against); wrk runs
those 5,000 patients too, then 40,000 patients the server has not seen, where each answer costs a TreeSHAP call.

    .venv/bin/python bench/bench_api.py [--requests 2000] [--runs 3] [--seconds 5] [--trees 100] [--same] [--audit-sync normal]
"""
import argparse, os, shutil, socket, subprocess, sys, threading, time
import httpx, numpy as np

from common import PY, scratch_home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def cpu_seconds(pid: int) -> float | None:
    "User + system CPU time the process `pid` has used so far (Linux /proc), or None elsewhere."
    try: fields = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    except OSError: return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def per_request_us(before: float | None, after: float | None, n: int) -> str:
    return f', server CPU {1e6 * (after - before) / n:.0f} us/request' if before is not None and after is not None and n else ''


def patients(n: int, same: bool, seed: int = 0) -> list[dict]:
    if same: return [{'Age': 45, 'Sex': 'M', 'BP': 'HIGH', 'Cholesterol': 'NORMAL', 'Na_to_K': 15.5}] * n
    rng = np.random.default_rng(seed)
    return [{'Age': int(rng.integers(15, 75)), 'Sex': str(rng.choice(['F', 'M'])), 'BP': str(rng.choice(['HIGH', 'LOW', 'NORMAL'])),
             'Cholesterol': str(rng.choice(['HIGH', 'NORMAL'])), 'Na_to_K': round(float(rng.uniform(6, 38)), 3)} for _ in range(n)]


def latency(url: str, bodies: list[dict]) -> np.ndarray:
    out = []
    with httpx.Client(base_url=url) as c:
        for b in bodies[:50]: c.post('/predict', json=b)   # warm up
        for b in bodies:
            t0 = time.perf_counter(); r = c.post('/predict', json=b); out.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
    return 1e3 * np.array(out)


def latency_stdlib(url: str, bodies: list[dict]) -> np.ndarray:
    "Milliseconds per POST /predict from Python's own http.client on one keep-alive connection (a lean client: ~0.1 ms of its own)."
    import http.client, json
    from urllib.parse import urlsplit
    u = urlsplit(url); c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    hdr, out = {'Content-Type': 'application/json'}, []
    try:
        for i, b in enumerate([json.dumps(b) for b in bodies[:50]] + [json.dumps(b) for b in bodies]):
            t0 = time.perf_counter(); c.request('POST', '/predict', b, hdr); r = c.getresponse(); r.read()
            if i >= 50: out.append(time.perf_counter() - t0)    # the first 50 warm up (and repeat patients of the list)
            assert r.status == 200, r.status
    finally: c.close()
    return 1e3 * np.array(out)


def throughput(url: str, clients: int, seconds: float, bodies: list[dict]) -> tuple[float, int, int]:
    stop, counts, bad = threading.Event(), [0] * clients, [0] * clients
    barrier = threading.Barrier(clients + 1)

    def run(i):
        with httpx.Client(base_url=url, timeout=30) as c:
            c.post('/predict', json=bodies[i])
            barrier.wait()
            k = i
            while not stop.is_set():
                r = c.post('/predict', json=bodies[k % len(bodies)]); k += clients
                if r.status_code == 200: counts[i] += 1
                else: bad[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads: t.start()
    barrier.wait(); t0 = time.perf_counter()
    time.sleep(seconds); stop.set()
    for t in threads: t.join()
    dt = time.perf_counter() - t0
    return sum(counts) / dt, sum(counts), sum(bad)


def wrk_throughput(url: str, clients: int, seconds: float, bodies: list[dict]) -> tuple[float, int, int, str]:
    "Requests/s, answers, non-200 answers and latency percentiles of wrk's POST /predict run with `clients` connections."
    import json, re, tempfile
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, 'bodies.lua')
        with open(script, 'w') as f:
            f.write('local bodies = {\n' + ''.join(f'[[{json.dumps(b)}]],\n' for b in bodies) + '}\n'
                    'local i = 0\nwrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                    'request = function() i = i + 1; return wrk.format(nil, "/predict", nil, bodies[(i % #bodies) + 1]) end\n')
        out = subprocess.run(['wrk', '-t1', f'-c{clients}', f'-d{seconds:g}s', '--latency', '-s', script, url],
                             capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r'Requests/sec:\s*([\d.]+)', out).group(1))
    n = int(re.search(r'(\d+) requests in', out).group(1))
    bad = int(m.group(1)) if (m := re.search(r'Non-2xx or 3xx responses:\s*(\d+)', out)) else 0
    pct = ' '.join(f'p{p} {v}' for p, v in re.findall(r'^\s+(50|99)%\s+(\S+)', out, re.M))
    return rps, n, bad, pct


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--requests', type=int, default=2000, help='sequential requests for the latency run')
    ap.add_argument('--runs', type=int, default=3, help='one-client latency runs (each with patients not seen before)')
    ap.add_argument('--seconds', type=float, default=5, help='duration of each throughput run')
    ap.add_argument('--trees', type=int, default=100, help='trees in the served forest')
    ap.add_argument('--same', action='store_true', help='always send the same patient (answer cache hits)')
    ap.add_argument('--audit-sync', choices=['full', 'normal'], default=None,
                    help='SQLite audit durability (DRUG_NBDEV_AUDIT_SYNC; default normal)')
    a = ap.parse_args()
    proc = None
    home, env = scratch_home('drug_bench_api_', a.trees)
    if a.audit_sync: env['DRUG_NBDEV_AUDIT_SYNC'] = a.audit_sync
    try:
        port = free_port(); url = f'http://127.0.0.1:{port}'
        proc = subprocess.Popen([PY, '-c', f'from drug_nbdev.api import serve_main; raise SystemExit(serve_main("127.0.0.1", {port}))'],
                                env=env, cwd=home)
        end = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f'{url}/health').status_code == 200: break
            except httpx.TransportError: pass
            if proc.poll() is not None or time.monotonic() > end: sys.exit('the server did not start')
            time.sleep(0.2)
        bodies = patients(max(a.requests, 5000), a.same)
        kind = 'the same patient' if a.same else 'random patients'
        print(f'/predict, {a.trees}-tree forest, {kind}, one uvicorn worker, {os.cpu_count()} cores (clients share them), '
              f'audit committed before each answer (SQLite synchronous={(a.audit_sync or "normal").upper()}), '
              f'load average {os.getloadavg()[0]:.2f} at start')
        for run in range(a.runs):   # a shared machine's noise moves p99 from run to run: several runs show the spread
            some = bodies[:a.requests] if run == 0 else patients(a.requests, a.same, seed=10 + run)
            cpu0, own0 = cpu_seconds(proc.pid), time.process_time()
            lat = latency(url, some)
            cpu1, own1 = cpu_seconds(proc.pid), time.process_time()
            print(f'  1 client (httpx), run {run + 1}, {len(lat)} sequential requests: p50 {np.percentile(lat, 50):.2f} ms, '
                  f'p99 {np.percentile(lat, 99):.2f} ms, mean {lat.mean():.2f} ms{per_request_us(cpu0, cpu1, len(lat) + 50)}, '
                  f'client CPU {1e6 * (own1 - own0) / (len(lat) + 50):.0f} us/request, load {os.getloadavg()[0]:.2f}')
        for run in range(a.runs):
            cpu0, own0 = cpu_seconds(proc.pid), time.process_time()
            lat = latency_stdlib(url, patients(a.requests, a.same, seed=20 + run))
            cpu1, own1 = cpu_seconds(proc.pid), time.process_time()
            print(f'  1 client (http.client), run {run + 1}, {len(lat)} sequential requests: p50 {np.percentile(lat, 50):.2f} ms, '
                  f'p99 {np.percentile(lat, 99):.2f} ms, mean {lat.mean():.2f} ms{per_request_us(cpu0, cpu1, len(lat) + 50)}, '
                  f'client CPU {1e6 * (own1 - own0) / (len(lat) + 50):.0f} us/request, load {os.getloadavg()[0]:.2f}')
        if shutil.which('wrk') is not None:
            # wrk corrects for coordinated omission: for every answer slower than the run's mean interval it adds the samples
            # a client sending at that rate would have seen (stats_correct in wrk.c), so its percentiles describe such an
            # open-loop client, not one that waits for each answer; printed for comparison, not for the one-client goal
            rps, total, bad, pct = wrk_throughput(url, 1, a.seconds, patients(20_000, a.same, seed=3))
            print(f'  1 wrk connection for {a.seconds:g} s, new patients: {rps:,.0f} requests/s ({total - bad} answered 200, '
                  f'{bad} other; latency corrected for coordinated omission {pct})')
        for n in (8, 32):
            cpu0 = cpu_seconds(proc.pid)
            rps, ok, bad = throughput(url, n, a.seconds, bodies)
            cpu1 = cpu_seconds(proc.pid)
            print(f'  {n:2d} clients for {a.seconds:g} s: {rps:,.0f} requests/s ({ok} answered 200, {bad} other'
                  f'{per_request_us(cpu0, cpu1, ok + bad + n)})')
        if shutil.which('wrk') is None: print('  (wrk is not installed: `make bench` installs it; no wrk figures)')
        else:
            for n, seed in ((8, 1), (32, 2)):
                # the httpx runs' 5,000 patients (answered from the cache by now), then patients the server has not seen
                for kind, some in (('5,000 patients as above', bodies), ('40,000 new patients', patients(40_000, a.same, seed=seed))):
                    cpu0 = cpu_seconds(proc.pid)
                    rps, total, bad, pct = wrk_throughput(url, n, a.seconds, some)
                    cpu1 = cpu_seconds(proc.pid)
                    print(f'  {n:2d} wrk connections for {a.seconds:g} s, {kind}: {rps:,.0f} requests/s ({total - bad} answered 200, '
                          f'{bad} other; latency {pct}{per_request_us(cpu0, cpu1, total)})')
    finally:
        if proc is not None:
            proc.terminate()
            try: proc.wait(15)
            except subprocess.TimeoutExpired: proc.kill()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == '__main__':
    main()
