// Structure-aware libFuzzer target for the archive reader behind `sd_mpi inspect`, --resume and
// merge: the contents of a valid archive change, its HDF5 metadata never breaks.
//
// archive_fuzz mutates an archive's bytes, so nearly every input is a corrupt HDF5 file and the
// crashes it finds are inside libhdf5's own metadata parsing (documented upstream problems, out of
// our reach: tests/data/malformed/README.md). Here the input is a program instead: it picks one of
// the small valid archives that ArchiveWriter makes (archive_fuzz_common.h), opens it with the
// HDF5 API and applies a few edits that libhdf5 itself carries out, so the file stays well-formed
// HDF5 and only what our reader makes of its *contents* is tested: root and /images attributes
// replaced by other types, values, sizes or removed; single values of any dataset overwritten
// (indices out of order, seeds, sizes, done codes, strings that are not UTF-8); datasets removed or
// replaced by ones of another length, type or rank; /images resized, overwritten or replaced; extra
// objects added. The edited file is then read by read_like_sd_mpi (the same checks as
// archive_fuzz). Asserted: a usable archive or an sdmpi::Error, never a crash, leak, hang or
// sanitizer report. An edit that libhdf5 refuses (a type it cannot convert, say) is skipped: the
// edits are the fuzzer's moves, not code under test, so their return codes only steer.
//
// One scratch file, rewritten per input from the base archive held in memory. Seeds:
// tests/data/malformed/archive_struct/ (make_seeds.py there: a few edit programs).
#include <fuzzer/FuzzedDataProvider.h>
#include <hdf5.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "archive_fuzz_common.h"
#include "fuzz_files.h"

namespace fs = std::filesystem;

namespace {

const char* const kDatasets[] = {"index", "prompt_index", "sample", "prompt", "negative_prompt", "sampler",
                                 "schedule", "error", "seed", "steps", "width", "height", "clip_skip",
                                 "guidance", "eta", "guidance_rescale", "strength", "init_image_sha256",
                                 "done", "images"};
const char* const kRootAttributes[] = {"format", "format_version", "sd_mpi_version", "git_commit",
                                       "model_path", "weights_hash", "created", "world_size", "shard",
                                       "total_items", "config_json", "fingerprint", "merged_from"};
const char* const kImageAttributes[] = {"layout", "color_space", "padding"};

template <size_t N>
const char* pick(FuzzedDataProvider& in, const char* const (&names)[N]) {
  return names[in.ConsumeIntegralInRange<size_t>(0, N - 1)];
}

// A string the edit writes: often one of the values a valid archive holds, else any bytes.
std::string some_text(FuzzedDataProvider& in) {
  static const char* const kLikely[] = {"sd_mpi-archive", "NHWC", "sRGB", "0/1", "1/2", "2/2", "0/0", "[]",
                                        "{}", "ddim", "", "\xff\xfe", "a\nb"};
  if (in.ConsumeBool()) return pick(in, kLikely);
  return in.ConsumeRandomLengthString(48);
}

hid_t vlen_utf8() {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}

// The value kinds an edit can store: the archive's own types and a few it never uses.
enum class Kind { I32, I64, U8, F32, F64, VlenString, FixedString, Count };

hid_t file_type(Kind k, size_t fixed_size) {
  switch (k) {
    case Kind::I32: return H5Tcopy(H5T_STD_I32LE);
    case Kind::I64: return H5Tcopy(H5T_STD_I64LE);
    case Kind::U8: return H5Tcopy(H5T_STD_U8LE);
    case Kind::F32: return H5Tcopy(H5T_IEEE_F32LE);
    case Kind::F64: return H5Tcopy(H5T_IEEE_F64LE);
    case Kind::VlenString: return vlen_utf8();
    default: {
      hid_t t = H5Tcopy(H5T_C_S1);
      H5Tset_size(t, fixed_size > 0 ? fixed_size : 1);
      return t;
    }
  }
}

// Writes n values of kind k into `obj` (a dataset when is_dataset, else an attribute), numbers from
// `first` counting by `step` or strings `text`.
void write_values(hid_t obj, bool is_dataset, Kind k, size_t n, int64_t first, int64_t step, const std::string& text) {
  auto write = [&](hid_t mem, const void* buf) {
    if (is_dataset) H5Dwrite(obj, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    else H5Awrite(obj, mem, buf);
  };
  if (k == Kind::VlenString) {
    std::vector<const char*> ptrs(n, text.c_str());
    hid_t mem = vlen_utf8();
    write(mem, ptrs.data());
    H5Tclose(mem);
  } else if (k == Kind::FixedString) {
    std::string buf;
    for (size_t i = 0; i < n; ++i) buf += text.empty() ? std::string(1, '\0') : text;
    hid_t mem = file_type(Kind::FixedString, text.empty() ? 1 : text.size());
    write(mem, buf.data());
    H5Tclose(mem);
  } else if (k == Kind::F32 || k == Kind::F64) {
    std::vector<double> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<double>(first) / 4.0 + static_cast<double>(step) * i;
    write(H5T_NATIVE_DOUBLE, v.data());
  } else {
    std::vector<long long> v(n);
    // Wrapping on purpose (unsigned: a fuzzed `first` near INT64_MAX must not be signed overflow).
    for (size_t i = 0; i < n; ++i)
      v[i] = static_cast<long long>(static_cast<uint64_t>(first) + static_cast<uint64_t>(step) * i);
    write(H5T_NATIVE_LLONG, v.data());
  }
}

// Replaces (or adds) attribute `name` of `obj`: a scalar or a short list of some kind.
void set_attribute(FuzzedDataProvider& in, hid_t obj, const char* name) {
  if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
  const Kind k = static_cast<Kind>(in.ConsumeIntegralInRange<int>(0, static_cast<int>(Kind::Count) - 1));
  const std::string text = some_text(in);
  const hsize_t n = in.ConsumeIntegralInRange<hsize_t>(0, 3);  // 0: scalar
  hid_t space = n == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, nullptr);
  hid_t type = file_type(k, text.empty() ? 1 : text.size());
  hid_t attr = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  if (attr >= 0) {
    write_values(attr, false, k, n == 0 ? 1 : n, in.ConsumeIntegral<int64_t>(), in.ConsumeIntegralInRange<int64_t>(-2, 2), text);
    H5Aclose(attr);
  }
  H5Tclose(type);
  H5Sclose(space);
}

// Overwrites element `row` of a one-dimensional dataset with a value of its own type class.
void set_element(FuzzedDataProvider& in, hid_t file, const char* name) {
  hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
  if (ds < 0) return;
  hid_t space = H5Dget_space(ds);
  hid_t type = H5Dget_type(ds);
  hsize_t dims[4] = {0, 0, 0, 0};
  const int rank = H5Sget_simple_extent_ndims(space);
  if (rank == 1 && H5Sget_simple_extent_dims(space, dims, nullptr) == 1 && dims[0] > 0) {
    hsize_t row = in.ConsumeIntegralInRange<hsize_t>(0, dims[0] - 1), one = 1;
    H5Sselect_hyperslab(space, H5S_SELECT_SET, &row, nullptr, &one, nullptr);
    hid_t mem_space = H5Screate_simple(1, &one, nullptr);
    const H5T_class_t cls = H5Tget_class(type);
    if (cls == H5T_STRING && H5Tis_variable_str(type) > 0) {
      const std::string text = some_text(in);
      const char* p = text.c_str();
      hid_t mem = vlen_utf8();
      H5Dwrite(ds, mem, mem_space, space, H5P_DEFAULT, &p);
      H5Tclose(mem);
    } else if (cls == H5T_FLOAT) {
      static const double kFloats[] = {0.0, -1.0, 1e30, -1e-30, 7.5, __builtin_nan(""), __builtin_inf()};
      const double v = in.ConsumeBool() ? kFloats[in.ConsumeIntegralInRange<size_t>(0, 6)]
                                        : static_cast<double>(in.ConsumeIntegral<int32_t>()) / 8.0;
      H5Dwrite(ds, H5T_NATIVE_DOUBLE, mem_space, space, H5P_DEFAULT, &v);
    } else if (cls == H5T_INTEGER) {
      static const long long kInts[] = {0, 1, 2, 3, -1, 8, 16, 17, 1 << 20, INT32_MAX, INT64_MIN, INT64_MAX};
      const long long v = in.ConsumeBool() ? kInts[in.ConsumeIntegralInRange<size_t>(0, 11)] : in.ConsumeIntegral<int64_t>();
      H5Dwrite(ds, H5T_NATIVE_LLONG, mem_space, space, H5P_DEFAULT, &v);
    }
    H5Sclose(mem_space);
  }
  H5Tclose(type);
  H5Sclose(space);
  H5Dclose(ds);
}

// Replaces dataset `name` by a contiguous one of `rows` rows (rank 1, or rank 2 with 2 columns)
// of some kind, filled with one string or an arithmetic run.
void replace_dataset(FuzzedDataProvider& in, hid_t file, const char* name) {
  if (H5Lexists(file, name, H5P_DEFAULT) > 0) H5Ldelete(file, name, H5P_DEFAULT);
  const Kind k = static_cast<Kind>(in.ConsumeIntegralInRange<int>(0, static_cast<int>(Kind::Count) - 1));
  const std::string text = some_text(in);
  const hsize_t dims[2] = {in.ConsumeIntegralInRange<hsize_t>(0, 5), 2};
  const int rank = in.ConsumeIntegralInRange<int>(0, 7) == 0 ? 2 : 1;
  hid_t space = H5Screate_simple(rank, dims, nullptr);
  hid_t type = file_type(k, text.empty() ? 1 : text.size());
  hid_t ds = H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (ds >= 0) {
    write_values(ds, true, k, dims[0] * (rank == 2 ? 2 : 1), in.ConsumeIntegralInRange<int64_t>(-3, 40),
                 in.ConsumeIntegralInRange<int64_t>(-2, 3), text);
    H5Dclose(ds);
  }
  H5Tclose(type);
  H5Sclose(space);
}

// /images: another row count (it is chunked and unlimited along rows), or one row's pixels set to
// a byte, or the whole dataset replaced by one of another shape or type.
void edit_images(FuzzedDataProvider& in, hid_t file) {
  switch (in.ConsumeIntegralInRange<int>(0, 2)) {
    case 0: {
      hid_t ds = H5Dopen2(file, "images", H5P_DEFAULT);
      if (ds < 0) return;
      hid_t space = H5Dget_space(ds);
      hsize_t dims[4] = {0, 0, 0, 0};
      if (H5Sget_simple_extent_ndims(space) == 4 && H5Sget_simple_extent_dims(space, dims, nullptr) == 4) {
        dims[0] = in.ConsumeIntegralInRange<hsize_t>(0, 6);
        H5Dset_extent(ds, dims);
      }
      H5Sclose(space);
      H5Dclose(ds);
      return;
    }
    case 1: {
      hid_t ds = H5Dopen2(file, "images", H5P_DEFAULT);
      if (ds < 0) return;
      hid_t space = H5Dget_space(ds);
      hsize_t dims[4] = {0, 0, 0, 0};
      if (H5Sget_simple_extent_ndims(space) == 4 && H5Sget_simple_extent_dims(space, dims, nullptr) == 4 && dims[0] > 0) {
        hsize_t start[4] = {in.ConsumeIntegralInRange<hsize_t>(0, dims[0] - 1), 0, 0, 0};
        hsize_t count[4] = {1, dims[1], dims[2], dims[3]};
        H5Sselect_hyperslab(space, H5S_SELECT_SET, start, nullptr, count, nullptr);
        hid_t mem = H5Screate_simple(4, count, nullptr);
        std::vector<uint8_t> pixels(static_cast<size_t>(dims[1] * dims[2] * dims[3]), in.ConsumeIntegral<uint8_t>());
        H5Dwrite(ds, H5T_NATIVE_UINT8, mem, space, H5P_DEFAULT, pixels.data());
        H5Sclose(mem);
      }
      H5Sclose(space);
      H5Dclose(ds);
      return;
    }
    default: {
      H5Ldelete(file, "images", H5P_DEFAULT);
      const int rank = in.ConsumeIntegralInRange<int>(1, 5);
      hsize_t dims[5];
      for (int d = 0; d < rank; ++d) dims[d] = in.ConsumeIntegralInRange<hsize_t>(0, 20);
      hid_t space = H5Screate_simple(rank, dims, nullptr);
      hid_t ds = H5Dcreate2(file, "images", in.ConsumeBool() ? H5T_STD_U8LE : H5T_STD_U16LE, space, H5P_DEFAULT,
                            H5P_DEFAULT, H5P_DEFAULT);
      if (ds >= 0) H5Dclose(ds);
      H5Sclose(space);
      return;
    }
  }
}

void edit(FuzzedDataProvider& in, hid_t file) {
  switch (in.ConsumeIntegralInRange<int>(0, 7)) {
    case 0: set_attribute(in, file, in.ConsumeBool() ? pick(in, kRootAttributes) : "extra"); break;
    case 1: {
      const char* name = pick(in, kRootAttributes);
      if (H5Aexists(file, name) > 0) H5Adelete(file, name);
      break;
    }
    case 2: {
      hid_t ds = H5Dopen2(file, "images", H5P_DEFAULT);
      if (ds < 0) break;
      const char* name = pick(in, kImageAttributes);
      if (in.ConsumeBool()) set_attribute(in, ds, name);
      else if (H5Aexists(ds, name) > 0) H5Adelete(ds, name);
      H5Dclose(ds);
      break;
    }
    case 3: set_element(in, file, pick(in, kDatasets)); break;
    case 4: replace_dataset(in, file, pick(in, kDatasets)); break;
    case 5: H5Ldelete(file, pick(in, kDatasets), H5P_DEFAULT); break;
    case 6: edit_images(in, file); break;
    default: {
      hid_t g = H5Gcreate2(file, in.ConsumeBool() ? "extra" : pick(in, kDatasets), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
      if (g >= 0) H5Gclose(g);
      break;
    }
  }
}

std::string read_all(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  sdmpi_fuzz::reuse_hdf5_free_lists();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const fs::path scratch = sdmpi_fuzz::scratch_dir("archive_struct");
  // The base archives, made once with ArchiveWriter and kept as bytes.
  static const std::vector<std::string> bases = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // refused edits are expected; say nothing
    std::vector<std::string> out;
    for (const auto& c : sdmpi_fuzz::archive_cases()) {
      const fs::path p = scratch / c.name;
      sdmpi_fuzz::write_archive(p, c);
      out.push_back(read_all(p));
      fs::remove(p);
    }
    return out;
  }();
  const fs::path path = scratch / "in.h5", merged = scratch / "merged.h5";
  FuzzedDataProvider in(data, size);
  sdmpi_fuzz::write_bytes(path, bases[in.ConsumeIntegralInRange<size_t>(0, bases.size() - 1)]);
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  if (file < 0) __builtin_trap();  // our own archive must open
  for (int edits = in.ConsumeIntegralInRange<int>(0, 6); edits > 0 && in.remaining_bytes() > 0; --edits) edit(in, file);
  if (H5Fclose(file) < 0) __builtin_trap();
  sdmpi_fuzz::read_like_sd_mpi(path.string(), merged.string());
  return 0;
}
