// Requests and replies over one ZeroMQ DEALER socket: request ids, the size limit, timeouts,
// error replies (the Python SDK's sdk/connection.py and sdk/zmq_transport.py in one class).
//
// One frame per message, no delimiter frame (SPEC 3.1). ZMQ_IMMEDIATE keeps messages from queueing
// while no daemon is connected, so "not running" is detected rather than hidden, and a daemon that
// closes the connection while a request waits (it stopped) is noticed within a quarter second
// instead of at the request's timeout. A reply that arrives after its request timed out carries
// the old id and is dropped. One request at a time: the mutex makes a Connection safe to share.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <zmq.hpp>

#include "trtd/codec.hpp"
#include "trtd/errors.hpp"

namespace trtd::detail {

class Connection {
public:
    Connection(std::string endpoint, double connect_timeout_s, int spin_us, std::string auth);
    ~Connection();

    const std::string& endpoint() const noexcept { return endpoint_; }
    std::string auth() const;
    void set_auth(std::string auth);

    // Sends `request` and waits for its reply's result; throws the trtd::Error subclasses.
    // auth_override: sent instead of the connection's auth (the admin token for privileged ops).
    template <class R>
    typename R::Reply call(const R& request, double timeout_s, const std::string* auth_override = nullptr) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (closed_) throw DaemonNotRunning("this client's connection to " + endpoint_ + " is closed");
        std::uint64_t id = next_id_++;
        std::string frame = wire::encode_request(request, id, auth_override ? *auth_override : auth_);
        check_size(frame, R::op);
        send(frame, R::op, std::min(connect_timeout_s_, timeout_s));
        auto deadline = clock::now() + to_duration(timeout_s);
        while (true) {
            std::string data = receive(deadline, R::op, timeout_s);
            std::optional<wire::Reply<typename R::Reply>> reply;
            try {
                reply = wire::decode_reply<typename R::Reply>(data, id);
            } catch (const wire::DecodeError& e) {
                throw ProtocolMismatch(std::string("unreadable reply from the daemon: ") + e.what());
            }
            if (!reply) continue;  // the late reply of a request that timed out earlier
            if (reply->error) throw_error_reply(reply->error->code, reply->error->message, reply->error->details);
            return std::move(*reply->result);
        }
    }

    // Sends without waiting for the reply (its late reply is dropped by id); never throws.
    template <class R> void send_nowait(const R& request) noexcept {
        try {
            std::lock_guard<std::mutex> lock(mutex_);
            if (closed_) return;
            std::string frame = wire::encode_request(request, next_id_++, auth_);
            send(frame, R::op, 0.0);
        } catch (...) {
            // no daemon connected: nothing to tell
        }
    }

    bool connected();
    void close(int linger_ms = 0);

private:
    using clock = std::chrono::steady_clock;
    static clock::duration to_duration(double seconds);
    static void check_size(const std::string& frame, const char* op);
    void send(const std::string& frame, const char* op, double connect_timeout_s);
    std::string receive(clock::time_point deadline, const char* op, double timeout_s);
    bool poll(short events, long timeout_ms);
    void wait_connected(const char* op, double timeout_s);
    void spin_for_reply();
    [[noreturn]] void throw_silence(const char* op, double timeout_s);
    DaemonStopping connection_lost(const char* op) const;

    std::string endpoint_;
    double connect_timeout_s_;
    long spin_ns_;
    std::string auth_;
    mutable std::mutex mutex_;
    zmq::context_t context_;
    zmq::socket_t socket_;
    std::uint64_t next_id_ = 1;  // ids start at 1: the daemon uses 0 for unreadable requests
    bool closed_ = false;
};

}  // namespace trtd::detail
