// The client: a session with a daemon, and model handles over leased shared memory.
//
//     trtd::Client c;                                  // TRTD_ENDPOINT, else the one found running
//     auto m = c.model("demo");                       // the client's cached handle: it keeps its region
//     auto y = m.infer({{"x", x}});                    // copying path: {name: Tensor}
//     m.infer_into({{"x", x}}, {{"y", y_view}});       // ...into buffers you own
//     auto slots = m.zero_copy_inputs({{"x", {8, 64}}});   // writable views into the region
//     auto out = m.run_zero_copy();                    // read-only views, valid until the next request
//
// Tensor bytes never travel through the socket: inputs are written into a region the daemon leased
// to this client, outputs are read from the same region. The API mirrors the Python SDK's
// (sdk/client.py): one connection and one hello per Client, request ids and timeouts, heartbeats
// when the daemon asks for them, and after a daemon restart (UNKNOWN_CLIENT) a new hello; the
// copying path then leases anew and resends by itself, zero-copy views become invalid.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "trtd/codec.hpp"
#include "trtd/endpoint.hpp"
#include "trtd/errors.hpp"
#include "trtd/messages.hpp"
#include "trtd/region.hpp"
#include "trtd/tensor.hpp"

namespace trtd {

using ModelInfo = wire::ModelInfo;
using TensorSpec = wire::TensorSpec;
using Timing = wire::Timing;
using StatusReply = wire::StatusReply;

using Inputs = std::map<std::string, ConstTensorView>;
using Outputs = std::map<std::string, Tensor>;
using OutputViews = std::map<std::string, ConstTensorView>;
using OutputBuffers = std::map<std::string, TensorView>;
using Shapes = std::map<std::string, Shape>;

inline constexpr double default_timeout_s = 30.0;

struct ClientOptions {
    std::string endpoint;                // "": TRTD_ENDPOINT, else the platform default (SPEC 3.2)
    double timeout_s = default_timeout_s;  // per request
    double connect_timeout_s = 5.0;      // how long a request waits for a daemon to accept the connection
    std::string name;                    // for the daemon's logs
    int spin_us = 0;                     // busy-poll this long for each reply before sleeping
    std::optional<std::string> admin_token;  // for load/unload/shutdown/reload; default: the token file
};

struct CallOptions {
    double timeout_s = -1.0;     // < 0: the client's timeout
    std::int64_t deadline_ms = 0;  // > 0: not started within this many ms -> DeadlineExceeded
};

struct LoadOptions {
    std::string backend = "onnxruntime";
    std::int64_t max_batch = 0;
    std::int64_t device = -1;
    std::int64_t instances = 1;
    std::vector<std::string> inputs;  // TorchScript: "NAME:SHAPE[:DTYPE]" each
};

namespace detail {
struct Session;
struct ModelState;
}  // namespace detail

// A model plus a region of its own. Copies of a Model share one handle (the client caches one
// per name, as the Python SDK does); calls on it are serialized.
class Model {
public:
    const ModelInfo& info() const;
    const std::string& name() const;

    // Copying path: each input is copied into the region; the outputs are copied out.
    Outputs infer(const Inputs& inputs, const CallOptions& options = {});
    // One input, one output (InvalidInput for other models).
    Tensor operator()(const ConstTensorView& input);
    // The outputs named in `out` are copied into those buffers (dtype and shape must be the
    // result's), the others returned; saves allocating fresh memory for large outputs.
    Outputs infer_into(const Inputs& inputs, const OutputBuffers& out, const CallOptions& options = {});

    // Zero-copy path: writable views of the input slots in the region, for `shapes` (default:
    // the model's static shapes, batch 1), checked against the model here. Fill them, then call
    // run_zero_copy() as often as you like.
    std::map<std::string, TensorView> zero_copy_inputs(const Shapes& shapes = {});
    // Runs on what is in the input slots; read-only views of the outputs, valid until the next
    // request on this handle. A refused run (overloaded, stopping, not ready, deadline) leaves
    // the views valid.
    OutputViews run_zero_copy(const CallOptions& options = {});

    // Releases the region now (zero-copy views become invalid); the next request leases again.
    void close();

    // The daemon's timing of the last request on this handle, and the backend that answered.
    std::optional<Timing> last_timing() const;
    std::string last_backend() const;
    // The region held now: "" / 0 when none.
    std::string region_name() const;
    std::int64_t region_nbytes() const;
    // The model, its inputs and outputs and its region, for people.
    std::string describe() const;

private:
    friend class Client;
    explicit Model(std::shared_ptr<detail::ModelState> state) : state_(std::move(state)) {}
    std::shared_ptr<detail::ModelState> state_;
};

class Client {
public:
    Client();  // ClientOptions{}
    explicit Client(ClientOptions options);
    explicit Client(const std::string& endpoint);
    ~Client();  // goodbye: every lease is released at once
    Client(Client&&) noexcept;
    Client& operator=(Client&&) noexcept;
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    // Every model the daemon serves; with wait, models still "loading" are waited for (up to the
    // client's timeout).
    std::vector<ModelInfo> models(bool wait = true);
    ModelInfo describe(const std::string& model, bool wait = true);
    // The cached handle for `model` (the same one for every call with that name).
    Model model(const std::string& name);
    Outputs infer(const std::string& model, const Inputs& inputs, const CallOptions& options = {});

    StatusReply status();
    // Privileged ops: the admin token from ClientOptions, else from the daemon's token file.
    ModelInfo load(const std::string& name, const std::string& path, const LoadOptions& options = {});
    void unload(const std::string& name);
    wire::ReloadReply reload();
    void shutdown();  // the client is closed afterwards

    // Low level: a region of your own, your own layout (offsets multiples of 256, SPEC 9).
    Region lease(std::int64_t nbytes);
    void release(Region& region);
    wire::InferReply infer_region(const Region& region, const std::string& model,
                                  std::vector<wire::InputRef> inputs, std::vector<wire::OutputRef> outputs,
                                  const CallOptions& options = {});

    void close();

    const std::string& endpoint() const;
    std::uint64_t client_id() const;
    std::string daemon_id() const;
    std::string server_version() const;
    double heartbeat_interval_s() const;
    // Bumped each time this client registers again after a daemon restart or reclaim.
    std::uint64_t generation() const;

private:
    detail::Session& session() const;
    std::shared_ptr<detail::Session> session_;
};

}  // namespace trtd
