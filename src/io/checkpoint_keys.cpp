// The LDM → diffusers key table (docs/reference/sd15-semantics.md §7.2).
//
// A key is `<component prefix><block prefix><rest>`. The component prefix picks the model; the
// first rule of that model whose `from` pattern matches the start of what follows rewrites that
// part to `to`; an inner table then renames the start of the rest (e.g. a ResNet's `in_layers.0.`
// → `norm1.`). Patterns match literally except `#`, which takes a block index; `{b}` and `{l}` in
// `to` are that index turned into diffusers' (block, layer) by the rule's index arithmetic, `{1}`
// is a second index copied as it is. First match wins, so specific rules come before general ones.
// kohya's LoRA module names (LDM paths with '_' for '.') go through the same UNet rules, a pattern's
// '.' then matching '_' (ldm_unet_module_underscored).
#include "io/checkpoint_keys.h"

#include <algorithm>
#include <cstring>
#include <limits>

namespace sdmpi::ckpt {
namespace {

// How a rule turns the first `#` index into {b} and {l}.
enum class Index {
  None,
  InputBlock,   // LDM input_blocks.i (i ≥ 1): b = (i-1) / (lpb+1), l = (i-1) % (lpb+1)
  OutputBlock,  // LDM output_blocks.i:        b = i / (lpb+1),     l = i % (lpb+1)
  Same,         // b = i
  ReversedUp,   // VAE decoder.up.i:           b = up_blocks-1-i
};

// Renames applied to the start of what follows the block prefix.
enum class Inner { None, UnetResnet, VaeResnet, VaeAttention };

// Which rules a key prefix's keys go through: the LDM UNet's, the LDM VAE's, transformers' CLIP
// names (SD 1.x, SDXL's first embedder), or OpenCLIP's (SD 2.x, SDXL's second embedder).
enum class Rules { Unet, Vae, HfClip, OpenClip };

struct Rule {
  Rules rules;
  const char* from;
  const char* to;
  Index index;
  Inner inner;
};

struct Rename {
  const char* from;
  const char* to;
};

constexpr Rename kUnetResnet[] = {
    {"in_layers.0.", "norm1."},       {"in_layers.2.", "conv1."},
    {"emb_layers.1.", "time_emb_proj."}, {"out_layers.0.", "norm2."},
    {"out_layers.3.", "conv2."},      {"skip_connection.", "conv_shortcut."},
};
constexpr Rename kVaeResnet[] = {
    {"nin_shortcut.", "conv_shortcut."},  // norm1/conv1/norm2/conv2 keep their names
};
constexpr Rename kVaeAttention[] = {
    {"norm.", "group_norm."}, {"q.", "to_q."}, {"k.", "to_k."},
    {"v.", "to_v."},          {"proj_out.", "to_out.0."},
};

struct ComponentPrefix {
  const char* prefix;
  Component component;
  Rules rules;
};
constexpr ComponentPrefix kPrefixes[] = {
    {"model.diffusion_model.", Component::Unet, Rules::Unet},
    {"first_stage_model.", Component::Vae, Rules::Vae},
    {"cond_stage_model.transformer.", Component::TextEncoder, Rules::HfClip},
    {"cond_stage_model.model.", Component::TextEncoder, Rules::OpenClip},          // SD 2.x
    {"conditioner.embedders.0.transformer.", Component::TextEncoder, Rules::HfClip},  // SDXL
    {"conditioner.embedders.1.model.", Component::TextEncoder2, Rules::OpenClip},     // SDXL
    {"conditioner.embedders.0.model.", Component::TextEncoder2, Rules::OpenClip},     // SDXL refiner: bigG alone
};

using C = Rules;
constexpr Rule kRules[] = {
    // ---- UNet ---------------------------------------------------------------------------------
    {C::Unet, "time_embed.0.", "time_embedding.linear_1.", Index::None, Inner::None},
    {C::Unet, "time_embed.2.", "time_embedding.linear_2.", Index::None, Inner::None},
    // SDXL's added conditioning (diffusers' add_embedding; add_time_proj has no weights).
    {C::Unet, "label_emb.0.0.", "add_embedding.linear_1.", Index::None, Inner::None},
    {C::Unet, "label_emb.0.2.", "add_embedding.linear_2.", Index::None, Inner::None},
    {C::Unet, "input_blocks.0.0.", "conv_in.", Index::None, Inner::None},
    {C::Unet, "out.0.", "conv_norm_out.", Index::None, Inner::None},
    {C::Unet, "out.2.", "conv_out.", Index::None, Inner::None},
    {C::Unet, "input_blocks.#.0.op.", "down_blocks.{b}.downsamplers.0.conv.", Index::InputBlock, Inner::None},
    {C::Unet, "input_blocks.#.0.", "down_blocks.{b}.resnets.{l}.", Index::InputBlock, Inner::UnetResnet},
    {C::Unet, "input_blocks.#.1.", "down_blocks.{b}.attentions.{l}.", Index::InputBlock, Inner::None},
    {C::Unet, "middle_block.0.", "mid_block.resnets.0.", Index::None, Inner::UnetResnet},
    {C::Unet, "middle_block.1.", "mid_block.attentions.0.", Index::None, Inner::None},
    {C::Unet, "middle_block.2.", "mid_block.resnets.1.", Index::None, Inner::UnetResnet},
    {C::Unet, "output_blocks.#.0.", "up_blocks.{b}.resnets.{l}.", Index::OutputBlock, Inner::UnetResnet},
    // The upsampler follows the resnet (.1) in blocks without attention, else the attention (.2).
    {C::Unet, "output_blocks.#.1.conv.", "up_blocks.{b}.upsamplers.0.conv.", Index::OutputBlock, Inner::None},
    {C::Unet, "output_blocks.#.2.conv.", "up_blocks.{b}.upsamplers.0.conv.", Index::OutputBlock, Inner::None},
    {C::Unet, "output_blocks.#.1.", "up_blocks.{b}.attentions.{l}.", Index::OutputBlock, Inner::None},
    // ---- VAE ----------------------------------------------------------------------------------
    {C::Vae, "quant_conv.", "quant_conv.", Index::None, Inner::None},
    {C::Vae, "post_quant_conv.", "post_quant_conv.", Index::None, Inner::None},
    {C::Vae, "encoder.conv_in.", "encoder.conv_in.", Index::None, Inner::None},
    {C::Vae, "encoder.conv_out.", "encoder.conv_out.", Index::None, Inner::None},
    {C::Vae, "encoder.norm_out.", "encoder.conv_norm_out.", Index::None, Inner::None},
    {C::Vae, "encoder.down.#.block.#.", "encoder.down_blocks.{b}.resnets.{1}.", Index::Same, Inner::VaeResnet},
    {C::Vae, "encoder.down.#.downsample.conv.", "encoder.down_blocks.{b}.downsamplers.0.conv.", Index::Same, Inner::None},
    {C::Vae, "encoder.mid.block_1.", "encoder.mid_block.resnets.0.", Index::None, Inner::VaeResnet},
    {C::Vae, "encoder.mid.block_2.", "encoder.mid_block.resnets.1.", Index::None, Inner::VaeResnet},
    {C::Vae, "encoder.mid.attn_1.", "encoder.mid_block.attentions.0.", Index::None, Inner::VaeAttention},
    {C::Vae, "decoder.conv_in.", "decoder.conv_in.", Index::None, Inner::None},
    {C::Vae, "decoder.conv_out.", "decoder.conv_out.", Index::None, Inner::None},
    {C::Vae, "decoder.norm_out.", "decoder.conv_norm_out.", Index::None, Inner::None},
    {C::Vae, "decoder.up.#.block.#.", "decoder.up_blocks.{b}.resnets.{1}.", Index::ReversedUp, Inner::VaeResnet},
    {C::Vae, "decoder.up.#.upsample.conv.", "decoder.up_blocks.{b}.upsamplers.0.conv.", Index::ReversedUp, Inner::None},
    {C::Vae, "decoder.mid.block_1.", "decoder.mid_block.resnets.0.", Index::None, Inner::VaeResnet},
    {C::Vae, "decoder.mid.block_2.", "decoder.mid_block.resnets.1.", Index::None, Inner::VaeResnet},
    {C::Vae, "decoder.mid.attn_1.", "decoder.mid_block.attentions.0.", Index::None, Inner::VaeAttention},
    // ---- CLIP text encoder: already transformers' names once the prefix is gone ----------------
    {C::HfClip, "text_model.", "text_model.", Index::None, Inner::None},
    // Files written by transformers >= 5.6 (CLIPTextModel flattened) lack the `text_model.` level.
    {C::HfClip, "embeddings.", "text_model.embeddings.", Index::None, Inner::None},
    {C::HfClip, "encoder.", "text_model.encoder.", Index::None, Inner::None},
    {C::HfClip, "final_layer_norm.", "text_model.final_layer_norm.", Index::None, Inner::None},
    {C::HfClip, "text_projection.", "text_projection.", Index::None, Inner::None},
    // ---- OpenCLIP text tower (open_clip's names) → transformers' CLIPTextModel(WithProjection) ---
    // docs/reference/sdxl-semantics.md §6. in_proj (q, k, v stacked) is split by the loader; the
    // projection is transposed (x @ text_projection in open_clip, a Linear's [out, in] in ours).
    {C::OpenClip, "token_embedding.", "text_model.embeddings.token_embedding.", Index::None, Inner::None},
    {C::OpenClip, "positional_embedding", "text_model.embeddings.position_embedding.weight", Index::None, Inner::None},
    {C::OpenClip, "transformer.resblocks.#.ln_1.", "text_model.encoder.layers.{b}.layer_norm1.", Index::Same, Inner::None},
    {C::OpenClip, "transformer.resblocks.#.ln_2.", "text_model.encoder.layers.{b}.layer_norm2.", Index::Same, Inner::None},
    {C::OpenClip, "transformer.resblocks.#.attn.in_proj_", "text_model.encoder.layers.{b}.self_attn.in_proj.", Index::Same,
     Inner::None},
    {C::OpenClip, "transformer.resblocks.#.attn.out_proj.", "text_model.encoder.layers.{b}.self_attn.out_proj.",
     Index::Same, Inner::None},
    {C::OpenClip, "transformer.resblocks.#.mlp.c_fc.", "text_model.encoder.layers.{b}.mlp.fc1.", Index::Same, Inner::None},
    {C::OpenClip, "transformer.resblocks.#.mlp.c_proj.", "text_model.encoder.layers.{b}.mlp.fc2.", Index::Same, Inner::None},
    {C::OpenClip, "ln_final.", "text_model.final_layer_norm.", Index::None, Inner::None},
    {C::OpenClip, "text_projection", "text_projection.weight", Index::None, Inner::None},
};

bool starts_with(const std::string& s, size_t pos, const char* prefix) {
  size_t n = std::strlen(prefix);
  return s.size() - pos >= n && s.compare(pos, n, prefix) == 0;
}

// Matches `pattern` at key[pos...]; on success sets *end past the match and fills the indices.
// `dot`: what a '.' of the pattern matches (kohya's LoRA names spell module paths with '_').
bool match(const char* pattern, const std::string& key, size_t pos, size_t* end, long idx[2], char dot = '.') {
  int n_idx = 0;
  for (const char* p = pattern; *p; ++p) {
    if (*p == '#') {
      size_t start = pos;
      long v = 0;
      while (pos < key.size() && key[pos] >= '0' && key[pos] <= '9' && pos - start < 6)
        v = v * 10 + (key[pos++] - '0');
      if (pos == start || n_idx == 2) return false;
      idx[n_idx++] = v;
    } else {
      if (pos >= key.size() || key[pos] != (*p == '.' ? dot : *p)) return false;
      ++pos;
    }
  }
  *end = pos;
  return true;
}

std::string expand(const char* tmpl, long b, long l, long second) {
  std::string out;
  for (const char* p = tmpl; *p; ++p) {
    if (p[0] == '{' && p[1] && p[2] == '}') {
      out += std::to_string(p[1] == 'b' ? b : p[1] == 'l' ? l : second);
      p += 2;
    } else {
      out += *p;
    }
  }
  return out;
}

template <size_t N>
std::string rename_start(const std::string& rest, const Rename (&table)[N], char dot = '.') {
  size_t end = 0;
  long unused[2] = {0, 0};
  for (const Rename& r : table)
    if (match(r.from, rest, 0, &end, unused, dot)) return r.to + rest.substr(end);
  return rest;
}

// Parses the decimal number at s[pos...] that a '.' ends; -1 if there is none. *after: past the '.'.
long number_at(const std::string& s, size_t pos, size_t* after = nullptr) {
  long v = 0;
  size_t start = pos;
  while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9' && pos - start < 6) v = v * 10 + (s[pos++] - '0');
  if (pos == start || pos >= s.size() || s[pos] != '.') return -1;
  if (after) *after = pos + 1;
  return v;
}

// The encoder layer a text-encoder name belongs to ("…encoder.layers.7.…" → 7), else -1.
int text_layer_of(const std::string& name) {
  const std::string marker = "encoder.layers.";
  const size_t at = name.find(marker);
  if (at == std::string::npos) return -1;
  return static_cast<int>(number_at(name, at + marker.size()));
}

}  // namespace

const char* component_name(Component c) {
  switch (c) {
    case Component::Unet: return "unet";
    case Component::Vae: return "vae";
    case Component::TextEncoder: return "text_encoder";
    case Component::TextEncoder2: return "text_encoder_2";
  }
  return "?";
}

LdmLayout detect_ldm_layout(const std::vector<std::string>& keys) {
  LdmLayout layout;
  static const std::string in_prefix = "model.diffusion_model.input_blocks.";
  static const std::string up_prefix = "first_stage_model.decoder.up.";
  long first_downsampler = std::numeric_limits<long>::max(), max_input = -1, max_up = -1;
  for (const std::string& k : keys) {
    if (k.compare(0, in_prefix.size(), in_prefix) == 0) {
      size_t after = 0;
      long i = number_at(k, in_prefix.size(), &after);
      if (i < 0) continue;
      max_input = std::max(max_input, i);
      if (starts_with(k, after, "0.op."))
        first_downsampler = std::min(first_downsampler, i);
    } else if (k.compare(0, up_prefix.size(), up_prefix) == 0) {
      max_up = std::max(max_up, number_at(k, up_prefix.size()));
    }
  }
  // Input block 0 is conv_in; each down block then has lpb ResNets and (but the last) a downsampler.
  if (first_downsampler != std::numeric_limits<long>::max() && first_downsampler >= 2)
    layout.unet_layers_per_block = static_cast<int>(first_downsampler - 1);
  else if (first_downsampler == std::numeric_limits<long>::max() && max_input >= 1)
    layout.unet_layers_per_block = static_cast<int>(max_input);
  if (max_up >= 0) layout.vae_up_blocks = static_cast<int>(max_up + 1);
  return layout;
}

namespace {

// The first rule of `rules` that matches key[pos...], applied: the diffusers name (the block
// prefix rewritten, the rest renamed by the rule's inner table) and that inner table.
struct Rewritten {
  std::string name;
  Inner inner;
};
std::optional<Rewritten> rewrite(Rules rules, const std::string& key, size_t pos, const LdmLayout& layout, char dot) {
  const long group = layout.unet_layers_per_block + 1;
  for (const Rule& r : kRules) {
    if (r.rules != rules) continue;
    size_t end = 0;
    long idx[2] = {0, 0};
    if (!match(r.from, key, pos, &end, idx, dot)) continue;
    long b = idx[0], l = 0;
    switch (r.index) {
      case Index::None: break;
      case Index::InputBlock:
        if (idx[0] < 1) continue;
        b = (idx[0] - 1) / group;
        l = (idx[0] - 1) % group;
        break;
      case Index::OutputBlock:
        b = idx[0] / group;
        l = idx[0] % group;
        break;
      case Index::Same: break;
      case Index::ReversedUp:
        if (idx[0] >= layout.vae_up_blocks) continue;
        b = layout.vae_up_blocks - 1 - idx[0];
        break;
    }
    std::string rest = key.substr(end);
    switch (r.inner) {
      case Inner::None: break;
      case Inner::UnetResnet: rest = rename_start(rest, kUnetResnet, dot); break;
      case Inner::VaeResnet: rest = rename_start(rest, kVaeResnet, dot); break;
      case Inner::VaeAttention: rest = rename_start(rest, kVaeAttention, dot); break;
    }
    return Rewritten{expand(r.to, b, l, idx[1]) + rest, r.inner};
  }
  return std::nullopt;
}

}  // namespace

std::optional<DiffusersKey> ldm_to_diffusers(const std::string& key, const LdmLayout& layout) {
  const ComponentPrefix* cp = nullptr;
  for (const auto& p : kPrefixes)
    if (starts_with(key, 0, p.prefix)) {
      cp = &p;
      break;
    }
  if (!cp) return std::nullopt;  // model_ema.*, alphas_cumprod, ...
  const std::optional<Rewritten> rewritten = rewrite(cp->rules, key, std::strlen(cp->prefix), layout, '.');
  if (!rewritten) return std::nullopt;
  DiffusersKey out{cp->component, rewritten->name, false};
  out.squeeze_to_linear = rewritten->inner == Inner::VaeAttention && is_vae_attention_projection(out.name);
  if (cp->rules == Rules::OpenClip) {
    // "in_proj." + "weight" / "bias": q, k and v stacked along the first dimension.
    const std::string in_proj = ".self_attn.in_proj.";
    const size_t at = out.name.find(in_proj);
    if (at != std::string::npos) {
      const std::string tail = out.name.substr(at + in_proj.size());
      if (tail != "weight" && tail != "bias") return std::nullopt;
      out.name = out.name.substr(0, at) + ".self_attn.{q,k,v}_proj." + tail;
      out.split_qkv = true;
    }
    out.transpose = out.name == "text_projection.weight";
    if (out.name.find(".encoder.layers.") != std::string::npos || out.transpose || out.split_qkv ||
        out.name.rfind("text_model.", 0) == 0)
      out.text_layer = text_layer_of(out.name);
  } else if (cp->rules == Rules::HfClip) {
    out.text_layer = text_layer_of(out.name);
  }
  return out;
}

std::optional<std::string> ldm_unet_module_underscored(const std::string& module, const LdmLayout& layout) {
  // A trailing separator, as a weight name has before "weight", lets the patterns' final '.' match.
  const std::optional<Rewritten> rewritten = rewrite(Rules::Unet, module + "_", 0, layout, '_');
  if (!rewritten) return std::nullopt;
  std::string name = rewritten->name;
  std::replace(name.begin(), name.end(), '.', '_');
  if (!name.empty() && name.back() == '_') name.pop_back();
  return name;
}

std::string canonical_text_encoder_name(const std::string& name) {
  // The text encoder rules of the table, applied to a bare name.
  for (const Rule& r : kRules) {
    if (r.rules != Rules::HfClip || !starts_with(name, 0, r.from)) continue;
    return r.to + name.substr(std::strlen(r.from));
  }
  return name;
}

std::string modern_vae_attention_name(const std::string& name, bool* legacy) {
  static const Rename kLegacy[] = {
      {"query.", "to_q."}, {"key.", "to_k."}, {"value.", "to_v."}, {"proj_attn.", "to_out.0."}};
  if (legacy) *legacy = false;
  // Only inside an attention block: `….attentions.<n>.<legacy>.…`.
  size_t a = name.find(".attentions.");
  if (a == std::string::npos) return name;
  size_t pos = a + std::strlen(".attentions.");
  if (number_at(name, pos, &pos) < 0) return name;
  for (const Rename& r : kLegacy)
    if (starts_with(name, pos, r.from)) {
      if (legacy) *legacy = true;
      return name.substr(0, pos) + r.to + name.substr(pos + std::strlen(r.from));
    }
  return name;
}

bool is_vae_attention_projection(const std::string& name) {
  if (name.find(".attentions.") == std::string::npos) return false;
  static const char* kSuffixes[] = {".to_q.weight", ".to_k.weight", ".to_v.weight", ".to_out.0.weight"};
  for (const char* s : kSuffixes) {
    size_t n = std::strlen(s);
    if (name.size() >= n && name.compare(name.size() - n, n, s) == 0) return true;
  }
  return false;
}

}  // namespace sdmpi::ckpt
