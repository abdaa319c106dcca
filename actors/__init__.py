"""The live system: supervision, the circuit breaker, channel wiring and the actors.

The runtime (supervisor, breaker, channels) is re-exported here; each actor kind lives in its
own module (``actors.feed``, ``actors.strategy``, ``actors.risk``, ``actors.executor``,
``actors.recorder``).
"""

from ._breaker import BreakerListener as BreakerListener
from ._breaker import BreakerState as BreakerState
from ._breaker import BreakerStatistics as BreakerStatistics
from ._breaker import CircuitBreaker as CircuitBreaker
from ._channels import ChannelStatistics as ChannelStatistics
from ._channels import FanOut as FanOut
from ._channels import FanOutReceiver as FanOutReceiver
from ._channels import memory_channel_statistics as memory_channel_statistics
from ._channels import open_lossless_channel as open_lossless_channel
from ._supervisor import Actor as Actor
from ._supervisor import Backoff as Backoff
from ._supervisor import ChildSpec as ChildSpec
from ._supervisor import Observer as Observer
from ._supervisor import Restart as Restart
from ._supervisor import RestartStrategy as RestartStrategy
from ._supervisor import Supervisor as Supervisor
from ._supervisor import SupervisorEvent as SupervisorEvent
from ._supervisor import SupervisorGaveUp as SupervisorGaveUp
from ._supervisor import SupervisorStatistics as SupervisorStatistics
