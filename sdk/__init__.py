"""trtd.sdk: the client library. `from trtd.sdk import Client`."""

from .client import Client, ModelHandle
from .errors import (AccessDenied, DaemonNotRunning, DaemonRestarted, DaemonTimeout, DeadlineExceeded,
                     InvalidInput, ModelNotReady, Overloaded, ProtocolMismatch, RegionError, ServerError,
                     TrtdError, UnknownModel)

__all__ = ["Client", "ModelHandle", "TrtdError", "DaemonNotRunning", "DaemonTimeout", "DaemonRestarted",
           "UnknownModel", "InvalidInput", "ModelNotReady", "Overloaded", "RegionError", "ProtocolMismatch",
           "ServerError", "AccessDenied", "DeadlineExceeded"]
