"""Persistence: SQLAlchemy 2 models, the store API and Alembic migrations.

Imports only ``protocol``. The surface below is the contract (``tests/test_persistence_exports.py``
pins it); everything else lives in private modules.

Typical use::

    upgrade_to_head(url)                       # python main.py db upgrade
    store = Store(url)                         # migrates on construction too
    state = store.recover()                    # after a restart
    run_id = store.start_run(mode="paper", config=cfg, resume=state)
    store.record_order_ahead(order)            # committed before the order is sent
    store.write_batch(events)                  # the recorder actor, batched, one transaction
"""

from ._engine import DEFAULT_URL as DEFAULT_URL
from ._engine import current as current
from ._engine import downgrade as downgrade
from ._engine import head_revision as head_revision
from ._engine import make_engine as make_engine
from ._engine import normalise_url as normalise_url
from ._engine import upgrade_to_head as upgrade_to_head
from ._errors import SchemaError as SchemaError
from ._errors import StoreError as StoreError
from ._errors import StoreUnavailable as StoreUnavailable
from ._models import Base as Base
from ._records import BalanceSnapshot as BalanceSnapshot
from ._records import BreakerLatch as BreakerLatch
from ._records import EquityPoint as EquityPoint
from ._records import EquitySnapshot as EquitySnapshot
from ._records import OpenOrder as OpenOrder
from ._records import Position as Position
from ._records import PositionSnapshot as PositionSnapshot
from ._records import Recordable as Recordable
from ._records import RecoveredState as RecoveredState
from ._records import StrategyPnl as StrategyPnl
from ._records import TradeRow as TradeRow
from ._store import Store as Store
from ._store import redact_config as redact_config
from ._store import utc_now as utc_now
from ._types import Money as Money
from ._types import UTCDateTime as UTCDateTime
