// Helpers shared by the golden tests of the models: weights from a golden safetensors file,
// relative error, and the message of an expected InputError.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "sdmpi/error.h"
#include "sdmpi/safetensors.h"
#include "sdmpi/weights.h"

namespace sdmpi::testing_util {

// Every tensor of a safetensors file, bytes as stored (F16 stays F16), minus `drop`.
inline std::shared_ptr<MemoryWeightSource> file_source(const std::string& path, const std::set<std::string>& drop = {}) {
  auto file = SafetensorsFile::open(path);
  auto source = std::make_shared<MemoryWeightSource>(path);
  for (const auto& [name, entry] : file->entries()) {
    if (drop.count(name)) continue;
    WeightView v = file->view(name);
    const auto* p = static_cast<const uint8_t*>(v.data);
    source->add(name, v.dtype, v.shape, std::vector<uint8_t>(p, p + shape_numel(v.shape) * dtype_size(v.dtype)));
  }
  return source;
}

// ‖ours − ref‖ / ‖ref‖ in double.
inline double rel_error(const std::vector<float>& ours, const std::vector<float>& ref) {
  EXPECT_EQ(ours.size(), ref.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < std::min(ours.size(), ref.size()); ++i) {
    num += (double(ours[i]) - ref[i]) * (double(ours[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);
}

// The message of the InputError f throws ("no exception" / "not an InputError: ..." otherwise).
inline std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("not an InputError: ") + e.what();
  }
  return "no exception";
}

}  // namespace sdmpi::testing_util
