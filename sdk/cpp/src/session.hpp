// What a Client and its Models share: the connection, the registration (client id, daemon id,
// generation), the cache of model handles and the heartbeat thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "connection.hpp"
#include "trtd/client.hpp"

namespace trtd::detail {

// (token, "") from a daemon's token file, or ("", why not) when this user cannot read it.
std::pair<std::string, std::string> read_token(const std::string& path);

struct Plan {
    struct Slot {
        std::string name;
        DType dtype;
        Shape shape;
        std::int64_t offset;
        std::size_t nbytes;
    };
    std::string key;
    std::vector<Slot> inputs;
    wire::Infer request;
    std::int64_t nbytes = 0;
};

struct Session;

// One model handle: the model, a region of its own and the layouts used in it.
struct ModelState {
    std::weak_ptr<Session> session;
    ModelInfo info;
    std::mutex mutex;  // calls on one handle are serialized
    std::optional<Region> region;
    std::uint64_t generation = 0;
    std::shared_ptr<Plan> plan;                        // the layout of the last request
    std::vector<std::shared_ptr<Plan>> plans;          // recent layouts, oldest first
    std::map<std::string, std::int64_t> output_capacity;  // grown after OUTPUT_TOO_LARGE
    std::shared_ptr<Plan> zero_copy_plan;
    std::string views_lost = "call zero_copy_inputs() first";
    std::optional<Timing> last_timing;
    std::string last_backend;
};

struct Session {
    explicit Session(ClientOptions options);
    ~Session();

    ClientOptions options;
    std::string endpoint;
    std::string connection_token_file;  // TCP endpoints only
    std::unique_ptr<Connection> conn;

    mutable std::mutex identity_mutex;  // client_id, daemon_id, server_version, heartbeat interval
    std::uint64_t client_id = 0;
    std::string daemon_id;
    std::string server_version;
    double heartbeat_interval_s = 0.0;
    std::int64_t alignment = wire::alignment;
    std::atomic<std::uint64_t> generation{0};
    std::mutex rehello_mutex;

    std::mutex handles_mutex;
    std::map<std::string, std::shared_ptr<ModelState>> handles;

    std::mutex heartbeat_mutex;
    std::condition_variable heartbeat_cv;
    bool heartbeat_stop = false;
    std::thread heartbeat;
    std::atomic<bool> closed{false};

    std::uint64_t current_client_id() const {
        std::lock_guard<std::mutex> lock(identity_mutex);
        return client_id;
    }
    double timeout(double given) const { return given < 0 ? options.timeout_s : given; }

    void hello();
    void close(bool say_goodbye);
    std::string admin_auth(std::string& problem) const;
    // After a TCP daemon refused the connection token `sent`: true when its token file now holds
    // another one (a restarted daemon wrote a fresh one), which the connection then sends.
    bool refresh_connection_token(const AccessDenied& e, const std::string& sent, std::string& problem);

    // One request with the session's recovery: a restarted daemon's UNKNOWN_CLIENT makes it say
    // hello again (then DaemonRestarted is thrown: leases are void), a renewed TCP connection
    // token is picked up once. An infer that finds its model still loading waits for it.
    template <class R>
    typename R::Reply call(const R& request, double timeout_s = -1, std::optional<std::uint64_t> gen = std::nullopt) {
        if constexpr (std::is_same_v<R, wire::Infer>) {
            if (!gen) return call_when_loaded(request, timeout(timeout_s));
        }
        return call_once(request, timeout(timeout_s), gen);
    }

    template <class R>
    typename R::Reply call_once(const R& request, double timeout_s, std::optional<std::uint64_t> gen) {
        bool retry = !gen;
        std::uint64_t generation_now = retry ? generation.load() : *gen;
        std::string sent = conn->auth();
        std::string admin, admin_problem;
        if constexpr (R::privileged) admin = admin_auth(admin_problem);
        try {
            return conn->call(request, timeout_s, R::privileged ? &admin : nullptr);
        } catch (const AccessDenied& e) {
            std::string problem;
            if (!retry || !refresh_connection_token(e, sent, problem)) {
                if (R::privileged && !admin_problem.empty())
                    throw AccessDenied(std::string(e.what()) + " (" + admin_problem + ")", e.details(), e.code());
                if (!problem.empty()) throw AccessDenied(std::string(e.what()) + " (" + problem + ")", e.details(), e.code());
                throw;
            }
        } catch (const DaemonRestarted& e) {
            if constexpr (std::is_same_v<R, wire::Hello>) throw;
            std::string old;
            {
                std::lock_guard<std::mutex> lock(identity_mutex);
                old = daemon_id;
            }
            {
                // Several threads may see the same restart: one of them registers again.
                std::lock_guard<std::mutex> lock(rehello_mutex);
                if (generation.load() == generation_now) {
                    hello();
                    ++generation;
                }
            }
            std::string now;
            {
                std::lock_guard<std::mutex> lock(identity_mutex);
                now = daemon_id;
            }
            throw DaemonRestarted("the daemon at " + endpoint + " restarted or reclaimed this client (daemon " + old +
                                      " -> " + now +
                                      "); leased regions were lost and zero-copy views are invalid; the client has "
                                      "registered again",
                                  e.details(), e.code());
        }
        // Refused for a stale connection token, now renewed: once more, so that a restarted
        // daemon's UNKNOWN_CLIENT reaches the restart handling above.
        return call_once(request, timeout_s, generation_now);
    }

    wire::InferReply call_when_loaded(const wire::Infer& request, double timeout_s);
    Region lease(std::int64_t nbytes);
    void release(Region& region, bool wait);

private:
    void beat();
};

}  // namespace trtd::detail
