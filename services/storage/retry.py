"""The one retry schedule of the online system (object store calls, inspection requests, consumer stalls)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RetryPolicy(BaseModel):
    """Exponential backoff bounded by a total deadline: the one retry schedule of the online system.

    delay_s(attempt) = min(initial_backoff_s * multiplier^(attempt - 1), max_backoff_s), attempt >= 1.
    The object store retries each call with it until deadline_s; the frame consumer uses the same schedule
    between attempts at a micro-batch or a single frame (there the deadline does not apply: an unreachable
    service stalls the stream instead of failing frames).
    """

    model_config = ConfigDict(frozen=True)

    deadline_s: float = Field(120.0, gt=0)
    initial_backoff_s: float = Field(0.2, gt=0)
    max_backoff_s: float = Field(5.0, gt=0)
    multiplier: float = Field(2.0, ge=1.0)

    def delay_s(self, attempt: int) -> float:
        """Wait after the given failed attempt (1 = the first failure)."""
        exponent = min(max(attempt, 1) - 1, 64)  # capped: the power must not overflow a float
        return min(self.initial_backoff_s * self.multiplier**exponent, self.max_backoff_s)
