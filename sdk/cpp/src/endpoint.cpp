// Endpoint resolution and validation, token file paths: protocol/endpoint.py in C++, with its
// messages word for word (tests/test_cpp_client.py compares them with the Python SDK's).
#include "trtd/endpoint.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "text.hpp"
#include "trtd/errors.hpp"

#ifdef _WIN32
#include <io.h>
#else
#include <unistd.h>
#endif

namespace fs = std::filesystem;

namespace trtd {

namespace {

using detail::repr;

std::string env(const char* name) {
    const char* value = std::getenv(name);
    return value ? std::string(value) : std::string();
}

bool is_dir(const std::string& path) {
    std::error_code ec;
    return !path.empty() && fs::is_directory(path, ec);
}

bool writable_dir(const std::string& path) {
    if (!is_dir(path)) return false;
#ifdef _WIN32
    return _access(path.c_str(), 2) == 0;
#else
    return access(path.c_str(), W_OK | X_OK) == 0;
#endif
}

// tempfile.gettempdir(): the first usable folder of the environment's and the platform's list.
std::string temp_dir() {
    std::vector<std::string> candidates = {env("TMPDIR"), env("TEMP"), env("TMP")};
#ifdef _WIN32
    for (const char* d : {"C:\\TEMP", "C:\\TMP", "\\TEMP", "\\TMP"}) candidates.emplace_back(d);
#else
    for (const char* d : {"/tmp", "/var/tmp", "/usr/tmp"}) candidates.emplace_back(d);
#endif
    for (const auto& c : candidates) {
        if (writable_dir(c)) return fs::absolute(c).lexically_normal().string();
    }
    return fs::current_path().string();
}

// Whether `path` exists, counting one this user may not even look at as present (endpoint.py _present).
bool present(const std::string& path) {
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) return true;
    return errno != ENOENT && errno != ENOTDIR;
}

std::string join(const std::string& folder, const std::string& name) { return (fs::path(folder) / name).string(); }

std::string abspath(const std::string& path) { return fs::absolute(path).lexically_normal().string(); }

bool is_absolute(const std::string& path) {
#ifdef _WIN32
    return fs::path(path).is_absolute();
#else
    return !path.empty() && path[0] == '/';
#endif
}

#ifdef __linux__
constexpr std::size_t ipc_path_max_bytes = 107;  // sockaddr_un.sun_path holds 108 with the NUL
#else
constexpr std::size_t ipc_path_max_bytes = 103;
#endif
const std::string example_tcp = "tcp://127.0.0.1:" + std::to_string(default_tcp_port);

[[noreturn]] void invalid(const std::string& message) { throw InvalidEndpoint(message); }

void check_runtime_dir(const std::string& url, const std::string& path) {
    std::string folder = env(runtime_dir_env);
    if (!folder.empty() && !is_absolute(folder) &&
        fs::path(path).parent_path().lexically_normal() == fs::path(folder).lexically_normal()) {
        invalid(std::string(runtime_dir_env) + "=" + repr(folder) + " is a relative path, so the endpoint in it, " +
                repr(url) +
                ", is relative too (the daemon and each client would take it from their own working directory, "
                "and look for different sockets): set " +
                runtime_dir_env + " to an absolute folder, e.g. " + runtime_dir_env + "=" + abspath(folder) +
                ", or unset it");
    }
}

void check_ipc(const std::string& url, const std::string& path) {
    if (path.empty()) invalid("endpoint " + repr(url) + " names no socket file: write ipc:///PATH/trtd.sock");
    if (path[0] == '@')
        invalid("endpoint " + repr(url) +
                ": abstract socket names are not supported (no file whose permissions could guard the daemon); "
                "give a path, e.g. ipc:///run/trtd/trtd.sock");
    if (!is_absolute(path)) {
        check_runtime_dir(url, path);
        invalid("endpoint " + repr(url) +
                ": the socket path must be absolute (a relative one depends on each process's working "
                "directory): ipc://" +
                abspath(path));
    }
    if (path.size() > ipc_path_max_bytes)
        invalid("endpoint " + repr(url) + ": the socket path is " + std::to_string(path.size()) +
                " bytes; this OS allows at most " + std::to_string(ipc_path_max_bytes) +
                " (sockaddr_un.sun_path): choose a shorter path, e.g. under /run or /tmp, or set "
                "TRTD_RUNTIME_DIR to a shorter folder");
}

bool ascii_alnum(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

void check_tcp(const std::string& url, const std::string& rest) {
    auto colon = rest.rfind(':');
    std::string host = colon == std::string::npos ? std::string() : rest.substr(0, colon);
    std::string port = colon == std::string::npos ? std::string() : rest.substr(colon + 1);
    if (colon == std::string::npos || host.empty())
        invalid("endpoint " + repr(url) + ": a TCP endpoint needs a host and a port, e.g. " + example_tcp);
    if (host[0] == '[')
        invalid("endpoint " + repr(url) +
                ": IPv6 addresses are not supported (the daemon listens on IPv4); use an IPv4 address or host "
                "name, e.g. " +
                example_tcp);
    if (host == "*")
        invalid("endpoint " + repr(url) +
                ": host '*' is not an address a client can connect to; name the interface's address, e.g. " +
                example_tcp + " (loopback only)");
    for (char c : host) {
        if (!ascii_alnum(c) && c != '.' && c != '-' && c != '_')
            invalid("endpoint " + repr(url) + ": " + repr(host) + " is not a host name or IPv4 address, e.g. " +
                    example_tcp);
    }
    if (port == "0" || port == "*")
        invalid("endpoint " + repr(url) + ": port " + port +
                " would make libzmq pick a random port, which clients cannot find; give a fixed port 1..65535, "
                "e.g. " +
                example_tcp);
    bool digits = !port.empty();
    for (char c : port) digits = digits && c >= '0' && c <= '9';
    std::string significant = digits ? port.substr(std::min(port.find_first_not_of('0'), port.size())) : "";
    if (!digits || significant.empty() || significant.size() > 5 || std::stol(significant) > 65535)
        invalid("endpoint " + repr(url) + ": the port must be a number 1..65535, got " + repr(port) + " (e.g. " +
                example_tcp + ")");
}

std::string ipc_path(const std::string& endpoint) {
    return endpoint.rfind("ipc://", 0) == 0 ? endpoint.substr(6) : std::string();
}

std::string service_runtime_dir() {
#ifdef _WIN32
    std::string base = env("ProgramData");
    if (base.empty()) base = env("PROGRAMDATA");
    if (base.empty()) base = "C:\\ProgramData";
    return join(join(base, "trtd"), "run");
#else
    return "/run/trtd";
#endif
}

std::string token_name(const std::string& endpoint, std::string_view kind) {
    return "trtd_" + sha256_hex(endpoint).substr(0, 8) + "." + std::string(kind) + "-token";
}

}  // namespace

std::string runtime_dir() {
    std::string explicit_dir = env(runtime_dir_env);
    if (!explicit_dir.empty()) return fs::path(explicit_dir).lexically_normal().string();
#ifdef _WIN32
    std::string base = env("LOCALAPPDATA");
    if (base.empty()) base = temp_dir();
    return join(join(base, "trtd"), "run");
#else
    std::string xdg = env("XDG_RUNTIME_DIR");
    if (is_dir(xdg)) return join(xdg, "trtd");
    return join(temp_dir(), "trtd-" + std::to_string(getuid()));
#endif
}

std::string default_endpoint(bool discover) {
#ifdef _WIN32
    (void)discover;
    return example_tcp;
#else
    std::string own = join(runtime_dir(), "trtd.sock");
    // A system socket this user may not even look at is still the one meant: connecting then
    // says why it is refused.
    const std::string system_socket = "/run/trtd/trtd.sock";
    if (discover && !present(own) && present(system_socket)) return "ipc://" + system_socket;
    return "ipc://" + own;
#endif
}

std::string resolve_endpoint(const std::string& explicit_endpoint, bool discover) {
    if (!explicit_endpoint.empty()) return explicit_endpoint;
    std::string from_env = env(endpoint_env);
    if (!from_env.empty()) return from_env;
    return default_endpoint(discover);
}

std::string validate_endpoint(const std::string& url) {
    if (url.rfind("ipc://", 0) == 0) {
        check_ipc(url, url.substr(6));
    } else if (url.rfind("tcp://", 0) == 0) {
        check_tcp(url, url.substr(6));
    } else {
        invalid("endpoint " + repr(url) +
                ": the scheme must be ipc:// (e.g. ipc:///run/trtd/trtd.sock) or tcp:// (e.g. " + example_tcp + ")");
    }
    return url;
}

std::string token_path(const std::string& endpoint, std::string_view kind) {
    std::string path = ipc_path(endpoint);
    if (!path.empty()) return abspath(path) + "." + std::string(kind) + "-token";
    return join(runtime_dir(), token_name(endpoint, kind));
}

std::string find_token(const std::string& endpoint, std::string_view kind) {
    std::string own = token_path(endpoint, kind);
    if (!ipc_path(endpoint).empty() || present(own)) return own;
    std::string service = join(service_runtime_dir(), token_name(endpoint, kind));
    return present(service) ? service : own;
}

// SHA-256 (FIPS 180-4), for the 8 hex characters that name token files of TCP endpoints: a
// dependency on a crypto library for one file name would be more than the 60 lines below.
std::string sha256_hex(std::string_view data) {
    static const std::uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    std::uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                          0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    auto rotr = [](std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); };
    std::string msg(data);
    std::uint64_t bits = static_cast<std::uint64_t>(msg.size()) * 8;
    msg += static_cast<char>(0x80);
    while (msg.size() % 64 != 56) msg += '\0';
    for (int i = 7; i >= 0; --i) msg += static_cast<char>((bits >> (8 * i)) & 0xff);
    for (std::size_t chunk = 0; chunk < msg.size(); chunk += 64) {
        std::uint32_t w[64];
        for (int i = 0; i < 16; ++i) {
            const auto* p = reinterpret_cast<const unsigned char*>(msg.data() + chunk + 4 * i);
            w[i] = (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) | p[3];
        }
        for (int i = 16; i < 64; ++i) {
            std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
            std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        std::uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
        for (int i = 0; i < 64; ++i) {
            std::uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
            std::uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
        }
        h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
    }
    static const char hex[] = "0123456789abcdef";
    std::string out;
    for (std::uint32_t word : h) {
        for (int shift = 28; shift >= 0; shift -= 4) out += hex[(word >> shift) & 0xf];
    }
    return out;
}

}  // namespace trtd
