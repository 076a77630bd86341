// Where a daemon listens, and where it keeps its tokens (protocol/SPEC.md 3.2, 10.5;
// protocol/endpoint.py is the authority and these functions follow it).
#pragma once

#include <string>
#include <string_view>

namespace trtd {

inline constexpr const char* endpoint_env = "TRTD_ENDPOINT";
inline constexpr const char* runtime_dir_env = "TRTD_RUNTIME_DIR";
inline constexpr int default_tcp_port = 47810;
inline constexpr std::string_view admin_token_kind = "admin";
inline constexpr std::string_view connection_token_kind = "connection";

// The per-user folder of the socket and token files: $TRTD_RUNTIME_DIR, else (POSIX)
// $XDG_RUNTIME_DIR/trtd, else <tmp>/trtd-<uid>; (Windows) %LOCALAPPDATA%\trtd\run.
std::string runtime_dir();

// The platform default: ipc://<runtime_dir>/trtd.sock on POSIX, tcp://127.0.0.1:47810 on Windows.
// discover: the system service's socket (/run/trtd/trtd.sock) when this user runs no daemon of
// their own and that one is there.
std::string default_endpoint(bool discover = true);

// explicit (when not empty) > $TRTD_ENDPOINT > default_endpoint(discover).
std::string resolve_endpoint(const std::string& explicit_endpoint = {}, bool discover = true);

// `endpoint` when a daemon can listen there and clients can find it; else InvalidEndpoint saying
// why and what to write instead (the daemon's own check: ipc://ABSOLUTE-PATH, tcp://HOST:PORT).
std::string validate_endpoint(const std::string& endpoint);

// Where a daemon serving `endpoint` keeps its `kind` token ("admin" or "connection"): beside an
// ipc socket, else trtd_<sha256(endpoint)[:8]>.<kind>-token in the runtime directory.
std::string token_path(const std::string& endpoint, std::string_view kind);

// Where a client looks for it: token_path, else the system service's runtime directory.
std::string find_token(const std::string& endpoint, std::string_view kind);

// Lowercase hex SHA-256 (token file names).
std::string sha256_hex(std::string_view data);

}  // namespace trtd
