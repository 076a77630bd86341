"""trtd.sdk: the client library. `from trtd.sdk import Client`."""

from .client import Client, ModelHandle
from .errors import (DaemonNotRunning, DaemonRestarted, DaemonTimeout, InvalidInput, ModelNotReady, Overloaded,
                     ProtocolMismatch,
                     RegionError, ServerError, TrtdError, UnknownModel)

__all__ = ["Client", "ModelHandle", "TrtdError", "DaemonNotRunning", "DaemonTimeout", "DaemonRestarted",
           "UnknownModel", "InvalidInput", "ModelNotReady", "Overloaded", "RegionError", "ProtocolMismatch", "ServerError"]
