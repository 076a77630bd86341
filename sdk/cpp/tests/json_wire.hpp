// Wire structs <-> JSON (nlohmann::ordered_json, which keeps key order), for the tests only:
// the golden vectors carry each message as JSON, and the end-to-end driver speaks JSON lines.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "trtd/messages.hpp"

namespace trtd::testing {

using json = nlohmann::ordered_json;

template <class T, class = void> struct is_struct : std::false_type {};
template <class T>
struct is_struct<T, std::void_t<decltype(std::declval<T&>().visit(std::declval<int&>()))>> : std::true_type {};

inline json to_json(const std::string& v) { return v; }
inline json to_json(std::int64_t v) { return v; }
inline json to_json(std::uint64_t v) { return v; }
inline json to_json(double v) { return v; }
inline json to_json(bool v) { return v; }
inline json to_json(const Value& v);
template <class T> json to_json(const std::vector<T>& v);
template <class T> json to_json(const std::optional<T>& v);
template <class S, std::enable_if_t<is_struct<S>::value, int> = 0> json to_json(const S& s);

inline json to_json(const Value& v) {
    if (v.is_nil()) return nullptr;
    if (v.is_bool()) return v.as_bool();
    if (v.is_unsigned()) return v.as_uint();
    if (v.is_int()) return v.as_int();
    if (v.is_float()) return v.as_number();
    if (v.is_string()) return v.as_string();
    if (v.is_array()) {
        json out = json::array();
        for (const auto& item : v.as_array()) out.push_back(to_json(item));
        return out;
    }
    json out = json::object();
    for (const auto& m : v.as_object()) out[m.key] = to_json(m.value);
    return out;
}

template <class T> json to_json(const std::vector<T>& v) {
    json out = json::array();
    for (const auto& item : v) out.push_back(to_json(item));
    return out;
}

template <class T> json to_json(const std::optional<T>& v) { return v ? to_json(*v) : json(nullptr); }

struct ToJson {
    json& out;
    template <class T> void operator()(const char* key, const T& value, bool) {
        if constexpr (std::is_same_v<T, std::optional<std::string>>) {
            if (!value) return;  // nil fields are absent (SPEC 13)
        }
        out[key] = to_json(value);
    }
};

template <class S, std::enable_if_t<is_struct<S>::value, int>> json to_json(const S& s) {
    json out = json::object();
    ToJson visitor{out};
    s.visit(visitor);
    return out;
}

// JSON -> struct, for requests the driver builds (strict enough for tests: nlohmann throws on types).
inline void from_json_value(const json& j, std::string& v) { v = j.get<std::string>(); }
inline void from_json_value(const json& j, std::int64_t& v) { v = j.get<std::int64_t>(); }
inline void from_json_value(const json& j, std::uint64_t& v) { v = j.get<std::uint64_t>(); }
inline void from_json_value(const json& j, double& v) { v = j.get<double>(); }
inline void from_json_value(const json& j, bool& v) { v = j.get<bool>(); }
inline void from_json_value(const json&, Value&) {}
template <class T> void from_json_value(const json& j, std::vector<T>& v);
template <class T> void from_json_value(const json& j, std::optional<T>& v);
template <class S, std::enable_if_t<is_struct<S>::value, int> = 0> void from_json_value(const json& j, S& s);

template <class T> void from_json_value(const json& j, std::vector<T>& v) {
    v.clear();
    for (const auto& item : j) {
        v.emplace_back();
        from_json_value(item, v.back());
    }
}
template <class T> void from_json_value(const json& j, std::optional<T>& v) {
    if (j.is_null()) {
        v.reset();
    } else {
        v.emplace();
        from_json_value(j, *v);
    }
}
struct FromJson {
    const json& in;
    template <class T> void operator()(const char* key, T& value, bool) {
        if (in.contains(key)) from_json_value(in.at(key), value);
    }
};
template <class S, std::enable_if_t<is_struct<S>::value, int>> void from_json_value(const json& j, S& s) {
    FromJson visitor{j};
    s.visit(visitor);
}

}  // namespace trtd::testing
