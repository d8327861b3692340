// The sampler-name table (include/sdmpi/samplers.h). Adding a sampler: one row here, its scheduler
// in src/sched (make_scheduler's switch) and its golden test.
#include "sdmpi/samplers.h"

#include <cctype>

#include "sdmpi/error.h"

namespace sdmpi {
namespace {

bool same_name(const std::string& a, const char* b) {
  size_t i = 0;
  for (; i < a.size() && b[i]; ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return i == a.size() && !b[i];
}

}  // namespace

const std::vector<SamplerInfo>& sampler_table() {
  // kind, name, A1111's display name (also accepted), diffusers class, Karras variant, other names.
  static const std::vector<SamplerInfo> table = {
      {SamplerKind::PNDM, "pndm", "PLMS", "PNDMScheduler", false, {}},
      {SamplerKind::DDIM, "ddim", "DDIM", "DDIMScheduler", false, {}},
      {SamplerKind::Euler, "euler", "Euler", "EulerDiscreteScheduler", true, {}},
      {SamplerKind::EulerAncestral, "euler_a", "Euler a", "EulerAncestralDiscreteScheduler", false, {}},
      {SamplerKind::DPMSolverMultistep, "dpm++2m", "DPM++ 2M", "DPMSolverMultistepScheduler", true, {{"DPM++ 2M Karras", true}}},
      {SamplerKind::LCM, "lcm", "LCM", "LCMScheduler", false, {}},
  };
  return table;
}

const SamplerInfo* find_sampler(const std::string& name, bool* implies_karras) {
  for (const SamplerInfo& s : sampler_table()) {
    bool karras = false, found = same_name(name, s.name) || same_name(name, s.a1111_name);
    for (const SamplerAlias& a : s.aliases)
      if (!found && same_name(name, a.name)) found = true, karras = a.implies_karras;
    if (found) {
      if (implies_karras) *implies_karras = karras;
      return &s;
    }
  }
  return nullptr;
}

const SamplerInfo& sampler_info(SamplerKind kind) {
  for (const SamplerInfo& s : sampler_table())
    if (s.kind == kind) return s;
  throw Error("internal: sampler kind " + std::to_string(static_cast<int>(kind)) + " has no row in the sampler table");
}

const SamplerInfo* sampler_for_diffusers_class(const std::string& class_name) {
  for (const SamplerInfo& s : sampler_table())
    if (class_name == s.diffusers_class) return &s;
  return nullptr;
}

std::string sampler_names_text(const char* separator) {
  std::string out;
  for (const SamplerInfo& s : sampler_table()) out += (out.empty() ? "" : separator) + std::string(s.name);
  return out;
}

std::string sampler_choices_text() {
  // Each row's A1111 display name, then its other aliases.
  std::string a1111;
  auto add = [&](const char* n) {
    const std::string quoted = std::string(1, '"').append(n).append(1, '"');
    if (a1111.find(quoted) != std::string::npos) return;
    if (!a1111.empty()) a1111 += ", ";
    a1111 += quoted;
  };
  for (const SamplerInfo& s : sampler_table()) {
    add(s.a1111_name);
    for (const SamplerAlias& alias : s.aliases)
      add(alias.name);
  }
  return sampler_names_text(", ") + " (or AUTOMATIC1111's names: " + a1111 + ")";
}

std::string karras_sampler_names_text() {
  std::string out;
  for (const SamplerInfo& s : sampler_table())
    if (s.has_karras) out += (out.empty() ? "" : ", ") + std::string(s.name);
  return out;
}

}  // namespace sdmpi
