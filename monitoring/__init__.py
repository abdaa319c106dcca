"""monitoring room (DESIGN.md): the metrics contract and the /metrics + /healthz server.

Prometheus config, alert rules and their promtool tests live in ``monitoring/prometheus/``;
the alerts' runbook is ``monitoring/RUNBOOK.md``.
"""

from ._server import HealthReport as HealthReport
from ._server import health_payload as health_payload
from ._server import serve_metrics as serve_metrics
from .metrics import METRICS as METRICS
from .metrics import Metrics as Metrics
