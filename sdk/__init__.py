"""trtd.sdk: the client library. `from trtd.sdk import Client`."""

from .client import Client, ModelHandle
from .errors import (AccessDenied, DaemonNotRunning, DaemonRestarted, DaemonStopping, DaemonTimeout,
                     DeadlineExceeded, InvalidEndpoint, InvalidInput, ModelNotReady, Overloaded,
                     ProtocolMismatch, RegionError, ServerError, TrtdError, UnknownModel)

__all__ = ["Client", "ModelHandle", "TrtdError", "DaemonNotRunning", "DaemonTimeout", "DaemonRestarted",
           "DaemonStopping", "UnknownModel", "InvalidInput", "InvalidEndpoint", "ModelNotReady",
           "Overloaded", "RegionError", "ProtocolMismatch", "ServerError", "AccessDenied",
           "DeadlineExceeded"]
