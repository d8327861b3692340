// PNG output: 8-bit RGB files carrying the generation parameters the way AUTOMATIC1111 writes
// them, so the existing tools (A1111's "PNG Info", civitai, PIL's img.info["parameters"]) read them.
//
// The text lives in one chunk with keyword "parameters", placed before the image data: tEXt when
// every character is Latin-1 (stored as Latin-1 bytes), otherwise an uncompressed iTXt in UTF-8
// with empty language and translated keyword. This is what PIL's PngInfo.add_text(), which A1111
// uses, does.
//
// Files appear atomically: the PNG is written to "<path>.tmp-<pid>", flushed to disk, then renamed
// over <path>, so a file with the final name is always complete.
//
// Availability: PNG output needs libpng (SDMPI_HAVE_PNG). Without it, kPngSupported is false and
// the functions below are inline stubs that throw Error("this sd_mpi was built without libpng ..."),
// so callers link either way and check kPngSupported for a clear message.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sdmpi/error.h"
#include "sdmpi/job.h"

namespace sdmpi {

#ifdef SDMPI_HAVE_PNG
inline constexpr bool kPngSupported = true;
#else
inline constexpr bool kPngSupported = false;
#endif

// Writes width*height*3 bytes of row-major RGB as an RGB8 PNG with `parameters` in its
// "parameters" text chunk (none when empty). `parameters` must be valid UTF-8 without NUL bytes.
// zlib level 6 is PIL's default. Replaces an existing file. Throws Error naming the path and the
// OS reason.
void write_png(const std::string& path, const uint8_t* rgb, int width, int height, const std::string& parameters,
               int compression_level = 6);

// The PNG file's bytes in memory (what write_png writes), so a generating rank can encode and
// rank 0 only writes. `what_for_errors` names the image in messages.
std::vector<uint8_t> encode_png(const uint8_t* rgb, int width, int height, const std::string& parameters,
                                int compression_level = 6, const std::string& what_for_errors = "image");
// Writes bytes to path atomically: a temporary name, fsync, then rename. Errors read
// "cannot write <kind><path>: <reason>".
void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes, const std::string& kind = "PNG ");

// The A1111 infotext of one image:
//   <prompt>
//   Negative prompt: <negative prompt>            (only when there is one)
//   Steps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7.5, Seed: 42, Size: 512x512,
//   Model hash: abcd1234ef, Model: name, Clip skip: 2, RNG: CPU, Version: sd_mpi 0.1.0
// Fields follow A1111's order; values holding ',', ':' or a newline are JSON-quoted as A1111 does.
// - Sampler: A1111's display name (a1111_sampler_name), Schedule type "Automatic" for our default
//   schedule and "Karras" for karras.
// - CFG scale: the shortest decimal that round-trips the float, with ".0" for whole numbers.
// - Seed: the unsigned 64-bit seed.  Size: width x height.
// - Model hash: the first 10 characters of `model_hash` (A1111's short hash of the file's sha256);
//   omitted when empty, like Model when `model_name` is empty.
// - Denoising strength (A1111's img2img key) and Init image hash (the SHA-256 of the init image
//   file, hex; ours): for img2img items (GenerationParams::init_image set).
// - Clip skip: A1111 counts layers from 1 (1 = last layer) while GenerationParams::clip_skip
//   follows diffusers (0 = last layer), so clip_skip c >= 1 is written as c+1; c = 0 is omitted.
// - RNG: CPU, because our initial noise is torch's CPU generator (A1111's randn_source "CPU").
// - Eta DDIM: the DDIM eta, when the sampler is ddim and eta != 0.
// - CFG Rescale phi: GenerationParams::guidance_rescale when > 0 (the key the A1111 CFG Rescale
//   extension writes).
// - Prompt weighting: "a1111" when the item's prompt was read with A1111's attention syntax
//   (GenerationParams::prompt_weighting; A1111 itself always does and writes nothing); omitted
//   for "none", where "(word:1.2)" was plain text.
// - Refiner, Refiner switch at: A1111's keys for a second stage (GenerationParams::refiner_start
//   > 0): `refiner` ("name [hash]") and the share of the schedule the base ran.
// - Aesthetic score, Negative aesthetic score: the refiner's conditioning, written when a refiner
//   runs (a second stage, or `model_family` "SDXL refiner").
// - Model family: `model_family` ("SD 1.x", "SD 2.x"); omitted when empty.
// - Version: `version` as given (e.g. "sd_mpi 0.1.0"); omitted when empty.
// The whole text is trimmed of leading/trailing whitespace, as A1111 does.
std::string a1111_parameters(const GenerationParams& params, const std::string& model_name,
                             const std::string& model_hash, const std::string& version,
                             const std::string& model_family = "", const std::string& refiner = "");

// Our sampler names → A1111's: pndm "PLMS", ddim "DDIM", euler "Euler", euler_a "Euler a",
// dpm++2m "DPM++ 2M", lcm "LCM"; any other name is returned unchanged.
std::string a1111_sampler_name(const std::string& sampler);

#ifndef SDMPI_HAVE_PNG
[[noreturn]] inline void png_unavailable() {
  throw Error("this sd_mpi was built without libpng: PNG output (--out-dir) is not available");
}
inline void write_png(const std::string&, const uint8_t*, int, int, const std::string&, int) { png_unavailable(); }
inline std::vector<uint8_t> encode_png(const uint8_t*, int, int, const std::string&, int, const std::string&) {
  png_unavailable();
}
inline void write_file_atomic(const std::string&, const std::vector<uint8_t>&, const std::string&) { png_unavailable(); }
inline std::string a1111_parameters(const GenerationParams&, const std::string&, const std::string&,
                                    const std::string&, const std::string& = "", const std::string& = "") {
  png_unavailable();
}
inline std::string a1111_sampler_name(const std::string&) { png_unavailable(); }
#endif  // !SDMPI_HAVE_PNG

}  // namespace sdmpi
