"""Per-replica LRU of domain prompt banks (each with its FAISS index), re-validated against current.json.

An entry is keyed by the serving version and the sha256 of its domain.json that current.json carries (the
record holds the bank's sha256), so whatever changes a domain's content, a new version, a rollback, a delete
and re-registration, changes the key. Versions are never reused (services/registry/domain_registry.py), and a bank whose
bytes do not match its record is refused when loaded.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from services.registry.domain_registry import DomainRegistry
from services.registry.records import RegisteredDomain, UnknownDomainError

logger = logging.getLogger(__name__)


@dataclass
class _Entry:
    domain: RegisteredDomain
    key: tuple[int, str | None]  # (version, digest) from current.json when it was loaded or last re-checked
    checked_at: float


class BankCache:
    """Banks by domain, at most `capacity`, least recently used evicted.

    A cached domain's pointer is re-read from the registry at most every `recheck_s` seconds, so a
    re-registered, extended or rolled-back domain is served with its new references within that time,
    without a restart, and a deleted one stops being served (UnknownDomainError). The
    search index (FAISS or torch) lives on the bank and is built on its first query, once per version.
    """

    def __init__(
        self,
        registry: DomainRegistry,
        device: torch.device,
        capacity: int = 64,
        recheck_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"bank cache capacity must be >= 1, got {capacity}")
        self._registry = registry
        self._device = device
        self._capacity = capacity
        self._recheck_s = recheck_s
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, domain: str) -> RegisteredDomain:
        """The domain's current bank; raises UnknownDomainError for an unregistered one."""
        with self._lock:
            now = self._clock()
            entry = self._entries.get(domain)
            if entry is not None and now - entry.checked_at < self._recheck_s:
                self._entries.move_to_end(domain)
                return entry.domain
            try:
                pointer = self._registry.current(domain)
            except UnknownDomainError:
                self._entries.pop(domain, None)  # deleted: never serve its bank again
                raise
            assert pointer.version is not None  # current() refuses a pointer without one
            key = (pointer.version, pointer.digest)
            if entry is None or entry.key != key:
                loaded = self._registry.load(domain, pointer.version)
                bank = loaded.bank.on(torch.device(self._device))
                entry = _Entry(RegisteredDomain(record=loaded.record, bank=bank, digest=loaded.digest), key, now)
                logger.info("bank loaded", extra={"domain": domain, "version": pointer.version, "digest": loaded.digest})
            entry.checked_at = now
            self._entries[domain] = entry
            self._entries.move_to_end(domain)
            while len(self._entries) > self._capacity:
                evicted, _ = self._entries.popitem(last=False)
                logger.info("bank evicted", extra={"domain": evicted})
            return entry.domain

    def invalidate(self, domain: str) -> None:
        """Forget a domain so its next use reads the registry (after a registration through this replica)."""
        with self._lock:
            self._entries.pop(domain, None)

    def cached(self) -> dict[str, int]:
        """Cached domains and their versions, least recently used first."""
        with self._lock:
            return {name: entry.domain.record.version for name, entry in self._entries.items()}
