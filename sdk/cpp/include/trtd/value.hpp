// A msgpack value of any type, as error `details` carry them (SPEC 7.10: "values are any msgpack
// data"). Maps keep their order, so a value re-encodes to the bytes it came from.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace trtd {

class Value {
public:
    struct Member;
    using Array = std::vector<Value>;
    using Object = std::vector<Member>;  // in wire order; keys are strings (SPEC 4.1)

    Value() = default;  // nil
    Value(std::nullptr_t) {}
    Value(bool b) : v_(b) {}
    Value(int i) : v_(static_cast<std::int64_t>(i)) {}
    Value(long i) : v_(static_cast<std::int64_t>(i)) {}
    Value(long long i) : v_(static_cast<std::int64_t>(i)) {}
    Value(unsigned int i) : v_(static_cast<std::uint64_t>(i)) {}
    Value(unsigned long i) : v_(static_cast<std::uint64_t>(i)) {}
    Value(unsigned long long i) : v_(static_cast<std::uint64_t>(i)) {}
    Value(double d) : v_(d) {}
    Value(std::string s) : v_(std::move(s)) {}
    Value(const char* s) : v_(std::string(s)) {}
    Value(Array a) : v_(std::move(a)) {}
    Value(Object o) : v_(std::move(o)) {}

    bool is_nil() const noexcept { return v_.index() == 0; }
    bool is_bool() const noexcept { return std::holds_alternative<bool>(v_); }
    // Integers: negative ones are stored signed, others unsigned (msgpack's two families).
    bool is_int() const noexcept {
        return std::holds_alternative<std::int64_t>(v_) || std::holds_alternative<std::uint64_t>(v_);
    }
    bool is_unsigned() const noexcept { return std::holds_alternative<std::uint64_t>(v_); }
    bool is_float() const noexcept { return std::holds_alternative<double>(v_); }
    bool is_string() const noexcept { return std::holds_alternative<std::string>(v_); }
    bool is_array() const noexcept { return std::holds_alternative<Array>(v_); }
    bool is_object() const noexcept { return std::holds_alternative<Object>(v_); }

    bool as_bool() const { return std::get<bool>(v_); }
    // Throws std::bad_variant_access for a non-integer, std::out_of_range above INT64_MAX.
    std::int64_t as_int() const;
    std::uint64_t as_uint() const;
    double as_number() const;  // an integer or a float
    const std::string& as_string() const { return std::get<std::string>(v_); }
    const Array& as_array() const { return std::get<Array>(v_); }
    const Object& as_object() const { return std::get<Object>(v_); }

    // The member `key` of an object; nullptr when absent or when this is not an object.
    const Value* find(std::string_view key) const;
    // Conveniences for details: the member as that type, nullopt when absent or another type.
    std::optional<std::int64_t> get_int(std::string_view key) const;
    std::optional<std::string> get_string(std::string_view key) const;
    std::optional<bool> get_bool(std::string_view key) const;

    // JSON text (for messages, logs and tests); a float keeps a fraction: 10.0, not 10.
    std::string to_json() const;

    bool operator==(const Value& other) const;
    bool operator!=(const Value& other) const { return !(*this == other); }

private:
    std::variant<std::monostate, bool, std::int64_t, std::uint64_t, double, std::string, Array, Object> v_;
};

struct Value::Member {
    std::string key;
    Value value;
    bool operator==(const Member& o) const { return key == o.key && value == o.value; }
};

}  // namespace trtd
