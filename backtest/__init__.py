"""backtest room (DESIGN.md): data loading, the fast loop, results; see ``backtest.cli``.

The result types are the contract between the engines and the report writer.
"""

from ._result import BacktestResult as BacktestResult
from ._result import ClosedTrade as ClosedTrade
from ._result import EquityPoint as EquityPoint
from ._result import RunConfig as RunConfig
from ._result import SymbolInfo as SymbolInfo
from ._result import trade_log_bytes as trade_log_bytes
from ._result import trade_log_sha256 as trade_log_sha256
