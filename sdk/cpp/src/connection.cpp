#include "connection.hpp"

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <sstream>
#include <sys/stat.h>
#include <thread>

#ifndef _WIN32
#include <unistd.h>
#endif

namespace trtd::detail {

namespace {

const char* how_to_start =
    "start one with `trtd serve` (or `trtd demo`), or point TRTD_ENDPOINT at a running one";
// While waiting, look this often whether the daemon is still connected: a daemon that stopped
// closed the connection, and no answer will come (libzmq drops an unread reply with it).
constexpr long liveness_ms = 250;

// Python's "{x:g}" for the seconds in messages: 10, 0.5, 0.0005.
std::string seconds(double s) {
    std::ostringstream out;
    out << s;
    return out.str();
}

std::string ipc_path(const std::string& endpoint) {
    return endpoint.rfind("ipc://", 0) == 0 ? endpoint.substr(6) : std::string();
}

// Why an ipc socket cannot be used, instead of waiting for a connection that never comes.
#ifdef _WIN32
void check_socket(const std::string&, const std::string&) {}  // libzmq has no ipc transport there
#else
DaemonNotRunning no_socket_file(const std::string& endpoint) {
    return DaemonNotRunning("no trtd daemon at " + endpoint + " (no socket file); " + how_to_start);
}

void check_socket(const std::string& path, const std::string& endpoint) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
        if (errno == ENOENT || errno == ENOTDIR) throw no_socket_file(endpoint);
        if (errno == EACCES)
            throw AccessDenied("this user (uid " + std::to_string(getuid()) + ") may not enter " +
                               std::filesystem::path(path).parent_path().string() +
                               ", the folder of the daemon's socket; ask its administrator to add you to the "
                               "daemon's group (config key 'group')");
        return;
    }
    if (access(path.c_str(), R_OK | W_OK) != 0) {
        struct stat again;
        if (lstat(path.c_str(), &again) != 0) throw no_socket_file(endpoint);  // the daemon stopped meanwhile
        throw AccessDenied("this user (uid " + std::to_string(getuid()) + ") may not connect to the daemon's socket " +
                           path + "; ask its administrator to add you to the daemon's group (config key 'group')");
    }
}
#endif

}  // namespace

Connection::Connection(std::string endpoint, double connect_timeout_s, int spin_us, std::string auth)
    : endpoint_(std::move(endpoint)),
      connect_timeout_s_(connect_timeout_s),
      spin_ns_(static_cast<long>(spin_us) * 1000),
      auth_(std::move(auth)),
      context_(1),
      socket_(context_, zmq::socket_type::dealer) {
    // SPEC 3.1's recommended options; no routing id of our own (the ROUTER picks one).
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::immediate, 1);
    socket_.set(zmq::sockopt::maxmsgsize, static_cast<std::int64_t>(wire::max_reply_bytes));
    socket_.connect(endpoint_);
}

Connection::~Connection() { close(); }

std::string Connection::auth() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return auth_;
}

void Connection::set_auth(std::string auth) {
    std::lock_guard<std::mutex> lock(mutex_);
    auth_ = std::move(auth);
}

Connection::clock::duration Connection::to_duration(double seconds) {
    return std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(seconds < 0 ? 0 : seconds));
}

void Connection::check_size(const std::string& frame, const char* op) {
    // The daemon's socket would drop the connection rather than deliver it (SPEC 3.3): refuse here.
    if (frame.size() > wire::max_request_bytes)
        throw InvalidInput("'" + std::string(op) + "' request is " + std::to_string(frame.size()) +
                           " bytes, over the protocol's limit of " + std::to_string(wire::max_request_bytes) +
                           " (too many tensors or too long names?)");
}

bool Connection::poll(short events, long timeout_ms) {
    zmq::pollitem_t item{socket_.handle(), 0, events, 0};
    while (true) {
        try {
            return zmq::poll(&item, 1, std::chrono::milliseconds(timeout_ms)) > 0 && (item.revents & events);
        } catch (const zmq::error_t& e) {
            if (e.num() != EINTR) throw DaemonNotRunning(std::string("ZeroMQ poll failed: ") + e.what());
        }
    }
}

// With IMMEDIATE a DEALER is writable only while it has a connected peer: a daemon that closed
// its socket (stopped, crashed) leaves it unwritable.
bool Connection::connected() {
    std::lock_guard<std::mutex> lock(mutex_);
    return !closed_ && poll(ZMQ_POLLOUT, 0);
}

void Connection::send(const std::string& frame, const char* op, double connect_timeout_s) {
    // The common case (connected) costs one non-blocking check.
    if (!poll(ZMQ_POLLOUT, 0)) wait_connected(op, connect_timeout_s);
    if (socket_.send(zmq::buffer(frame), zmq::send_flags::dontwait)) return;
    // The connection closed between the check and the send (a daemon stopping now): wait for one
    // as above, which says "not running" when its socket file is gone.
    wait_connected(op, connect_timeout_s);
    if (socket_.send(zmq::buffer(frame), zmq::send_flags::dontwait)) return;
    throw DaemonNotRunning("the daemon at " + endpoint_ + " closed the connection while '" + op +
                           "' was being sent, twice; " + how_to_start);
}

void Connection::wait_connected(const char* op, double timeout_s) {
    // Looks again between slices whether the socket file exists: a daemon that is stopping removes
    // it, and then none will accept the connection.
    std::string path = ipc_path(endpoint_);
    auto deadline = clock::now() + to_duration(timeout_s);
    while (true) {
        if (!path.empty()) check_socket(path, endpoint_);
        auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
        if (remaining <= 0)
            throw DaemonNotRunning("no trtd daemon answers at " + endpoint_ + " (waited " + seconds(timeout_s) +
                                   "s to connect for '" + op + "'); " + how_to_start);
        if (poll(ZMQ_POLLOUT, std::min<long>(remaining, liveness_ms) + 1)) return;
    }
}

void Connection::spin_for_reply() {
    auto end = clock::now() + std::chrono::nanoseconds(spin_ns_);
    while (clock::now() < end) {
        if (poll(ZMQ_POLLIN, 0)) return;
    }
}

std::string Connection::receive(clock::time_point deadline, const char* op, double timeout_s) {
    if (spin_ns_ > 0) spin_for_reply();
    while (true) {
        auto remaining = std::chrono::duration_cast<std::chrono::microseconds>(deadline - clock::now()).count();
        if (remaining <= 0) throw_silence(op, timeout_s);
        // In slices: a reply within one costs a single poll; between slices, a connection the
        // daemon closed (it stopped) ends the wait: no reply can come.
        long slice_ms = static_cast<long>(std::min<long long>(remaining / 1000, liveness_ms)) + 1;
        if (!poll(ZMQ_POLLIN, slice_ms)) {
            if (!poll(ZMQ_POLLOUT, 0)) throw connection_lost(op);
            continue;
        }
        // Not blocking: a connection that closes right now takes the unread reply with it, and a
        // blocking recv would then wait for ever.
        zmq::message_t message;
        if (!socket_.recv(message, zmq::recv_flags::dontwait)) continue;
        if (message.more()) {
            // One frame per message (SPEC 3.1): drain the rest and drop what is no reply.
            while (message.more() && socket_.recv(message, zmq::recv_flags::dontwait)) {
            }
            continue;
        }
        return message.to_string();
    }
}

void Connection::throw_silence(const char* op, double timeout_s) {
    // "Stopped" rather than "timed out" when the daemon is gone.
    std::string path = ipc_path(endpoint_);
    std::error_code ec;
    if (!poll(ZMQ_POLLOUT, 0) || (!path.empty() && !std::filesystem::exists(path, ec))) throw connection_lost(op);
    throw DaemonTimeout("no reply to '" + std::string(op) + "' from the daemon at " + endpoint_ + " within " +
                         seconds(timeout_s) +
                         "s; it may be busy with a long request or hung (`trtd status` shows its state); raise the "
                         "client's timeout if requests are expected to take longer");
}

DaemonStopping Connection::connection_lost(const char* op) const {
    return DaemonStopping("the daemon at " + endpoint_ + " stopped (it closed the connection) before answering '" +
                              op + "'; the request may or may not have run; retry when a daemon is back (`trtd "
                              "status` tells)",
                          Value::Object{{"stopping", true}, {"started", Value()}});
}

void Connection::close(int linger_ms) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return;
    closed_ = true;
    socket_.set(zmq::sockopt::linger, linger_ms);
    socket_.close();
    context_.close();
}

}  // namespace trtd::detail
