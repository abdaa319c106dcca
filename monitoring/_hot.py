"""Plain-dict metrics for the per-message hot path, exported through a custom collector.

prometheus_client's ``Counter.inc`` / ``Gauge.set`` take a ``threading.Lock`` per call (~0.3-0.5
µs each here). Metrics touched on *every* market message (feed message counts, the last-message
timestamp, channel depth and conflation) instead keep their values in a plain dict keyed by the
label tuple, updated in ~50-100 ns, and are read only when Prometheus scrapes.

Not locked: every actor runs on the one trio thread, so updates never race; a scrape that
runs in another thread (not ours) could at worst see a value one update old.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, Literal

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["HotMetric"]


class HotMetric:
    """A labelled counter or gauge held in a dict and collected at scrape time.

    Args:
        kind: ``"counter"`` (name without ``_total``; exported as ``<name>_total``) or
            ``"gauge"``.
        name: Metric family name.
        documentation: HELP text.
        labelnames: Label names, in the order keys are given.
        max_series: Distinct label tuples allowed; past it, values fold into ``other``.
        registry: Registry to register on.
    """

    __slots__ = ("_kind", "_labelnames", "_max", "_other", "documentation", "name", "values")

    def __init__(
        self,
        kind: Literal["counter", "gauge"],
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        *,
        max_series: int,
        registry: CollectorRegistry,
    ) -> None:
        self._kind: Final = kind
        self.name: Final = name
        self.documentation: Final = documentation
        self._labelnames: Final = labelnames
        self._max: Final = max_series
        self._other: Final = ("other",) * len(labelnames)
        #: Label tuple → value. Hot-path callers update it directly after :meth:`key`.
        self.values: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def key(self, values: tuple[str, ...]) -> tuple[str, ...]:
        """The key to use for ``values``: itself, created at 0, or the overflow key."""
        if values in self.values:
            return values
        if len(self.values) >= self._max:
            values = self._other
        self.values.setdefault(values, 0.0)
        return values

    def inc(self, values: tuple[str, ...], amount: float = 1.0) -> None:
        if values in self.values:
            self.values[values] += amount
        else:
            self.values[self.key(values)] += amount

    def set(self, values: tuple[str, ...], value: float) -> None:
        if values in self.values:
            self.values[values] = value
        else:
            self.values[self.key(values)] = value

    def get(self, values: tuple[str, ...]) -> float | None:
        return self.values.get(values)

    # ------------------------------------------------------------------ Collector protocol

    def _family(self) -> CounterMetricFamily | GaugeMetricFamily:
        if self._kind == "counter":
            return CounterMetricFamily(self.name, self.documentation, labels=self._labelnames)
        return GaugeMetricFamily(self.name, self.documentation, labels=self._labelnames)

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for labels, value in list(self.values.items()):
            family.add_metric(list(labels), value)
        yield family
