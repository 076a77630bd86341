// The msgpack codec (trtd/codec.hpp) on msgpack-c's packer and unpacker.
#include "trtd/codec.hpp"

#include <cstring>
#include <limits>
#include <msgpack.hpp>
#include <type_traits>

namespace trtd::wire {
namespace {

// msgpack-c's packer with its buffer at hand (for the float 64 below).
struct Packer : msgpack::packer<msgpack::sbuffer> {
    explicit Packer(msgpack::sbuffer& b) : msgpack::packer<msgpack::sbuffer>(b), buffer(b) {}
    msgpack::sbuffer& buffer;
};
namespace type = msgpack::type;

// SPEC 4.3 (codec.py _REQUEST_LIMITS / _REPLY_LIMITS): array, map, str, bin, ext, depth. Nesting
// is bounded far beyond the four levels the messages use.
const msgpack::unpack_limit request_limits(1024, 64, 4096, 0, 0, 64);
const msgpack::unpack_limit reply_limits(65536, 65536, 1024 * 1024, 0, 0, 64);

template <class T, class = void> struct is_struct : std::false_type {};
template <class T> struct is_struct<T, std::void_t<decltype(std::declval<T&>().visit(std::declval<int&>()))>>
    : std::true_type {};

// -- encoding ---------------------------------------------------------------------------------------

template <class T> bool is_nil(const T&) { return false; }
template <class T> bool is_nil(const std::optional<T>& value) { return !value; }

void pack(Packer& p, const std::string& s);
void pack(Packer& p, std::int64_t v);
void pack(Packer& p, std::uint64_t v);
void pack(Packer& p, double v);
void pack(Packer& p, bool v);
void pack(Packer& p, const Value& v);
template <class T> void pack(Packer& p, const std::vector<T>& values);
template <class T> void pack(Packer& p, const std::optional<T>& value);
template <class S, std::enable_if_t<is_struct<S>::value, int> = 0> void pack(Packer& p, const S& s);

struct Counter {
    std::uint32_t n = 0;
    template <class T> void operator()(const char*, const T& value, bool) { n += is_nil(value) ? 0 : 1; }
};

struct Writer {
    Packer& p;
    // Nil fields are left out: absent and nil mean the same (SPEC 2.3), the reference encoder drops them.
    template <class T> void operator()(const char* key, const T& value, bool) {
        if (is_nil(value)) return;
        pack(p, std::string(key));
        pack(p, value);
    }
};

void pack(Packer& p, const std::string& s) {
    p.pack_str(static_cast<std::uint32_t>(s.size()));
    p.pack_str_body(s.data(), static_cast<std::uint32_t>(s.size()));
}
// msgpack-c writes the shortest form, non-negative values in the unsigned family (SPEC 4.4).
void pack(Packer& p, std::int64_t v) { p.pack_int64(v); }
void pack(Packer& p, std::uint64_t v) { p.pack_uint64(v); }
// Always float 64 (SPEC 4.4), written here: msgpack-c 4.x's pack_double writes an integral
// value (0.0, 10.0) as an integer, which a receiver must accept as a float but which is not the
// canonical encoding the golden vectors hold.
void pack(Packer& p, double v) {
    std::uint64_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    char buf[9];
    buf[0] = static_cast<char>(0xcb);
    for (int i = 0; i < 8; ++i) buf[1 + i] = static_cast<char>((bits >> (56 - 8 * i)) & 0xff);
    p.buffer.write(buf, sizeof buf);
}
void pack(Packer& p, bool v) { v ? p.pack_true() : p.pack_false(); }

void pack(Packer& p, const Value& v) {
    if (v.is_nil()) {
        p.pack_nil();
    } else if (v.is_bool()) {
        pack(p, v.as_bool());
    } else if (v.is_unsigned()) {
        pack(p, v.as_uint());
    } else if (v.is_int()) {
        pack(p, v.as_int());
    } else if (v.is_float()) {
        pack(p, v.as_number());
    } else if (v.is_string()) {
        pack(p, v.as_string());
    } else if (v.is_array()) {
        p.pack_array(static_cast<std::uint32_t>(v.as_array().size()));
        for (const auto& item : v.as_array()) pack(p, item);
    } else {
        p.pack_map(static_cast<std::uint32_t>(v.as_object().size()));
        for (const auto& member : v.as_object()) {
            pack(p, member.key);
            pack(p, member.value);
        }
    }
}

template <class T> void pack(Packer& p, const std::vector<T>& values) {
    p.pack_array(static_cast<std::uint32_t>(values.size()));
    for (const auto& v : values) pack(p, v);
}

template <class T> void pack(Packer& p, const std::optional<T>& value) {
    if (value) pack(p, *value);
    else p.pack_nil();
}

template <class S, std::enable_if_t<is_struct<S>::value, int>> void pack(Packer& p, const S& s) {
    Counter count;
    s.visit(count);
    p.pack_map(count.n);
    Writer writer{p};
    s.visit(writer);
}

std::string to_string(const msgpack::sbuffer& buffer) { return std::string(buffer.data(), buffer.size()); }

// -- decoding ---------------------------------------------------------------------------------------

// A value of the wrong type, or a missing field. The path is collected while it propagates,
// innermost part first, and formatted only then (schema.py's _Bad): a valid message builds none.
struct FieldError {
    FieldError(std::string expected, std::string got, bool missing = false, std::vector<std::string> parts = {})
        : expected(std::move(expected)), got(std::move(got)), missing(missing), parts(std::move(parts)) {}
    std::string expected;
    std::string got;
    bool missing;
    std::vector<std::string> parts;

    std::string message(const std::string& root) const {
        std::string path = root;
        for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
            if (!it->empty() && (*it)[0] == '[') path += *it;
            else path = path.empty() ? *it : path + "." + *it;
        }
        if (missing) return "missing field '" + path + "'";
        return "field '" + path + "' must be " + expected + ", got " + got;
    }
};

// What Python would call the value's type: the reference decoder's words.
const char* type_name(const msgpack::object& o) {
    switch (o.type) {
        case type::NIL: return "NoneType";
        case type::BOOLEAN: return "bool";
        case type::POSITIVE_INTEGER:
        case type::NEGATIVE_INTEGER: return "int";
        case type::FLOAT32:
        case type::FLOAT64: return "float";
        case type::STR: return "str";
        case type::BIN: return "bytes";
        case type::ARRAY: return "list";
        case type::MAP: return "dict";
        default: return "ExtType";
    }
}

[[noreturn]] void wrong(const char* expected, const msgpack::object& o) { throw FieldError{expected, type_name(o)}; }

const msgpack::object* member(const msgpack::object& map, std::string_view key) {
    for (std::uint32_t i = 0; i < map.via.map.size; ++i) {
        const auto& kv = map.via.map.ptr[i];
        if (kv.key.type == type::STR && std::string_view(kv.key.via.str.ptr, kv.key.via.str.size) == key)
            return &kv.val;
    }
    return nullptr;
}

Value to_value(const msgpack::object& o) {
    switch (o.type) {
        case type::BOOLEAN: return Value(o.via.boolean);
        case type::POSITIVE_INTEGER: return Value(static_cast<std::uint64_t>(o.via.u64));
        case type::NEGATIVE_INTEGER: return Value(static_cast<std::int64_t>(o.via.i64));
        case type::FLOAT32:
        case type::FLOAT64: return Value(o.via.f64);
        case type::STR: return Value(std::string(o.via.str.ptr, o.via.str.size));
        case type::ARRAY: {
            Value::Array items;
            items.reserve(o.via.array.size);
            for (std::uint32_t i = 0; i < o.via.array.size; ++i) items.push_back(to_value(o.via.array.ptr[i]));
            return Value(std::move(items));
        }
        case type::MAP: {
            Value::Object members;
            members.reserve(o.via.map.size);
            for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
                const auto& kv = o.via.map.ptr[i];
                members.push_back({std::string(kv.key.via.str.ptr, kv.key.via.str.size), to_value(kv.val)});
            }
            return Value(std::move(members));
        }
        default: return Value();  // nil, and the empty bin/ext payloads the limits let through
    }
}

void decode(const msgpack::object& o, std::string& out);
void decode(const msgpack::object& o, std::int64_t& out);
void decode(const msgpack::object& o, std::uint64_t& out);
void decode(const msgpack::object& o, double& out);
void decode(const msgpack::object& o, bool& out);
void decode(const msgpack::object& o, Value& out);
template <class T> void decode(const msgpack::object& o, std::vector<T>& out);
template <class T> void decode(const msgpack::object& o, std::optional<T>& out);
template <class S, std::enable_if_t<is_struct<S>::value, int> = 0> void decode(const msgpack::object& o, S& out);

struct Reader {
    const msgpack::object& map;
    template <class T> void operator()(const char* key, T& field, bool required) {
        const msgpack::object* value = member(map, key);
        if (value == nullptr) {
            if (required) throw FieldError{"", "", true, {key}};
            return;  // absent: the default (SPEC 2.3); unknown keys are ignored the same way
        }
        try {
            decode(*value, field);
        } catch (FieldError& e) {
            e.parts.emplace_back(key);
            throw;
        }
    }
};

void decode(const msgpack::object& o, std::string& out) {
    if (o.type != type::STR) wrong("a string", o);
    out.assign(o.via.str.ptr, o.via.str.size);
}

void decode(const msgpack::object& o, std::int64_t& out) {
    if (o.type == type::NEGATIVE_INTEGER) {
        out = o.via.i64;
    } else if (o.type == type::POSITIVE_INTEGER) {
        if (o.via.u64 > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
            throw FieldError{"a signed 64-bit integer", "int"};
        out = static_cast<std::int64_t>(o.via.u64);
    } else {
        wrong("an integer", o);  // an integral float (1024.0) and a bool are not integers (SPEC 4.1)
    }
}

void decode(const msgpack::object& o, std::uint64_t& out) {
    if (o.type == type::NEGATIVE_INTEGER) throw FieldError{"a non-negative integer", "int"};
    if (o.type != type::POSITIVE_INTEGER) wrong("an integer", o);
    out = o.via.u64;
}

void decode(const msgpack::object& o, double& out) {
    if (o.type == type::FLOAT32 || o.type == type::FLOAT64) out = o.via.f64;
    else if (o.type == type::POSITIVE_INTEGER) out = static_cast<double>(o.via.u64);  // any integer is a float too
    else if (o.type == type::NEGATIVE_INTEGER) out = static_cast<double>(o.via.i64);
    else wrong("a number", o);
}

void decode(const msgpack::object& o, bool& out) {
    if (o.type != type::BOOLEAN) wrong("a boolean", o);
    out = o.via.boolean;
}

// `details` (the only Value field) is a map of anything.
void decode(const msgpack::object& o, Value& out) {
    if (o.type != type::MAP) wrong("a map", o);
    out = to_value(o);
}

template <class T> void decode(const msgpack::object& o, std::vector<T>& out) {
    if (o.type != type::ARRAY) wrong("an array", o);
    out.resize(o.via.array.size);
    for (std::uint32_t i = 0; i < o.via.array.size; ++i) {
        try {
            decode(o.via.array.ptr[i], out[i]);
        } catch (FieldError& e) {
            e.parts.push_back("[" + std::to_string(i) + "]");
            throw;
        }
    }
}

template <class T> void decode(const msgpack::object& o, std::optional<T>& out) {
    if (o.type == type::NIL) {
        out.reset();
        return;
    }
    out.emplace();
    decode(o, *out);
}

template <class S, std::enable_if_t<is_struct<S>::value, int>> void decode(const msgpack::object& o, S& out) {
    if (o.type != type::MAP) wrong("a map", o);
    out = S{};
    Reader reader{o};
    out.visit(reader);
}

// A struct from `o`, or DecodeError(BAD_MESSAGE) naming the field from `root` on.
template <class S> S decode_struct(const msgpack::object& o, const std::string& root, const char* type) {
    S out;
    try {
        decode(o, out);
    } catch (const FieldError& e) {
        throw DecodeError("BAD_MESSAGE", e.message(e.parts.empty() ? (root.empty() ? type : root) : root));
    }
    return out;
}

bool valid_utf8(const char* s, std::size_t n) {
    const auto* p = reinterpret_cast<const unsigned char*>(s);
    std::size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        std::size_t len;
        std::uint32_t cp;
        if (c < 0x80) {
            ++i;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, cp = c & 0x07;
        } else {
            return false;
        }
        if (i + len > n) return false;
        for (std::size_t k = 1; k < len; ++k) {
            if ((p[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        // Overlong forms, surrogates and values above U+10FFFF are not UTF-8.
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

// What msgpack-c's unpacker leaves to us (the reference decoder's strict_map_key and raw=False):
// every map key a str, every str valid UTF-8. Returns the problem, or "".
std::string tree_problem(const msgpack::object& o) {
    switch (o.type) {
        case type::STR:
            return valid_utf8(o.via.str.ptr, o.via.str.size) ? "" : "a string is not valid UTF-8";
        case type::ARRAY:
            for (std::uint32_t i = 0; i < o.via.array.size; ++i) {
                auto problem = tree_problem(o.via.array.ptr[i]);
                if (!problem.empty()) return problem;
            }
            return "";
        case type::MAP:
            for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
                const auto& kv = o.via.map.ptr[i];
                if (kv.key.type != type::STR) return std::string("a map key is ") + type_name(kv.key) + ", not str";
                auto problem = tree_problem(kv.key);
                if (problem.empty()) problem = tree_problem(kv.val);
                if (!problem.empty()) return problem;
            }
            return "";
        default: return "";
    }
}

msgpack::object_handle unpack_frame(std::string_view frame, const msgpack::unpack_limit& limits, const char* what) {
    std::string problem;
    msgpack::object_handle handle;
    std::size_t offset = 0;
    try {
        handle = msgpack::unpack(frame.data(), frame.size(), offset, nullptr, nullptr, limits);
        if (offset != frame.size())
            problem = "trailing bytes after the message (" + std::to_string(frame.size() - offset) + ")";
        else
            problem = tree_problem(handle.get());
    } catch (const std::exception& e) {  // msgpack-c's unpack_error family, std::bad_alloc
        problem = e.what();
        if (problem.empty()) problem = "unreadable";
    }
    if (!problem.empty())
        throw DecodeError("BAD_MESSAGE", std::string(what) + " is not a valid msgpack message within limits: " + problem);
    return handle;
}

}  // namespace

// -- requests ---------------------------------------------------------------------------------------

template <class R> std::string encode_request(const R& request, std::uint64_t id, std::string_view auth) {
    msgpack::sbuffer buffer(256);
    Packer p(buffer);
    Counter count;
    request.visit(count);
    p.pack_map(3 + (auth.empty() ? 0 : 1) + count.n);
    pack(p, std::string("v"));
    pack(p, protocol_version);
    pack(p, std::string("op"));
    pack(p, std::string(R::op));
    pack(p, std::string("id"));
    pack(p, id);
    if (!auth.empty()) {
        pack(p, std::string("auth"));
        pack(p, std::string(auth));
    }
    Writer writer{p};
    request.visit(writer);
    return to_string(buffer);
}

namespace {
template <class R> bool decode_op(const std::string& op, const msgpack::object& map, RequestEnvelope& out, const char* name) {
    if (op != R::op) return false;
    out.request = decode_struct<R>(map, "", name);
    return true;
}
}  // namespace

RequestEnvelope decode_request(std::string_view frame) {
    if (frame.size() > max_request_bytes)
        throw DecodeError("BAD_MESSAGE", "request of " + std::to_string(frame.size()) + " bytes exceeds the limit of " +
                                             std::to_string(max_request_bytes));
    auto handle = unpack_frame(frame, request_limits, "request");
    const msgpack::object& obj = handle.get();
    if (obj.type != type::MAP) throw DecodeError("BAD_MESSAGE", "a request must be a msgpack map");
    RequestEnvelope out;
    if (const auto* id = member(obj, "id")) {
        if (id->type != type::POSITIVE_INTEGER)
            throw DecodeError("BAD_MESSAGE", "field 'id' must be an unsigned 64-bit integer");
        out.id = id->via.u64;
    }
    const auto* version = member(obj, "v");
    if (version == nullptr || version->type != type::POSITIVE_INTEGER || version->via.u64 != 1)
        throw DecodeError("UNSUPPORTED_VERSION",
                          "this protocol version is not supported; this daemon speaks 1: upgrade the client or the "
                          "daemon so they match",
                          out.id);
    out.version = 1;
    const auto* op = member(obj, "op");
    if (op != nullptr && op->type == type::STR) out.op.assign(op->via.str.ptr, op->via.str.size);
    if (const auto* auth = member(obj, "auth")) {
        if (auth->type != type::STR) throw DecodeError("BAD_MESSAGE", "field 'auth' must be a string", out.id);
        out.auth.assign(auth->via.str.ptr, auth->via.str.size);
    }
    try {
#define TRTD_DECODE_OP(T) decode_op<T>(out.op, obj, out, #T) ||
        if (TRTD_WIRE_REQUESTS(TRTD_DECODE_OP) false) return out;
#undef TRTD_DECODE_OP
    } catch (DecodeError& e) {
        e.request_id = out.id;
        throw;
    }
    throw DecodeError("UNKNOWN_OP", "unknown op '" + out.op + "'", out.id);
}

// -- replies ----------------------------------------------------------------------------------------

template <class Result>
std::optional<Reply<Result>> decode_reply(std::string_view frame, std::uint64_t expected_id) {
    if (frame.size() > max_reply_bytes)
        throw DecodeError("BAD_MESSAGE", "reply of " + std::to_string(frame.size()) + " bytes exceeds the limit");
    auto handle = unpack_frame(frame, reply_limits, "reply");
    const msgpack::object& obj = handle.get();
    if (obj.type != type::MAP) throw DecodeError("BAD_MESSAGE", "a reply must be a msgpack map");
    const auto* id = member(obj, "id");
    const auto* ok = member(obj, "ok");
    bool id_is_int = id == nullptr || id->type == type::POSITIVE_INTEGER;
    std::uint64_t reply_id = id == nullptr ? 0 : (id_is_int ? id->via.u64 : 0);
    bool ok_true = ok != nullptr && ok->type == type::BOOLEAN && ok->via.boolean;
    bool ok_false = ok != nullptr && ok->type == type::BOOLEAN && !ok->via.boolean;
    if (!id_is_int || reply_id != expected_id) {
        // An error with id 0 answers a message the daemon could not read at all: the one in flight.
        if (!(id_is_int && reply_id == 0 && ok_false)) return std::nullopt;
    }
    static const msgpack::object nil;
    Reply<Result> out;
    out.id = expected_id;
    if (ok_true) {
        const auto* result = member(obj, "result");
        out.result = decode_struct<Result>(result ? *result : nil, "result", "result");
    } else {  // no "ok": true is an error reply (SPEC 5.3)
        const auto* error = member(obj, "error");
        out.error = decode_struct<ErrorInfo>(error ? *error : nil, "error", "error");
    }
    return out;
}

// A reply map: {v, id, ok, result} or {v, id, ok: false, error} (SPEC 4).
template <class Body>
std::string encode_answer(std::uint64_t id, bool ok, const std::string& key, const Body& body) {
    msgpack::sbuffer buffer(256);
    Packer p(buffer);
    p.pack_map(4);
    pack(p, std::string("v"));
    pack(p, protocol_version);
    pack(p, std::string("id"));
    pack(p, id);
    pack(p, std::string("ok"));
    pack(p, ok);
    pack(p, key);
    pack(p, body);
    return to_string(buffer);
}

template <class Result> std::string encode_reply(std::uint64_t id, const Result& result) {
    return encode_answer(id, true, "result", result);
}

std::string encode_error(std::uint64_t id, const ErrorInfo& error) {
    return encode_answer(id, false, "error", error);
}

#define TRTD_INSTANTIATE_REQUEST(T) template std::string encode_request<T>(const T&, std::uint64_t, std::string_view);
TRTD_WIRE_REQUESTS(TRTD_INSTANTIATE_REQUEST)
#undef TRTD_INSTANTIATE_REQUEST
#define TRTD_INSTANTIATE_REPLY(T)                                                          \
    template std::optional<Reply<T>> decode_reply<T>(std::string_view, std::uint64_t); \
    template std::string encode_reply<T>(std::uint64_t, const T&);
TRTD_WIRE_REPLIES(TRTD_INSTANTIATE_REPLY)
#undef TRTD_INSTANTIATE_REPLY

}  // namespace trtd::wire
