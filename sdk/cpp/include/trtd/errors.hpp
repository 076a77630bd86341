// Exceptions the client throws; each message says what happened and what to do.
//
// The tree mirrors the Python SDK's (sdk/errors.py). A class after which a code is written stands
// for that protocol error code (protocol/SPEC.md section 11 says what a client should do about
// it) and carries it as code(); the others are thrown by the client itself, except ServerError,
// which also stands for any code this client does not know yet (a newer daemon), with that code.
// Every exception carries the daemon's message as what() and its details as details().
//
//     Error (std::runtime_error)
//     ├── DaemonNotRunning
//     ├── DaemonTimeout
//     ├── DaemonRestarted: UNKNOWN_CLIENT
//     ├── InvalidEndpoint
//     ├── ProtocolMismatch
//     │   ├── BadMessage: BAD_MESSAGE
//     │   ├── UnsupportedVersion: UNSUPPORTED_VERSION
//     │   └── UnknownOp: UNKNOWN_OP
//     ├── AccessDenied: UNAUTHORIZED
//     ├── UnknownModel: UNKNOWN_MODEL
//     ├── ModelNotReady: MODEL_NOT_READY
//     ├── InvalidInput
//     │   ├── InvalidTensor: INVALID_TENSOR
//     │   ├── OutOfBounds: OUT_OF_BOUNDS
//     │   ├── Overlap: OVERLAP
//     │   └── OutputTooLarge: OUTPUT_TOO_LARGE
//     ├── RegionError
//     │   ├── RegionNotFound: REGION_NOT_FOUND
//     │   ├── RegionTooLarge: REGION_TOO_LARGE
//     │   ├── NoSpace: NO_SPACE
//     │   └── Forbidden: FORBIDDEN
//     ├── QuotaExceeded: QUOTA_EXCEEDED
//     ├── Overloaded: OVERLOADED
//     │   └── DaemonStopping: OVERLOADED with details "stopping"
//     ├── DeadlineExceeded: DEADLINE_EXCEEDED
//     └── ServerError
//         ├── BackendError: BACKEND_ERROR
//         ├── LoadFailed: LOAD_FAILED
//         ├── ConfigError: CONFIG_ERROR
//         └── InternalError: INTERNAL
//
// tests/test_cpp_client.py checks this drawing against the Python SDK's and every ErrorCode.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "trtd/value.hpp"

namespace trtd {

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& message, Value details = {}, std::string code = {})
        : std::runtime_error(message), code_(std::move(code)), details_(std::move(details)) {}
    // The protocol error code (the daemon's, or the class's when the client throws it itself);
    // "" for the errors only the client raises.
    const std::string& code() const noexcept { return code_; }
    // The daemon's details (SPEC section 11), an object; nil when there are none.
    const Value& details() const noexcept { return details_; }
    // The class name, e.g. "InvalidTensor" (for logs and tests; the type is what to catch).
    virtual const char* kind() const noexcept { return "Error"; }

private:
    std::string code_;
    Value details_;
};

#define TRTD_DEFINE_ERROR(Name, Base, Code)                                                     \
    class Name : public Base {                                                                  \
    public:                                                                                     \
        explicit Name(const std::string& message, Value details = {}, std::string code = {})   \
            : Base(message, std::move(details), code.empty() ? std::string(Code) : code) {}     \
        const char* kind() const noexcept override { return #Name; }                            \
    };

TRTD_DEFINE_ERROR(DaemonNotRunning, Error, "")
TRTD_DEFINE_ERROR(DaemonTimeout, Error, "")
TRTD_DEFINE_ERROR(DaemonRestarted, Error, "UNKNOWN_CLIENT")
TRTD_DEFINE_ERROR(InvalidEndpoint, Error, "")
TRTD_DEFINE_ERROR(ProtocolMismatch, Error, "")
TRTD_DEFINE_ERROR(BadMessage, ProtocolMismatch, "BAD_MESSAGE")
TRTD_DEFINE_ERROR(UnsupportedVersion, ProtocolMismatch, "UNSUPPORTED_VERSION")
TRTD_DEFINE_ERROR(UnknownOp, ProtocolMismatch, "UNKNOWN_OP")
TRTD_DEFINE_ERROR(AccessDenied, Error, "UNAUTHORIZED")
TRTD_DEFINE_ERROR(UnknownModel, Error, "UNKNOWN_MODEL")
TRTD_DEFINE_ERROR(ModelNotReady, Error, "MODEL_NOT_READY")
TRTD_DEFINE_ERROR(InvalidInput, Error, "")
TRTD_DEFINE_ERROR(InvalidTensor, InvalidInput, "INVALID_TENSOR")
TRTD_DEFINE_ERROR(OutOfBounds, InvalidInput, "OUT_OF_BOUNDS")
TRTD_DEFINE_ERROR(Overlap, InvalidInput, "OVERLAP")
TRTD_DEFINE_ERROR(OutputTooLarge, InvalidInput, "OUTPUT_TOO_LARGE")
TRTD_DEFINE_ERROR(RegionError, Error, "")
TRTD_DEFINE_ERROR(RegionNotFound, RegionError, "REGION_NOT_FOUND")
TRTD_DEFINE_ERROR(RegionTooLarge, RegionError, "REGION_TOO_LARGE")
TRTD_DEFINE_ERROR(NoSpace, RegionError, "NO_SPACE")
TRTD_DEFINE_ERROR(QuotaExceeded, Error, "QUOTA_EXCEEDED")
TRTD_DEFINE_ERROR(Forbidden, RegionError, "FORBIDDEN")
TRTD_DEFINE_ERROR(Overloaded, Error, "OVERLOADED")
// The daemon is stopping or has stopped: it refused the request (it did not run), gave up on it
// at the end of its drain, or closed the connection first. details "started": false (did not
// run), true (ran, outputs incomplete), nil (the connection closed first: unknown).
TRTD_DEFINE_ERROR(DaemonStopping, Overloaded, "OVERLOADED")
TRTD_DEFINE_ERROR(DeadlineExceeded, Error, "DEADLINE_EXCEEDED")
TRTD_DEFINE_ERROR(ServerError, Error, "")
TRTD_DEFINE_ERROR(BackendError, ServerError, "BACKEND_ERROR")
TRTD_DEFINE_ERROR(LoadFailed, ServerError, "LOAD_FAILED")
TRTD_DEFINE_ERROR(ConfigError, ServerError, "CONFIG_ERROR")
TRTD_DEFINE_ERROR(InternalError, ServerError, "INTERNAL")

#undef TRTD_DEFINE_ERROR

// Throws the exception for an error reply of the daemon (code, message, details).
[[noreturn]] void throw_error_reply(const std::string& code, const std::string& message, Value details);

// Every error code this client knows, with the class it throws for it (for tests and tools).
std::vector<std::pair<std::string, std::string>> error_classes_by_code();

}  // namespace trtd
