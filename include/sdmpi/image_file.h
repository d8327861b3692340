// Reading an image file (img2img's init image) into 8-bit RGB, the way diffusers users load one:
// PIL's Image.open(path).convert("RGB") (diffusers.utils.load_image).
//
// PNG through libpng, JPEG through libjpeg(-turbo); the format is told by the file's signature,
// not its name. Conversion to RGB follows PIL: palette and grey expanded, 16-bit samples reduced to
// their high byte, an alpha channel dropped (not composited); JPEG decoded by libjpeg with its
// default (islow DCT, fancy upsampling) to RGB, as Pillow asks for it. Each format is optional at
// build time (SDMPI_WITH_PNG, SDMPI_WITH_JPEG); a file of a format this build lacks is one clear
// error. Every failure is an InputError naming the file and what is wrong with it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sdmpi {

struct DecodedImage {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // height * width * 3, row-major
};

// Largest side accepted (the generate command's own bound on --width/--height).
inline constexpr int kMaxImageSide = 16384;

// The file at `path`, decoded. InputError: missing or unreadable file, not a PNG or JPEG, a
// damaged or truncated file, a side above kMaxImageSide, a format this build cannot read.
DecodedImage read_image_file(const std::string& path);

// The same from bytes already read; `name` is what errors call them.
DecodedImage decode_image(const std::vector<uint8_t>& bytes, const std::string& name);

}  // namespace sdmpi
