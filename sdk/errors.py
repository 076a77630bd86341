"""Exceptions the SDK raises; each message says what happened and what to do.

Catch a parent for a family of errors, a leaf for one case. A class after which a code is
written stands for that protocol error code (protocol/SPEC.md section 11: what a client should
do about it) and carries it as `code`; the others are raised by the SDK itself, except
ServerError, which also stands for any code this SDK does not know yet (a newer daemon), with
that code. Other bases are in parentheses: catching those catches these too.

    TrtdError
    ├── DaemonNotRunning (ConnectionError)
    ├── DaemonTimeout (TimeoutError)
    ├── DaemonRestarted: UNKNOWN_CLIENT
    ├── InvalidEndpoint (EndpointError)
    ├── ProtocolMismatch
    │   ├── BadMessage: BAD_MESSAGE
    │   ├── UnsupportedVersion: UNSUPPORTED_VERSION
    │   └── UnknownOp: UNKNOWN_OP
    ├── AccessDenied (PermissionError): UNAUTHORIZED
    ├── UnknownModel (KeyError): UNKNOWN_MODEL
    ├── ModelNotReady: MODEL_NOT_READY
    ├── InvalidInput (ValueError)
    │   ├── InvalidTensor: INVALID_TENSOR
    │   ├── OutOfBounds: OUT_OF_BOUNDS
    │   ├── Overlap: OVERLAP
    │   └── OutputTooLarge: OUTPUT_TOO_LARGE
    ├── RegionError
    │   ├── RegionNotFound: REGION_NOT_FOUND
    │   ├── RegionTooLarge: REGION_TOO_LARGE
    │   ├── NoSpace: NO_SPACE
    │   └── Forbidden: FORBIDDEN
    ├── QuotaExceeded: QUOTA_EXCEEDED
    ├── Overloaded: OVERLOADED
    │   └── DaemonStopping: OVERLOADED with details["stopping"]
    ├── DeadlineExceeded (TimeoutError): DEADLINE_EXCEEDED
    └── ServerError
        ├── BackendError: BACKEND_ERROR
        ├── LoadFailed: LOAD_FAILED
        ├── ConfigError: CONFIG_ERROR
        └── InternalError: INTERNAL

tests/test_sdk_errors.py checks this drawing against the classes, and that every ErrorCode
has its class.
"""

from __future__ import annotations

from trtd.protocol import ErrorCode
from trtd.protocol.endpoint import EndpointError


class TrtdError(Exception):
    """Base of every SDK error. `code`: the protocol error code of its class (also when the SDK
    raises one itself, e.g. InvalidTensor from its own shape checks; "" for the classes only the
    SDK raises), or the code the daemon sent; `details`: the daemon's details (SPEC section 11)."""

    code: str = ""

    def __init__(self, message: str, code: str = "", details: dict | None = None):
        super().__init__(message)
        self.code = code or self.code
        self.details = details or {}


# -- reaching the daemon -------------------------------------------------------------------------


class DaemonNotRunning(TrtdError, ConnectionError):
    """No daemon answers at the endpoint (the message says how to start one)."""


class DaemonTimeout(TrtdError, TimeoutError):
    """The daemon is there but did not answer in time (busy with a long request, or hung)."""


class DaemonRestarted(TrtdError):
    """The daemon no longer knows this client: it restarted (another one answers) or reclaimed
    the client. Leases are void; the Client has registered again (the copying path retries on
    its own; zero-copy views must be made again)."""

    code = ErrorCode.UNKNOWN_CLIENT.value


class InvalidEndpoint(TrtdError, EndpointError):
    """The endpoint given to Client (or in TRTD_ENDPOINT) is not one a daemon can listen on;
    the message says what to write instead. Also an EndpointError (a ValueError)."""


class ProtocolMismatch(TrtdError):
    """Client and daemon do not understand each other: a message one of them could not read,
    a protocol version or an op the daemon does not speak."""


class BadMessage(ProtocolMismatch):
    """The daemon could not read the request (a client bug: do not resend it unchanged)."""

    code = ErrorCode.BAD_MESSAGE.value


class UnsupportedVersion(ProtocolMismatch):
    """The daemon does not speak this protocol version (`details["supported"]`); upgrade one."""

    code = ErrorCode.UNSUPPORTED_VERSION.value


class UnknownOp(ProtocolMismatch):
    """The daemon does not know this op: it is older than the feature."""

    code = ErrorCode.UNKNOWN_OP.value


class AccessDenied(TrtdError, PermissionError):
    """This user may not reach the daemon, or may not run this op (privileged ops need the
    admin token; TCP endpoints need the connection token). The message names the file."""

    code = ErrorCode.UNAUTHORIZED.value


# -- models and tensors --------------------------------------------------------------------------


class UnknownModel(TrtdError, KeyError):
    """No model of that name is loaded (`details["models"]` lists those that are)."""

    code = ErrorCode.UNKNOWN_MODEL.value

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class ModelNotReady(TrtdError):
    """The model failed to load (the message says why) or is still loading."""

    code = ErrorCode.MODEL_NOT_READY.value


class InvalidInput(TrtdError, ValueError):
    """Wrong input names, dtype, shape or sizes, or a wrong layout in the region."""


class InvalidTensor(InvalidInput):
    """A tensor's name, dtype, rank, dimension, batch or size does not fit the model (also
    raised by the SDK's own shape checks, which are the daemon's: sdk/checks.py)."""

    code = ErrorCode.INVALID_TENSOR.value


class OutOfBounds(InvalidInput):
    """A tensor's range is not inside the region, or its offset is not aligned."""

    code = ErrorCode.OUT_OF_BOUNDS.value


class Overlap(InvalidInput):
    """Two tensor ranges of one request overlap."""

    code = ErrorCode.OVERLAP.value


class OutputTooLarge(InvalidInput):
    """An output does not fit its area: `details` has "output", "needed" and "capacity".
    ModelHandle grows the area and retries on its own; it reaches callers only if that fails."""

    code = ErrorCode.OUTPUT_TOO_LARGE.value


# -- regions -------------------------------------------------------------------------------------


class RegionError(TrtdError):
    """A shared-memory region could not be leased, used or released."""


class RegionNotFound(RegionError):
    """The region is not live (released, reclaimed, from before a restart): lease a new one."""

    code = ErrorCode.REGION_NOT_FOUND.value


class RegionTooLarge(RegionError):
    """Above the daemon's max_region_bytes (`details`): use smaller batches."""

    code = ErrorCode.REGION_TOO_LARGE.value


class NoSpace(RegionError):
    """The daemon's shared-memory file system (/dev/shm) cannot hold the region."""

    code = ErrorCode.NO_SPACE.value


class QuotaExceeded(TrtdError):
    """Too many regions or bytes for this client, or too many regions or clients for the
    daemon (also at Client(): max_clients); release regions or close clients no longer used.
    Not a RegionError: at Client() it is about clients, not regions."""

    code = ErrorCode.QUOTA_EXCEEDED.value


class Forbidden(RegionError):
    """The region is leased to another client, or the lease token is wrong."""

    code = ErrorCode.FORBIDDEN.value


# -- execution -----------------------------------------------------------------------------------


class Overloaded(TrtdError):
    """The model's queue is full; retry later (with back-off)."""

    code = ErrorCode.OVERLOADED.value


class DaemonStopping(Overloaded):
    """The daemon is stopping or has stopped: it refused this request (it did not run), gave up
    on it at the end of its drain, or closed the connection before answering.

    `details["started"]` says whether the request ran: False (it did not), True (it ran but its
    outputs are incomplete), None (the connection closed first: unknown). A subclass of
    Overloaded, since "retry later, when a daemon is back" is the remedy for both."""


class DeadlineExceeded(TrtdError, TimeoutError):
    """The request's deadline passed before the daemon could start it; it did not run."""

    code = ErrorCode.DEADLINE_EXCEEDED.value


class ServerError(TrtdError):
    """The daemon failed to run the request; also any error code this SDK does not know."""


class BackendError(ServerError):
    """The backend failed on this request; the model stays loaded."""

    code = ErrorCode.BACKEND_ERROR.value


class LoadFailed(ServerError):
    """`load`: the name is taken, or the model could not be loaded (the message says why)."""

    code = ErrorCode.LOAD_FAILED.value


class ConfigError(ServerError):
    """`reload`: the daemon's configuration file is missing or invalid; nothing changed."""

    code = ErrorCode.CONFIG_ERROR.value


class InternalError(ServerError):
    """A bug in the daemon (it keeps serving); report it with the daemon's log."""

    code = ErrorCode.INTERNAL.value


def _classes_by_code() -> dict[str, type[TrtdError]]:
    """Each class that declares a code (inherited ones do not count: DaemonStopping is an
    Overloaded told apart by its details)."""
    found: dict[str, type[TrtdError]] = {}
    pending = [TrtdError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__dict__.get("code"):
            found[cls.__dict__["code"]] = cls
    return found


_BY_CODE = _classes_by_code()


def error_from_reply(code: str, message: str, details: dict) -> TrtdError:
    """The exception for an error reply of the daemon."""
    if code == ErrorCode.OVERLOADED and details.get("stopping"):
        return DaemonStopping(message, code=code, details=details)
    return _BY_CODE.get(code, ServerError)(message, code=code, details=details)
