#include "trtd/errors.hpp"

#include "trtd/tensor.hpp"

namespace trtd {

namespace {
// Each code's class (the Python SDK's _BY_CODE): a code not listed is a ServerError with that code.
template <class E> [[noreturn]] void raise(const std::string& message, Value details, const std::string& code) {
    throw E(message, std::move(details), code);
}

struct Entry {
    const char* code;
    const char* kind;
    void (*raise)(const std::string&, Value, const std::string&);
};

const Entry entries[] = {
    {"BAD_MESSAGE", "BadMessage", raise<BadMessage>},
    {"UNSUPPORTED_VERSION", "UnsupportedVersion", raise<UnsupportedVersion>},
    {"UNKNOWN_OP", "UnknownOp", raise<UnknownOp>},
    {"UNKNOWN_CLIENT", "DaemonRestarted", raise<DaemonRestarted>},
    {"FORBIDDEN", "Forbidden", raise<Forbidden>},
    {"UNAUTHORIZED", "AccessDenied", raise<AccessDenied>},
    {"REGION_NOT_FOUND", "RegionNotFound", raise<RegionNotFound>},
    {"REGION_TOO_LARGE", "RegionTooLarge", raise<RegionTooLarge>},
    {"NO_SPACE", "NoSpace", raise<NoSpace>},
    {"QUOTA_EXCEEDED", "QuotaExceeded", raise<QuotaExceeded>},
    {"UNKNOWN_MODEL", "UnknownModel", raise<UnknownModel>},
    {"MODEL_NOT_READY", "ModelNotReady", raise<ModelNotReady>},
    {"INVALID_TENSOR", "InvalidTensor", raise<InvalidTensor>},
    {"OUT_OF_BOUNDS", "OutOfBounds", raise<OutOfBounds>},
    {"OVERLAP", "Overlap", raise<Overlap>},
    {"OUTPUT_TOO_LARGE", "OutputTooLarge", raise<OutputTooLarge>},
    {"OVERLOADED", "Overloaded", raise<Overloaded>},
    {"DEADLINE_EXCEEDED", "DeadlineExceeded", raise<DeadlineExceeded>},
    {"BACKEND_ERROR", "BackendError", raise<BackendError>},
    {"LOAD_FAILED", "LoadFailed", raise<LoadFailed>},
    {"CONFIG_ERROR", "ConfigError", raise<ConfigError>},
    {"INTERNAL", "InternalError", raise<InternalError>},
};
}  // namespace

void throw_error_reply(const std::string& code, const std::string& message, Value details) {
    if (code == "OVERLOADED" && details.get_bool("stopping").value_or(false))
        throw DaemonStopping(message, std::move(details), code);
    for (const auto& e : entries) {
        if (code == e.code) {
            e.raise(message, std::move(details), code);
        }
    }
    throw ServerError(message, std::move(details), code);  // a code this client does not know yet
}

std::vector<std::pair<std::string, std::string>> error_classes_by_code() {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& e : entries) out.emplace_back(e.code, e.kind);
    return out;
}

namespace detail {
void throw_wrong_element_type(DType have, DType want) {
    throw InvalidInput("the tensor holds " + std::string(dtype_name(have)) + ", not " +
                       std::string(dtype_name(want)) + " elements");
}
}  // namespace detail

}  // namespace trtd
