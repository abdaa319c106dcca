"""Trading strategies: pure logic (no trio, no I/O) driven by market events and own fills.

Every strategy implements :class:`Strategy` (``on_market``, ``on_fill``, ``on_order_closed``);
:func:`build_strategies` builds them by name from string parameters. See each module for the
exact rule: :mod:`.momentum`, :mod:`.mean_reversion`, :mod:`.arbitrage`, :mod:`.sma_cross`, and
:mod:`.unwind` for flattening a broken arbitrage group.
"""

from ._base import NO_SIGNALS as NO_SIGNALS
from ._base import PositionKeeper as PositionKeeper
from ._base import Strategy as Strategy
from ._base import StrategyConfigError as StrategyConfigError
from ._base import event_price as event_price
from ._base import quiet as quiet
from ._base import size_order as size_order
from ._kernel import BookKernel as BookKernel
from ._kernel import BookTimeline as BookTimeline
from ._kernel import CandleKernel as CandleKernel
from ._kernel import History as History
from ._registry import REGISTRY as REGISTRY
from ._registry import STABLECOINS as STABLECOINS
from ._registry import build_strategies as build_strategies
from ._registry import standard_params as standard_params
from .arbitrage import Arbitrage as Arbitrage
from .arbitrage import ArbitrageConfig as ArbitrageConfig
from .arbitrage import Cycle as Cycle
from .arbitrage import CycleLeg as CycleLeg
from .mean_reversion import MeanReversion as MeanReversion
from .mean_reversion import MeanReversionConfig as MeanReversionConfig
from .momentum import Momentum as Momentum
from .momentum import MomentumConfig as MomentumConfig
from .sma_cross import SmaCross as SmaCross
from .sma_cross import SmaCrossConfig as SmaCrossConfig
from .unwind import plan_unwind as plan_unwind
