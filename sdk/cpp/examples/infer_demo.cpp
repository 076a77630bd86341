// The daemon's built-in demo model (x float32[?,64] -> y float32[?,10]) from C++: the copying
// path, your own output buffer, the zero-copy path, and an error the daemon explains.
//
//   trtd serve &                      # serves builtin:demo
//   ./trtd_infer_demo [ENDPOINT]      # default: TRTD_ENDPOINT, else the daemon found running
#include <algorithm>
#include <cmath>
#include <iostream>
#include <vector>

#include <trtd/trtd.hpp>

int main(int argc, char** argv) {
    try {
        trtd::ClientOptions options;
        if (argc > 1) options.endpoint = argv[1];
        options.timeout_s = 10;
        options.name = "trtd-cpp-example";
        trtd::Client client(options);
        std::cout << "connected to " << client.endpoint() << " (daemon " << client.daemon_id() << ", trtd "
                  << client.server_version() << ")\n";
        for (const auto& info : client.models()) {
            std::cout << "  model " << info.name << " (" << info.backend << ", " << info.state << ")";
            for (const auto& in : info.inputs) std::cout << " in " << in.name << " " << trtd::format_tensor(in.dtype, in.shape);
            for (const auto& out : info.outputs) std::cout << " out " << out.name << " " << trtd::format_tensor(out.dtype, out.shape);
            std::cout << "\n";
        }

        // A batch of 4 rows of 64 features.
        const std::int64_t batch = 4;
        std::vector<float> x(batch * 64);
        for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.1f * static_cast<float>(i));

        // Copying path: x is copied into the model's shared-memory region; y is a Tensor of its own.
        trtd::Model demo = client.model("demo");
        trtd::Outputs outputs = demo.infer({{"x", trtd::ConstTensorView(x, {batch, 64})}});
        const trtd::Tensor& y = outputs.at("y");
        std::cout << "copying path: y is " << y.describe() << ", y[0] =";
        for (float v : trtd::Span<const float>(y.as<float>().data(), 10)) std::cout << " " << v;
        std::cout << "\n";

        // Into a buffer you own (no allocation per call for large outputs).
        std::vector<float> mine(batch * 10);
        demo.infer_into({{"x", trtd::ConstTensorView(x, {batch, 64})}}, {{"y", trtd::TensorView(mine, {batch, 10})}});

        // Zero-copy path: write straight into the region, read the result where the daemon wrote it.
        auto slots = demo.zero_copy_inputs({{"x", {batch, 64}}});
        std::copy(x.begin(), x.end(), slots.at("x").as<float>().begin());
        trtd::OutputViews views = demo.run_zero_copy();
        auto in_place = views.at("y").as<float>();

        bool same = std::equal(in_place.begin(), in_place.end(), y.as<float>().begin()) &&
                    std::equal(mine.begin(), mine.end(), y.as<float>().begin());
        std::cout << "zero-copy path and your own buffer: " << (same ? "the same result" : "DIFFERENT RESULTS") << "\n";
        if (auto timing = demo.last_timing())
            std::cout << "daemon time: " << timing->total_us << " us (compute " << timing->compute_us << " us)\n";

        // Errors are exceptions carrying the daemon's explanation.
        try {
            std::vector<double> wrong(64);
            demo.infer({{"x", trtd::ConstTensorView(wrong, {1, 64})}});
        } catch (const trtd::InvalidInput& e) {
            std::cout << "a float64 input is refused: " << e.what() << " [" << e.code() << "]\n";
        }
        return same ? 0 : 1;
    } catch (const trtd::DaemonNotRunning& e) {
        std::cerr << "trtd_infer_demo: " << e.what() << "\n";
        return 3;
    } catch (const trtd::Error& e) {
        std::cerr << "trtd_infer_demo: " << e.kind() << ": " << e.what() << "\n";
        return 1;
    }
}
