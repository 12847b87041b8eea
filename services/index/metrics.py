"""Prometheus metrics of the indexer and its drift watch, in a registry of their own (rendered at /metrics).

Drift gauges carry (domain, line) labels only for registered domains and the lines the index has seen
for them (at most drift_max_lines per domain), and label sets of domains no longer registered are
removed: the series count stays bounded by the registry, not by what messages claim.
"""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class IndexMetrics:
    """Events indexed, bad events, transaction time, consumer lag, and the drift gauges."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("inctrl_index_events", "Events polled, by kind (result, dead_letter).", ["kind"], registry=r)
        self.written = Counter(
            "inctrl_index_rows_written", "Events that inserted or replaced a row, by kind.", ["kind"], registry=r
        )
        self.unchanged = Counter(
            "inctrl_index_events_unchanged", "Duplicate, replayed or older events that changed nothing.", ["kind"], registry=r
        )
        self.bad_events = Counter(
            "inctrl_index_bad_events", "Events skipped as unreadable, by kind and reason.", ["kind", "reason"], registry=r
        )
        self.transaction_seconds = Histogram(
            "inctrl_index_transaction_seconds", "Time to write one polled batch in one transaction.",
            buckets=_SECONDS_BUCKETS, registry=r,
        )  # fmt: skip
        self.database_retries = Counter(
            "inctrl_index_database_retries", "Batches rolled back and retried because the database failed.", registry=r
        )
        self.consumer_lag = Gauge(
            "inctrl_kafka_consumer_lag", "Messages not yet committed by a consumer group, per topic.", ["group", "topic"], registry=r
        )
        self.drift_psi = Gauge("inctrl_drift_psi", "PSI of the recent scores against calibration.", ["domain", "line"], registry=r)
        self.drift_ks_p_value = Gauge(
            "inctrl_drift_ks_p_value", "Two-sample KS p-value of the recent scores against calibration.", ["domain", "line"], registry=r
        )
        self.drift_window = Gauge(
            "inctrl_drift_window_scores", "Scores in the drift window.", ["domain", "line"], registry=r
        )
        self.drifting = Gauge(
            "inctrl_drift_drifting", "1 while the line is in the drifting state, else 0.", ["domain", "line"], registry=r
        )
        self.drift_alerts = Counter("inctrl_drift_alerts", "Drift alerts published, by domain.", ["domain"], registry=r)

    def forget_drift_labels(self, keep: set[tuple[str, str]]) -> None:
        """Remove drift series of (domain, line) pairs that are no longer watched."""
        for gauge in (self.drift_psi, self.drift_ks_p_value, self.drift_window, self.drifting):
            for labels in list(_label_sets(gauge)):
                if labels not in keep:
                    gauge.remove(*labels)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


def _label_sets(gauge: Gauge) -> list[tuple[str, str]]:
    return [
        (sample.labels["domain"], sample.labels["line"])
        for metric in gauge.collect()
        for sample in metric.samples
    ]
