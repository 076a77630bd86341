// Typed wire messages (protocol/SPEC.md sections 5-7): one struct per request op and per result.
//
// Each struct lists its fields once, in table order (the canonical key order, SPEC 4.4), with
// whether they are required; the codec (trtd/codec.hpp) walks that list to encode and to decode
// with the spec's strictness. Dtypes stay strings here: a newer daemon may name one this client
// does not know, which makes that model unusable, not the reply unreadable (SPEC 2.3).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "trtd/value.hpp"

// The field list of a struct, for a visitor v(key, member, required).
#define TRTD_WIRE_FIELDS(...)                            \
    template <class V> void visit(V& v) { (void)v; __VA_ARGS__ }  \
    template <class V> void visit(V& v) const { (void)v; __VA_ARGS__ }
#define TRTD_REQ(field) v(#field, field, true);
#define TRTD_OPT(field) v(#field, field, false);

namespace trtd::wire {

inline constexpr std::int64_t protocol_version = 1;
inline constexpr std::int64_t alignment = 256;
inline constexpr std::size_t max_request_bytes = 64 * 1024;
inline constexpr std::size_t max_reply_bytes = 4 * 1024 * 1024;

// -- shared structures (SPEC 7) -----------------------------------------------------------------

struct TensorSpec {
    std::string name;
    std::string dtype;
    std::vector<std::int64_t> shape;  // -1: a dynamic dimension
    std::int64_t max_nbytes = -1;     // -1: unbounded or unknown
    TRTD_WIRE_FIELDS(TRTD_REQ(name) TRTD_REQ(dtype) TRTD_REQ(shape) TRTD_OPT(max_nbytes))
};

struct ModelInfo {
    std::string name;
    std::string backend;
    std::string state;  // "ready", "loading", "failed"; any other is not ready (SPEC 2.3)
    std::vector<TensorSpec> inputs;
    std::vector<TensorSpec> outputs;
    std::int64_t max_batch = 0;
    std::string error;
    TRTD_WIRE_FIELDS(TRTD_REQ(name) TRTD_REQ(backend) TRTD_REQ(state) TRTD_OPT(inputs) TRTD_OPT(outputs)
                         TRTD_OPT(max_batch) TRTD_OPT(error))
};

struct RegionInfo {
    std::string name;
    std::int64_t nbytes = 0;
    std::string token;
    TRTD_WIRE_FIELDS(TRTD_REQ(name) TRTD_REQ(nbytes) TRTD_REQ(token))
};

struct InputRef {
    std::string name;
    std::string dtype;
    std::vector<std::int64_t> shape;
    std::int64_t offset = 0;
    std::int64_t nbytes = 0;
    TRTD_WIRE_FIELDS(TRTD_REQ(name) TRTD_REQ(dtype) TRTD_REQ(shape) TRTD_REQ(offset) TRTD_REQ(nbytes))
};

struct OutputRef {
    std::string name;
    std::int64_t offset = 0;
    std::int64_t nbytes = 0;  // the area's capacity
    TRTD_WIRE_FIELDS(TRTD_REQ(name) TRTD_REQ(offset) TRTD_REQ(nbytes))
};

struct OutputInfo {
    std::string name;
    std::string dtype;
    std::vector<std::int64_t> shape;
    std::int64_t offset = 0;
    std::int64_t nbytes = 0;  // bytes written
    TRTD_WIRE_FIELDS(TRTD_REQ(name) TRTD_REQ(dtype) TRTD_REQ(shape) TRTD_REQ(offset) TRTD_REQ(nbytes))
};

struct Timing {
    std::int64_t compute_us = 0;
    std::int64_t total_us = 0;
    std::int64_t queue_us = 0;
    std::int64_t h2d_us = 0;
    std::int64_t d2h_us = 0;
    TRTD_WIRE_FIELDS(TRTD_REQ(compute_us) TRTD_REQ(total_us) TRTD_OPT(queue_us) TRTD_OPT(h2d_us) TRTD_OPT(d2h_us))
};

struct ModelStatus {
    std::string name;
    std::string backend;
    std::string state;
    std::int64_t requests = 0;  // succeeded (SPEC 7.8)
    std::int64_t errors = 0;
    double p50_us = 0.0;
    double p90_us = 0.0;
    double p99_us = 0.0;
    std::string error;
    std::int64_t device = -1;
    std::int64_t instances = 1;
    std::int64_t in_flight = 0;
    std::string build;
    std::int64_t graphs = 0;
    std::int64_t graph_bytes = 0;
    // Dynamic batching (SPEC 7.8): "on", "refused: why" or ""; batches run, their mean and
    // largest size in requests, queue-delay percentiles (µs).
    std::string batching;
    std::int64_t batches = 0;
    double batch_mean = 0.0;
    std::int64_t batch_max = 0;
    double queue_delay_p50_us = 0.0;
    double queue_delay_p99_us = 0.0;
    TRTD_WIRE_FIELDS(TRTD_REQ(name) TRTD_REQ(backend) TRTD_REQ(state) TRTD_OPT(requests) TRTD_OPT(errors)
                         TRTD_OPT(p50_us) TRTD_OPT(p90_us) TRTD_OPT(p99_us) TRTD_OPT(error) TRTD_OPT(device)
                             TRTD_OPT(instances) TRTD_OPT(in_flight) TRTD_OPT(build) TRTD_OPT(graphs)
                                 TRTD_OPT(graph_bytes) TRTD_OPT(batching) TRTD_OPT(batches)
                                     TRTD_OPT(batch_mean) TRTD_OPT(batch_max)
                                         TRTD_OPT(queue_delay_p50_us) TRTD_OPT(queue_delay_p99_us))
};

struct DeviceStatus {
    std::int64_t device = 0;
    std::string name;
    std::int64_t free_bytes = 0;
    std::int64_t total_bytes = 0;
    TRTD_WIRE_FIELDS(TRTD_REQ(device) TRTD_REQ(name) TRTD_REQ(free_bytes) TRTD_REQ(total_bytes))
};

struct ErrorInfo {
    std::string code;
    std::string message;
    Value details = Value::Object{};
    TRTD_WIRE_FIELDS(TRTD_REQ(code) TRTD_REQ(message) TRTD_OPT(details))
};

// -- results (SPEC 6) -----------------------------------------------------------------------------

struct HelloReply {
    std::uint64_t client_id = 0;
    std::string daemon_id;
    std::string server_version;
    std::int64_t protocol_version = 0;
    std::int64_t alignment = 0;
    std::int64_t max_message_bytes = 0;
    double heartbeat_interval_s = 0.0;  // > 0: send a request with client_id at least this often
    TRTD_WIRE_FIELDS(TRTD_REQ(client_id) TRTD_REQ(daemon_id) TRTD_REQ(server_version) TRTD_REQ(protocol_version)
                         TRTD_REQ(alignment) TRTD_REQ(max_message_bytes) TRTD_OPT(heartbeat_interval_s))
};

struct ModelsReply {
    std::vector<ModelInfo> models;
    TRTD_WIRE_FIELDS(TRTD_REQ(models))
};

struct LeaseReply {
    RegionInfo region;
    TRTD_WIRE_FIELDS(TRTD_REQ(region))
};

struct ReleaseReply {
    bool released_now = true;
    TRTD_WIRE_FIELDS(TRTD_OPT(released_now))
};

struct InferReply {
    std::vector<OutputInfo> outputs;
    Timing timing;
    std::string backend;
    std::string engine;
    TRTD_WIRE_FIELDS(TRTD_REQ(outputs) TRTD_REQ(timing) TRTD_OPT(backend) TRTD_OPT(engine))
};

struct EmptyReply {
    TRTD_WIRE_FIELDS()
};
using HeartbeatReply = EmptyReply;
using UnloadReply = EmptyReply;
using ShutdownReply = EmptyReply;

struct GoodbyeReply {
    std::int64_t released = 0;
    TRTD_WIRE_FIELDS(TRTD_OPT(released))
};

struct StatusReply {
    std::string daemon_id;
    std::int64_t pid = 0;
    std::string server_version;
    std::int64_t protocol_version = 0;
    std::string endpoint;
    double uptime_s = 0.0;
    std::int64_t rss_bytes = 0;
    double cpu_user_s = 0.0;
    double cpu_system_s = 0.0;
    std::int64_t clients = 0;
    std::int64_t regions = 0;
    std::int64_t region_bytes = 0;
    std::vector<ModelStatus> models;
    std::int64_t pinned_bytes = 0;
    std::int64_t host_registrations = 0;
    std::vector<DeviceStatus> devices;
    bool stopping = false;
    TRTD_WIRE_FIELDS(TRTD_REQ(daemon_id) TRTD_REQ(pid) TRTD_REQ(server_version) TRTD_REQ(protocol_version)
                         TRTD_REQ(endpoint) TRTD_REQ(uptime_s) TRTD_REQ(rss_bytes) TRTD_REQ(cpu_user_s)
                             TRTD_REQ(cpu_system_s) TRTD_REQ(clients) TRTD_REQ(regions) TRTD_REQ(region_bytes)
                                 TRTD_REQ(models) TRTD_OPT(pinned_bytes) TRTD_OPT(host_registrations)
                                     TRTD_OPT(devices) TRTD_OPT(stopping))
};

struct LoadReply {
    ModelInfo model;
    TRTD_WIRE_FIELDS(TRTD_REQ(model))
};

struct ReloadReply {
    std::vector<std::string> loading;
    std::vector<std::string> replacing;
    std::vector<std::string> unloaded;
    std::vector<std::string> unchanged;
    std::vector<std::string> restart_needed;
    TRTD_WIRE_FIELDS(TRTD_OPT(loading) TRTD_OPT(replacing) TRTD_OPT(unloaded) TRTD_OPT(unchanged)
                         TRTD_OPT(restart_needed))
};

// -- requests (SPEC 6): op name, result type, whether the admin token is needed -------------------

struct Hello {
    static constexpr const char* op = "hello";
    static constexpr bool privileged = false;
    using Reply = HelloReply;
    std::int64_t client_pid = 0;
    double client_start_time = 0.0;  // 0.0: unknown (then heartbeats)
    std::string client_name;
    TRTD_WIRE_FIELDS(TRTD_REQ(client_pid) TRTD_OPT(client_start_time) TRTD_OPT(client_name))
};

struct ListModels {
    static constexpr const char* op = "models";
    static constexpr bool privileged = false;
    using Reply = ModelsReply;
    std::optional<std::string> name;  // the only nil-allowed field of version 1
    TRTD_WIRE_FIELDS(TRTD_OPT(name))
};

struct Lease {
    static constexpr const char* op = "lease";
    static constexpr bool privileged = false;
    using Reply = LeaseReply;
    std::uint64_t client_id = 0;
    std::int64_t nbytes = 0;
    TRTD_WIRE_FIELDS(TRTD_REQ(client_id) TRTD_REQ(nbytes))
};

struct Release {
    static constexpr const char* op = "release";
    static constexpr bool privileged = false;
    using Reply = ReleaseReply;
    std::uint64_t client_id = 0;
    std::string region;
    std::string token;
    TRTD_WIRE_FIELDS(TRTD_REQ(client_id) TRTD_REQ(region) TRTD_REQ(token))
};

struct Infer {
    static constexpr const char* op = "infer";
    static constexpr bool privileged = false;
    using Reply = InferReply;
    std::uint64_t client_id = 0;
    std::string model;
    std::string region;
    std::string token;
    std::vector<InputRef> inputs;
    std::vector<OutputRef> outputs;
    std::int64_t deadline_ms = 0;
    TRTD_WIRE_FIELDS(TRTD_REQ(client_id) TRTD_REQ(model) TRTD_REQ(region) TRTD_REQ(token) TRTD_REQ(inputs)
                         TRTD_REQ(outputs) TRTD_OPT(deadline_ms))
};

struct Heartbeat {
    static constexpr const char* op = "heartbeat";
    static constexpr bool privileged = false;
    using Reply = HeartbeatReply;
    std::uint64_t client_id = 0;
    TRTD_WIRE_FIELDS(TRTD_REQ(client_id))
};

struct Goodbye {
    static constexpr const char* op = "goodbye";
    static constexpr bool privileged = false;
    using Reply = GoodbyeReply;
    std::uint64_t client_id = 0;
    TRTD_WIRE_FIELDS(TRTD_REQ(client_id))
};

struct Status {
    static constexpr const char* op = "status";
    static constexpr bool privileged = false;
    using Reply = StatusReply;
    TRTD_WIRE_FIELDS()
};

struct Load {
    static constexpr const char* op = "load";
    static constexpr bool privileged = true;
    using Reply = LoadReply;
    std::string name;
    std::string path;
    std::string backend = "onnxruntime";
    std::int64_t max_batch = 0;
    std::int64_t device = -1;
    std::int64_t instances = 1;
    std::vector<std::string> inputs;
    TRTD_WIRE_FIELDS(TRTD_REQ(name) TRTD_REQ(path) TRTD_OPT(backend) TRTD_OPT(max_batch) TRTD_OPT(device)
                         TRTD_OPT(instances) TRTD_OPT(inputs))
};

struct Unload {
    static constexpr const char* op = "unload";
    static constexpr bool privileged = true;
    using Reply = UnloadReply;
    std::string name;
    TRTD_WIRE_FIELDS(TRTD_REQ(name))
};

struct Shutdown {
    static constexpr const char* op = "shutdown";
    static constexpr bool privileged = true;
    using Reply = ShutdownReply;
    TRTD_WIRE_FIELDS()
};

struct Reload {
    static constexpr const char* op = "reload";
    static constexpr bool privileged = true;
    using Reply = ReloadReply;
    TRTD_WIRE_FIELDS()
};

// Every request type and every result type, for code that handles them all (the codec, tests).
#define TRTD_WIRE_REQUESTS(X) \
    X(Hello) X(ListModels) X(Lease) X(Release) X(Infer) X(Heartbeat) X(Goodbye) X(Status) X(Load) X(Unload) \
        X(Shutdown) X(Reload)
#define TRTD_WIRE_REPLIES(X)                                                                               \
    X(HelloReply) X(ModelsReply) X(LeaseReply) X(ReleaseReply) X(InferReply) X(EmptyReply) X(GoodbyeReply) \
        X(StatusReply) X(LoadReply) X(ReloadReply)

}  // namespace trtd::wire
