"""The in-memory cache of final task values (``cache_for`` / ``cache_key``).

A cache entry is a task's *final* value — never an intermediate loop result —
keyed by the task's ``cache_key`` (default: flow name and task slug) and a
fingerprint of its inputs, valid for ``cache_for`` seconds. A hit makes the
task run ``Cached`` without running it, so a cached looping task skips its
whole loop. Inputs that cannot be pickled are fingerprinted by ``repr``.
"""

from __future__ import annotations

import hashlib
import pickle
import threading
import time
from typing import Any

__all__ = ["MemoryCache", "cache_fingerprint"]


def cache_fingerprint(inputs: dict[str, Any]) -> str:
    """A stable digest of a task run's inputs."""
    try:
        data = pickle.dumps(sorted(inputs.items()), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        data = repr(sorted(inputs.items(), key=lambda kv: kv[0])).encode()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class MemoryCache:
    """Final values by (key, inputs fingerprint), each with an expiry time. Thread-safe."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[float, Any, int | None]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, fingerprint: str) -> tuple[Any, int | None, float] | None:
        """``(value, loop_count, expires_at)`` of a live entry, or None."""
        with self._lock:
            entry = self._entries.get((key, fingerprint))
            if entry is None:
                return None
            expires, value, loop_count = entry
            if expires < time.time():
                del self._entries[(key, fingerprint)]
                return None
            return value, loop_count, expires

    def put(self, key: str, fingerprint: str, value: Any, loop_count: int | None,
            seconds: float) -> None:
        """Remember a final value for ``seconds``."""
        with self._lock:
            self._entries[(key, fingerprint)] = (time.time() + seconds, value, loop_count)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._entries.clear()
