// safetensors: a validating reader over a read-only memory map, and an atomic writer.
//
// The reader trusts nothing in the file: every number of the header is checked against the file
// before any pointer is formed, so a view can never reach outside the map. The JSON header is
// parsed by nlohmann-json with a callback that sees every object key as it is read; that is where
// duplicate names are caught (the DOM keeps only one of two equal keys) and where absurd nesting
// is cut short. All errors are InputError with one line: "<file>: <what>, naming the tensor/byte".
#include "sdmpi/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>

#include "sdmpi/error.h"

namespace sdmpi {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference parser's cap
constexpr int kMaxJsonDepth = 8;                   // ours needs 3: {name: {shape: [..]}}

// Text from the file made safe for a one-line message: control bytes (and, with `ascii`, every
// byte ≥ 0x80, which may not be valid UTF-8) escaped as \xNN, long text cut after `max` bytes.
std::string printable(const std::string& s, size_t max = 160, bool ascii = false) {
  std::string out;
  size_t n = std::min(s.size(), max);
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f || (ascii && c >= 0x80)) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > n) out += "...(" + std::to_string(s.size()) + " bytes)";
  return out;
}

// A tensor name or key for a message: 'name'.
std::string quoted(const std::string& s) {
  // Appended, not "'" + printable(s): GCC 12's -Wrestrict reports an impossible overlap in the
  // inlined operator+(const char*, string&&) (a false positive, GCC bug 105329).
  std::string out(1, '\'');
  out += printable(s);
  out += '\'';
  return out;
}

// Every dtype string the safetensors format defines, with its size in bits. Only the first three
// are read by sd_mpi; the others are validated and reported as unsupported when used.
struct KnownDType {
  const char* name;
  int bits;
};
constexpr KnownDType kKnownDTypes[] = {
    {"F32", 32},     {"F16", 16},         {"BF16", 16},        {"BOOL", 8},     {"U8", 8},
    {"I8", 8},       {"F8_E5M2", 8},      {"F8_E4M3", 8},      {"F8_E8M0", 8},  {"F8_E4M3FNUZ", 8},
    {"F8_E5M2FNUZ", 8}, {"I16", 16},      {"U16", 16},         {"I32", 32},     {"U32", 32},
    {"F64", 64},     {"I64", 64},         {"U64", 64},         {"C64", 64},     {"F4", 4},
    {"F6_E2M3", 6},  {"F6_E3M2", 6},
};

const KnownDType* find_dtype(const std::string& s) {
  for (const auto& d : kKnownDTypes)
    if (s == d.name) return &d;
  return nullptr;
}

// "an unsigned integer", "a string", "an array", ... for messages.
std::string json_type(const json& j) {
  if (j.is_number_unsigned()) return "an unsigned integer";
  if (j.is_number_integer()) return "a negative integer";
  if (j.is_number_float()) return "a non-integer number";
  if (j.is_null()) return "null";
  std::string t = j.type_name();
  return (t == "array" || t == "object" ? "an " : "a ") + t;
}

// Tracks the keys of every open JSON object so a repeated key is an error, and bounds nesting.
class DuplicateKeyGuard {
 public:
  explicit DuplicateKeyGuard(const std::string& path) : path_(path) {}
  bool operator()(int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= kMaxJsonDepth)
          throw InputError(path_ + ": header JSON nests deeper than " +
                           std::to_string(kMaxJsonDepth) + " levels");
        if (event == json::parse_event_t::object_start) open_.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!open_.empty()) open_.pop_back();
        break;
      case json::parse_event_t::key: {
        const std::string& key = parsed.get_ref<const std::string&>();
        if (!open_.empty() && !open_.back().insert(key).second)
          throw InputError(path_ + ": duplicate key " + quoted(key) + " in the header" +
                           (open_.size() == 1 ? "" : " (inside an entry)"));
        break;
      }
      default:
        break;
    }
    return true;
  }

 private:
  const std::string& path_;
  std::vector<std::set<std::string>> open_;
};

}  // namespace

struct SafetensorsFile::AlignedCopies {
  std::mutex mutex;
  std::map<std::string, std::unique_ptr<uint64_t[]>> copies;
};

namespace {
int64_t mtime_ns(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}
}  // namespace

SafetensorsFile::~SafetensorsFile() {
  if (mapped_ && map_) munmap(const_cast<uint8_t*>(map_), map_size_);
  if (fd_ >= 0) ::close(fd_);
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path, bool in_place) {
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->in_place_ = in_place;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(path + ": cannot open: " + std::strerror(errno));
  struct stat st{};
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw InputError(path + ": cannot stat: " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw InputError(path + ": not a regular file");
  }
  size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    throw InputError(path + ": file is " + std::to_string(size) +
                     " bytes, too short for the 8-byte header length (empty or truncated file)");
  }
  void* m = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  if (m == MAP_FAILED) {
    ::close(fd);
    throw InputError(path + ": cannot map: " + std::strerror(e));
  }
  f->fd_ = fd;  // kept: check_unchanged() asks it whether the mapped file is still the one opened
  f->mtime_ns_ = mtime_ns(st);
  f->map_ = static_cast<const uint8_t*>(m);
  f->map_size_ = size;
  f->mapped_ = true;
  f->parse_header();
  return f;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::from_bytes(const std::string& label,
                                                             std::vector<uint8_t> bytes) {
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = label;
  f->owned_ = std::move(bytes);
  f->map_ = f->owned_.data();
  f->map_size_ = f->owned_.size();
  if (f->map_size_ < 8)
    throw InputError(label + ": file is " + std::to_string(f->map_size_) +
                     " bytes, too short for the 8-byte header length (empty or truncated file)");
  f->parse_header();
  return f;
}

void SafetensorsFile::parse_header() {
  const std::string& p = path_;
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | map_[i];  // little-endian u64
  if (n > kMaxHeaderBytes)
    throw InputError(p + ": header length " + std::to_string(n) + " (bytes 0-7) exceeds the " +
                     std::to_string(kMaxHeaderBytes) + "-byte limit (not a safetensors file?)");
  if (n > map_size_ - 8)
    throw InputError(p + ": header length " + std::to_string(n) + " (bytes 0-7) runs past the end of the " +
                     std::to_string(map_size_) + "-byte file (truncated file?)");
  if (n < 2)
    throw InputError(p + ": header length " + std::to_string(n) + " is too small for a JSON object");
  const char* text = reinterpret_cast<const char*>(map_ + 8);

  json header;
  try {
    DuplicateKeyGuard guard(p);
    header = json::parse(text, text + n, std::ref(guard));
  } catch (const json::parse_error& e) {
    // nlohmann's message reads "[json.exception.parse_error.101] parse error at line 1, column 7:
    // ..."; keep what follows the tag and give the file byte (header byte + the 8 length bytes).
    std::string what = e.what();
    size_t colon = what.find("parse error");
    if (colon != std::string::npos) what = what.substr(colon);
    what = printable(what, 300, /*ascii=*/true);  // it quotes the bytes last read
    throw InputError(p + ": header is not valid JSON (file byte " + std::to_string(e.byte + 7) +
                     "): " + what);
  } catch (const json::exception& e) {
    // Not a syntax error but still the header's fault, e.g. out_of_range.406 for a number like
    // 1e999 that no double holds.
    std::string what = e.what();
    size_t tag = what.find("] ");
    if (tag != std::string::npos) what = what.substr(tag + 2);
    throw InputError(p + ": header is not valid JSON: " + printable(what, 300, /*ascii=*/true));
  }
  if (!header.is_object())
    throw InputError(p + ": header is a JSON " + std::string(header.type_name()) +
                     ", expected an object of tensors");

  const uint64_t data_size = map_size_ - 8 - n;
  data_ = map_ + 8 + n;

  struct Span {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Span> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object())
        throw InputError(p + ": __metadata__ is a JSON " + std::string(v.type_name()) +
                         ", expected an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          throw InputError(p + ": __metadata__ value of " + quoted(m.key()) + " is " +
                           json_type(m.value()) + ", expected a string");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string t = p + ": tensor " + quoted(name);
    if (!v.is_object())
      throw InputError(t + ": entry is a JSON " + std::string(v.type_name()) +
                       ", expected {\"dtype\", \"shape\", \"data_offsets\"}");
    // Other fields are ignored, as the reference parser ignores them.
    auto dt = v.find("dtype");
    if (dt == v.end()) throw InputError(t + ": missing \"dtype\"");
    if (!dt->is_string())
      throw InputError(t + ": \"dtype\" is " + json_type(*dt) + ", expected a string");
    const std::string dtype_str = dt->get<std::string>();
    const KnownDType* known = find_dtype(dtype_str);
    if (!known)
      throw InputError(t + ": unknown dtype " + quoted(dtype_str) +
                       " (safetensors defines F32, F16, BF16, F64, I64, ...)");

    auto sh = v.find("shape");
    if (sh == v.end()) throw InputError(t + ": missing \"shape\"");
    if (!sh->is_array())
      throw InputError(t + ": \"shape\" is " + json_type(*sh) + ", expected an array");
    // Element count without overflow: no file holds 2^56 elements, so anything above that limit is
    // rejected before a product could wrap (and bits = count * 64 still fits in 64 bits).
    constexpr uint64_t kMaxElements = uint64_t{1} << 56;
    Shape shape;
    bool has_zero = false;
    for (size_t i = 0; i < sh->size(); ++i) {
      const json& d = (*sh)[i];
      if (!d.is_number_unsigned())
        throw InputError(t + ": shape[" + std::to_string(i) + "] is " + json_type(d) + " (" +
                         printable(d.dump(), 40) + "), expected a non-negative integer");
      uint64_t dim = d.get<uint64_t>();
      if (dim > kMaxElements)
        throw InputError(t + ": shape[" + std::to_string(i) + "] = " + std::to_string(dim) +
                         " is too large for any file");
      has_zero |= (dim == 0);
      shape.push_back(static_cast<int64_t>(dim));
    }
    uint64_t numel = 1;
    if (has_zero) {
      numel = 0;
    } else {
      for (int64_t dim : shape) {
        if (static_cast<uint64_t>(dim) > kMaxElements / numel)
          throw InputError(t + ": shape " + shape_str(shape) + " is too large for any file");
        numel *= static_cast<uint64_t>(dim);
      }
    }

    auto off = v.find("data_offsets");
    if (off == v.end()) throw InputError(t + ": missing \"data_offsets\"");
    if (!off->is_array() || off->size() != 2)
      throw InputError(t + ": \"data_offsets\" must be an array [begin, end], got " +
                       (off->is_array() ? "an array of length " + std::to_string(off->size())
                                        : json_type(*off)));
    for (size_t i = 0; i < 2; ++i)
      if (!(*off)[i].is_number_unsigned())
        throw InputError(t + ": data_offsets[" + std::to_string(i) + "] is " +
                         json_type((*off)[i]) + ", expected a non-negative integer");
    uint64_t begin = (*off)[0].get<uint64_t>(), end = (*off)[1].get<uint64_t>();
    if (begin > end)
      throw InputError(t + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                       "] end before they begin");
    if (end > data_size)
      throw InputError(t + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                       "] lie past the end of the " + std::to_string(data_size) +
                       "-byte data buffer (truncated file?)");
    uint64_t bits = numel * static_cast<uint64_t>(known->bits);
    if (bits % 8 != 0)
      throw InputError(t + ": " + std::to_string(numel) + " elements of " + dtype_str +
                       " do not fill whole bytes");
    if (bits / 8 != end - begin)
      throw InputError(t + ": shape " + shape_str(shape) + " of " + dtype_str + " needs " +
                       std::to_string(bits / 8) + " bytes, but data_offsets [" +
                       std::to_string(begin) + ", " + std::to_string(end) + "] hold " +
                       std::to_string(end - begin));

    DType dtype;
    if (parse_dtype(dtype_str, &dtype)) {
      entries_[name] = Entry{dtype, shape, begin, end};
    } else {
      unsupported_[name] = dtype_str;
    }
    if (end > begin) spans.push_back(Span{begin, end, &name});
  }

  // The tensors tile the data buffer exactly, as the reference parser requires: no byte belongs
  // to two tensors, none to no tensor, and the file ends with the last tensor.
  std::sort(spans.begin(), spans.end(),
            [](const Span& a, const Span& b) { return a.begin < b.begin; });
  uint64_t covered = 0;
  const std::string* last = nullptr;
  for (const Span& sp : spans) {
    if (sp.begin < covered)
      throw InputError(p + ": tensors " + quoted(*last) + " and " + quoted(*sp.name) + " [" +
                       std::to_string(sp.begin) + ", " + std::to_string(sp.end) + ") overlap (bytes " +
                       std::to_string(sp.begin) + " to " + std::to_string(covered) + ")");
    if (sp.begin > covered)
      throw InputError(p + ": data buffer bytes [" + std::to_string(covered) + ", " +
                       std::to_string(sp.begin) + ") belong to no tensor (gap before " +
                       quoted(*sp.name) + ")");
    covered = sp.end;
    last = sp.name;
  }
  if (covered != data_size)
    throw InputError(p + ": " + std::to_string(data_size - covered) + " bytes after the last tensor (data " +
                     "buffer bytes [" + std::to_string(covered) + ", " + std::to_string(data_size) +
                     ") belong to no tensor)");
  aligned_copies_ = std::make_unique<AlignedCopies>();
}

void SafetensorsFile::check_unchanged() const {
  if (fd_ < 0) return;
  struct stat st{};
  if (fstat(fd_, &st) != 0) throw InputError(path_ + ": cannot stat: " + std::strerror(errno));
  const size_t now = static_cast<size_t>(st.st_size);
  if (now < map_size_)
    throw InputError(path_ + ": the file was truncated after sd_mpi opened it (" + std::to_string(map_size_) +
                     " bytes then, " + std::to_string(now) + " now); restore it and start again");
  if (now != map_size_ || mtime_ns(st) != mtime_ns_)
    throw InputError(path_ + ": the file changed on disk after sd_mpi opened it (" + std::to_string(map_size_) +
                     " bytes then, " + std::to_string(now) + " now, modified since); restore it and start again");
}

void SafetensorsFile::drop_resident(const std::string& name, uint64_t offset, int64_t length) const noexcept {
  if (!mapped_ || in_place_) return;
  auto it = entries_.find(name);
  if (it == entries_.end()) return;
  const Entry& e = it->second;
  const uint64_t size = e.end - e.begin;
  if (offset >= size) return;
  const uint64_t end = length < 0 ? size : std::min<uint64_t>(size, offset + static_cast<uint64_t>(length));
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  // Whole pages only: the pages at either end may hold a neighbour's bytes still being read.
  const uintptr_t first = (reinterpret_cast<uintptr_t>(data_ + e.begin + offset) + page - 1) / page * page;
  const uintptr_t last = reinterpret_cast<uintptr_t>(data_ + e.begin + end) / page * page;
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

WeightView SafetensorsFile::view(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    auto u = unsupported_.find(name);
    if (u != unsupported_.end())
      throw InputError(path_ + ": tensor " + quoted(name) + " has dtype " + u->second +
                       ", which is unsupported (sd_mpi reads F32, F16 and BF16)");
    throw InputError(path_ + ": no tensor " + quoted(name));
  }
  check_unchanged();  // before any data page of the mapping is touched
  const Entry& e = it->second;
  WeightView w;
  w.name = name;
  w.dtype = e.dtype;
  w.shape = e.shape;
  w.data = data_ + e.begin;
  size_t align = dtype_size(e.dtype);
  if (reinterpret_cast<uintptr_t>(w.data) % align != 0) {
    std::lock_guard<std::mutex> lock(aligned_copies_->mutex);
    auto& copy = aligned_copies_->copies[name];
    if (!copy) {
      size_t bytes = e.end - e.begin;
      copy.reset(new uint64_t[(bytes + 7) / 8]);
      std::memcpy(copy.get(), w.data, bytes);
    }
    w.data = copy.get();
  }
  if (in_place_ || !mapped_) w.keep_alive = shared_from_this();
  return w;
}

std::vector<float> SafetensorsFile::to_f32(const std::string& name) const {
  WeightView w = view(name);
  size_t n = static_cast<size_t>(shape_numel(w.shape));
  std::vector<float> out(n);
  if (n) convert_to_f32(w.dtype, w.data, out.data(), n);  // (an empty vector's data() may be null)
  return out;
}

// ---- writer -----------------------------------------------------------------------------------

void SafetensorsWriter::add(const std::string& name, DType dtype, const Shape& shape,
                            const void* data) {
  if (name == "__metadata__") throw Error("safetensors writer: '__metadata__' is not a tensor name");
  if (items_.count(name)) throw Error("safetensors writer: tensor '" + name + "' added twice");
  for (int64_t d : shape)
    if (d < 0) throw Error("safetensors writer: tensor '" + name + "' has shape " + shape_str(shape));
  Item item{dtype, shape, {}};
  size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  item.bytes.resize(bytes);
  if (bytes) std::memcpy(item.bytes.data(), data, bytes);
  items_.emplace(name, std::move(item));
}

void SafetensorsWriter::add_f32(const std::string& name, const Shape& shape,
                                const std::vector<float>& data) {
  if (static_cast<int64_t>(data.size()) != shape_numel(shape))
    throw Error("safetensors writer: tensor '" + name + "' has " + std::to_string(data.size()) +
                " values for shape " + shape_str(shape));
  add(name, DType::F32, shape, data.data());
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

void SafetensorsWriter::write(const std::string& path) const {
  // Larger elements first so each tensor stays aligned to its element size, then by name.
  std::vector<const std::pair<const std::string, Item>*> order;
  for (const auto& kv : items_) order.push_back(&kv);
  std::stable_sort(order.begin(), order.end(), [](auto* a, auto* b) {
    return dtype_size(a->second.dtype) > dtype_size(b->second.dtype);
  });
  json header = json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (auto* kv : order) {
    const Item& it = kv->second;
    header[kv->first] = {{"dtype", dtype_name(it.dtype)},
                         {"shape", it.shape},
                         {"data_offsets", {offset, offset + it.bytes.size()}}};
    offset += it.bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));

  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(tmp + ": cannot create: " + std::strerror(errno));
  auto write_all = [&](const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      ssize_t w = ::write(fd, c, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      c += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  };
  bool ok = write_all(len, 8) && write_all(text.data(), text.size());
  for (auto* kv : order) ok = ok && write_all(kv->second.bytes.data(), kv->second.bytes.size());
  ok = ok && ::fsync(fd) == 0;
  int e = errno;
  ok = (::close(fd) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    if (ok) e = errno;
    ::unlink(tmp.c_str());
    throw Error(path + ": cannot write: " + std::strerror(e));
  }
}

}  // namespace sdmpi
