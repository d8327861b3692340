// Image files to 8-bit RGB (see include/sdmpi/image_file.h): libpng and libjpeg behind one call.
//
// Both libraries report fatal errors by longjmp. As in png.cpp, each function that calls into a
// library between setjmp and its return holds only trivially destructible locals (buffers are
// sized and owned by its caller), so a jump skips no C++ destructor; the message travels in a plain
// buffer and becomes an InputError naming the file afterwards.
#include "sdmpi/image_file.h"

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "sdmpi/error.h"

#ifdef SDMPI_HAVE_PNG
#include <png.h>
#endif
#ifdef SDMPI_HAVE_JPEG
// jpeglib.h needs FILE and size_t declared first.
#include <jpeglib.h>
#endif

namespace sdmpi {

namespace {

struct Failure {
  char message[256] = {0};
};

bool is_png(const std::vector<uint8_t>& b) {
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  return b.size() >= 8 && std::memcmp(b.data(), sig, 8) == 0;
}
bool is_jpeg(const std::vector<uint8_t>& b) { return b.size() >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff; }

void check_size(int64_t width, int64_t height, const std::string& name) {
  if (width < 1 || height < 1 || width > kMaxImageSide || height > kMaxImageSide)
    throw InputError(name + ": image size " + std::to_string(width) + "x" + std::to_string(height) +
                     " is outside 1.." + std::to_string(kMaxImageSide) + " per side");
}

#ifdef SDMPI_HAVE_PNG
struct PngSource {
  const std::vector<uint8_t>* bytes;
  size_t pos;
  Failure* failure;
};

void on_png_error(png_structp png, png_const_charp msg) {
  auto* src = static_cast<PngSource*>(png_get_error_ptr(png));
  std::snprintf(src->failure->message, sizeof src->failure->message, "%s", msg ? msg : "libpng error");
  png_longjmp(png, 1);
}
void on_png_warning(png_structp, png_const_charp) {}

void on_png_read(png_structp png, png_bytep out, png_size_t n) {
  auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
  if (src->bytes->size() - src->pos < n) png_error(png, "the file ends early (truncated)");
  std::memcpy(out, src->bytes->data() + src->pos, n);
  src->pos += n;
}

// Pass 1 reads the header and sets the transforms (to 8-bit RGB); pass 2 decodes into `rgb`,
// sized by the caller from pass 1's answer. One png_struct lives across both, so both run inside
// read_png's setjmp frame through plain pointers.
bool read_png(PngSource* src, png_structp png, png_infop info, uint32_t* width, uint32_t* height,
              std::vector<uint8_t>* rgb, std::vector<png_bytep>* rows, bool (*size_ok)(uint32_t, uint32_t)) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_read_fn(png, src, on_png_read);
  png_read_info(png, info);
  *width = png_get_image_width(png, info);
  *height = png_get_image_height(png, info);
  if (!size_ok(*width, *height)) return true;  // the caller reports the size
  const int color = png_get_color_type(png, info);
  png_set_expand(png);  // palette → RGB, grey below 8 bits → 8, tRNS → alpha (dropped below)
  png_set_strip_16(png);  // 16-bit samples: the high byte
  if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
  png_set_strip_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_rowbytes(png, info) != static_cast<size_t>(*width) * 3) png_error(png, "unexpected row layout");
  rgb->resize(static_cast<size_t>(*width) * *height * 3);
  rows->resize(*height);
  for (uint32_t y = 0; y < *height; ++y) (*rows)[y] = rgb->data() + static_cast<size_t>(y) * *width * 3;
  png_read_image(png, rows->data());
  png_read_end(png, nullptr);
  return true;
}

DecodedImage decode_png(const std::vector<uint8_t>& bytes, const std::string& name) {
  Failure failure;
  PngSource src{&bytes, 0, &failure};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, on_png_error, on_png_warning);
  if (!png) throw Error(name + ": out of memory reading the PNG");
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    throw Error(name + ": out of memory reading the PNG");
  }
  uint32_t width = 0, height = 0;
  DecodedImage out;
  std::vector<png_bytep> rows;
  const bool ok = read_png(&src, png, info, &width, &height, &out.rgb, &rows, [](uint32_t w, uint32_t h) {
    return w >= 1 && h >= 1 && w <= static_cast<uint32_t>(kMaxImageSide) && h <= static_cast<uint32_t>(kMaxImageSide);
  });
  png_destroy_read_struct(&png, &info, nullptr);
  if (!ok) throw InputError(name + ": not a readable PNG (" + failure.message + ")");
  check_size(width, height, name);
  out.width = static_cast<int>(width);
  out.height = static_cast<int>(height);
  return out;
}
#endif  // SDMPI_HAVE_PNG

#ifdef SDMPI_HAVE_JPEG
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  Failure* failure;
};

void on_jpeg_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  char buffer[JMSG_LENGTH_MAX];
  (*cinfo->err->format_message)(cinfo, buffer);
  std::snprintf(err->failure->message, sizeof err->failure->message, "%s", buffer);
  std::longjmp(err->jump, 1);
}
// libjpeg's warnings (corrupt data it can decode past, e.g. a truncated scan it pads with grey):
// a damaged file, which we refuse rather than generate from.
void on_jpeg_warning(j_common_ptr cinfo, int level) {
  if (level < 0) on_jpeg_error(cinfo);
}

bool read_jpeg(jpeg_decompress_struct* cinfo, JpegError* err, const std::vector<uint8_t>* bytes, uint32_t* width,
               uint32_t* height, std::vector<uint8_t>* rgb, bool (*size_ok)(uint32_t, uint32_t)) {
  if (setjmp(err->jump)) return false;
  jpeg_create_decompress(cinfo);
  jpeg_mem_src(cinfo, bytes->data(), static_cast<unsigned long>(bytes->size()));
  jpeg_read_header(cinfo, TRUE);
  *width = cinfo->image_width;
  *height = cinfo->image_height;
  if (!size_ok(*width, *height)) return true;
  if (cinfo->jpeg_color_space == JCS_CMYK || cinfo->jpeg_color_space == JCS_YCCK) {
    std::snprintf(err->failure->message, sizeof err->failure->message, "CMYK JPEGs are not supported");
    return false;
  }
  cinfo->out_color_space = JCS_RGB;
  jpeg_start_decompress(cinfo);
  if (cinfo->output_components != 3) {
    std::snprintf(err->failure->message, sizeof err->failure->message, "unexpected %d output components",
                  cinfo->output_components);
    return false;
  }
  rgb->resize(static_cast<size_t>(*width) * *height * 3);
  while (cinfo->output_scanline < cinfo->output_height) {
    JSAMPROW row = rgb->data() + static_cast<size_t>(cinfo->output_scanline) * *width * 3;
    jpeg_read_scanlines(cinfo, &row, 1);
  }
  jpeg_finish_decompress(cinfo);
  return true;
}

DecodedImage decode_jpeg(const std::vector<uint8_t>& bytes, const std::string& name) {
  Failure failure;
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = on_jpeg_error;
  err.mgr.emit_message = on_jpeg_warning;
  err.failure = &failure;
  uint32_t width = 0, height = 0;
  DecodedImage out;
  const bool ok = read_jpeg(&cinfo, &err, &bytes, &width, &height, &out.rgb, [](uint32_t w, uint32_t h) {
    return w >= 1 && h >= 1 && w <= static_cast<uint32_t>(kMaxImageSide) && h <= static_cast<uint32_t>(kMaxImageSide);
  });
  jpeg_destroy_decompress(&cinfo);
  if (!ok) throw InputError(name + ": not a readable JPEG (" + failure.message + ")");
  check_size(width, height, name);
  out.width = static_cast<int>(width);
  out.height = static_cast<int>(height);
  return out;
}
#endif  // SDMPI_HAVE_JPEG

}  // namespace

DecodedImage decode_image(const std::vector<uint8_t>& bytes, const std::string& name) {
  if (is_png(bytes)) {
#ifdef SDMPI_HAVE_PNG
    return decode_png(bytes, name);
#else
    throw InputError(name + ": this sd_mpi was built without libpng and cannot read PNG images");
#endif
  }
  if (is_jpeg(bytes)) {
#ifdef SDMPI_HAVE_JPEG
    return decode_jpeg(bytes, name);
#else
    throw InputError(name + ": this sd_mpi was built without libjpeg and cannot read JPEG images");
#endif
  }
  throw InputError(name + ": not a PNG or JPEG image (" +
                   (bytes.empty() ? std::string("the file is empty") : "unknown signature") + ")");
}

DecodedImage read_image_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw InputError(path + ": is a folder, not an image file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open the image (" + std::strerror(errno) + ")");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw InputError(path + ": cannot read the image (" + std::strerror(errno) + ")");
  return decode_image(bytes, path);
}

}  // namespace sdmpi
