// The C++ client's side of `python -m trtd.bench.cpp_client`: timed blocks of calls on request.
//
//   trtd_latency_bench --endpoint E --model M --input NAME:DTYPE:D0xD1x..:FILE ...
//                      [--floor ENDPOINT --floor-message FILE]
//
// The Python harness interleaves these blocks with its own systems (floor, in-process, the Python
// SDK), so that machine noise falls on all of them alike; it sends one command per line:
//
//   run SYSTEM N SETTLE   SETTLE untimed then N timed calls; answers "samples NS NS ...".
//                         SYSTEM: copy (Model::infer: the inputs copied in, the outputs copied out),
//                         zero_copy (run_zero_copy on views filled once beforehand: no input write),
//                         floor (cppzmq round trip of the floor's message to its echo process,
//                         after a memcpy of the inputs into a shared mapping: the floor, in C++)
//   output DIR            writes both paths' outputs to DIR/{copy,zero_copy}_NAME.bin; answers "ok"
//   quit
//
// Each sample is one call timed with std::chrono::steady_clock, in nanoseconds.
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>
#include <zmq.hpp>

#ifndef _WIN32
#include <sys/mman.h>
#endif

#include <trtd/trtd.hpp>

namespace {

struct Input {
    std::string name;
    trtd::DType dtype;
    trtd::Shape shape;
    std::string bytes;
};

std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot read " + path);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

Input parse_input(const std::string& spec) {
    // NAME:DTYPE:D0xD1x...:FILE
    std::vector<std::string> parts;
    std::stringstream in(spec);
    std::string part;
    while (std::getline(in, part, ':')) parts.push_back(part);
    if (parts.size() < 4) throw std::runtime_error("--input NAME:DTYPE:DIMS:FILE, got " + spec);
    Input input;
    input.name = parts[0];
    auto dtype = trtd::parse_dtype(parts[1]);
    if (!dtype) throw std::runtime_error("unknown dtype " + parts[1]);
    input.dtype = *dtype;
    std::stringstream dims(parts[2]);
    while (std::getline(dims, part, 'x')) input.shape.push_back(std::stoll(part));
    std::string file = spec.substr(parts[0].size() + parts[1].size() + parts[2].size() + 3);
    input.bytes = read_file(file);
    return input;
}

// The floor in C++: the same echo process and message as the Python floor.
struct Floor {
    zmq::context_t context{1};
    zmq::socket_t socket{context, zmq::socket_type::dealer};
    std::string message;
    void* block = nullptr;
    std::size_t block_bytes = 0;

    Floor(const std::string& endpoint, std::string msg, std::size_t nbytes) : message(std::move(msg)) {
        socket.set(zmq::sockopt::linger, 0);
        socket.connect(endpoint);
        socket.send(zmq::buffer(std::string("hello")), zmq::send_flags::none);
        zmq::message_t reply;
        if (!socket.recv(reply)) throw std::runtime_error("no answer from the floor's echo process");
        block_bytes = nbytes ? nbytes : 1;
#ifndef _WIN32
        block = mmap(nullptr, block_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (block == MAP_FAILED) throw std::runtime_error("mmap failed");
#else
        block = new char[block_bytes];
#endif
        std::memset(block, 0, block_bytes);
    }

    void step(const std::vector<Input>& inputs) {
        std::size_t offset = 0;
        for (const auto& in : inputs) {
            std::memcpy(static_cast<char*>(block) + offset, in.bytes.data(), in.bytes.size());
            offset = (offset + in.bytes.size() + 255) / 256 * 256;
        }
        socket.send(zmq::buffer(message), zmq::send_flags::none);
        zmq::message_t reply;
        (void)socket.recv(reply);
    }
};

}  // namespace

int main(int argc, char** argv) {
    try {
        std::string endpoint, model, floor_endpoint, floor_message;
        std::vector<Input> inputs;
        for (int i = 1; i + 1 < argc; i += 2) {
            std::string flag = argv[i], value = argv[i + 1];
            if (flag == "--endpoint") endpoint = value;
            else if (flag == "--model") model = value;
            else if (flag == "--input") inputs.push_back(parse_input(value));
            else if (flag == "--floor") floor_endpoint = value;
            else if (flag == "--floor-message") floor_message = read_file(value);
            else throw std::runtime_error("unknown option " + flag);
        }
        trtd::ClientOptions options;
        options.endpoint = endpoint;
        options.timeout_s = 120;
        options.name = "trtd-cpp-bench";
        trtd::Client client(options);
        trtd::Model handle = client.model(model);

        trtd::Inputs feed;
        trtd::Shapes shapes;
        std::size_t region_bytes = 0;
        for (const auto& in : inputs) {
            feed.emplace(in.name, trtd::ConstTensorView(in.dtype, in.shape, in.bytes.data()));
            shapes[in.name] = in.shape;
            region_bytes = (region_bytes + in.bytes.size() + 255) / 256 * 256;
        }
        // Both paths share the handle's region and layout, as in the Python benchmark: the zero-copy
        // views stay valid across copying calls of the same shapes.
        auto slots = handle.zero_copy_inputs(shapes);
        for (const auto& in : inputs) std::memcpy(slots.at(in.name).data(), in.bytes.data(), in.bytes.size());
        std::unique_ptr<Floor> floor;
        if (!floor_endpoint.empty()) floor = std::make_unique<Floor>(floor_endpoint, floor_message, region_bytes);

        auto call = [&](const std::string& system) {
            if (system == "copy") handle.infer(feed);
            else if (system == "zero_copy") handle.run_zero_copy();
            else if (system == "floor" && floor) floor->step(inputs);
            else throw std::runtime_error("unknown system " + system);
        };

        std::cout << "ready" << std::endl;
        std::string line;
        while (std::getline(std::cin, line)) {
            std::stringstream cmd(line);
            std::string what;
            cmd >> what;
            if (what == "quit") break;
            if (what == "run") {
                std::string system;
                long n = 0, settle = 0;
                cmd >> system >> n >> settle;
                for (long i = 0; i < settle; ++i) call(system);
                std::vector<long long> samples;
                samples.reserve(static_cast<std::size_t>(n));
                for (long i = 0; i < n; ++i) {
                    auto t0 = std::chrono::steady_clock::now();
                    call(system);
                    auto t1 = std::chrono::steady_clock::now();
                    samples.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
                }
                std::cout << "samples";
                for (auto s : samples) std::cout << " " << s;
                std::cout << std::endl;
            } else if (what == "output") {
                std::string dir;
                cmd >> dir;
                for (const auto& [name, tensor] : handle.infer(feed)) {
                    std::ofstream(dir + "/copy_" + name + ".bin", std::ios::binary)
                        .write(static_cast<const char*>(tensor.data()), static_cast<std::streamsize>(tensor.nbytes()));
                }
                for (const auto& [name, view] : handle.run_zero_copy()) {
                    std::ofstream(dir + "/zero_copy_" + name + ".bin", std::ios::binary)
                        .write(static_cast<const char*>(view.data()), static_cast<std::streamsize>(view.nbytes()));
                }
                std::cout << "ok" << std::endl;
            } else {
                std::cout << "error unknown command " << what << std::endl;
            }
        }
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "trtd_latency_bench: " << e.what() << "\n";
        std::cout << "error " << e.what() << std::endl;
        return 1;
    }
}
