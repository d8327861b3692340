// write_png: RGB8 PNG files with the generation parameters in a "parameters" text chunk, written
// to a temporary name and renamed into place (see include/sdmpi/png.h).
//
// libpng reports errors by longjmp. The function that calls libpng therefore holds only trivially
// destructible locals (the row pointers are built by its caller), so jumping back skips no C++
// destructor; the message travels in a plain buffer and becomes an sdmpi::Error afterwards.
#include <fcntl.h>
#include <png.h>
#include <unistd.h>

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <vector>

#include "sdmpi/error.h"
#include "sdmpi/png.h"
#include "sdmpi/utf8.h"

namespace sdmpi {

namespace {

struct PngFailure {
  char message[256];
};

void on_png_error(png_structp png, png_const_charp msg) {
  auto* failure = static_cast<PngFailure*>(png_get_error_ptr(png));
  // A failed fwrite reaches us as "Write Error": keep the OS reason that caused it.
  const int err = errno;
  if (err != 0)
    std::snprintf(failure->message, sizeof failure->message, "%s (%s)", msg ? msg : "libpng error", std::strerror(err));
  else
    std::snprintf(failure->message, sizeof failure->message, "%s", msg ? msg : "libpng error");
  png_longjmp(png, 1);
}

void on_png_warning(png_structp, png_const_charp) {}

// UTF-8 → Latin-1 bytes when every code point is below 256; false otherwise (then iTXt is needed).
// Throws on invalid UTF-8.
bool to_latin1(const std::string& utf8, std::string* latin1, const std::string& path) {
  latin1->clear();
  bool fits = true;
  for (size_t pos = 0; pos < utf8.size();) {
    const Utf8CodePoint c = decode_utf8_at(utf8, pos);
    if (c.length == 0)
      throw Error("cannot write PNG " + path + ": the parameters text is not valid UTF-8 (byte " +
                  std::to_string(pos) + ")");
    if (c.code_point == 0) throw Error("cannot write PNG " + path + ": the parameters text contains a NUL character");
    if (c.code_point > 0xFF) fits = false;
    if (fits) latin1->push_back(static_cast<char>(c.code_point));
    pos += c.length;
  }
  if (!fits) latin1->clear();
  return fits;
}

struct MemorySink {
  std::vector<uint8_t>* out;
};
void on_png_write(png_structp png, png_bytep data, png_size_t n) {
  auto* sink = static_cast<MemorySink*>(png_get_io_ptr(png));
  sink->out->insert(sink->out->end(), data, data + n);
}
void on_png_flush(png_structp) {}

// Writes the PNG stream to `out`. Returns false with failure->message set when libpng fails.
bool encode_png(std::vector<uint8_t>* out, png_bytep* rows, int width, int height, png_textp text, int num_text,
                int level, PngFailure* failure) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, failure, on_png_error, on_png_warning);
  if (!png) {
    std::snprintf(failure->message, sizeof failure->message, "out of memory");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    std::snprintf(failure->message, sizeof failure->message, "out of memory");
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  MemorySink sink{out};
  png_set_write_fn(png, &sink, on_png_write, on_png_flush);
  png_set_compression_level(png, level);
  png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), 8, PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (num_text > 0) png_set_text(png, info, text, num_text);
  png_write_info(png, info);
  png_write_image(png, rows);
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
}

}  // namespace

std::vector<uint8_t> encode_png(const uint8_t* rgb, int width, int height, const std::string& parameters,
                                int compression_level, const std::string& what_for_errors) {
  const std::string what = "cannot write PNG " + what_for_errors;
  if (!rgb) throw Error(what + ": no pixels given");
  if (width <= 0 || height <= 0 || width > 1000000 || height > 1000000)
    throw Error(what + ": image size " + std::to_string(width) + "x" + std::to_string(height) + " is out of range");
  if (compression_level < 0 || compression_level > 9)
    throw Error(what + ": compression level " + std::to_string(compression_level) + " is not in 0..9");

  // The text chunk: tEXt with Latin-1 bytes when possible, else iTXt with UTF-8.
  std::string latin1;
  char keyword[] = "parameters";
  char empty[] = "";
  png_text text{};
  int num_text = 0;
  if (!parameters.empty()) {
    num_text = 1;
    text.key = keyword;
    if (to_latin1(parameters, &latin1, what_for_errors)) {
      text.compression = PNG_TEXT_COMPRESSION_NONE;
      text.text = latin1.data();
      text.text_length = latin1.size();
    } else {
      text.compression = PNG_ITXT_COMPRESSION_NONE;
      text.text = const_cast<char*>(parameters.c_str());
      text.itxt_length = parameters.size();
      text.lang = empty;
      text.lang_key = empty;
    }
  }
  std::vector<png_bytep> rows(static_cast<size_t>(height));
  for (size_t y = 0; y < rows.size(); ++y)
    rows[y] = const_cast<png_bytep>(rgb + y * static_cast<size_t>(width) * 3);
  std::vector<uint8_t> out;
  out.reserve(static_cast<size_t>(width) * static_cast<size_t>(height) + 1024);
  PngFailure failure{};
  if (!encode_png(&out, rows.data(), width, height, &text, num_text, compression_level, &failure))
    throw Error(what + ": " + failure.message);
  return out;
}

void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes, const std::string& kind) {
  const std::string what = "cannot write " + kind + path;
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(what + ": " + std::strerror(errno));
  // write + fsync before the rename, so a crash never leaves a final name with missing bytes.
  int err = 0;
  for (size_t done = 0; done < bytes.size() && !err;) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno != EINTR) err = errno;
    if (n > 0) done += static_cast<size_t>(n);
  }
  if (!err && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && !err) err = errno;
  if (err) {
    ::unlink(tmp.c_str());
    throw Error(what + ": " + std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    ::unlink(tmp.c_str());
    throw Error(what + ": " + std::strerror(err));
  }
}

void write_png(const std::string& path, const uint8_t* rgb, int width, int height, const std::string& parameters,
               int compression_level) {
  write_file_atomic(path, encode_png(rgb, width, height, parameters, compression_level, path), "PNG ");
}

}  // namespace sdmpi
