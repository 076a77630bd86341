// Model handles: layouts in the handle's region, the copying and the zero-copy paths, and the
// region's lifetime across growth, timeouts and daemon restarts (sdk/client.py's ModelHandle).
#include <algorithm>
#include <cstring>
#include <set>

#include "session.hpp"
#include "shapes.hpp"
#include "text.hpp"

namespace trtd {

namespace detail {
namespace {

// Output areas of unbounded size (data-dependent shapes) start at this; a reply naming the
// needed size makes the handle grow and retry once.
constexpr std::int64_t unbounded_output_bytes = 1 << 20;
constexpr std::size_t max_plans = 16;

std::int64_t align_up(std::int64_t n, std::int64_t alignment) { return (n + alignment - 1) / alignment * alignment; }

std::shared_ptr<Session> session_of(const ModelState& state) {
    auto s = state.session.lock();
    if (!s || s->closed) throw DaemonNotRunning("the trtd::Client of model " + repr(state.info.name) + " is closed");
    return s;
}

// One tensor to place: name, dtype, shape (the inputs of a request, in the model's order).
struct Placed {
    std::string name;
    DType dtype;
    Shape shape;
    std::size_t nbytes;
};

std::string expected(const TensorSpec& spec) { return format_tensor(spec.dtype, spec.shape); }

const TensorSpec* input_spec(const ModelInfo& info, const std::string& name) {
    for (const auto& spec : info.inputs) {
        if (spec.name == name) return &spec;
    }
    return nullptr;
}

// The inputs in the model's order (then unknown names, which the daemon refuses in its words),
// so that the same shapes make the same layout on both paths.
std::vector<Placed> placed_inputs(const ModelInfo& info, const Inputs& inputs) {
    std::vector<Placed> out;
    auto add = [&](const std::string& name, const ConstTensorView& view) {
        if (view.elements() < 0) {
            // No byte count can be sent for it: refuse here (-1 is the model's word for "any", never a
            // tensor's).
            for (std::size_t axis = 0; axis < view.shape().size(); ++axis) {
                if (view.shape()[axis] < 0)
                    throw InvalidTensor("input " + repr(name) + ": dimension " + std::to_string(axis) + " is " +
                                        std::to_string(view.shape()[axis]) +
                                        "; a tensor's dimensions cannot be negative");
            }
        }
        if (view.data() == nullptr && view.nbytes() > 0)
            throw InvalidInput("input " + repr(name) + " (" + view.describe() + ") has no data");
        out.push_back({name, view.dtype(), view.shape(), view.nbytes()});
    };
    for (const auto& spec : info.inputs) {
        auto found = inputs.find(spec.name);
        if (found != inputs.end()) add(found->first, found->second);
    }
    for (const auto& [name, view] : inputs) {
        if (!input_spec(info, name)) add(name, view);
    }
    return out;
}

std::string plan_key(const std::vector<Placed>& inputs) {
    std::string key;
    for (const auto& p : inputs) {
        key += p.name;
        key += '\0';
        key += dtype_name(p.dtype);
        for (auto d : p.shape) key += "," + std::to_string(d);
        key += '\0';
    }
    return key;
}

std::int64_t output_bytes(const ModelState& state, const TensorSpec& spec, std::int64_t batch) {
    auto grown = state.output_capacity.find(spec.name);
    if (grown != state.output_capacity.end()) return grown->second;
    if (spec.max_nbytes < 0) return unbounded_output_bytes;
    if (state.info.max_batch && !spec.shape.empty() && spec.shape[0] < 0)
        // Size for this batch, not the largest: max_nbytes covers max_batch samples (SPEC 9.5).
        return spec.max_nbytes / state.info.max_batch * std::max<std::int64_t>(batch, 1);
    return spec.max_nbytes;
}

// Back to back, inputs then outputs, each at an aligned offset (protocol/layout.py plan_slots).
std::shared_ptr<Plan> make_plan(const ModelState& state, const std::vector<Placed>& inputs, std::string key,
                                std::int64_t alignment) {
    auto plan = std::make_shared<Plan>();
    plan->key = std::move(key);
    std::int64_t batch = !inputs.empty() && !inputs.front().shape.empty() ? inputs.front().shape[0] : 1;
    std::int64_t offset = 0;
    plan->request.model = state.info.name;
    for (const auto& p : inputs) {
        plan->inputs.push_back({p.name, p.dtype, p.shape, offset, p.nbytes});
        plan->request.inputs.push_back({p.name, std::string(dtype_name(p.dtype)), p.shape, offset,
                                        static_cast<std::int64_t>(p.nbytes)});
        offset = align_up(offset + static_cast<std::int64_t>(p.nbytes), alignment);
    }
    for (const auto& spec : state.info.outputs) {
        std::int64_t capacity = output_bytes(state, spec, batch);
        plan->request.outputs.push_back({spec.name, offset, capacity});
        offset = align_up(offset + std::max<std::int64_t>(capacity, 0), alignment);
    }
    plan->nbytes = std::max(offset, alignment);
    return plan;
}

void invalidate_views(ModelState& state, const std::string& why) {
    state.zero_copy_plan.reset();
    state.views_lost = "the zero-copy views are no longer valid: " + why;
}

void retire_region(ModelState& state, Session& session, bool wait, const std::string& why) {
    if (!state.region) return;
    Region region = std::move(*state.region);
    state.region.reset();
    state.plan.reset();
    invalidate_views(state, why + "; call zero_copy_inputs() again");
    session.release(region, wait);
}

// After a daemon restart the region is gone on the daemon's side: just unmap it.
void forget_region(ModelState& state, Session& session) {
    state.region.reset();
    state.plan.reset();
    invalidate_views(state, "the daemon restarted: its region is gone; call zero_copy_inputs() again");
    state.generation = session.generation.load();
}

// A request that timed out, or that a stopping daemon gave up on while it ran (or whose
// connection closed first), may still be writing into the region: never reuse it. One the
// stopping daemon refused before running it left the region ours alone.
void retire_if_still_written(ModelState& state, Session& session, const Error& e) {
    if (dynamic_cast<const DaemonStopping*>(&e) && e.details().get_bool("started") == std::optional<bool>(false))
        return;
    retire_region(state, session, false,
                  "the last request timed out or its daemon stopped while it may have run, so the daemon may still "
                  "write into its region, which was given up");
}

// The plan for these inputs, with a region big enough for it.
std::shared_ptr<Plan> prepare(ModelState& state, Session& session, const std::vector<Placed>& inputs) {
    if (state.generation != session.generation.load()) forget_region(state, session);
    std::string key = plan_key(inputs);
    std::shared_ptr<Plan> plan;
    for (const auto& p : state.plans) {
        if (p->key == key) plan = p;
    }
    if (!plan) {
        if (state.plans.size() >= max_plans) state.plans.erase(state.plans.begin());
        std::int64_t alignment;
        {
            std::lock_guard<std::mutex> lock(session.identity_mutex);
            alignment = session.alignment;
        }
        plan = make_plan(state, inputs, std::move(key), alignment);
        state.plans.push_back(plan);
    }
    if (!state.region || state.region->nbytes() < plan->nbytes) {
        std::int64_t old = state.region ? state.region->nbytes() : 0;
        retire_region(state, session, true, "the handle needed a larger region for other shapes");
        state.region.emplace(session.lease(std::max(plan->nbytes, 2 * old)));
        state.generation = session.generation.load();
    }
    // Only after the re-lease above, which forgets the current plan: set before it, a zero-copy
    // plan whose region had to grow was refused as stale at its first run.
    state.plan = plan;
    plan->request.client_id = session.current_client_id();
    plan->request.region = state.region->name();
    plan->request.token = state.region->token();
    return plan;
}

bool grow(ModelState& state, const OutputTooLarge& e) {
    auto needed = e.details().get_int("needed");
    auto name = e.details().get_string("output");
    if (!needed || !name) return false;
    bool known = std::any_of(state.info.outputs.begin(), state.info.outputs.end(),
                             [&](const TensorSpec& spec) { return spec.name == *name; });
    if (!known) return false;
    state.output_capacity[*name] = *needed;
    state.plans.clear();
    return true;
}

ConstTensorView output_view(const ModelState& state, const wire::OutputInfo& o) {
    auto dtype = parse_dtype(o.dtype);
    if (!dtype)
        throw ProtocolMismatch("the daemon answered output " + repr(o.name) + " as dtype " + repr(o.dtype) +
                               ", which this client does not know; upgrade the client");
    return state.region->view(o.offset, *dtype, o.shape);
}

void remember(ModelState& state, const wire::InferReply& reply) {
    state.last_timing = reply.timing;
    state.last_backend = reply.engine.empty() ? reply.backend : reply.backend + " " + reply.engine;
}

std::string tensor_text(const std::string& dtype, const Shape& shape) { return dtype + int_list(shape); }

}  // namespace
}  // namespace detail

using detail::repr;

const ModelInfo& Model::info() const { return state_->info; }
const std::string& Model::name() const { return state_->info.name; }

Outputs Model::infer(const Inputs& inputs, const CallOptions& options) { return infer_into(inputs, {}, options); }

Tensor Model::operator()(const ConstTensorView& input) {
    const auto& info = state_->info;
    if (info.inputs.size() != 1) {
        std::vector<std::string> names;
        for (const auto& s : info.inputs) names.push_back("{\"" + s.name + "\", tensor}");
        throw InvalidInput("model " + repr(info.name) + " takes " + std::to_string(info.inputs.size()) +
                           " inputs; pass a map {" + detail::join(names, ", ") + "}");
    }
    if (info.outputs.size() != 1)
        throw InvalidInput("model " + repr(info.name) + " has " + std::to_string(info.outputs.size()) +
                           " outputs; call infer() for the map of them");
    auto outputs = infer({{info.inputs[0].name, input}});
    return std::move(outputs.begin()->second);
}

Outputs Model::infer_into(const Inputs& inputs, const OutputBuffers& out, const CallOptions& options) {
    auto& state = *state_;
    std::vector<std::string> unknown;
    for (const auto& [name, buffer] : out) {
        bool known = std::any_of(state.info.outputs.begin(), state.info.outputs.end(),
                                 [&](const TensorSpec& spec) { return spec.name == name; });
        if (!known) unknown.push_back(name);
    }
    if (!unknown.empty())
        throw InvalidInput("out names unknown output(s) " + detail::repr_list(unknown) + " of model " +
                           repr(state.info.name));
    auto placed = detail::placed_inputs(state.info, inputs);
    auto session = detail::session_of(state);
    std::lock_guard<std::mutex> lock(state.mutex);
    for (int attempt = 0; attempt < 3; ++attempt) {
        wire::InferReply reply;
        try {
            auto plan = detail::prepare(state, *session, placed);  // may lease: a restart shows up here too
            plan->request.deadline_ms = options.deadline_ms;
            for (const auto& slot : plan->inputs) {
                if (slot.nbytes) std::memcpy(state.region->data() + slot.offset, inputs.at(slot.name).data(), slot.nbytes);
            }
            reply = session->call(plan->request, options.timeout_s);
        } catch (const DaemonRestarted&) {
            detail::forget_region(state, *session);  // our inputs are still in hand: lease anew and resend
            continue;
        } catch (const OutputTooLarge& e) {
            if (attempt < 2 && detail::grow(state, e)) continue;
            throw;
        } catch (const DaemonTimeout& e) {
            detail::retire_if_still_written(state, *session, e);
            throw;
        } catch (const DaemonStopping& e) {
            detail::retire_if_still_written(state, *session, e);
            throw;
        }
        detail::remember(state, reply);
        Outputs result;
        for (const auto& o : reply.outputs) {
            ConstTensorView view = detail::output_view(state, o);
            auto target = out.find(o.name);
            if (target == out.end()) {
                result.emplace(o.name, Tensor::copy_of(view));
                continue;
            }
            const TensorView& buffer = target->second;
            if (buffer.dtype() != view.dtype() || buffer.shape() != view.shape())
                throw InvalidInput("out[" + repr(o.name) + "] is " +
                                   detail::tensor_text(std::string(dtype_name(buffer.dtype())), buffer.shape()) +
                                   ", the result is " + detail::tensor_text(o.dtype, view.shape()));
            buffer.copy_from(view);
        }
        return result;
    }
    throw Error("the daemon kept restarting while this request was retried");
}

std::map<std::string, TensorView> Model::zero_copy_inputs(const Shapes& shapes) {
    auto& state = *state_;
    const auto& info = state.info;
    std::vector<std::string> unknown, names;
    for (const auto& [name, shape] : shapes) {
        if (!detail::input_spec(info, name)) unknown.push_back(name);
    }
    for (const auto& spec : info.inputs) names.push_back(spec.name);
    if (!unknown.empty())
        throw InvalidTensor("model " + repr(info.name) + " has no input(s) " + detail::repr_list(unknown) +
                            "; its inputs are: " + detail::join(names, ", "));
    // Every input's shape: those given (checked as the daemon checks them), the others by default.
    std::vector<detail::Placed> placed;
    std::vector<std::pair<std::string, Shape>> checked;
    for (const auto& spec : info.inputs) {
        Shape shape;
        auto given = shapes.find(spec.name);
        if (given != shapes.end()) {
            shape = given->second;
            if (auto problem = detail::shape_problem(spec.name, spec.dtype, spec.shape, shape, info.max_batch, info.name))
                throw InvalidTensor(*problem);
        } else {
            for (std::size_t i = 0; i < spec.shape.size(); ++i) shape.push_back(spec.shape[i] < 0 && i == 0 ? 1 : spec.shape[i]);
            if (element_count(shape) < 0)
                throw InvalidTensor("input " + repr(spec.name) + " has dynamic dimensions " + detail::expected(spec) +
                                    "; pass its shape: zero_copy_inputs({{\"" + spec.name + "\", {...}}})");
        }
        checked.emplace_back(spec.name, shape);
        DType dtype = *parse_dtype(spec.dtype);
        placed.push_back({spec.name, dtype, shape, static_cast<std::size_t>(element_count(shape)) * itemsize(dtype)});
    }
    if (info.max_batch) {
        if (auto problem = detail::batch_problem(checked)) throw InvalidTensor(*problem);
    }
    auto session = detail::session_of(state);
    std::lock_guard<std::mutex> lock(state.mutex);
    auto plan = detail::prepare(state, *session, placed);
    state.zero_copy_plan = plan;
    std::map<std::string, TensorView> views;
    for (const auto& slot : plan->inputs) views.emplace(slot.name, state.region->view(slot.offset, slot.dtype, slot.shape));
    return views;
}

OutputViews Model::run_zero_copy(const CallOptions& options) {
    auto& state = *state_;
    auto session = detail::session_of(state);
    std::lock_guard<std::mutex> lock(state.mutex);
    if (state.generation != session->generation.load()) {
        detail::invalidate_views(state, "the daemon restarted since zero_copy_inputs(): its region is gone; call "
                                        "zero_copy_inputs() again");
    } else if (state.zero_copy_plan && state.zero_copy_plan != state.plan) {
        detail::invalidate_views(state, "a request with other shapes ran on this handle since zero_copy_inputs(); "
                                        "call it again for views of this layout");
    }
    auto plan = state.zero_copy_plan;
    if (!plan) throw InvalidInput(state.views_lost);
    plan->request.deadline_ms = options.deadline_ms;
    wire::InferReply reply;
    try {
        reply = session->call(plan->request, options.timeout_s);
    } catch (const DaemonTimeout& e) {
        detail::retire_if_still_written(state, *session, e);
        throw;
    } catch (const DaemonStopping& e) {
        detail::retire_if_still_written(state, *session, e);
        throw;
    }
    detail::remember(state, reply);
    OutputViews outs;
    for (const auto& o : reply.outputs) outs.emplace(o.name, detail::output_view(state, o));
    return outs;
}

void Model::close() {
    auto& state = *state_;
    auto session = state.session.lock();
    std::lock_guard<std::mutex> lock(state.mutex);
    if (session && !session->closed) {
        detail::retire_region(state, *session, true, "the handle was closed");
    } else {
        state.region.reset();
        state.plan.reset();
        detail::invalidate_views(state, "the client was closed");
    }
}

std::optional<Timing> Model::last_timing() const {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->last_timing;
}

std::string Model::last_backend() const {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->last_backend;
}

std::string Model::region_name() const {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->region ? state_->region->name() : std::string();
}

std::int64_t Model::region_nbytes() const {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->region ? state_->region->nbytes() : 0;
}

std::string Model::describe() const {
    const auto& info = state_->info;
    auto specs = [](const std::vector<TensorSpec>& list) {
        std::vector<std::string> parts;
        for (const auto& s : list) parts.push_back(s.name + " " + detail::expected(s));
        return parts.empty() ? std::string("-") : detail::join(parts, ", ");
    };
    std::string held;
    {
        std::lock_guard<std::mutex> lock(state_->mutex);
        held = state_->region ? "region " + state_->region->name() + " (" + std::to_string(state_->region->nbytes()) +
                                    " bytes)"
                              : "no region";
    }
    std::string batch = info.max_batch ? ", max_batch " + std::to_string(info.max_batch) : "";
    return "<Model " + repr(info.name) + " (" + info.backend + "): in " + specs(info.inputs) + "; out " +
           specs(info.outputs) + batch + "; " + held + ">";
}

}  // namespace trtd
