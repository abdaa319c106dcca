"""The Kraken protocol: REST client, WebSocket v2 session, codec, L2 book, pair metadata.

The names below are the surface the rest of the system uses; implementation lives in the
private modules.
"""

from ._book import BookOutOfSync as BookOutOfSync
from ._book import ChecksumMismatch as ChecksumMismatch
from ._book import OrderBook as OrderBook
from ._book import checksum_v1 as checksum_v1
from ._book import checksum_v2 as checksum_v2
from ._codec import BalanceUpdate as BalanceUpdate
from ._codec import BookFrame as BookFrame
from ._codec import ExecutionReport as ExecutionReport
from ._codec import Frame as Frame
from ._codec import Heartbeat as Heartbeat
from ._codec import InstrumentFrame as InstrumentFrame
from ._codec import InstrumentPair as InstrumentPair
from ._codec import MethodResponse as MethodResponse
from ._codec import StatusFrame as StatusFrame
from ._codec import decode_v2 as decode_v2
from ._codec import encode_request as encode_request
from ._codec_v1 import V1Decoder as V1Decoder
from ._errors import DecodeError as DecodeError
from ._errors import InsufficientFunds as InsufficientFunds
from ._errors import InvalidArguments as InvalidArguments
from ._errors import InvalidNonce as InvalidNonce
from ._errors import KrakenError as KrakenError
from ._errors import OrderRejected as OrderRejected
from ._errors import PermissionDenied as PermissionDenied
from ._errors import RateLimited as RateLimited
from ._errors import ServiceUnavailable as ServiceUnavailable
from ._errors import TransportError as TransportError
from ._nonce import NonceGenerator as NonceGenerator
from ._pairs import PairRegistry as PairRegistry
from ._pairs import UnknownPair as UnknownPair
from ._ratelimit import CallCounterLimiter as CallCounterLimiter
from ._ratelimit import RateLimitTier as RateLimitTier
from ._rest import DEFAULT_REST_URL as DEFAULT_REST_URL
from ._rest import KrakenRestClient as KrakenRestClient
from ._rest import open_kraken_rest as open_kraken_rest
from ._retry import RetryPolicy as RetryPolicy
from ._signing import KrakenCredentials as KrakenCredentials
from ._signing import sign_request as sign_request
from ._ws import KrakenWsSession as KrakenWsSession
from ._ws import Subscription as Subscription
from ._ws import WsStatistics as WsStatistics
