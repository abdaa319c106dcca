"""Pure trading logic (no I/O, no trio): strategies, risk rules, portfolio/ledger, paper fills.

Imports only ``protocol``; the actor shells in ``actors/`` and the backtest loop call this code,
so paper, live and backtest trade the same way.
"""

from ._fastinit import fast_constructor as fast_constructor
from ._fastinit import twin_of as twin_of
from .ids import ClientOrderIds as ClientOrderIds
from .ids import is_valid_cl_ord_id as is_valid_cl_ord_id
from .paper import OpenOrder as OpenOrder
from .paper import PaperMatcher as PaperMatcher
from .portfolio import Portfolio as Portfolio
from .portfolio import PortfolioSnapshot as PortfolioSnapshot
from .portfolio import Position as Position
from .portfolio import StrategyStats as StrategyStats
from .risk import RISK_REASONS as RISK_REASONS
from .risk import RiskEngine as RiskEngine
from .risk import RiskLimits as RiskLimits
