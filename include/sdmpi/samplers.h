// The sampler-name table: one row per sampler, every name it goes by.
//
// A sampler has our canonical name (the --sampler value, the archive's /sampler column), the names
// users bring from AUTOMATIC1111 (accepted case-insensitively, some implying the Karras schedule),
// the name A1111 displays (the PNG "parameters" chunk), and the diffusers scheduler class it
// reproduces (a model's scheduler_config.json "_class_name" picks the default sampler). The command
// line, the prompt files, the PNG writer, the scheduler factory and the pipeline all read this table;
// a new sampler is one row in src/core/samplers.cpp (plus its scheduler in src/sched).
#pragma once

#include <string>
#include <vector>

namespace sdmpi {

enum class SamplerKind { PNDM, DDIM, Euler, EulerAncestral, DPMSolverMultistep, LCM };

struct SamplerAlias {
  const char* name;     // compared case-insensitively
  bool implies_karras;  // "DPM++ 2M Karras"
};

struct SamplerInfo {
  SamplerKind kind;
  const char* name;                   // canonical: "pndm", "ddim", "euler", "euler_a", "dpm++2m", "lcm"
  const char* a1111_name;             // what AUTOMATIC1111 shows (and accepted): "PLMS", "Euler a", ...
  const char* diffusers_class;        // "PNDMScheduler", "EulerAncestralDiscreteScheduler", ...
  bool has_karras;                    // whether --schedule karras applies
  std::vector<SamplerAlias> aliases;  // other accepted names
};

// Every row, in the order help texts list them.
const std::vector<SamplerInfo>& sampler_table();

// The row of a canonical name or alias (case-insensitive); nullptr when none. *implies_karras (if
// given) says whether the name itself asks for the Karras schedule.
const SamplerInfo* find_sampler(const std::string& name, bool* implies_karras = nullptr);
const SamplerInfo& sampler_info(SamplerKind kind);
// The row whose diffusers class is `class_name`; nullptr when we have none.
const SamplerInfo* sampler_for_diffusers_class(const std::string& class_name);

// For messages and --help: "pndm, ddim, euler, euler_a, dpm++2m, lcm (or AUTOMATIC1111's names:
// "PLMS", "DDIM", "Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "LCM")".
std::string sampler_choices_text();
// "pndm|ddim|euler|euler_a|dpm++2m|lcm".
std::string sampler_names_text(const char* separator = "|");
// The samplers that take --schedule karras: "euler, dpm++2m".
std::string karras_sampler_names_text();

}  // namespace sdmpi
