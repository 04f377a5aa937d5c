"""Near-duplicates with the LSH index in a real redis-server: the same pairs and groups as in memory."""

from __future__ import annotations

import random
import shutil

import pytest

from distil.data import dedupe
from tests.data.redis_server import redis_server

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed (scripts/ensure-redis.sh installs it)"
)
redis = pytest.importorskip("redis", reason="the redis package is not installed (pip install 'distil[scale]')")

WORDS = [f"word{i}" for i in range(400)]


def planted_texts(n: int = 600, seed: int = 0) -> list[str]:
    """Random texts, then near-duplicates of some (a word added, replaced, or both), exact copies in another case,
    and chains (a near-duplicate of a near-duplicate)."""
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 40))) for _ in range(n)]
    for i in range(0, n, 7):
        words = texts[i].split()
        change = i % 3
        if change in (0, 2):
            words.insert(rng.randrange(len(words)), rng.choice(WORDS))
        if change in (1, 2):
            words[rng.randrange(len(words))] = rng.choice(WORDS)
        texts.append(" ".join(words))
    for i in range(3, n, 50):
        texts.append(texts[i].upper() + "!")
    order = list(range(len(texts)))
    rng.shuffle(order)
    return [texts[i] for i in order]


@pytest.fixture
def storage(tmp_path):
    with redis_server(tmp_path) as config:
        yield config


def test_the_redis_index_gives_the_same_pairs_and_groups_as_memory(storage):
    texts = planted_texts()
    in_memory = {(i, j): s for i, j, s in dedupe.near_duplicate_pairs(texts, 0.8)}
    assert len(in_memory) > 80  # the planted near-duplicates and copies are there to be found
    assert any(s < 1.0 for s in in_memory.values()) and any(s == 1.0 for s in in_memory.values())
    for shard_size in (len(texts), 97):  # one shard, and shards that split groups across them
        shards = [texts[a : a + shard_size] for a in range(0, len(texts), shard_size)]
        in_redis = {(i, j): s for i, j, s in dedupe.near_duplicate_pairs_sharded(shards, 0.8, storage)}
        assert in_redis == in_memory
    assert dedupe.near_duplicate_groups(texts, 0.8, storage=storage) == dedupe.near_duplicate_groups(texts, 0.8)


def test_the_index_is_in_redis_while_it_runs_and_removed_after(storage):
    client = redis.Redis(**storage["redis"])
    sizes = []

    def shards():
        texts = planted_texts(200)
        for a in range(0, len(texts), 50):
            sizes.append(client.dbsize())
            yield texts[a : a + 50]

    pairs = dedupe.near_duplicate_pairs_sharded(shards(), 0.8, storage)
    assert pairs and sizes[0] == 0 and sizes[-1] > sizes[1] > 0  # the bands and texts grew in Redis, shard by shard
    assert client.dbsize() == 0


def test_a_storage_that_is_not_redis_is_refused():
    with pytest.raises(dedupe.DataError, match="type 'cassandra' is not supported"):
        dedupe.near_duplicate_pairs_sharded([["a b c"]], 0.8, {"type": "cassandra"})
