// protocol/golden/*.json, decoded and re-encoded by the C++ codec (SPEC 13, "A conforming
// implementation"): for every vector, decoding msgpack_hex gives its envelope and a payload equal
// to `message`, and encoding that payload with the envelope gives msgpack_hex again, byte for byte.
//
//   trtd_golden_test DIR_OR_FILE...     exit status 0 when every vector passes
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

#include "json_wire.hpp"
#include "trtd/codec.hpp"
#include "trtd/endpoint.hpp"

using trtd::testing::json;
using trtd::testing::to_json;
namespace wire = trtd::wire;

namespace {

int failures = 0;

void fail(const std::string& vector, const std::string& what) {
    ++failures;
    std::cerr << "FAIL " << vector << ": " << what << "\n";
}

std::string unhex(const std::string& hex) {
    std::string out;
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
    return out;
}

std::string hex(const std::string& bytes) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    for (unsigned char c : bytes) {
        out += digits[c >> 4];
        out += digits[c & 15];
    }
    return out;
}

void same_bytes(const std::string& name, const std::string& encoded, const std::string& expected) {
    if (encoded != expected) fail(name, "re-encoded as\n  " + hex(encoded) + "\nexpected\n  " + hex(expected));
}

void same_message(const std::string& name, const json& decoded, const json& expected) {
    if (decoded != expected) fail(name, "decoded as " + decoded.dump() + ", expected " + expected.dump());
}

void check_request(const std::string& name, const json& v, const std::string& frame) {
    wire::RequestEnvelope envelope;
    try {
        envelope = wire::decode_request(frame);
    } catch (const wire::DecodeError& e) {
        return fail(name, std::string("does not decode: ") + e.what());
    }
    std::string auth = v.value("auth", "");
    if (envelope.version != 1) fail(name, "v is not 1");
    if (envelope.id != v.at("request_id").get<std::uint64_t>()) fail(name, "wrong id");
    if (envelope.op != v.at("op").get<std::string>()) fail(name, "wrong op " + envelope.op);
    if (envelope.auth != auth) fail(name, "wrong auth");
    std::visit(
        [&](const auto& request) {
            using R = std::decay_t<decltype(request)>;
            if constexpr (std::is_same_v<R, std::monostate>) {
                fail(name, "no request decoded");
            } else {
                same_message(name, to_json(request), v.at("message"));
                same_bytes(name, wire::encode_request(request, envelope.id, auth), frame);
            }
        },
        envelope.request);
}

template <class Result> void check_reply(const std::string& name, const json& v, const std::string& frame) {
    std::uint64_t id = v.at("request_id").get<std::uint64_t>();
    std::optional<wire::Reply<Result>> reply;
    try {
        reply = wire::decode_reply<Result>(frame, id);
    } catch (const wire::DecodeError& e) {
        return fail(name, std::string("does not decode: ") + e.what());
    }
    if (!reply) return fail(name, "taken for a stale reply");
    // A reply to another request is stale: dropped (SPEC 3.4), unless it is an error with id 0.
    bool id0_error = id == 0 && v.at("kind") == "error";
    if (!id0_error && wire::decode_reply<Result>(frame, id + 1)) fail(name, "not recognised as stale for id + 1");
    if (v.at("kind") == "reply") {
        if (!reply->result) return fail(name, "decoded as an error");
        same_message(name, to_json(*reply->result), v.at("message"));
        same_bytes(name, wire::encode_reply(id, *reply->result), frame);
    } else {
        if (!reply->error) return fail(name, "decoded as a success");
        same_message(name, to_json(*reply->error), v.at("message"));
        same_bytes(name, wire::encode_error(id, *reply->error), frame);
    }
}

bool check_reply_for_op(const std::string& op, const std::string& name, const json& v, const std::string& frame) {
#define TRTD_REPLY_OF(T)                                   \
    if (op == wire::T::op) {                               \
        check_reply<wire::T::Reply>(name, v, frame);       \
        return true;                                       \
    }
    TRTD_WIRE_REQUESTS(TRTD_REPLY_OF)
#undef TRTD_REPLY_OF
    return false;
}

int check_file(const std::filesystem::path& path, std::set<std::string>& ops) {
    std::ifstream file(path);
    json vectors = json::parse(file);
    int count = 0;
    for (const auto& v : vectors) {
        std::string name = v.at("name"), kind = v.at("kind"), op = v.at("op");
        std::string frame = unhex(v.at("msgpack_hex"));
        ops.insert(kind + " " + op);
        if (kind == "request") check_request(name, v, frame);
        else if (!check_reply_for_op(op, name, v, frame)) fail(name, "no reply type for op " + op);
        ++count;
    }
    return count;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::cerr << "usage: trtd_golden_test protocol/golden [more files or folders]\n";
        return 2;
    }
    int count = 0;
    std::set<std::string> ops;
    for (int i = 1; i < argc; ++i) {
        std::filesystem::path arg = argv[i];
        std::vector<std::filesystem::path> files;
        if (std::filesystem::is_directory(arg)) {
            for (const auto& entry : std::filesystem::directory_iterator(arg)) {
                if (entry.path().extension() == ".json") files.push_back(entry.path());
            }
        } else {
            files.push_back(arg);
        }
        for (const auto& f : files) count += check_file(f, ops);
    }
    // Every request op has a vector (SPEC 13 promises one per op).
    for (const char* op : {"hello", "models", "lease", "release", "infer", "heartbeat", "goodbye", "status", "load",
                           "unload", "shutdown", "reload"}) {
        if (!ops.count(std::string("request ") + op)) fail(op, "no request vector");
    }
    if (count == 0) fail("golden", "no vectors found");
    // SHA-256 names TCP token files: the FIPS 180-2 example.
    if (trtd::sha256_hex("abc") != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        fail("sha256", trtd::sha256_hex("abc"));
    std::cout << count << " golden vectors: " << (count - failures) << " decoded to their message and re-encoded "
              << "byte for byte, " << failures << " failures\n";
    return failures ? 1 : 0;
}
