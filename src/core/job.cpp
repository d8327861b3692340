// Work-item arithmetic shared by the plan (which refuses a job before it starts) and the pipeline
// (which runs it): img2img's first scheduler call from strength, the refiner hand-off's timestep
// cutoff (include/sdmpi/job.h).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "sdmpi/error.h"
#include "sdmpi/job.h"

namespace sdmpi {

namespace {

// The Python float a user wrote for a float32 we hold: its shortest decimal form that reads back
// as the same float32, read as a double.
double as_python_float(float v) {
  char text[32];
  for (int digits = 1; digits <= 9; ++digits) {
    std::snprintf(text, sizeof text, "%.*g", digits, static_cast<double>(v));
    if (std::strtof(text, nullptr) == v) break;
  }
  return std::strtod(text, nullptr);
}

std::string shortest(float v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.9g", as_python_float(v));
  return text;
}

}  // namespace

std::string lora_set_key(const std::vector<ItemLora>& loras) {
  std::string key;
  char scale[32];
  for (const ItemLora& l : loras) {
    std::snprintf(scale, sizeof scale, "%.9g", static_cast<double>(l.scale));
    key += l.path + '\x1f' + scale + '\x1e';
  }
  return key;
}

size_t img2img_first_call(int steps, float strength) {
  if (!(strength > 0.0f && strength <= 1.0f)) throw InputError("strength " + shortest(strength) + " is outside (0, 1]");
  const int init_timestep = std::min(static_cast<int>(steps * as_python_float(strength)), steps);
  if (init_timestep < 1)
    throw InputError("strength " + shortest(strength) + " with " + std::to_string(steps) +
                     " steps leaves no denoising step (int(steps * strength) must be at least 1)");
  return static_cast<size_t>(steps - init_timestep);
}

int denoising_cutoff(int num_train_timesteps, float fraction) {
  if (!(fraction > 0.0f && fraction < 1.0f))
    throw InputError("refiner start " + shortest(fraction) + " is outside (0, 1)");
  const double t = num_train_timesteps;
  return static_cast<int>(std::nearbyint(t - as_python_float(fraction) * t));  // round half to even, as Python
}

void check_prompt_weighting(const std::string& mode, const std::string& where) {
  if (mode != "none" && mode != "a1111")
    throw InputError(where + ": unknown prompt weighting \"" + mode + "\" (known: none, a1111)");
}

}  // namespace sdmpi
