"""trtd.sdk: the client library. `from trtd.sdk import Client`.

The exceptions form a tree, drawn in trtd.sdk.errors' docstring."""

from .client import Client, ModelHandle
from .errors import (AccessDenied, BackendError, BadMessage, ConfigError, DaemonNotRunning, DaemonRestarted,
                     DaemonStopping, DaemonTimeout, DeadlineExceeded, Forbidden, InternalError,
                     InvalidEndpoint, InvalidInput, InvalidTensor, LoadFailed, ModelNotReady, NoSpace,
                     OutOfBounds, OutputTooLarge, Overlap, Overloaded, ProtocolMismatch, QuotaExceeded,
                     RegionError, RegionNotFound, RegionTooLarge, ServerError, TrtdError, UnknownModel,
                     UnknownOp, UnsupportedVersion)
from .inprocess import InProcessTransport
from .transport import Transport
from .zmq_transport import ZmqTransport

__all__ = ["Client", "ModelHandle", "Transport", "ZmqTransport", "InProcessTransport",
           "TrtdError", "DaemonNotRunning", "DaemonTimeout", "DaemonRestarted", "InvalidEndpoint",
           "ProtocolMismatch", "BadMessage", "UnsupportedVersion", "UnknownOp", "AccessDenied",
           "UnknownModel", "ModelNotReady", "InvalidInput", "InvalidTensor", "OutOfBounds", "Overlap",
           "OutputTooLarge", "RegionError", "RegionNotFound", "RegionTooLarge", "NoSpace",
           "QuotaExceeded", "Forbidden", "Overloaded", "DaemonStopping", "DeadlineExceeded",
           "ServerError", "BackendError", "LoadFailed", "ConfigError", "InternalError"]
