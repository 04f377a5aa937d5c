"""How the data steps grow: near-duplicate detection with 10k-1M texts (in memory, and with the LSH index in a
real redis-server), and the API teacher's labelling rate against the requests it keeps in flight.

Dedupe: the synthetic texts of benchmarks/data_dedupe.py (8-20 words, 5% planted near-duplicates), threshold 0.8.
Each size and mode runs in a process of its own: seconds of the dedupe call (texts already made), the process's
peak resident memory, and for Redis the server's peak memory (``INFO memory``). Redis mode reads the texts in
shards of ``--shard`` (:func:`distil.data.dedupe.near_duplicate_pairs_sharded`). Labelling: the distil API teacher
(``OpenAICompatTeacher``, ``teachers[].max_concurrency`` = in flight) against the local server of
benchmarks/data_api.py that answers each request after 50 ms, like one replica that never saturates; the ideal
rate is in flight / 50 ms.

    python benchmarks/scale.py --sizes 10000,100000,1000000 --redis-sizes 10000,100000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _report import markdown_table, write_section  # noqa: E402

THRESHOLD = 0.8
LATENCY = 0.05


# --- dedupe, one size and mode per process ---------------------------------------------------------------------


def dedupe_child(mode: str, n: int, port: int, shard: int) -> None:
    from data_dedupe import short_texts

    from distil.data import dedupe

    texts = short_texts(n)
    started = time.perf_counter()
    if mode == "memory":
        pairs = dedupe.near_duplicate_pairs(texts, THRESHOLD)
    else:
        storage = {"type": "redis", "redis": {"host": "127.0.0.1", "port": port}}
        shards = (texts[a : a + shard] for a in range(0, n, shard))
        pairs = dedupe.near_duplicate_pairs_sharded(shards, THRESHOLD, storage)
    print("RESULT " + json.dumps({"seconds": time.perf_counter() - started, "pairs": len(pairs)}))


def run_child(args: list[str]) -> dict:
    with tempfile.TemporaryFile("w+") as out:
        child = subprocess.Popen([sys.executable, __file__, *args], stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        out.seek(0)
        text = out.read()
    lines = [x for x in text.splitlines() if x.startswith("RESULT ")]
    if os.waitstatus_to_exitcode(status) != 0 or not lines:
        raise SystemExit(f"{args} failed:\n{text[-2000:]}")
    return {**json.loads(lines[-1][7:]), "peak_bytes": usage.ru_maxrss * 1024}


def start_redis(folder: Path) -> tuple[subprocess.Popen, int]:
    import redis

    from tests.data.redis_server import free_port

    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        + ["--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(400):
        try:
            client.ping()
            return server, port
        except redis.ConnectionError:
            time.sleep(0.05)
    server.kill()
    raise SystemExit("redis-server did not start")


def dedupe_rows(sizes: list[int], redis_sizes: set[int], shard: int, loads: list[float]) -> list[list[str]]:
    import redis

    rows = []
    for n in sorted(set(sizes) | redis_sizes):
        memory = run_child(["--child", "memory", "--n", str(n)]) if n in sizes else None
        loads.append(os.getloadavg()[0])
        if n not in redis_sizes:
            print(n, memory, flush=True)
            rows.append(
                [f"{n:,}", f"{memory['pairs']:,}", f"{memory['seconds']:,.1f}"]
                + [f"{memory['peak_bytes'] / 2**20:,.0f}", "-", "-", "-", "-"]
            )
            continue
        folder = Path(tempfile.mkdtemp())
        server, port = start_redis(folder)
        try:
            in_redis = run_child(["--child", "redis", "--n", str(n), "--port", str(port), "--shard", str(shard)])
            redis_peak = int(redis.Redis(port=port).info("memory")["used_memory_peak"])
        finally:
            server.terminate()
            server.wait(timeout=30)
            shutil.rmtree(folder, ignore_errors=True)
        loads.append(os.getloadavg()[0])
        if memory is not None and in_redis["pairs"] != memory["pairs"]:
            raise SystemExit(f"{n} texts: {in_redis['pairs']} pairs with Redis, {memory['pairs']} in memory")
        print(n, memory, in_redis, redis_peak, flush=True)
        rows.append(
            [
                f"{n:,}",
                f"{in_redis['pairs']:,}",
                f"{memory['seconds']:,.1f}" if memory else "-",
                f"{memory['peak_bytes'] / 2**20:,.0f}" if memory else "-",
                f"{in_redis['seconds']:,.1f}",
                f"{in_redis['peak_bytes'] / 2**20:,.0f}",
                f"{redis_peak / 2**20:,.0f}",
                f"{in_redis['seconds'] / n * 1e6:,.0f}",
            ]
        )
    return rows


# --- labelling rate against requests in flight ------------------------------------------------------------------


def labelling_rows(in_flight: list[int], repeats: int, loads: list[float]) -> list[list[str]]:
    from data_api import adapter, measure, start_server

    server, port = start_server("lean", LATENCY)
    rows = []
    try:
        for c in in_flight:
            n = max(64, 16 * c)
            result = measure(adapter(port, c), n, repeats, c, server.pid)
            loads.append(os.getloadavg()[0])
            ideal = c / LATENCY
            print(c, result, flush=True)
            rows.append(
                [
                    c,
                    n,
                    f"{result['rate']:,.0f}",
                    f"{ideal:,.0f}",
                    f"{result['rate'] / ideal:.2f}",
                    f"{result['client_ms']:.2f}",
                    f"{result['rate'] * result['client_ms'] / 10:.0f}%",
                ]
            )
    finally:
        server.terminate()
        server.wait(timeout=10)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="10000,100000", help="Numbers of texts for dedupe in memory, comma-separated."
    )
    parser.add_argument("--redis-sizes", default="10000,100000", help="Numbers of texts for dedupe with Redis.")
    parser.add_argument("--shard", type=int, default=50_000, help="Texts per shard in Redis mode.")
    parser.add_argument("--in-flight", default="1,4,16,64,256", help="Requests in flight for labelling.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="Print only; leave docs/benchmarks.md alone.")
    parser.add_argument("--child", choices=["memory", "redis"], default=None)
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.child:
        dedupe_child(args.child, args.n, args.port, args.shard)
        return
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed; run scripts/ensure-redis.sh")
    loads = [os.getloadavg()[0]]
    sizes = [int(x) for x in args.sizes.split(",")]
    dedupe_table = dedupe_rows(sizes, {int(x) for x in args.redis_sizes.split(",")}, args.shard, loads)
    label_table = labelling_rows([int(x) for x in args.in_flight.split(",")], args.repeats, loads)
    body = (
        f"Near-duplicate pairs at word-shingle Jaccard ≥ {THRESHOLD} on the synthetic texts of "
        "`benchmarks/data_dedupe.py` (8-20 words, 5% planted near-duplicates). In memory: "
        "`near_duplicate_pairs`; Redis: `near_duplicate_pairs_sharded` with the LSH bands and the normalised texts "
        f"in a local redis-server (7.0, no persistence), the texts read in shards of {args.shard:,}. One run per size "
        "and mode, each in its own process; seconds exclude making the texts; peak = maximum resident set of the "
        "process (Python, the texts and the MinHashes included); where both ran, both found the same number of "
        "pairs.\n\n"
        + markdown_table(
            [
                "texts",
                "pairs",
                "in memory s",
                "in memory peak MiB",
                "Redis s",
                "Redis client peak MiB",
                "redis-server peak MiB",
                "Redis µs per text",
            ],
            dedupe_table,
        )
        + f"\n\nLabelling: the distil API teacher against a local server that answers every request after "
        f"{LATENCY * 1000:.0f} ms (one client process; median of {args.repeats} runs): the rate a client reaches with "
        "a given number of requests in flight, against the ideal in flight / latency.\n\n"
        + markdown_table(
            [
                "in flight",
                "requests",
                "requests/s",
                "ideal",
                "fraction of ideal",
                "client CPU ms/request",
                "client busy",
            ],
            label_table,
        )
        + f"\n\nLoad average (1 min) while measuring, the machine being shared: {min(loads):.1f} to {max(loads):.1f}."
    )
    print(body)
    if not args.no_write:
        write_section("scale", "Scale: dedupe with 10k-1M texts, labelling against requests in flight", body)


if __name__ == "__main__":
    main()
