// Small RAII wrappers and helpers over the HDF5 C API, private to src/io/archive*.cpp.
//
// HDF5 reports failures as negative ids/statuses and prints its error stack to stderr by default.
// We silence the printing (per thread: Debian's serial build is thread-safe, whose error settings
// are per thread) and turn each failure into one sdmpi::Error line that names the archive, the
// operation, and the innermost HDF5 message (which carries errno texts such as "Permission denied").
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "sdmpi/archive.h"
#include "sdmpi/error.h"

namespace sdmpi::h5 {

// Turns off HDF5's automatic error printing for the calling thread. Cheap; call at every entry.
void quiet();

// The innermost message on the HDF5 error stack (empty when none); clears the stack.
std::string error_detail();

// Throws Error("<context>: <what> (HDF5: <detail>)"), with a hint for file-locking failures;
// the first form takes the detail from the error stack.
[[noreturn]] void fail(const std::string& context, const std::string& what);
[[noreturn]] void fail(const std::string& context, const std::string& what, const std::string& detail);
// True when an error detail says that HDF5 could not lock the file.
bool is_lock_failure(const std::string& detail);

// An owned hid_t, closed with the matching H5?close.
class Id {
 public:
  using Closer = herr_t (*)(hid_t);
  Id() = default;
  Id(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  Id(Id&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), closer_(o.closer_) {}
  Id& operator=(Id&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
      closer_ = o.closer_;
    }
    return *this;
  }
  ~Id() { reset(); }
  // Closes now; returns false when HDF5 reported a failure (for File: the final flush failed).
  bool reset() {
    bool ok = true;
    if (id_ >= 0 && closer_) ok = closer_(id_) >= 0;
    id_ = H5I_INVALID_HID;
    return ok;
  }
  hid_t get() const { return id_; }
  explicit operator bool() const { return id_ >= 0; }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

// Each checks the id and throws fail(context, what) when HDF5 returned an error.
Id file(hid_t id, const std::string& context, const std::string& what);
Id dataset(hid_t id, const std::string& context, const std::string& what);
Id dataspace(hid_t id, const std::string& context, const std::string& what);
Id datatype(hid_t id, const std::string& context, const std::string& what);
Id plist(hid_t id, const std::string& context, const std::string& what);
Id attribute(hid_t id, const std::string& context, const std::string& what);
void check(herr_t status, const std::string& context, const std::string& what);

// File-access properties: our locking policy (see archive.h), or no locking at all when !lock.
Id file_access(const std::string& context, bool lock = true);
// True when another process holds a lock on the file at `path` (HDF5 locks with flock()).
bool locked_by_other_process(const std::string& path);
// The variable-length UTF-8 string type.
Id vlen_utf8(const std::string& context);

// Root/object attributes.
void write_string_attr(hid_t obj, const char* name, const std::string& value, const std::string& ctx);
void write_int_attr(hid_t obj, const char* name, int64_t value, hid_t file_type, const std::string& ctx);
bool has_attr(hid_t obj, const char* name);
std::string read_string_attr(hid_t obj, const char* name, const std::string& ctx);
int64_t read_int_attr(hid_t obj, const char* name, const std::string& ctx);

// One-dimensional contiguous datasets of N elements.
Id create_1d(hid_t file, const char* name, hid_t file_type, size_t n, const std::string& ctx);
void write_strings(hid_t dset, const std::vector<std::string>& values, const std::string& ctx);
void write_string_at(hid_t dset, size_t row, const std::string& value, const std::string& ctx);
void write_u8_at(hid_t dset, size_t row, uint8_t value, const std::string& ctx);
// With `lost` non-null, elements that cannot be read (a reference to a heap object that a kill
// during a flush kept from reaching the file) come back as *lost instead of failing the read.
std::vector<std::string> read_strings(hid_t file, const char* name, size_t n, const std::string& ctx,
                                      const std::string* lost = nullptr);
// Reads a numeric 1-D dataset of n elements, converted by HDF5 to `mem_type` (T must match it).
template <typename T>
std::vector<T> read_numbers(hid_t file, const char* name, size_t n, hid_t mem_type, H5T_class_t cls,
                            const std::string& ctx);

// Rows of a vlen string dataset whose element cannot be read (see read_strings).
std::vector<size_t> unreadable_strings(hid_t dset, size_t n, const std::string& ctx);

// Opens a dataset that must exist; InputError naming it otherwise.
Id open_dataset(hid_t file, const char* name, const std::string& ctx);
// The dims of a dataset's dataspace.
std::vector<hsize_t> dims_of(hid_t dset, const std::string& ctx);

// Moves a finished temporary file onto `path`. Without overwrite, link() refuses an existing
// target atomically (filesystems without hard links fall back to a checked rename). Errors name
// `ctx` ("archive <path>") and the OS reason.
void publish(const std::string& tmp, const std::string& path, bool overwrite, const std::string& ctx);
bool path_exists(const std::string& path);

// "2025-01-02T03:04:05Z".
std::string iso8601_utc_now();

}  // namespace sdmpi::h5

namespace sdmpi {
// The per-row columns of SDXL's micro-conditioning and the GenerationParams member each holds
// (0 = the default), shared by the archive's writer and reader.
inline constexpr std::pair<const char*, int GenerationParams::*> kMicroConditioningColumns[] = {
    {"original_width", &GenerationParams::original_width}, {"original_height", &GenerationParams::original_height},
    {"crop_top", &GenerationParams::crop_top},             {"crop_left", &GenerationParams::crop_left},
    {"target_width", &GenerationParams::target_width},     {"target_height", &GenerationParams::target_height},
};
}  // namespace sdmpi
