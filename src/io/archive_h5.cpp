// HDF5 helpers for the archive: quiet error handling turned into sdmpi::Error, RAII ids,
// attributes and 1-D datasets of strings and numbers (see archive_h5.h).
#include "io/archive_h5.h"

#include <sys/file.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace sdmpi::h5 {

void quiet() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

namespace {

herr_t collect_innermost(unsigned, const H5E_error2_t* err, void* data) {
  // Walking downward, the last entry visited is the innermost one: the most specific message.
  if (err && err->desc && err->desc[0]) *static_cast<std::string*>(data) = err->desc;
  return 0;
}

// The errno that HDF5 quotes in messages like "unable to lock file, errno = 11, ...", or -1.
int quoted_errno(const std::string& detail) {
  const size_t at = detail.find("errno = ");
  if (at == std::string::npos) return -1;
  return std::atoi(detail.c_str() + at + 8);
}

}  // namespace

std::string error_detail() {
  std::string innermost;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_innermost, &innermost);
  H5Eclear2(H5E_DEFAULT);
  // A failed write (disk full, quota) comes as a multi-line dump of the write call: "file write
  // failed: time = ...\n, filename = ..., errno = 28, error message = 'No space left on device',
  // buf = ...". Keep the head and the reason, so the error stays one line naming the errno.
  const size_t reason = innermost.find("error message = '");
  const size_t head_end = innermost.find(": time = ");
  if (reason != std::string::npos && head_end != std::string::npos && quoted_errno(innermost) > 0) {
    const size_t from = reason + 17, to = innermost.find('\'', from);
    innermost = innermost.substr(0, head_end) + ": " + innermost.substr(from, to == std::string::npos ? to : to - from) +
                " (errno " + std::to_string(quoted_errno(innermost)) + ")";
  }
  for (char& c : innermost)
    if (c == '\n' || c == '\r') c = ' ';
  return innermost;
}

bool is_lock_failure(const std::string& detail) {
  return detail.find("unable to lock file") != std::string::npos;
}

void fail(const std::string& context, const std::string& what) { fail(context, what, error_detail()); }

void fail(const std::string& context, const std::string& what, const std::string& detail) {
  std::string msg = context + ": " + what;
  if (!detail.empty()) msg += " (HDF5: " + detail + ")";
  if (is_lock_failure(detail)) {
    const int e = quoted_errno(detail);
    if (e == EAGAIN || e == EWOULDBLOCK)
      throw ArchiveLockedError(msg + "; another process has this archive open (HDF5 file lock)");
    else
      msg += "; this filesystem refuses file locks (NFS, some Lustre mounts): set "
             "HDF5_USE_FILE_LOCKING=FALSE, and make sure only one job writes the archive";
  }
  throw Error(msg);
}

namespace {
Id wrap(hid_t id, Id::Closer closer, const std::string& context, const std::string& what) {
  if (id < 0) fail(context, what);
  return Id(id, closer);
}
}  // namespace

Id file(hid_t id, const std::string& c, const std::string& w) { return wrap(id, H5Fclose, c, w); }
Id dataset(hid_t id, const std::string& c, const std::string& w) { return wrap(id, H5Dclose, c, w); }
Id dataspace(hid_t id, const std::string& c, const std::string& w) { return wrap(id, H5Sclose, c, w); }
Id datatype(hid_t id, const std::string& c, const std::string& w) { return wrap(id, H5Tclose, c, w); }
Id plist(hid_t id, const std::string& c, const std::string& w) { return wrap(id, H5Pclose, c, w); }
Id attribute(hid_t id, const std::string& c, const std::string& w) { return wrap(id, H5Aclose, c, w); }

void check(herr_t status, const std::string& context, const std::string& what) {
  if (status < 0) fail(context, what);
}

Id file_access(const std::string& ctx, bool lock) {
  Id fapl = plist(H5Pcreate(H5P_FILE_ACCESS), ctx, "cannot create file-access properties");
  if (!lock) {
#if H5_VERSION_GE(1, 10, 7)
    check(H5Pset_file_locking(fapl.get(), 0, 1), ctx, "cannot set the file-locking policy");
#endif
    return fapl;
  }
#if H5_VERSION_GE(1, 10, 7)
  // HDF5_USE_FILE_LOCKING (FALSE/0, TRUE/1, BEST_EFFORT) decides when set; HDF5 also reads it,
  // but only once per process. Unset, we lock but do not fail on filesystems where locking is
  // disabled (ENOSYS).
  bool use = true, ignore_disabled = true;
  if (const char* env = std::getenv("HDF5_USE_FILE_LOCKING")) {
    if (!std::strcmp(env, "FALSE") || !std::strcmp(env, "0")) use = false;
    else if (!std::strcmp(env, "TRUE") || !std::strcmp(env, "1")) ignore_disabled = false;
  }
  check(H5Pset_file_locking(fapl.get(), use, ignore_disabled), ctx, "cannot set the file-locking policy");
#endif
  return fapl;
}

Id vlen_utf8(const std::string& ctx) {
  Id t = datatype(H5Tcopy(H5T_C_S1), ctx, "cannot create the string type");
  check(H5Tset_size(t.get(), H5T_VARIABLE), ctx, "cannot create the string type");
  check(H5Tset_cset(t.get(), H5T_CSET_UTF8), ctx, "cannot create the string type");
  return t;
}

void write_string_attr(hid_t obj, const char* name, const std::string& value, const std::string& ctx) {
  const std::string what = std::string("cannot write attribute ") + name;
  if (H5Aexists(obj, name) > 0) check(H5Adelete(obj, name), ctx, what);
  Id type = vlen_utf8(ctx);
  Id space = dataspace(H5Screate(H5S_SCALAR), ctx, what);
  Id attr = attribute(H5Acreate2(obj, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), ctx, what);
  const char* ptr = value.c_str();
  check(H5Awrite(attr.get(), type.get(), &ptr), ctx, what);
}

void write_int_attr(hid_t obj, const char* name, int64_t value, hid_t file_type, const std::string& ctx) {
  const std::string what = std::string("cannot write attribute ") + name;
  if (H5Aexists(obj, name) > 0) check(H5Adelete(obj, name), ctx, what);
  Id space = dataspace(H5Screate(H5S_SCALAR), ctx, what);
  Id attr = attribute(H5Acreate2(obj, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT), ctx, what);
  check(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value), ctx, what);
}

bool has_attr(hid_t obj, const char* name) { return H5Aexists(obj, name) > 0; }

namespace {
// Opens attribute `name` of a scalar (or one-element) dataspace; InputError when absent/ill-shaped.
Id open_scalar_attr(hid_t obj, const char* name, const std::string& ctx) {
  if (H5Aexists(obj, name) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    throw InputError(ctx + ": attribute '" + name + "' is missing");
  }
  Id attr = attribute(H5Aopen(obj, name, H5P_DEFAULT), ctx, std::string("cannot open attribute ") + name);
  Id space = dataspace(H5Aget_space(attr.get()), ctx, std::string("cannot read attribute ") + name);
  if (H5Sget_simple_extent_npoints(space.get()) != 1)
    throw InputError(ctx + ": attribute '" + name + "' is not a single value");
  return attr;
}
}  // namespace

std::string read_string_attr(hid_t obj, const char* name, const std::string& ctx) {
  Id attr = open_scalar_attr(obj, name, ctx);
  const std::string what = std::string("cannot read attribute ") + name;
  Id ftype = datatype(H5Aget_type(attr.get()), ctx, what);
  if (H5Tget_class(ftype.get()) != H5T_STRING)
    throw InputError(ctx + ": attribute '" + name + "' is not a string");
  if (H5Tis_variable_str(ftype.get()) > 0) {
    Id mtype = vlen_utf8(ctx);
    char* ptr = nullptr;
    check(H5Aread(attr.get(), mtype.get(), &ptr), ctx, what);
    std::string out = ptr ? ptr : "";
    if (ptr) H5free_memory(ptr);
    return out;
  }
  // A fixed-length string (a foreign writer): read its bytes and cut at the first NUL.
  const size_t size = H5Tget_size(ftype.get());
  std::string buf(size, '\0');
  Id mtype = datatype(H5Tcopy(ftype.get()), ctx, what);
  check(H5Aread(attr.get(), mtype.get(), buf.data()), ctx, what);
  buf.resize(std::strlen(buf.c_str()));
  return buf;
}

int64_t read_int_attr(hid_t obj, const char* name, const std::string& ctx) {
  Id attr = open_scalar_attr(obj, name, ctx);
  const std::string what = std::string("cannot read attribute ") + name;
  Id ftype = datatype(H5Aget_type(attr.get()), ctx, what);
  if (H5Tget_class(ftype.get()) != H5T_INTEGER)
    throw InputError(ctx + ": attribute '" + name + "' is not an integer");
  int64_t v = 0;
  check(H5Aread(attr.get(), H5T_NATIVE_INT64, &v), ctx, what);
  return v;
}

Id create_1d(hid_t file, const char* name, hid_t file_type, size_t n, const std::string& ctx) {
  const std::string what = std::string("cannot create dataset /") + name;
  const hsize_t dims[1] = {static_cast<hsize_t>(n)};
  Id space = dataspace(H5Screate_simple(1, dims, nullptr), ctx, what);
  return dataset(H5Dcreate2(file, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                 ctx, what);
}

void write_strings(hid_t dset, const std::vector<std::string>& values, const std::string& ctx) {
  if (values.empty()) return;
  std::vector<const char*> ptrs(values.size());
  for (size_t i = 0; i < values.size(); ++i) ptrs[i] = values[i].c_str();
  Id type = vlen_utf8(ctx);
  check(H5Dwrite(dset, type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()), ctx, "cannot write strings");
}

namespace {
// File and memory dataspaces selecting element `row` of a 1-D dataset.
std::pair<Id, Id> select_row(hid_t dset, size_t row, const std::string& ctx) {
  Id fspace = dataspace(H5Dget_space(dset), ctx, "cannot select a row");
  const hsize_t start[1] = {row}, count[1] = {1};
  check(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr), ctx,
        "cannot select a row");
  Id mspace = dataspace(H5Screate_simple(1, count, nullptr), ctx, "cannot select a row");
  return {std::move(fspace), std::move(mspace)};
}
}  // namespace

void write_string_at(hid_t dset, size_t row, const std::string& value, const std::string& ctx) {
  auto [fspace, mspace] = select_row(dset, row, ctx);
  Id type = vlen_utf8(ctx);
  const char* ptr = value.c_str();
  check(H5Dwrite(dset, type.get(), mspace.get(), fspace.get(), H5P_DEFAULT, &ptr), ctx,
        "cannot write a string");
}

void write_u8_at(hid_t dset, size_t row, uint8_t value, const std::string& ctx) {
  auto [fspace, mspace] = select_row(dset, row, ctx);
  check(H5Dwrite(dset, H5T_NATIVE_UINT8, mspace.get(), fspace.get(), H5P_DEFAULT, &value), ctx,
        "cannot write a flag");
}

Id open_dataset(hid_t file, const char* name, const std::string& ctx) {
  if (H5Lexists(file, name, H5P_DEFAULT) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    throw InputError(ctx + ": dataset /" + std::string(name) + " is missing");
  }
  hid_t id = H5Dopen2(file, name, H5P_DEFAULT);
  if (id < 0) {
    const std::string detail = error_detail();
    throw InputError(ctx + ": /" + std::string(name) + " is not a readable dataset" +
                     (detail.empty() ? "" : " (HDF5: " + detail + ")"));
  }
  return Id(id, H5Dclose);
}

std::vector<hsize_t> dims_of(hid_t dset, const std::string& ctx) {
  Id space = dataspace(H5Dget_space(dset), ctx, "cannot read a dataspace");
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) fail(ctx, "cannot read a dataspace");
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  if (rank > 0) H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  return dims;
}

namespace {
void expect_1d(hid_t dset, const char* name, size_t n, const std::string& ctx) {
  const auto dims = dims_of(dset, ctx);
  if (dims.size() != 1 || dims[0] != n)
    throw InputError(ctx + ": dataset /" + std::string(name) + " has " +
                     (dims.size() == 1 ? std::to_string(dims[0]) + " rows" : std::to_string(dims.size()) + " dimensions") +
                     ", expected " + std::to_string(n) + " rows like /index");
}
}  // namespace

namespace {
// A whole-dataset read that fails on a damaged element leaves the strings it already read
// allocated; H5Dvlen_reclaim cannot be used on a half-filled buffer, so free them one by one.
void free_partial_read(std::vector<char*>& ptrs) {
  for (char*& p : ptrs)
    if (p) {
      H5free_memory(p);
      p = nullptr;
    }
}

// Reads element `row` of a vlen string dataset; false (and a clear error stack) when it cannot.
bool read_string_at(hid_t dset, hid_t mtype, size_t row, std::string* out, const std::string& ctx) {
  auto [fspace, mspace] = select_row(dset, row, ctx);
  char* ptr = nullptr;
  if (H5Dread(dset, mtype, mspace.get(), fspace.get(), H5P_DEFAULT, &ptr) < 0) {
    if (ptr) H5free_memory(ptr);  // a failed read may still have allocated
    H5Eclear2(H5E_DEFAULT);
    return false;
  }
  *out = ptr ? ptr : "";
  H5Dvlen_reclaim(mtype, mspace.get(), H5P_DEFAULT, &ptr);
  return true;
}
}  // namespace

std::vector<size_t> unreadable_strings(hid_t dset, size_t n, const std::string& ctx) {
  std::vector<size_t> rows;
  if (n == 0) return rows;
  Id mtype = vlen_utf8(ctx);
  std::vector<char*> ptrs(n, nullptr);
  Id space = dataspace(H5Dget_space(dset), ctx, "cannot read strings");
  if (H5Dread(dset, mtype.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()) >= 0) {
    H5Dvlen_reclaim(mtype.get(), space.get(), H5P_DEFAULT, ptrs.data());
    return rows;
  }
  free_partial_read(ptrs);
  H5Eclear2(H5E_DEFAULT);
  std::string value;
  for (size_t i = 0; i < n; ++i)
    if (!read_string_at(dset, mtype.get(), i, &value, ctx)) rows.push_back(i);
  return rows;
}

std::vector<std::string> read_strings(hid_t file, const char* name, size_t n, const std::string& ctx,
                                      const std::string* lost) {
  Id dset = open_dataset(file, name, ctx);
  expect_1d(dset.get(), name, n, ctx);
  Id ftype = datatype(H5Dget_type(dset.get()), ctx, std::string("cannot read /") + name);
  if (H5Tget_class(ftype.get()) != H5T_STRING || H5Tis_variable_str(ftype.get()) <= 0)
    throw InputError(ctx + ": dataset /" + std::string(name) + " is not a variable-length string dataset");
  std::vector<std::string> out(n);
  if (n == 0) return out;
  Id mtype = vlen_utf8(ctx);
  std::vector<char*> ptrs(n, nullptr);
  Id space = dataspace(H5Dget_space(dset.get()), ctx, std::string("cannot read /") + name);
  if (H5Dread(dset.get(), mtype.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()) >= 0) {
    for (size_t i = 0; i < n; ++i) out[i] = ptrs[i] ? ptrs[i] : "";
    H5Dvlen_reclaim(mtype.get(), space.get(), H5P_DEFAULT, ptrs.data());
    return out;
  }
  free_partial_read(ptrs);
  if (!lost) {
    const std::string detail = error_detail();
    throw InputError(ctx + ": cannot read /" + std::string(name) + ", the file is damaged" +
                     (detail.empty() ? "" : " (HDF5: " + detail + ")"));
  }
  // One element at a time, keeping what can be read.
  H5Eclear2(H5E_DEFAULT);
  for (size_t i = 0; i < n; ++i) {
    if (!read_string_at(dset.get(), mtype.get(), i, &out[i], ctx)) out[i] = *lost;
  }
  return out;
}

template <typename T>
std::vector<T> read_numbers(hid_t file, const char* name, size_t n, hid_t mem_type, H5T_class_t cls,
                            const std::string& ctx) {
  Id dset = open_dataset(file, name, ctx);
  expect_1d(dset.get(), name, n, ctx);
  Id ftype = datatype(H5Dget_type(dset.get()), ctx, std::string("cannot read /") + name);
  if (H5Tget_class(ftype.get()) != cls)
    throw InputError(ctx + ": dataset /" + std::string(name) + " is not " +
                     (cls == H5T_FLOAT ? "a floating-point" : "an integer") + " dataset");
  std::vector<T> out(n);
  if (n > 0)
    check(H5Dread(dset.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()), ctx,
          std::string("cannot read /") + name);
  return out;
}

template std::vector<int64_t> read_numbers<int64_t>(hid_t, const char*, size_t, hid_t, H5T_class_t, const std::string&);
template std::vector<int32_t> read_numbers<int32_t>(hid_t, const char*, size_t, hid_t, H5T_class_t, const std::string&);
template std::vector<uint8_t> read_numbers<uint8_t>(hid_t, const char*, size_t, hid_t, H5T_class_t, const std::string&);
template std::vector<float> read_numbers<float>(hid_t, const char*, size_t, hid_t, H5T_class_t, const std::string&);

bool locked_by_other_process(const std::string& path) {
  const char* env = std::getenv("HDF5_USE_FILE_LOCKING");
  if (env && (!std::strcmp(env, "FALSE") || !std::strcmp(env, "0"))) return false;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool locked = ::flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);  // also drops our probe lock
  return locked;
}

bool path_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

void publish(const std::string& tmp, const std::string& path, bool overwrite, const std::string& ctx) {
  if (!overwrite) {
    if (::link(tmp.c_str(), path.c_str()) == 0) {
      ::unlink(tmp.c_str());
      return;
    }
    if (errno == EEXIST || path_exists(path)) throw Error(ctx + " already exists: resume it or remove it first");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    throw Error(ctx + ": cannot move " + tmp + " into place: " + std::strerror(errno));
}

std::string iso8601_utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace sdmpi::h5
