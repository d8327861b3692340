// Weights in memory, and the loader that checks a model's parameters against a source.
//
// The loader never stops at the first problem: a model asks for all its parameters, the loader
// notes each missing, mis-shaped or unreadable one, and finish() compares what was asked with what
// the source holds, so one message tells the user everything wrong with a component (a wrong
// config shows up as a pattern of mis-shaped names, a wrong file as a list of missing ones).
#include "sdmpi/weights.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "sdmpi/error.h"

namespace sdmpi {

// ---- MemoryWeightSource -------------------------------------------------------------------------

void MemoryWeightSource::add(const std::string& name, DType dtype, const Shape& shape,
                             std::vector<uint8_t> bytes) {
  for (int64_t d : shape)
    if (d < 0) throw Error(description_ + ": tensor '" + name + "' has shape " + shape_str(shape));
  size_t want = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  if (bytes.size() != want)
    throw Error(description_ + ": tensor '" + name + "' " + shape_str(shape) + " " + dtype_name(dtype) +
                " needs " + std::to_string(want) + " bytes, got " + std::to_string(bytes.size()));
  items_[name] = Item{dtype, shape, std::move(bytes)};
}

void MemoryWeightSource::add_f32(const std::string& name, const Shape& shape,
                                 const std::vector<float>& values) {
  std::vector<uint8_t> bytes(values.size() * sizeof(float));
  if (!bytes.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  add(name, DType::F32, shape, std::move(bytes));
}

std::vector<std::string> MemoryWeightSource::names() const {
  std::vector<std::string> out;
  out.reserve(items_.size());
  for (const auto& kv : items_) out.push_back(kv.first);
  return out;  // std::map keeps them sorted
}

bool MemoryWeightSource::has(const std::string& name) const { return items_.count(name) != 0; }

WeightView MemoryWeightSource::get(const std::string& name) const {
  auto it = items_.find(name);
  if (it == items_.end()) throw InputError(description_ + ": no tensor '" + name + "'");
  return WeightView{name, it->second.dtype, it->second.shape, it->second.bytes.data()};
}

// ---- PreparedWeightSource -----------------------------------------------------------------------

uint64_t PreparedWeightSource::plan(const WeightSource& source, DType dtype, uint64_t offset,
                                    std::vector<Slot>* slots) {
  constexpr uint64_t kAlign = 64;  // a cache line: no two tensors share one
  for (const std::string& name : source.names()) {
    WeightView w;
    try {
      w = source.get(name);
    } catch (const InputError&) {
      // Not readable (a dtype nobody reads, a file changed on disk): left to the original source,
      // which says why when the model asks for it.
      continue;
    }
    offset = (offset + kAlign - 1) / kAlign * kAlign;
    slots->push_back(Slot{name, w.shape, offset});
    offset += static_cast<uint64_t>(shape_numel(w.shape)) * dtype_size(dtype);
  }
  return offset;
}

void PreparedWeightSource::fill(const WeightSource& source, DType dtype, const std::vector<Slot>& slots,
                                void* block, int threads) {
  // Work in pieces of about 1 Mi elements (rows of one tensor), so one large tensor does not
  // leave the other threads idle; each piece writes its own bytes only.
  struct Piece {
    size_t slot;
    int64_t row_begin, row_end;
  };
  std::vector<WeightView> views(slots.size());
  std::vector<Piece> pieces;
  for (size_t i = 0; i < slots.size(); ++i) {
    views[i] = source.get(slots[i].name);
    if (views[i].shape != slots[i].shape)
      throw InputError(source.describe() + ": tensor '" + slots[i].name + "' changed shape while loading");
    const int64_t rows = views[i].shape.empty() ? 1 : views[i].shape[0];
    const int64_t per_row = rows > 0 ? shape_numel(views[i].shape) / rows : 0;
    const int64_t step = std::max<int64_t>(1, (int64_t{1} << 20) / std::max<int64_t>(per_row, 1));
    for (int64_t r = 0; r < rows; r += step) pieces.push_back(Piece{i, r, std::min(rows, r + step)});
  }
  uint8_t* base = static_cast<uint8_t*>(block);
  const int64_t n = static_cast<int64_t>(pieces.size());
#pragma omp parallel for num_threads(std::max(1, threads)) schedule(dynamic, 1) if (threads > 1 && n > 1)
  for (int64_t p = 0; p < n; ++p) {
    const Piece& pc = pieces[static_cast<size_t>(p)];
    convert_weight_rows(views[pc.slot], dtype, base + slots[pc.slot].offset, pc.row_begin, pc.row_end);
  }
}

uint64_t PreparedWeightSource::fingerprint(const std::vector<Slot>& slots, DType dtype) {
  // FNV-1a over the plan's text: a mismatch detector, not a security measure.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const std::string& s) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  };
  mix(dtype_name(dtype));
  for (const Slot& s : slots) mix(s.name + shape_str(s.shape) + std::to_string(s.offset) + ";");
  return h;
}

PreparedWeightSource::PreparedWeightSource(std::shared_ptr<const WeightSource> original, DType dtype,
                                           std::vector<Slot> slots, const void* block,
                                           std::shared_ptr<const void> block_owner)
    : original_(std::move(original)),
      dtype_(dtype),
      block_(static_cast<const uint8_t*>(block)),
      block_owner_(std::move(block_owner)) {
  for (Slot& s : slots) slots_.emplace(s.name, std::move(s));
}

WeightView PreparedWeightSource::get(const std::string& name) const {
  auto it = slots_.find(name);
  if (it == slots_.end()) return original_->get(name);  // not converted: the original's answer
  WeightView w(name, dtype_, it->second.shape, block_ + it->second.offset);
  w.backend_layout = true;
  w.keep_alive = block_owner_;
  return w;
}

// ---- WeightLoader -------------------------------------------------------------------------------

WeightLoader::WeightLoader(const WeightSource& source, Backend& backend, std::string component,
                           std::optional<DType> model_dtype)
    : source_(source), backend_(backend), component_(std::move(component)), model_dtype_(model_dtype) {}

Tensor WeightLoader::load(const std::string& name, const Shape& shape, WeightKind kind) {
  requested_.push_back(name);
  if (!source_.has(name)) {
    missing_.push_back(name);
    return Tensor();
  }
  WeightView w;
  try {
    w = source_.get(name);
  } catch (const InputError& e) {
    // e.g. an I64 tensor where a float one belongs; the message names file and dtype.
    unreadable_.push_back(e.what());
    return Tensor();
  }
  if (w.shape != shape) {
    misshaped_.push_back(name + ": file " + shape_str(w.shape) + " expected " + shape_str(shape));
    return Tensor();
  }
  Tensor uploaded = backend_.upload_weight(w, kind, model_dtype_);
  // The backend holds its own copy now, unless it computes from the source's bytes in place
  // (keep_alive: --map-weights, node-shared weights), so the source may drop its pages.
  if (!w.keep_alive) source_.release(name);
  return uploaded;
}

void WeightLoader::ignore_prefix(const std::string& prefix) { ignored_prefixes_.push_back(prefix); }

void WeightLoader::ignore(const std::string& name) { ignored_names_.push_back(name); }

namespace {

// "N <what> (a, b, c, ... and M more)"
std::string listing(size_t count, const char* what, const std::vector<std::string>& items) {
  constexpr size_t kShown = 6;
  std::string s = std::to_string(count) + " " + what + " (";
  for (size_t i = 0; i < items.size() && i < kShown; ++i) s += (i ? ", " : "") + items[i];
  if (items.size() > kShown) s += ", ... and " + std::to_string(items.size() - kShown) + " more";
  return s + ")";
}

}  // namespace

void WeightLoader::finish() {
  std::vector<std::string> asked = requested_;
  std::sort(asked.begin(), asked.end());
  std::vector<std::string> unexpected;
  for (const std::string& n : source_.names()) {
    if (std::binary_search(asked.begin(), asked.end(), n)) continue;
    bool ignored = std::find(ignored_names_.begin(), ignored_names_.end(), n) != ignored_names_.end();
    for (const std::string& p : ignored_prefixes_) ignored = ignored || n.compare(0, p.size(), p) == 0;
    if (!ignored) unexpected.push_back(n);
  }
  if (missing_.empty() && misshaped_.empty() && unreadable_.empty() && unexpected.empty()) return;

  std::vector<std::string> parts;
  if (!missing_.empty())
    parts.push_back(listing(missing_.size(), missing_.size() == 1 ? "missing tensor" : "missing tensors",
                            missing_));
  if (!misshaped_.empty()) parts.push_back(listing(misshaped_.size(), "mis-shaped", misshaped_));
  if (!unreadable_.empty()) parts.push_back(listing(unreadable_.size(), "unreadable", unreadable_));
  if (!unexpected.empty()) parts.push_back(listing(unexpected.size(), "unexpected", unexpected));
  std::string msg = component_ + " (" + source_.describe() + "): ";
  for (size_t i = 0; i < parts.size(); ++i) msg += (i ? ", " : "") + parts[i];
  throw InputError(msg);
}

}  // namespace sdmpi
