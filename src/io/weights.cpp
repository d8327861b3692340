// Weights in memory, and the loader that checks a model's parameters against a source.
//
// The loader never stops at the first problem: a model asks for all its parameters, the loader
// notes each missing, mis-shaped or unreadable one, and finish() compares what was asked with what
// the source holds, so one message tells the user everything wrong with a component (a wrong
// config shows up as a pattern of mis-shaped names, a wrong file as a list of missing ones).
#include "sdmpi/weights.h"

#include <algorithm>
#include <cstring>

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

// ---- WeightLoader -------------------------------------------------------------------------------

WeightLoader::WeightLoader(const WeightSource& source, Backend& backend, std::string component)
    : source_(source), backend_(backend), component_(std::move(component)) {}

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
  return backend_.upload_weight(w, kind);
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
