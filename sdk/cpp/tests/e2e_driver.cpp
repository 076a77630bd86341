// The end-to-end driver: a trtd::Client driven by JSON lines on stdin, one JSON line of answer on
// stdout per command. tests/test_cpp_client.py starts a real daemon, runs this program against it
// and compares what the C++ client does (outputs, errors and their messages, regions) with the
// Python SDK on the same inputs. Tensors travel as files of raw bytes.
//
// Answers: {"ok": true, ...} or {"ok": false, "error": {"kind", "code", "message", "details"}}.
#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <thread>

#include "../src/process.hpp"
#include "json_wire.hpp"
#include "trtd/trtd.hpp"

using trtd::testing::json;
using trtd::testing::to_json;

namespace {

struct Driver {
    std::unique_ptr<trtd::Client> client;
    std::map<std::string, trtd::Region> regions;
    std::map<std::string, std::map<std::string, trtd::TensorView>> zero_copy;  // model -> views
    std::vector<std::unique_ptr<trtd::Tensor>> buffers;                       // infer_into targets

    trtd::Client& c() {
        if (!client) throw std::runtime_error("no client: send {\"cmd\": \"connect\"} first");
        return *client;
    }
};

std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot read " + path);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const void* data, std::size_t n) {
    std::ofstream f(path, std::ios::binary);
    f.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
}

trtd::DType dtype_of(const json& j) {
    auto t = trtd::parse_dtype(j.get<std::string>());
    if (!t) throw std::runtime_error("unknown dtype " + j.dump());
    return *t;
}

trtd::CallOptions call_options(const json& cmd) {
    trtd::CallOptions options;
    options.timeout_s = cmd.value("timeout", -1.0);
    options.deadline_ms = cmd.value("deadline_ms", 0);
    return options;
}

json tensor_json(const std::string& dir, const std::string& name, const trtd::ConstTensorView& t) {
    std::string path = dir + "/" + name + ".bin";
    write_file(path, t.data(), t.nbytes());
    return {{"dtype", std::string(trtd::dtype_name(t.dtype()))}, {"shape", t.shape()}, {"file", path}};
}

json error_json(const trtd::Error& e) {
    return {{"kind", e.kind()}, {"code", e.code()}, {"message", e.what()}, {"details", to_json(e.details())}};
}

// The ancestry of every exception class: {kind: [kinds it is an instance of]}.
template <class E> void ancestry(json& out);
#define TRTD_ALL_ERRORS(X)                                                                                        \
    X(Error) X(DaemonNotRunning) X(DaemonTimeout) X(DaemonRestarted) X(InvalidEndpoint) X(ProtocolMismatch)      \
        X(BadMessage) X(UnsupportedVersion) X(UnknownOp) X(AccessDenied) X(UnknownModel) X(ModelNotReady)        \
            X(InvalidInput) X(InvalidTensor) X(OutOfBounds) X(Overlap) X(OutputTooLarge) X(RegionError)          \
                X(RegionNotFound) X(RegionTooLarge) X(NoSpace) X(QuotaExceeded) X(Forbidden) X(Overloaded)       \
                    X(DaemonStopping) X(DeadlineExceeded) X(ServerError) X(BackendError) X(LoadFailed)           \
                        X(ConfigError) X(InternalError)
template <class E> void ancestry(json& out) {
    E e("probe");
    const trtd::Error& base = e;
    json parents = json::array();
#define TRTD_IS_A(B) \
    if (dynamic_cast<const trtd::B*>(&base) && std::string(#B) != e.kind()) parents.push_back(#B);
    TRTD_ALL_ERRORS(TRTD_IS_A)
#undef TRTD_IS_A
    out[e.kind()] = {{"parents", parents}, {"code", e.code()}};
}

trtd::Inputs inputs_of(const json& spec, std::vector<std::string>& storage) {
    trtd::Inputs inputs;
    storage.reserve(spec.size());
    for (const auto& [name, t] : spec.items()) {
        storage.push_back(t.contains("file") ? read_file(t.at("file")) : std::string());
        trtd::Shape shape = t.at("shape").get<trtd::Shape>();
        inputs.emplace(name, trtd::ConstTensorView(dtype_of(t.at("dtype")), shape,
                                                   storage.back().empty() ? nullptr : storage.back().data()));
    }
    return inputs;
}

json outputs_json(const std::string& dir, const trtd::Outputs& outputs) {
    json out = json::object();
    for (const auto& [name, tensor] : outputs) out[name] = tensor_json(dir, name, tensor);
    return out;
}

json run(Driver& d, const json& cmd) {
    const std::string what = cmd.at("cmd");
    if (what == "connect") {
        trtd::ClientOptions options;
        options.endpoint = cmd.value("endpoint", "");
        options.timeout_s = cmd.value("timeout", trtd::default_timeout_s);
        options.connect_timeout_s = cmd.value("connect_timeout", 5.0);
        options.name = cmd.value("name", "trtd-cpp-e2e");
        if (cmd.contains("admin_token")) options.admin_token = cmd.at("admin_token").get<std::string>();
        d.client = std::make_unique<trtd::Client>(options);
        return {{"client_id", d.c().client_id()},       {"daemon_id", d.c().daemon_id()},
                {"endpoint", d.c().endpoint()},         {"server_version", d.c().server_version()},
                {"heartbeat_interval_s", d.c().heartbeat_interval_s()}, {"generation", d.c().generation()}};
    }
    if (what == "close") {
        d.zero_copy.clear();
        d.regions.clear();
        d.client.reset();  // the destructor says goodbye
        return json::object();
    }
    if (what == "identity")
        return {{"client_id", d.c().client_id()}, {"daemon_id", d.c().daemon_id()}, {"generation", d.c().generation()}};
    if (what == "models") return {{"models", to_json(d.c().models())}};
    if (what == "status") return to_json(d.c().status());
    if (what == "infer") {
        std::vector<std::string> storage;
        auto inputs = inputs_of(cmd.at("inputs"), storage);
        std::string dir = cmd.at("out_dir");
        std::string path = cmd.value("path", "copy");
        auto options = call_options(cmd);
        trtd::Outputs outputs;
        if (path == "client") {
            outputs = d.c().infer(cmd.at("model"), inputs, options);
        } else if (path == "call") {
            auto m = d.c().model(cmd.at("model"));
            trtd::Tensor y = m(inputs.begin()->second);
            outputs.emplace(m.info().outputs.at(0).name, std::move(y));
        } else if (path == "into") {
            // Buffers of the caller's own, as described: the results land in them.
            trtd::OutputBuffers out;
            std::map<std::string, trtd::Tensor*> mine;
            for (const auto& [name, t] : cmd.at("into").items()) {
                d.buffers.push_back(std::make_unique<trtd::Tensor>(dtype_of(t.at("dtype")), t.at("shape").get<trtd::Shape>()));
                out.emplace(name, d.buffers.back()->view());
                mine[name] = d.buffers.back().get();
            }
            outputs = d.c().model(cmd.at("model")).infer_into(inputs, out, options);
            json result = outputs_json(dir, outputs);
            for (const auto& [name, t] : mine) {
                result[name] = tensor_json(dir, name, *t);
                result[name]["into"] = true;
            }
            auto m = d.c().model(cmd.at("model"));
            return {{"outputs", result}, {"region", m.region_name()}, {"generation", d.c().generation()}};
        } else {
            outputs = d.c().model(cmd.at("model")).infer(inputs, options);
        }
        auto m = d.c().model(cmd.at("model"));
        return {{"outputs", outputs_json(dir, outputs)},
                {"region", m.region_name()},
                {"region_nbytes", m.region_nbytes()},
                {"backend", m.last_backend()},
                {"generation", d.c().generation()}};
    }
    if (what == "loop_forever") {  // answers after the first request, then keeps requesting until killed
        std::vector<std::string> storage;
        auto inputs = inputs_of(cmd.at("inputs"), storage);
        auto m = d.c().model(cmd.at("model"));
        m.infer(inputs);
        std::cout << json({{"ok", true}, {"region", m.region_name()}}).dump() << std::endl;
        while (true) m.infer(inputs);
    }
    if (what == "zero_copy_inputs") {
        std::string model = cmd.at("model");
        trtd::Shapes shapes;
        if (cmd.contains("shapes"))
            for (const auto& [name, s] : cmd.at("shapes").items()) shapes[name] = s.get<trtd::Shape>();
        auto views = d.c().model(model).zero_copy_inputs(shapes);
        d.zero_copy[model] = views;
        json out = json::object();
        for (const auto& [name, v] : views)
            out[name] = {{"dtype", std::string(trtd::dtype_name(v.dtype()))}, {"shape", v.shape()}};
        return {{"views", out}, {"region", d.c().model(model).region_name()}};
    }
    if (what == "fill_zero_copy") {  // writes into views made earlier (they may have become stale)
        auto& views = d.zero_copy.at(cmd.at("model"));
        for (const auto& [name, file] : cmd.at("files").items()) {
            std::string bytes = read_file(file);
            auto& v = views.at(name);
            if (bytes.size() != v.nbytes()) throw std::runtime_error("wrong byte count for " + name);
            std::memcpy(v.data(), bytes.data(), bytes.size());
        }
        return json::object();
    }
    if (what == "run_zero_copy") {
        auto outs = d.c().model(cmd.at("model")).run_zero_copy(call_options(cmd));
        json out = json::object();
        for (const auto& [name, v] : outs) out[name] = tensor_json(cmd.at("out_dir"), name, v);
        return {{"outputs", out}};
    }
    if (what == "model_close") {
        d.c().model(cmd.at("model")).close();
        return json::object();
    }
    if (what == "describe_handle") {
        auto m = d.c().model(cmd.at("model"));
        return {{"text", m.describe()}, {"region", m.region_name()}};
    }
    if (what == "lease") {
        trtd::Region r = d.c().lease(cmd.at("nbytes").get<std::int64_t>());
        json out = {{"name", r.name()}, {"nbytes", r.nbytes()}};
        d.regions[r.name()] = std::move(r);
        return out;
    }
    if (what == "release") {
        auto& r = d.regions.at(cmd.at("region"));
        d.c().release(r);
        return json::object();
    }
    if (what == "forge") {  // a Region object naming a live region with a token of the caller's choosing
        trtd::Region forged(cmd.at("region"), cmd.at("nbytes").get<std::int64_t>(), cmd.at("token"));
        std::string key = cmd.at("as");
        d.regions[key] = std::move(forged);
        return json::object();
    }
    if (what == "infer_region") {
        auto& region = d.regions.at(cmd.at("region"));
        if (cmd.contains("write")) {
            for (const auto& w : cmd.at("write")) {
                std::string bytes = read_file(w.at("file"));
                auto view = region.view(w.at("offset"), trtd::DType::uint8, {static_cast<std::int64_t>(bytes.size())});
                std::memcpy(view.data(), bytes.data(), bytes.size());
            }
        }
        std::vector<trtd::wire::InputRef> ins;
        std::vector<trtd::wire::OutputRef> outs;
        trtd::testing::from_json_value(cmd.at("inputs"), ins);
        trtd::testing::from_json_value(cmd.at("outputs"), outs);
        return to_json(d.c().infer_region(region, cmd.at("model"), ins, outs, call_options(cmd)));
    }
    if (what == "load") {
        trtd::LoadOptions options;
        options.max_batch = cmd.value("max_batch", 0);
        return to_json(d.c().load(cmd.at("name"), cmd.at("path"), options));
    }
    if (what == "unload") {
        d.c().unload(cmd.at("name"));
        return json::object();
    }
    if (what == "reload") return to_json(d.c().reload());
    if (what == "shutdown") {
        d.c().shutdown();
        return json::object();
    }
    if (what == "threads") {  // one Client shared by threads: each runs `count` requests on one handle
        std::vector<std::string> storage;
        auto inputs = inputs_of(cmd.at("inputs"), storage);
        std::string model = cmd.at("model");
        int threads = cmd.at("threads"), count = cmd.at("count");
        auto expected = d.c().model(model).infer(inputs);
        std::atomic<int> done{0}, differ{0};
        std::vector<std::string> errors(threads);
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t) {
            pool.emplace_back([&, t] {
                try {
                    for (int i = 0; i < count; ++i) {
                        auto got = d.c().infer(model, inputs);
                        for (const auto& [name, tensor] : expected) {
                            const auto& mine = got.at(name);
                            if (mine.nbytes() != tensor.nbytes() || std::memcmp(mine.data(), tensor.data(), tensor.nbytes()))
                                ++differ;
                        }
                        ++done;
                    }
                } catch (const std::exception& e) {
                    errors[t] = e.what();
                }
            });
        }
        for (auto& t : pool) t.join();
        json failed = json::array();
        for (const auto& e : errors) {
            if (!e.empty()) failed.push_back(e);
        }
        return {{"done", done.load()}, {"differ", differ.load()}, {"errors", failed}};
    }
    if (what == "validate_endpoint") return {{"endpoint", trtd::validate_endpoint(cmd.at("endpoint"))}};
    if (what == "paths") {
        std::string endpoint = cmd.at("endpoint");
        return {{"runtime_dir", trtd::runtime_dir()},
                {"default_endpoint", trtd::default_endpoint(true)},
                {"resolved", trtd::resolve_endpoint()},
                {"admin_token", trtd::token_path(endpoint, trtd::admin_token_kind)},
                {"connection_token", trtd::token_path(endpoint, trtd::connection_token_kind)},
                {"find_connection_token", trtd::find_token(endpoint, trtd::connection_token_kind)}};
    }
    if (what == "process") return {{"pid", trtd::detail::process_id()}, {"start_time", trtd::detail::process_start_time()}};
    if (what == "error_classes") {
        json classes = json::object();
#define TRTD_ANCESTRY(E) ancestry<trtd::E>(classes);
        TRTD_ALL_ERRORS(TRTD_ANCESTRY)
#undef TRTD_ANCESTRY
        json by_code = json::object();
        for (const auto& [code, kind] : trtd::error_classes_by_code()) by_code[code] = kind;
        return {{"classes", classes}, {"by_code", by_code}};
    }
    if (what == "raise_reply") {  // the exception an error reply becomes
        try {
            trtd::Value details;
            // details as the daemon sends them: only what the tests need (flat maps of scalars)
            trtd::Value::Object members;
            const json given = cmd.value("details", json::object());
            for (const auto& [k, v] : given.items()) {
                if (v.is_boolean()) members.push_back({k, trtd::Value(v.get<bool>())});
                else if (v.is_number_integer()) members.push_back({k, trtd::Value(v.get<std::int64_t>())});
                else if (v.is_string()) members.push_back({k, trtd::Value(v.get<std::string>())});
                else members.push_back({k, trtd::Value()});
            }
            trtd::throw_error_reply(cmd.at("code"), cmd.at("message"), trtd::Value(members));
        } catch (const trtd::Error& e) {
            return {{"raised", error_json(e)}};
        }
    }
    if (what == "decode_reply") {  // the codec's verdict on a reply frame, as the client would read it
        std::string hex = cmd.at("hex"), frame;
        for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
            frame += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
        std::uint64_t id = cmd.at("id");
        try {
            std::optional<trtd::wire::Reply<trtd::wire::LeaseReply>> reply =
                trtd::wire::decode_reply<trtd::wire::LeaseReply>(frame, id);
            if (!reply) return {{"stale", true}};
            if (reply->result) return {{"result", to_json(*reply->result)}};
            return {{"error_reply", to_json(*reply->error)}};
        } catch (const trtd::wire::DecodeError& e) {
            return {{"decode_error", e.what()}};
        }
    }
    if (what == "sleep") {
        std::this_thread::sleep_for(std::chrono::duration<double>(cmd.at("s").get<double>()));
        return json::object();
    }
    throw std::runtime_error("unknown command " + what);
}

}  // namespace

int main() {
    Driver driver;
    std::string line;
    std::cout << json({{"ok", true}, {"ready", true}}).dump() << std::endl;
    while (std::getline(std::cin, line)) {
        if (line.empty()) continue;
        json answer;
        try {
            json result = run(driver, json::parse(line));
            answer = {{"ok", true}};
            for (auto& [k, v] : result.items()) answer[k] = v;
        } catch (const trtd::Error& e) {
            answer = {{"ok", false}, {"error", error_json(e)}};
        } catch (const std::exception& e) {
            answer = {{"ok", false}, {"error", {{"kind", "driver"}, {"code", ""}, {"message", e.what()}}}};
        }
        std::cout << answer.dump() << std::endl;
    }
    return 0;
}
