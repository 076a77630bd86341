// Client and Session: registration, recovery after restarts, heartbeats, the model cache.
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "process.hpp"
#include "session.hpp"
#include "text.hpp"

namespace trtd {

namespace detail {

// How often an infer looks again at a model that is still loading (a daemon that just restarted).
constexpr auto loading_poll = std::chrono::milliseconds(50);

std::pair<std::string, std::string> read_token(const std::string& path) {
    std::ifstream file(path);
    if (!file) {
        std::error_code ec;
        if (!std::filesystem::exists(path, ec))
            return {"", "no token file " + path + ": is the daemon running at this endpoint?"};
        return {"", "this user may not read " + path};
    }
    std::string token;
    std::getline(file, token);
    while (!token.empty() && (token.back() == '\r' || token.back() == ' ' || token.back() == '\t')) token.pop_back();
    return {token, ""};
}

Session::Session(ClientOptions opts) : options(std::move(opts)) {
    std::string from_env;
    if (options.endpoint.empty()) {
        const char* value = std::getenv(endpoint_env);
        from_env = value ? value : "";
    }
    endpoint = resolve_endpoint(options.endpoint, true);
    try {
        validate_endpoint(endpoint);
    } catch (const InvalidEndpoint& e) {
        // A bad endpoint would otherwise show up only as a daemon that never answers.
        if (!from_env.empty()) throw InvalidEndpoint(std::string(e.what()) + " (from " + endpoint_env + ")");
        throw;
    }
    // ipc sockets are guarded by their file mode; a TCP daemon wants its connection token, which
    // each daemon start renews: re-read on refusal (refresh_connection_token).
    std::string token;
    if (endpoint.rfind("tcp://", 0) == 0) {
        connection_token_file = find_token(endpoint, connection_token_kind);
        token = read_token(connection_token_file).first;
    }
    conn = std::make_unique<Connection>(endpoint, options.connect_timeout_s, options.spin_us, token);
    try {
        hello();
    } catch (...) {
        close(false);
        throw;
    }
}

Session::~Session() { close(true); }

void Session::hello() {
    wire::Hello request;
    request.client_pid = process_id();
    request.client_start_time = process_start_time();
    request.client_name = options.name;
    auto reply = call_once(request, options.timeout_s, std::nullopt);
    if (reply.alignment <= 0 || (reply.alignment & (reply.alignment - 1)) != 0)
        throw ProtocolMismatch("the daemon's alignment " + std::to_string(reply.alignment) +
                               " is not a power of two; client and daemon versions differ");
    {
        std::lock_guard<std::mutex> lock(identity_mutex);
        client_id = reply.client_id;
        daemon_id = reply.daemon_id;
        server_version = reply.server_version;
        heartbeat_interval_s = reply.heartbeat_interval_s;
        alignment = reply.alignment;
    }
    // Only clients whose pid the daemon cannot watch (TCP, another PID namespace) need this.
    if (reply.heartbeat_interval_s > 0 && !heartbeat.joinable()) heartbeat = std::thread([this] { beat(); });
}

void Session::beat() {
    std::unique_lock<std::mutex> lock(heartbeat_mutex);
    while (!heartbeat_stop) {
        double interval;
        {
            std::lock_guard<std::mutex> id_lock(identity_mutex);
            interval = heartbeat_interval_s;
        }
        // A later hello (another daemon) may have said none are needed: look again now and then.
        bool needed = interval > 0;
        auto wait = std::chrono::duration<double>(needed ? interval : 1.0);
        if (heartbeat_cv.wait_for(lock, wait, [this] { return heartbeat_stop; })) break;
        if (!needed) continue;
        lock.unlock();
        try {
            call(wire::Heartbeat{current_client_id()});
        } catch (const std::exception&) {
            // a restart is handled by call (hello again); anything else is retried next beat
        }
        lock.lock();
    }
}

std::string Session::admin_auth(std::string& problem) const {
    problem.clear();
    if (options.admin_token) return *options.admin_token;
    auto [token, why] = read_token(find_token(endpoint, admin_token_kind));
    problem = why;
    return token;
}

bool Session::refresh_connection_token(const AccessDenied& e, const std::string& sent, std::string& problem) {
    // The gate answers UNAUTHORIZED before the daemon could say UNKNOWN_CLIENT, so without this a
    // TCP client would never learn of a restart nor register again.
    if (connection_token_file.empty() || e.details().get_string("needs").value_or("") != "connection") return false;
    auto [token, why] = read_token(connection_token_file);
    if (token.empty() || token == sent) {
        problem = why;
        return false;
    }
    conn->set_auth(token);
    return true;
}

wire::InferReply Session::call_when_loaded(const wire::Infer& request, double timeout_s) {
    // A daemon that has just restarted loads its models in the background: wait, within the
    // call's timeout, as describing the model does.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (true) {
        auto remaining = std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
        try {
            return call_once(request, std::max(remaining, 0.001), std::nullopt);
        } catch (const ModelNotReady& e) {
            if (e.details().get_string("state").value_or("") != "loading" || std::chrono::steady_clock::now() >= deadline)
                throw;
            std::this_thread::sleep_for(loading_poll);
        }
    }
}

Region Session::lease(std::int64_t nbytes) {
    auto reply = call(wire::Lease{current_client_id(), nbytes});
    return Region(reply.region.name, reply.region.nbytes, reply.region.token);
}

void Session::release(Region& region, bool wait) {
    region.unmap();
    wire::Release request{current_client_id(), region.name(), region.token()};
    if (!wait) {  // e.g. after a timeout: the daemon may be stuck; its late reply is dropped
        conn->send_nowait(request);
        return;
    }
    try {
        call(request);
    } catch (const RegionError&) {
        // already gone with a restart or a reclaim: nothing left to free
    } catch (const DaemonRestarted&) {
    }
}

void Session::close(bool say_goodbye) {
    if (closed.exchange(true)) return;
    std::map<std::string, std::shared_ptr<ModelState>> held;
    {
        std::lock_guard<std::mutex> lock(handles_mutex);
        held.swap(handles);
    }
    for (auto& [name, state] : held) {
        std::lock_guard<std::mutex> lock(state->mutex);
        state->region.reset();  // unmap only: goodbye frees every lease at once
        state->plan.reset();
        state->zero_copy_plan.reset();
        state->views_lost = "the zero-copy views are no longer valid: the client was closed";
    }
    if (say_goodbye && conn) {
        try {
            conn->call(wire::Goodbye{current_client_id()}, std::min(options.timeout_s, 2.0));
        } catch (const std::exception&) {
            // the daemon reclaims the leases anyway
        }
    }
    {
        std::lock_guard<std::mutex> lock(heartbeat_mutex);
        heartbeat_stop = true;
    }
    heartbeat_cv.notify_all();
    if (heartbeat.joinable() && heartbeat.get_id() != std::this_thread::get_id()) heartbeat.join();
    if (conn) conn->close();
}

}  // namespace detail

// -- Client ---------------------------------------------------------------------------------------

Client::Client() : Client(ClientOptions{}) {}

Client::Client(ClientOptions options) : session_(std::make_shared<detail::Session>(std::move(options))) {}

Client::Client(const std::string& endpoint) : Client([&] {
    ClientOptions options;
    options.endpoint = endpoint;
    return options;
}()) {}

Client::~Client() {
    if (session_) session_->close(true);
}

Client::Client(Client&&) noexcept = default;

Client& Client::operator=(Client&& other) noexcept {
    if (this != &other) {
        if (session_) session_->close(true);
        session_ = std::move(other.session_);
    }
    return *this;
}

detail::Session& Client::session() const {
    if (!session_) throw DaemonNotRunning("this trtd::Client was moved from");
    return *session_;
}

namespace {
std::vector<ModelInfo> wait_loaded(detail::Session& s, const std::optional<std::string>& name, bool wait) {
    auto fetch = [&] {
        wire::ListModels request;
        request.name = name;
        return s.call(request).models;
    };
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(s.options.timeout_s);
    auto infos = fetch();
    auto loading = [&] {
        for (const auto& i : infos) {
            if (i.state == "loading") return true;
        }
        return false;
    };
    while (wait && loading() && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        infos = fetch();
    }
    return infos;
}

std::string seconds(double s) {
    std::ostringstream out;
    out.precision(0);
    out << std::fixed << s;
    return out.str();
}
}  // namespace

std::vector<ModelInfo> Client::models(bool wait) { return wait_loaded(session(), std::nullopt, wait); }

ModelInfo Client::describe(const std::string& model, bool wait) {
    auto infos = wait_loaded(session(), model, wait);
    if (infos.empty()) throw ProtocolMismatch("the daemon described no model for '" + model + "'");
    return infos.front();
}

Model Client::model(const std::string& name) {
    auto& s = session();
    std::lock_guard<std::mutex> lock(s.handles_mutex);
    auto found = s.handles.find(name);
    if (found != s.handles.end()) return Model(found->second);
    ModelInfo info = describe(name);
    if (info.state == "loading")
        throw ModelNotReady("model " + detail::repr(name) + " is still loading after " + seconds(s.options.timeout_s) +
                            " s; `trtd status` shows it");
    if (info.state != "ready")
        throw ModelNotReady("model " + detail::repr(name) + " is " + info.state + ": " +
                            (info.error.empty() ? std::string("not ready yet") : info.error));
    // A dtype this client does not know makes the model unusable (SPEC 2.3), not the client.
    for (const auto* specs : {&info.inputs, &info.outputs}) {
        for (const auto& spec : *specs) {
            if (!parse_dtype(spec.dtype))
                throw ProtocolMismatch("model " + detail::repr(name) + " uses dtype " + detail::repr(spec.dtype) +
                                       " (tensor " + detail::repr(spec.name) +
                                       "), which this client does not know; upgrade the client");
        }
    }
    auto state = std::make_shared<detail::ModelState>();
    state->session = session_;
    state->info = std::move(info);
    state->generation = s.generation.load();
    s.handles[name] = state;
    return Model(state);
}

Outputs Client::infer(const std::string& model_name, const Inputs& inputs, const CallOptions& options) {
    return model(model_name).infer(inputs, options);
}

StatusReply Client::status() { return session().call(wire::Status{}); }

ModelInfo Client::load(const std::string& name, const std::string& path, const LoadOptions& options) {
    wire::Load request;
    request.name = name;
    request.path = path;
    request.backend = options.backend;
    request.max_batch = options.max_batch;
    request.device = options.device;
    request.instances = options.instances;
    request.inputs = options.inputs;
    return session().call(request).model;
}

void Client::unload(const std::string& name) {
    auto& s = session();
    std::shared_ptr<detail::ModelState> handle;
    {
        std::lock_guard<std::mutex> lock(s.handles_mutex);
        auto found = s.handles.find(name);
        if (found != s.handles.end()) {
            handle = found->second;
            s.handles.erase(found);
        }
    }
    if (handle) Model(handle).close();
    s.call(wire::Unload{name});
}

wire::ReloadReply Client::reload() { return session().call(wire::Reload{}); }

void Client::shutdown() {
    auto& s = session();
    s.call(wire::Shutdown{});
    // Goodbye without waiting, lingering for it to go out: the daemon keeps its socket open until
    // it arrives, so that the acknowledgement above was read before the connection goes away.
    s.conn->send_nowait(wire::Goodbye{s.current_client_id()});
    s.conn->close(200);
    s.close(false);
}

Region Client::lease(std::int64_t nbytes) { return session().lease(nbytes); }

void Client::release(Region& region) { session().release(region, true); }

wire::InferReply Client::infer_region(const Region& region, const std::string& model_name,
                                      std::vector<wire::InputRef> inputs, std::vector<wire::OutputRef> outputs,
                                      const CallOptions& options) {
    wire::Infer request;
    request.client_id = session().current_client_id();
    request.model = model_name;
    request.region = region.name();
    request.token = region.token();
    request.inputs = std::move(inputs);
    request.outputs = std::move(outputs);
    request.deadline_ms = options.deadline_ms;
    return session().call(request, options.timeout_s);
}

void Client::close() {
    if (session_) session_->close(true);
}

const std::string& Client::endpoint() const { return session().endpoint; }
std::uint64_t Client::client_id() const { return session().current_client_id(); }
std::string Client::daemon_id() const {
    std::lock_guard<std::mutex> lock(session().identity_mutex);
    return session().daemon_id;
}
std::string Client::server_version() const {
    std::lock_guard<std::mutex> lock(session().identity_mutex);
    return session().server_version;
}
double Client::heartbeat_interval_s() const {
    std::lock_guard<std::mutex> lock(session().identity_mutex);
    return session().heartbeat_interval_s;
}
std::uint64_t Client::generation() const { return session().generation.load(); }

}  // namespace trtd
