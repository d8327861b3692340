// encode_archive_chunk: the archive's stored row, made where the image is made. HDF5's deflate
// filter (H5Z__filter_deflate) calls zlib's compress2 at the dataset's level on the whole chunk,
// so compress2 here gives the same bytes the writer would store itself (tested byte for byte).
#include <zlib.h>

#include <cstring>

#include "sdmpi/archive.h"
#include "sdmpi/error.h"

namespace sdmpi {

std::vector<uint8_t> encode_archive_chunk(const uint8_t* rgb, int width, int height, int canvas_width,
                                          int canvas_height, int gzip_level) {
  if (!rgb || width <= 0 || height <= 0 || width > canvas_width || height > canvas_height)
    throw Error("encode_archive_chunk: image " + std::to_string(width) + "x" + std::to_string(height) +
                " does not fit the canvas " + std::to_string(canvas_width) + "x" + std::to_string(canvas_height));
  if (gzip_level < 0 || gzip_level > 9) throw Error("encode_archive_chunk: gzip level " + std::to_string(gzip_level));
  const size_t W = static_cast<size_t>(canvas_width), H = static_cast<size_t>(canvas_height);
  std::vector<uint8_t> canvas;
  const uint8_t* pixels = rgb;
  if (static_cast<size_t>(width) != W || static_cast<size_t>(height) != H) {
    canvas.assign(H * W * 3, 0);
    const size_t line = static_cast<size_t>(width) * 3;
    for (size_t y = 0; y < static_cast<size_t>(height); ++y) std::memcpy(canvas.data() + y * W * 3, rgb + y * line, line);
    pixels = canvas.data();
  }
  const size_t n = H * W * 3;
  if (gzip_level == 0) return canvas.empty() ? std::vector<uint8_t>(pixels, pixels + n) : canvas;
  uLongf out_len = compressBound(static_cast<uLong>(n));
  std::vector<uint8_t> out(out_len);
  int rc = compress2(out.data(), &out_len, pixels, static_cast<uLong>(n), gzip_level);
  if (rc != Z_OK) throw Error("encode_archive_chunk: zlib compress2 failed (" + std::to_string(rc) + ")");
  out.resize(out_len);
  return out;
}

}  // namespace sdmpi
