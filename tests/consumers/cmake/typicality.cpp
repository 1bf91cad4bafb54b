// typicality MODEL_DIR CASE_DIR OUT_MAP: the C++ wrapper as a CMake user builds against an installed
// libdiffmine. Computes the case's typicality map (see tests/consumers/pkgconfig/typicality.c for the
// case files) and writes it to OUT_MAP as raw float32 for tests/install.rs to compare with the
// reference; checks on the way that progress reaches a std::function, that an exception thrown there
// comes back out of the call, and that a failed call throws diffmine::Error with its status.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <diffmine.hpp>

namespace {

template <typename T>
std::vector<T> read_values(const std::string &path) {
    std::ifstream file(path, std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    if (!file.good() && !file.eof()) {
        throw std::runtime_error("cannot read " + path);
    }
    std::vector<T> values(bytes.size() / sizeof(T));
    std::copy(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(values.size() * sizeof(T)),
              reinterpret_cast<char *>(values.data()));
    return values;
}

std::string read_text(const std::string &path) {
    std::ifstream file(path);
    if (!file) {
        throw std::runtime_error("cannot open " + path);
    }
    return std::string((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
}

int failures = 0;

void expect(bool ok, const char *what) {
    if (!ok) {
        std::cerr << "typicality.cpp: FAILED: " << what << "\n";
        failures++;
    }
}

void check_errors_are_exceptions(const diffmine::Model &model, const dm_image_view &image, dm_typicality_options options) {
    try {
        diffmine::Model missing("/nonexistent/diffmine-model");
        expect(false, "opening a missing model throws");
    } catch (const diffmine::Error &e) {
        expect(e.status() == DM_ERR_IO, "a missing model is DM_ERR_IO");
        expect(std::string(e.what()).find("/nonexistent/diffmine-model") != std::string::npos, "the message names the path");
    }
    // The first sample only: one UNet call, after which the progress function throws.
    options.noise_len /= options.samples;
    options.samples = 1;
    options.batch = 1;
    options.timesteps_len = 1;
    try {
        model.typicality_map(image, "a", "", &options, [](std::uint64_t, std::uint64_t, double) -> bool {
            throw std::logic_error("thrown by the progress function");
        });
        expect(false, "an exception in the progress function comes out of the call");
    } catch (const std::logic_error &e) {
        expect(std::string(e.what()) == "thrown by the progress function", "the progress function's own exception");
    }
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 4) {
        std::cerr << "usage: " << argv[0] << " MODEL_DIR CASE_DIR OUT_MAP\n";
        return 2;
    }
    const std::string case_dir = argv[2];
    try {
        std::cout << "libdiffmine " << diffmine::version() << "\n";
        unsigned height = 0, width = 0, samples = 0;
        std::ifstream(case_dir + "/shape.txt") >> height >> width >> samples;
        const std::vector<float> pixels = read_values<float>(case_dir + "/image.f32");
        const std::vector<float> noise = read_values<float>(case_dir + "/noise.f32");
        const std::vector<std::int64_t> timesteps = read_values<std::int64_t>(case_dir + "/timesteps.i64");

        const diffmine::Model model(argv[1]);
        dm_typicality_options options = diffmine::default_typicality_options();
        options.samples = samples;
        options.batch = 1;
        options.latent = DM_LATENT_MEAN;
        options.timesteps = timesteps.data();
        options.timesteps_len = timesteps.size();
        options.noise = noise.data();
        options.noise_len = noise.size();
        const dm_image_view image = {pixels.data(), pixels.size() * sizeof(float), width, height, 3, DM_PIXEL_F32,
                                     width * 3 * sizeof(float)};

        std::uint64_t calls = 0, last_done = 0;
        const diffmine::Map map = model.typicality_map(image, read_text(case_dir + "/prompt.txt"),
                                                       read_text(case_dir + "/null_prompt.txt"), &options,
                                                       [&](std::uint64_t done, std::uint64_t total, double) {
                                                           calls++;
                                                           last_done = done;
                                                           return total == samples;
                                                       });
        expect(map.height == height && map.width == width, "the map has the image's size");
        expect(calls == samples && last_done == samples, "progress after each sample");
        std::ofstream(argv[3], std::ios::binary)
            .write(reinterpret_cast<const char *>(map.values.data()), static_cast<std::streamsize>(map.values.size() * sizeof(float)));

        check_errors_are_exceptions(model, image, options);
    } catch (const std::exception &e) {
        std::cerr << "typicality.cpp: " << e.what() << "\n";
        return 1;
    }
    return failures;
}
