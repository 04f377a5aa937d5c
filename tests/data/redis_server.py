"""A real redis-server on a free port of 127.0.0.1, started for a test and stopped after it (no disk writes)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def redis_server(folder: Path) -> Iterator[dict]:
    """Yields the datasketch storage_config of a fresh server; the server is gone after the block."""
    import redis

    executable = shutil.which("redis-server")
    assert executable, "redis-server is not on PATH"
    port = free_port()
    server = subprocess.Popen(
        [
            executable,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield {"type": "redis", "redis": {"host": "127.0.0.1", "port": port}}
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=10)
