// The msgpack codec: envelopes, size limits, typed and strict decoding (protocol/SPEC.md 4-5).
//
// Encoding follows the canonical form of SPEC 4.4 (key order of the tables, shortest integers,
// float 64, nil fields left out), so a request's bytes equal the reference encoder's: the
// golden vectors check that byte for byte. Decoding enforces the limits of SPEC 4.3 before
// allocating, refuses bin/ext payloads, non-string map keys, invalid UTF-8 and trailing bytes,
// and checks every field's type, naming its path ("result.outputs[0].shape[1]").
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>

#include "trtd/messages.hpp"

namespace trtd::wire {

// A frame that does not decode: `code` is a protocol error code (BAD_MESSAGE, or for requests
// UNSUPPORTED_VERSION / UNKNOWN_OP), `message` says what is wrong, as the daemon would.
struct DecodeError : std::runtime_error {
    DecodeError(std::string code, const std::string& message, std::uint64_t request_id = 0)
        : std::runtime_error(message), code(std::move(code)), request_id(request_id) {}
    std::string code;
    std::uint64_t request_id;
};

// -- requests ---------------------------------------------------------------------------------------

// {"v": 1, "op": R::op, "id": id, ["auth": auth,] ...fields}. auth: "" for none.
template <class R> std::string encode_request(const R& request, std::uint64_t id, std::string_view auth = {});

#define TRTD_VARIANT_MEMBER(T) T,
using AnyRequest = std::variant<TRTD_WIRE_REQUESTS(TRTD_VARIANT_MEMBER) std::monostate>;
#undef TRTD_VARIANT_MEMBER

struct RequestEnvelope {
    std::int64_t version = 0;
    std::string op;
    std::uint64_t id = 0;
    std::string auth;
    AnyRequest request;
};

// A request frame as the daemon reads it (codec.py decode_envelope): the checks in SPEC 5.1's order.
RequestEnvelope decode_request(std::string_view frame);

// -- replies ----------------------------------------------------------------------------------------

template <class Result> struct Reply {
    std::uint64_t id = 0;
    std::optional<Result> result;    // set when ok
    std::optional<ErrorInfo> error;  // set otherwise
};

// The reply to request `expected_id`; nullopt for a stale reply (another id), except an error
// reply with id 0, which answers the message the daemon could not read (SPEC 5.3).
template <class Result>
std::optional<Reply<Result>> decode_reply(std::string_view frame, std::uint64_t expected_id);

template <class Result> std::string encode_reply(std::uint64_t id, const Result& result);
std::string encode_error(std::uint64_t id, const ErrorInfo& error);

}  // namespace trtd::wire
