"""Exceptions the SDK raises; each message says what happened and what to do."""

from __future__ import annotations

from trtd.protocol import ErrorCode
from trtd.protocol.endpoint import EndpointError


class TrtdError(Exception):
    """Base of every SDK error. `code` is the protocol error code, when the daemon sent one."""

    code: str = ""

    def __init__(self, message: str, code: str = "", details: dict | None = None):
        super().__init__(message)
        self.code = code or self.code
        self.details = details or {}


class DaemonNotRunning(TrtdError, ConnectionError):
    pass


class InvalidEndpoint(TrtdError, EndpointError):
    """The endpoint given to Client (or in TRTD_ENDPOINT) is not one a daemon can listen on;
    the message says what to write instead. Also an EndpointError (a ValueError)."""


class DaemonTimeout(TrtdError, TimeoutError):
    pass


class DaemonRestarted(TrtdError):
    """The daemon this client talked to is gone and another answers; leases are void."""


class UnknownModel(TrtdError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class InvalidInput(TrtdError, ValueError):
    """Wrong input names, dtype, shape or sizes."""


class RegionError(TrtdError):
    """A shared-memory region could not be leased, used or released."""


class ModelNotReady(TrtdError):
    """The model failed to load (the message says why) or is still loading."""


class ProtocolMismatch(TrtdError):
    pass


class Overloaded(TrtdError):
    """The model's queue is full; retry later (with back-off)."""


class DaemonStopping(Overloaded):
    """The daemon is stopping or has stopped: it refused this request (it did not run), gave up
    on it at the end of its drain, or closed the connection before answering.

    `details["started"]` says whether the request ran: False (it did not), True (it ran but its
    outputs are incomplete), None (the connection closed first: unknown). A subclass of
    Overloaded, since "retry later, when a daemon is back" is the remedy for both."""


class AccessDenied(TrtdError, PermissionError):
    """This user may not reach the daemon, or may not run this op (privileged ops need the
    admin token; TCP endpoints need the connection token). The message names the file."""


class DeadlineExceeded(TrtdError, TimeoutError):
    """The request's deadline passed before the daemon could start it; it did not run."""


class ServerError(TrtdError):
    """The daemon failed to run the request (backend error, internal error)."""


_BY_CODE: dict[str, type[TrtdError]] = {
    ErrorCode.UNKNOWN_MODEL: UnknownModel,
    ErrorCode.MODEL_NOT_READY: ModelNotReady,
    ErrorCode.OVERLOADED: Overloaded,
    ErrorCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    ErrorCode.UNAUTHORIZED: AccessDenied,
    ErrorCode.INVALID_TENSOR: InvalidInput,
    ErrorCode.OUT_OF_BOUNDS: InvalidInput,
    ErrorCode.OVERLAP: InvalidInput,
    ErrorCode.OUTPUT_TOO_LARGE: InvalidInput,
    ErrorCode.REGION_NOT_FOUND: RegionError,
    ErrorCode.REGION_TOO_LARGE: RegionError,
    ErrorCode.NO_SPACE: RegionError,
    ErrorCode.QUOTA_EXCEEDED: RegionError,
    ErrorCode.FORBIDDEN: RegionError,
    ErrorCode.UNSUPPORTED_VERSION: ProtocolMismatch,
    ErrorCode.BAD_MESSAGE: ProtocolMismatch,
    ErrorCode.UNKNOWN_OP: ProtocolMismatch,
}


def error_from_reply(code: str, message: str, details: dict) -> TrtdError:
    if code == ErrorCode.OVERLOADED and details.get("stopping"):
        return DaemonStopping(message, code=code, details=details)
    return _BY_CODE.get(code, ServerError)(message, code=code, details=details)
