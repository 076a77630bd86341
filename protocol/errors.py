"""Error codes: stable strings a client can branch on; messages are for people."""

from __future__ import annotations

from enum import Enum


class ErrorCode(str, Enum):
    # The message itself
    BAD_MESSAGE = "BAD_MESSAGE"            # not msgpack, not a map, a field of the wrong type
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    UNKNOWN_OP = "UNKNOWN_OP"
    # Who is asking
    UNKNOWN_CLIENT = "UNKNOWN_CLIENT"      # no hello yet, reclaimed, or the daemon restarted
    FORBIDDEN = "FORBIDDEN"                # a region of another client, a wrong lease token
    UNAUTHORIZED = "UNAUTHORIZED"          # no/wrong admin token (privileged op) or connection token (TCP)
    # Regions
    REGION_NOT_FOUND = "REGION_NOT_FOUND"  # never leased here, or already released/reclaimed
    REGION_TOO_LARGE = "REGION_TOO_LARGE"  # above the daemon's max_region_bytes
    NO_SPACE = "NO_SPACE"                  # the shared-memory file system cannot hold it
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"      # per-client region count or bytes
    # Models and tensors
    UNKNOWN_MODEL = "UNKNOWN_MODEL"
    MODEL_NOT_READY = "MODEL_NOT_READY"
    INVALID_TENSOR = "INVALID_TENSOR"      # unknown/missing/duplicate name, wrong dtype, rank, dims, nbytes
    OUT_OF_BOUNDS = "OUT_OF_BOUNDS"        # an offset/size outside the region
    OVERLAP = "OVERLAP"                    # two tensor ranges of one request overlap
    OUTPUT_TOO_LARGE = "OUTPUT_TOO_LARGE"  # the output area given is smaller than the result
    # Execution
    OVERLOADED = "OVERLOADED"              # the model's queue is full: retry later
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"  # the request's deadline_ms passed before it started
    BACKEND_ERROR = "BACKEND_ERROR"        # the backend raised; the model stays loaded
    LOAD_FAILED = "LOAD_FAILED"
    CONFIG_ERROR = "CONFIG_ERROR"          # reload: the configuration file is missing or invalid
    INTERNAL = "INTERNAL"                  # a bug in the daemon; it keeps serving

    def __str__(self) -> str:
        return self.value


class ProtocolError(Exception):
    """An error that becomes an error reply; carries the request id when known."""

    def __init__(self, code: ErrorCode, message: str, details: dict | None = None,
                 request_id: int = 0):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
        self.request_id = request_id
