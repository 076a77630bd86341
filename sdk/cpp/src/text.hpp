// How the reference implementation writes values in messages (Python's repr and list text), so
// that the client's own errors read as the Python SDK's and the daemon's do.
#pragma once

#include <string>
#include <vector>

namespace trtd::detail {

// repr() of a str: 'text' (double quotes when it holds a single quote and no double one).
inline std::string repr(const std::string& s) {
    char quote = (s.find('\'') != std::string::npos && s.find('"') == std::string::npos) ? '"' : '\'';
    std::string out(1, quote);
    for (char c : s) {
        if (c == '\\' || c == quote) out += '\\';
        out += c;
    }
    return out + quote;
}

// str(list(...)) of names: ['a', 'b'].
inline std::string repr_list(const std::vector<std::string>& items) {
    std::string out = "[";
    for (std::size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + repr(items[i]);
    return out + "]";
}

// str(list(shape)): [3, 10].
template <class Int> std::string int_list(const std::vector<Int>& items) {
    std::string out = "[";
    for (std::size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + std::to_string(items[i]);
    return out + "]";
}

inline std::string join(const std::vector<std::string>& items, const std::string& separator) {
    std::string out;
    for (std::size_t i = 0; i < items.size(); ++i) out += (i ? separator : "") + items[i];
    return out;
}

}  // namespace trtd::detail
