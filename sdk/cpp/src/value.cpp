#include "trtd/value.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <stdexcept>

namespace trtd {

std::int64_t Value::as_int() const {
    if (auto* u = std::get_if<std::uint64_t>(&v_)) {
        if (*u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
            throw std::out_of_range("integer above INT64_MAX");
        return static_cast<std::int64_t>(*u);
    }
    return std::get<std::int64_t>(v_);
}

std::uint64_t Value::as_uint() const {
    if (auto* i = std::get_if<std::int64_t>(&v_)) {
        if (*i < 0) throw std::out_of_range("negative integer");
        return static_cast<std::uint64_t>(*i);
    }
    return std::get<std::uint64_t>(v_);
}

double Value::as_number() const {
    if (auto* d = std::get_if<double>(&v_)) return *d;
    if (auto* u = std::get_if<std::uint64_t>(&v_)) return static_cast<double>(*u);
    return static_cast<double>(std::get<std::int64_t>(v_));
}

const Value* Value::find(std::string_view key) const {
    const auto* object = std::get_if<Object>(&v_);
    if (object == nullptr) return nullptr;
    for (const auto& m : *object) {
        if (m.key == key) return &m.value;
    }
    return nullptr;
}

std::optional<std::int64_t> Value::get_int(std::string_view key) const {
    const Value* v = find(key);
    if (v == nullptr || !v->is_int()) return std::nullopt;
    try {
        return v->as_int();
    } catch (const std::out_of_range&) {
        return std::nullopt;
    }
}

std::optional<std::string> Value::get_string(std::string_view key) const {
    const Value* v = find(key);
    if (v == nullptr || !v->is_string()) return std::nullopt;
    return v->as_string();
}

std::optional<bool> Value::get_bool(std::string_view key) const {
    const Value* v = find(key);
    if (v == nullptr || !v->is_bool()) return std::nullopt;
    return v->as_bool();
}

namespace {
void json_string(std::string& out, const std::string& s) {
    out += '"';
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += static_cast<char>(c);
                }
        }
    }
    out += '"';
}

void json(std::string& out, const Value& v) {
    if (v.is_nil()) {
        out += "null";
    } else if (v.is_bool()) {
        out += v.as_bool() ? "true" : "false";
    } else if (v.is_unsigned()) {
        out += std::to_string(v.as_uint());
    } else if (v.is_int()) {
        out += std::to_string(v.as_int());
    } else if (v.is_float()) {
        double d = v.as_number();
        if (!std::isfinite(d)) {
            out += "null";
            return;
        }
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.17g", d);
        std::string text = buf;
        // The shortest text that reads back as the same double, with a fraction or exponent.
        for (int precision = 1; precision <= 17; ++precision) {
            std::snprintf(buf, sizeof buf, "%.*g", precision, d);
            if (std::strtod(buf, nullptr) == d) {
                text = buf;
                break;
            }
        }
        if (text.find_first_of(".eEn") == std::string::npos) text += ".0";
        out += text;
    } else if (v.is_string()) {
        json_string(out, v.as_string());
    } else if (v.is_array()) {
        out += '[';
        bool first = true;
        for (const auto& item : v.as_array()) {
            if (!first) out += ", ";
            first = false;
            json(out, item);
        }
        out += ']';
    } else {
        out += '{';
        bool first = true;
        for (const auto& m : v.as_object()) {
            if (!first) out += ", ";
            first = false;
            json_string(out, m.key);
            out += ": ";
            json(out, m.value);
        }
        out += '}';
    }
}
}  // namespace

std::string Value::to_json() const {
    std::string out;
    json(out, *this);
    return out;
}

bool Value::operator==(const Value& other) const {
    // An integer compares equal to the same integer of the other family.
    if (is_int() && other.is_int()) {
        bool neg_a = std::holds_alternative<std::int64_t>(v_) && std::get<std::int64_t>(v_) < 0;
        bool neg_b = std::holds_alternative<std::int64_t>(other.v_) && std::get<std::int64_t>(other.v_) < 0;
        if (neg_a != neg_b) return false;
        return neg_a ? as_int() == other.as_int() : as_uint() == other.as_uint();
    }
    return v_ == other.v_;
}

}  // namespace trtd
