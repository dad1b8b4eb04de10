"""The in-memory cache of final values and its input fingerprints."""

from __future__ import annotations

import threading
import time

from iterflow.engine.cache import MemoryCache, cache_fingerprint


def test_fingerprint_is_stable_and_ignores_key_order():
    assert cache_fingerprint({"a": 1, "b": [2]}) == cache_fingerprint({"b": [2], "a": 1})
    assert cache_fingerprint({"a": 1}) != cache_fingerprint({"a": 2})
    assert cache_fingerprint({}) == cache_fingerprint({})


def test_fingerprint_of_unpicklable_inputs_falls_back_to_repr():
    lock = threading.Lock()
    assert cache_fingerprint({"lock": lock}) == cache_fingerprint({"lock": lock})
    assert cache_fingerprint({"f": lambda: 1, "n": 1}) != cache_fingerprint({"n": 2})


def test_put_get_and_expiry():
    cache = MemoryCache()
    assert cache.get("k", "f") is None
    cache.put("k", "f", "value", 3, seconds=60)
    value, loop_count, expires = cache.get("k", "f")
    assert (value, loop_count) == ("value", 3)
    assert expires > time.time()
    assert cache.get("k", "other") is None
    assert cache.get("other", "f") is None
    cache.put("short", "f", 1, 1, seconds=0.01)
    time.sleep(0.03)
    assert cache.get("short", "f") is None


def test_clear():
    cache = MemoryCache()
    cache.put("k", "f", 1, 1, seconds=60)
    cache.clear()
    assert cache.get("k", "f") is None


def test_a_cached_none_is_still_a_hit():
    cache = MemoryCache()
    cache.put("k", "f", None, 1, seconds=60)
    assert cache.get("k", "f") == (None, 1, cache.get("k", "f")[2])
