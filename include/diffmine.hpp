/*
 * libdiffmine for C++17: a header-only layer over diffmine.h.
 *
 *  - Handles are move-only RAII classes (Model, Image, Miner, ParallelMiner) that free themselves.
 *  - A failed call throws diffmine::Error, which carries the dm_status and the library's message.
 *  - Inputs are taken as Span<const T> (from a std::vector, a std::array, or a pointer and a length);
 *    results come back as std::vector.
 *  - Progress is a std::function<bool(done, total, value)>: returning false cancels the work, which
 *    then throws Error with DM_ERR_CANCELLED. An exception thrown by the function cancels the work
 *    too and is rethrown from the call that ran it: no C++ exception crosses the C library.
 *
 * Options are the C structs, filled with their defaults by the `default_*_options()` functions.
 */
#ifndef DIFFMINE_HPP
#define DIFFMINE_HPP

#include <array>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "diffmine.h"

namespace diffmine {

/// A failed library call: its status and the library's message.
class Error : public std::runtime_error {
public:
    Error(dm_status status, const std::string &message) : std::runtime_error(message), status_(status) {}

    dm_status status() const noexcept { return status_; }

private:
    dm_status status_;
};

/// A borrowed contiguous range (C++17 has no std::span): a pointer and a length in elements.
template <typename T>
class Span {
public:
    constexpr Span() noexcept = default;
    constexpr Span(T *data, std::size_t size) noexcept : data_(data), size_(size) {}
    template <typename Allocator>
    Span(const std::vector<std::remove_const_t<T>, Allocator> &values) noexcept  // NOLINT: implicit on purpose
        : data_(values.data()), size_(values.size()) {
        static_assert(std::is_const<T>::value, "a const vector gives a Span of const elements");
    }
    template <typename Allocator>
    Span(std::vector<std::remove_const_t<T>, Allocator> &values) noexcept  // NOLINT: implicit on purpose
        : data_(values.data()), size_(values.size()) {}
    template <std::size_t N>
    constexpr Span(std::array<std::remove_const_t<T>, N> &values) noexcept  // NOLINT: implicit on purpose
        : data_(values.data()), size_(N) {}
    template <std::size_t N>
    constexpr Span(const std::array<std::remove_const_t<T>, N> &values) noexcept  // NOLINT: implicit on purpose
        : data_(values.data()), size_(N) {}

    constexpr T *data() const noexcept { return data_; }
    constexpr std::size_t size() const noexcept { return size_; }
    constexpr bool empty() const noexcept { return size_ == 0; }
    constexpr T *begin() const noexcept { return data_; }
    constexpr T *end() const noexcept { return data_ + size_; }
    constexpr T &operator[](std::size_t i) const noexcept { return data_[i]; }

private:
    T *data_ = nullptr;
    std::size_t size_ = 0;
};

/// Progress of long work: (units done, units in all, current loss or NaN). Return false to cancel.
using Progress = std::function<bool(std::uint64_t done, std::uint64_t total, double value)>;

namespace detail {

inline void check(dm_status status) {
    if (status != DM_OK) {
        throw Error(status, dm_last_error());
    }
}

/// Carries a Progress through the C callback: the trampoline catches whatever the function throws,
/// cancels the work, and `finish` rethrows it once the C call has returned.
class ProgressBridge {
public:
    explicit ProgressBridge(const Progress &progress) : progress_(progress) {}

    dm_progress_fn callback() const noexcept { return progress_ ? &ProgressBridge::trampoline : nullptr; }
    void *user_data() noexcept { return this; }

    void finish(dm_status status) const {
        if (error_) {
            std::rethrow_exception(error_);
        }
        check(status);
    }

private:
    static std::int32_t trampoline(std::uint64_t done, std::uint64_t total, double value, void *user_data) noexcept {
        auto *self = static_cast<ProgressBridge *>(user_data);
        try {
            return self->progress_(done, total, value) ? 0 : 1;
        } catch (...) {
            self->error_ = std::current_exception();
            return 1;
        }
    }

    const Progress &progress_;
    std::exception_ptr error_;
};

/// A string the library writes with the (out, out_len, out_needed) convention: asks the size, then
/// the text.
template <typename Call>
std::string read_string(Call call) {
    std::size_t needed = 0;
    check(call(nullptr, 0, &needed));
    std::string text(needed, '\0');
    check(call(&text[0], text.size(), &needed));
    text.resize(needed > 0 ? needed - 1 : 0);
    return text;
}

/// Results the library writes with the (out, out_len, out_count) convention, after a count call.
template <typename T, typename Count, typename Fill>
std::vector<T> read_array(Count count_call, Fill fill_call) {
    std::size_t count = 0;
    check(count_call(&count));
    std::vector<T> values(count);
    check(fill_call(values.data(), values.size(), &count));
    values.resize(count);
    return values;
}

inline const char *c_str_or_null(const std::string *text) { return text ? text->c_str() : nullptr; }

/// Owns one library handle: move-only, released with its `dm_<type>_free`.
template <typename T, dm_status (*Free)(T *)>
class Handle {
public:
    explicit Handle(T *handle) noexcept : handle_(handle) {}
    Handle(Handle &&other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
    Handle &operator=(Handle &&other) noexcept {
        if (this != &other) {
            reset();
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }
    Handle(const Handle &) = delete;
    Handle &operator=(const Handle &) = delete;
    ~Handle() { reset(); }

    T *get() const noexcept { return handle_; }

private:
    void reset() noexcept {
        if (handle_ != nullptr) {
            Free(handle_);  // only fails for a handle that is not live, which this class never holds
            handle_ = nullptr;
        }
    }

    T *handle_;
};

}  // namespace detail

/// The library's version, "MAJOR.MINOR.PATCH".
inline std::string version() { return dm_version(); }

/// Default-filled options structs, ready to change field by field.
inline dm_model_options default_model_options() {
    dm_model_options options;
    detail::check(dm_model_options_default(&options));
    return options;
}
inline dm_image_options default_image_options() {
    dm_image_options options;
    detail::check(dm_image_options_default(&options));
    return options;
}
inline dm_typicality_options default_typicality_options() {
    dm_typicality_options options;
    detail::check(dm_typicality_options_default(&options));
    return options;
}
inline dm_miner_options default_miner_options() {
    dm_miner_options options;
    detail::check(dm_miner_options_default(&options));
    return options;
}
inline dm_parallel_miner_options default_parallel_miner_options() {
    dm_parallel_miner_options options;
    detail::check(dm_parallel_miner_options_default(&options));
    return options;
}
inline dm_parallel_report_options default_parallel_report_options() {
    dm_parallel_report_options options;
    detail::check(dm_parallel_report_options_default(&options));
    return options;
}
inline dm_translate_options default_translate_options() {
    dm_translate_options options;
    detail::check(dm_translate_options_default(&options));
    return options;
}
inline dm_generate_options default_generate_options() {
    dm_generate_options options;
    detail::check(dm_generate_options_default(&options));
    return options;
}

/// A row-major map of `height` × `width` values.
struct Map {
    std::uint32_t height = 0;
    std::uint32_t width = 0;
    std::vector<float> values;
};

/// A typicality map and, when asked for, the N × 2 × h × w per-sample losses at latent resolution.
struct TypicalityResult {
    Map map;
    std::vector<float> sample_losses;
};

/// An owned decoded image (PNG, JPEG, BMP or DICOM).
class Image {
public:
    static Image open(const std::string &path, const dm_image_options *options = nullptr) {
        dm_image *image = nullptr;
        detail::check(dm_image_open(path.c_str(), options, &image));
        return Image(image);
    }

    static Image from_buffer(Span<const std::uint8_t> file_bytes, const dm_image_options *options = nullptr) {
        dm_image *image = nullptr;
        detail::check(dm_image_open_buffer(file_bytes.data(), file_bytes.size(), options, &image));
        return Image(image);
    }

    /// Its pixels as float32 in [0, 1], valid while this Image lives.
    dm_image_view view() const {
        dm_image_view view;
        detail::check(dm_image_get_view(handle_.get(), &view));
        return view;
    }

    /// Size and DICOM metadata; the strings are owned by this Image.
    dm_image_info info() const {
        dm_image_info info{};
        info.struct_size = sizeof info;
        detail::check(dm_image_get_info(handle_.get(), &info));
        return info;
    }

    const dm_image *get() const noexcept { return handle_.get(); }

private:
    explicit Image(dm_image *image) : handle_(image) {}
    detail::Handle<dm_image, dm_image_free> handle_;
};

/// A loaded model; its methods may be called from several threads at once.
class Model {
public:
    explicit Model(const std::string &path, const dm_model_options *options = nullptr) : handle_(open(path, options)) {}

    dm_model_info info() const {
        dm_model_info info{};
        info.struct_size = sizeof info;
        detail::check(dm_model_get_info(handle_.get(), &info));
        return info;
    }

    /// The latent (height, width) of an image of `height` × `width` pixels.
    std::pair<std::uint32_t, std::uint32_t> latent_size(std::uint32_t height, std::uint32_t width) const {
        std::uint32_t h = 0;
        std::uint32_t w = 0;
        detail::check(dm_model_latent_size(handle_.get(), height, width, &h, &w));
        return {h, w};
    }

    std::vector<std::int64_t> tokenize(const std::string &text) const {
        std::vector<std::int64_t> ids(info().max_tokens);
        std::size_t count = 0;
        detail::check(dm_model_tokenize(handle_.get(), text.c_str(), ids.data(), ids.size(), &count));
        ids.resize(count);
        return ids;
    }

    /// max_tokens × text_embedding_dim floats, row-major.
    std::vector<float> text_embeddings(const std::string &text) const {
        const dm_model_info i = info();
        std::vector<float> out(static_cast<std::size_t>(i.max_tokens) * i.text_embedding_dim);
        detail::check(dm_model_text_embeddings(handle_.get(), text.c_str(), out.data(), out.size()));
        return out;
    }

    /// latent_channels × h × w floats (h, w from latent_size).
    std::vector<float> encode(const dm_image_view &image) const {
        const auto size = latent_size(image.height, image.width);
        std::vector<float> out(static_cast<std::size_t>(info().latent_channels) * size.first * size.second);
        detail::check(dm_model_encode(handle_.get(), &image, out.data(), out.size()));
        return out;
    }

    /// RGB8 of (height·f) × (width·f) × 3 bytes for latents of `height` × `width`.
    std::vector<std::uint8_t> decode(Span<const float> latents, std::uint32_t height, std::uint32_t width) const {
        const std::size_t f = info().vae_scale_factor;
        std::vector<std::uint8_t> out(height * f * width * f * 3);
        detail::check(dm_model_decode(handle_.get(), latents.data(), latents.size(), height, width, out.data(), out.size()));
        return out;
    }

    /// The UNet's output for `batch` latents at `timesteps`, as many floats as `latents`.
    std::vector<float> predict_noise(Span<const float> latents, std::uint32_t batch, std::uint32_t height, std::uint32_t width,
                                     Span<const std::int64_t> timesteps, Span<const float> text_embeddings,
                                     std::uint32_t text_tokens) const {
        std::vector<float> out(latents.size());
        detail::check(dm_model_predict_noise(handle_.get(), latents.data(), latents.size(), batch, height, width,
                                             timesteps.data(), timesteps.size(), text_embeddings.data(),
                                             text_embeddings.size(), text_tokens, out.data(), out.size()));
        return out;
    }

    /// The (height, width) of the typicality map of `image` under `options` (nullptr: defaults).
    static std::pair<std::uint32_t, std::uint32_t> typicality_map_size(const dm_image_view &image,
                                                                       const dm_typicality_options *options = nullptr) {
        std::uint32_t h = 0;
        std::uint32_t w = 0;
        detail::check(dm_typicality_map_size(&image, options, &h, &w));
        return {h, w};
    }

    /// The typicality map of `image` for `prompt` against `null_prompt`.
    Map typicality_map(const dm_image_view &image, const std::string &prompt, const std::string &null_prompt,
                       const dm_typicality_options *options = nullptr, const Progress &progress = {}) const {
        return typicality(image, prompt, null_prompt, options, progress, false).map;
    }

    /// The map and the per-sample losses.
    TypicalityResult typicality_with_losses(const dm_image_view &image, const std::string &prompt,
                                            const std::string &null_prompt, const dm_typicality_options *options = nullptr,
                                            const Progress &progress = {}) const {
        return typicality(image, prompt, null_prompt, options, progress, true);
    }

    /// One RGB8 image per prompt, height × width × 3 bytes each (the options' size), concatenated.
    std::vector<std::uint8_t> generate(const std::vector<std::string> &prompts, const dm_generate_options *options = nullptr,
                                       const Progress &progress = {}) const {
        const dm_generate_options settings = options ? *options : default_generate_options();
        std::vector<const char *> pointers = c_strings(prompts);
        std::vector<std::uint8_t> out(prompts.size() * settings.height * settings.width * 3);
        detail::ProgressBridge bridge(progress);
        bridge.finish(dm_model_generate(handle_.get(), pointers.data(), pointers.size(), &settings, bridge.callback(),
                                        bridge.user_data(), out.data(), out.size()));
        return out;
    }

    /// Plug-and-Play translations of `image` to each target prompt: one RGB8 image of the source's
    /// size per target, concatenated.
    std::vector<std::uint8_t> translate(const dm_image_view &image, const std::string &source_prompt,
                                        const std::vector<std::string> &target_prompts,
                                        const dm_translate_options *options = nullptr, const Progress &progress = {}) const {
        std::vector<const char *> pointers = c_strings(target_prompts);
        std::vector<std::uint8_t> out(target_prompts.size() * image.height * image.width * 3);
        detail::ProgressBridge bridge(progress);
        bridge.finish(dm_model_translate(handle_.get(), &image, source_prompt.c_str(), pointers.data(), pointers.size(),
                                         options, bridge.callback(), bridge.user_data(), out.data(), out.size(), nullptr, 0));
        return out;
    }

    const dm_model *get() const noexcept { return handle_.get(); }

private:
    static dm_model *open(const std::string &path, const dm_model_options *options) {
        dm_model *model = nullptr;
        detail::check(dm_model_open(path.c_str(), options, &model));
        return model;
    }

    static std::vector<const char *> c_strings(const std::vector<std::string> &texts) {
        std::vector<const char *> pointers;
        pointers.reserve(texts.size());
        for (const std::string &text : texts) {
            pointers.push_back(text.c_str());
        }
        return pointers;
    }

    TypicalityResult typicality(const dm_image_view &image, const std::string &prompt, const std::string &null_prompt,
                                const dm_typicality_options *options, const Progress &progress, bool with_losses) const {
        TypicalityResult result;
        const auto size = typicality_map_size(image, options);
        result.map.height = size.first;
        result.map.width = size.second;
        result.map.values.resize(static_cast<std::size_t>(size.first) * size.second);
        if (with_losses) {
            const std::uint32_t samples = options ? options->samples : default_typicality_options().samples;
            const auto latent = latent_size(size.first, size.second);
            result.sample_losses.resize(static_cast<std::size_t>(samples) * 2 * latent.first * latent.second);
        }
        detail::ProgressBridge bridge(progress);
        bridge.finish(dm_typicality_map(handle_.get(), &image, prompt.c_str(), null_prompt.c_str(), options,
                                        bridge.callback(), bridge.user_data(), result.map.values.data(),
                                        result.map.values.size(),
                                        with_losses ? result.sample_losses.data() : nullptr,
                                        result.sample_losses.size()));
        return result;
    }

    detail::Handle<dm_model, dm_model_free> handle_;
};

/// The typical patches of a map: up to `max_boxes` squares of `patch_size`, best first.
inline std::vector<dm_box> select_patches(const Map &map, std::uint32_t patch_size, std::uint32_t max_boxes) {
    std::vector<dm_box> boxes(max_boxes);
    std::size_t count = 0;
    detail::check(dm_patches_select(map.values.data(), map.values.size(), map.height, map.width, patch_size, max_boxes,
                                    boxes.data(), boxes.size(), &count));
    boxes.resize(count);
    return boxes;
}

/// A mining job over labelled images. Keeps its model alive.
class Miner {
public:
    Miner(const Model &model, const dm_miner_options &options) : handle_(create(model, options)) {}

    void add_file(const std::string &path, const std::string &label) {
        detail::check(dm_miner_add_file(handle_.get(), path.c_str(), label.c_str()));
    }

    /// Adds pixels held in memory (copied); `name` stands for the image in the results.
    void add_image(const dm_image_view &image, const std::string &label, const std::string *name = nullptr) {
        detail::check(dm_miner_add_image(handle_.get(), &image, detail::c_str_or_null(name), label.c_str()));
    }

    void run(const Progress &progress = {}) {
        detail::ProgressBridge bridge(progress);
        bridge.finish(dm_miner_run(handle_.get(), bridge.callback(), bridge.user_data()));
    }

    std::size_t image_count() const {
        std::size_t count = 0;
        detail::check(dm_miner_image_count(handle_.get(), &count));
        return count;
    }

    std::string image_name(std::uint32_t image) const {
        return detail::read_string([&](char *out, std::size_t len, std::size_t *needed) {
            return dm_miner_image_name(handle_.get(), image, out, len, needed);
        });
    }

    std::size_t label_count() const {
        std::size_t count = 0;
        detail::check(dm_miner_label_count(handle_.get(), &count));
        return count;
    }

    std::string label_name(std::uint32_t label) const {
        return detail::read_string([&](char *out, std::size_t len, std::size_t *needed) {
            return dm_miner_label_name(handle_.get(), label, out, len, needed);
        });
    }

    std::vector<dm_mined_patch> patches(std::uint32_t label) const {
        return detail::read_array<dm_mined_patch>(
            [&](std::size_t *count) { return dm_miner_patch_count(handle_.get(), label, count); },
            [&](dm_mined_patch *out, std::size_t len, std::size_t *count) {
                return dm_miner_patches(handle_.get(), label, out, len, count);
            });
    }

    std::vector<dm_mined_cluster> clusters(std::uint32_t label) const {
        return detail::read_array<dm_mined_cluster>(
            [&](std::size_t *count) { return dm_miner_cluster_count(handle_.get(), label, count); },
            [&](dm_mined_cluster *out, std::size_t len, std::size_t *count) {
                return dm_miner_clusters(handle_.get(), label, out, len, count);
            });
    }

    void write_report(const std::string &out_dir) const {
        detail::check(dm_miner_write_report(handle_.get(), out_dir.c_str()));
    }

private:
    static dm_miner *create(const Model &model, const dm_miner_options &options) {
        dm_miner *miner = nullptr;
        detail::check(dm_miner_create(model.get(), &options, &miner));
        return miner;
    }

    detail::Handle<dm_miner, dm_miner_free> handle_;
};

/// A co-typicality mining job across labels. Keeps its model alive.
class ParallelMiner {
public:
    ParallelMiner(const Model &model, const std::vector<std::string> &labels, const dm_parallel_miner_options &options)
        : handle_(create(model, labels, options)) {}

    void add_file(const std::string &path, const std::string &label) {
        detail::check(dm_parallel_miner_add_file(handle_.get(), path.c_str(), label.c_str()));
    }

    void add_image(const dm_image_view &image, const std::string &label, const std::string *name = nullptr) {
        detail::check(dm_parallel_miner_add_image(handle_.get(), &image, detail::c_str_or_null(name), label.c_str()));
    }

    void run(const Progress &progress = {}) {
        detail::ProgressBridge bridge(progress);
        bridge.finish(dm_parallel_miner_run(handle_.get(), bridge.callback(), bridge.user_data()));
    }

    std::size_t image_count() const {
        std::size_t count = 0;
        detail::check(dm_parallel_miner_image_count(handle_.get(), &count));
        return count;
    }

    std::string image_name(std::uint32_t image) const {
        return detail::read_string([&](char *out, std::size_t len, std::size_t *needed) {
            return dm_parallel_miner_image_name(handle_.get(), image, out, len, needed);
        });
    }

    std::vector<dm_cotypical_element> elements() const {
        return detail::read_array<dm_cotypical_element>(
            [&](std::size_t *count) { return dm_parallel_miner_element_count(handle_.get(), count); },
            [&](dm_cotypical_element *out, std::size_t len, std::size_t *count) {
                return dm_parallel_miner_elements(handle_.get(), out, len, count);
            });
    }

    std::vector<dm_mined_cluster> clusters() const {
        return detail::read_array<dm_mined_cluster>(
            [&](std::size_t *count) { return dm_parallel_miner_cluster_count(handle_.get(), count); },
            [&](dm_mined_cluster *out, std::size_t len, std::size_t *count) {
                return dm_parallel_miner_clusters(handle_.get(), out, len, count);
            });
    }

    void write_report(const std::string &out_dir, const dm_parallel_report_options *options = nullptr) const {
        detail::check(dm_parallel_miner_write_report(handle_.get(), out_dir.c_str(), options));
    }

private:
    static dm_parallel_miner *create(const Model &model, const std::vector<std::string> &labels,
                                     const dm_parallel_miner_options &options) {
        std::vector<const char *> pointers;
        pointers.reserve(labels.size());
        for (const std::string &label : labels) {
            pointers.push_back(label.c_str());
        }
        dm_parallel_miner *miner = nullptr;
        detail::check(dm_parallel_miner_create(model.get(), pointers.data(), pointers.size(), &options, &miner));
        return miner;
    }

    detail::Handle<dm_parallel_miner, dm_parallel_miner_free> handle_;
};

}  // namespace diffmine

#endif /* DIFFMINE_HPP */
