"""The sender's counters in Prometheus' text exposition format, for node_exporter's textfile
collector or a cron job: ``receiver logs --metrics``. Rendered by ``prometheus_client``."""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    from prometheus_client.core import CounterMetricFamily

__all__ = ["DELIVERIES", "OUTCOMES", "exposition"]

#: The counter's name, as exposed (with the ``_total`` suffix of a counter).
DELIVERIES = "receiver_sender_deliveries"
OUTCOMES = ("succeeded", "failed")


class _Deliveries:
    """A collector of one counter family: deliveries by rule and outcome."""

    def __init__(self, counts: t.Mapping[tuple[str, str], int], rules: t.Iterable[str]) -> None:
        # Every known rule gets both outcomes, 0 until it has one: a rate() needs the zero.
        keys = {(rule, outcome) for rule in rules for outcome in OUTCOMES}
        keys.update((rule, outcome) for rule, _ in counts for outcome in OUTCOMES)
        self.samples = sorted((key, counts.get(key, 0)) for key in keys)

    def _family(self) -> CounterMetricFamily:
        from prometheus_client.core import CounterMetricFamily

        return CounterMetricFamily(
            DELIVERIES,
            "Deliveries the sender ended, by trigger rule (empty for receiver send) and "
            "outcome (succeeded or failed).",
            labels=["rule", "outcome"],
        )

    def describe(self) -> t.Iterator[CounterMetricFamily]:
        yield self._family()

    def collect(self) -> t.Iterator[CounterMetricFamily]:
        family = self._family()
        for (rule, outcome), count in self.samples:
            family.add_metric([rule, outcome], count)
        yield family


def exposition(counts: t.Mapping[tuple[str, str], int], rules: t.Iterable[str] = ()) -> str:
    """*counts* (``{(rule, outcome): n}``, as :meth:`Store.delivery_counts
    <receiver.registry.store.Store.delivery_counts>` gives them) as Prometheus text: ``# HELP``
    and ``# TYPE`` lines, then ``receiver_sender_deliveries_total{rule="...",outcome="..."}
    N``, label values escaped. Each of *rules* (the rules that exist) is listed with both
    outcomes, at 0 until it has deliveries."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Deliveries(counts, rules))
    return generate_latest(registry).decode("utf-8")
