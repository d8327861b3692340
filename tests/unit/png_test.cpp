// PNG output: pixels and the A1111 "parameters" text chunk (tEXt for Latin-1, iTXt otherwise),
// read back with libpng here and with PIL through tests/python/check_png.py; the infotext format
// against strings written by hand from A1111's rules; atomic writes and error messages.
#include <gtest/gtest.h>

#ifndef SDMPI_HAVE_PNG
TEST(Png, Unavailable) { GTEST_SKIP() << "built without libpng: PNG output is not compiled in"; }
#else

#include <png.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "sdmpi/error.h"
#include "sdmpi/png.h"

using namespace sdmpi;
namespace fs = std::filesystem;

namespace {

const char* kPython = "/usr/bin/python3";
const std::string kChecker = std::string(SDMPI_TEST_DATA) + "/../python/check_png.py";

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "sdmpi_png_XXXXXX").string();
    path = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    if (std::getenv("SDMPI_KEEP_TEST_FILES")) return;  // for looking at the files by hand
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

// Same formula as tests/python/check_png.py.
std::vector<uint8_t> pattern_image(int seed, int w, int h) {
  std::vector<uint8_t> img(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        img[(static_cast<size_t>(y) * w + x) * 3 + c] = static_cast<uint8_t>((seed * 37 + y * 7 + x * 3 + c * 101 + (x * y) % 13) % 256);
  return img;
}

GenerationParams base_params() {
  GenerationParams p;
  p.prompt = "a cat";
  p.negative_prompt = "blurry";
  p.steps = 20;
  p.sampler = "euler_a";
  p.schedule = "karras";
  p.guidance = 7.5f;
  p.seed = 42;
  p.width = 512;
  p.height = 512;
  return p;
}

struct ReadBack {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
  std::vector<std::pair<int, std::string>> texts;  // (compression, text) of each text chunk
};

ReadBack read_png(const std::string& path) {
  ReadBack out;
  FILE* fp = std::fopen(path.c_str(), "rb");
  EXPECT_NE(fp, nullptr) << path;
  if (!fp) return out;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    ADD_FAILURE() << "libpng failed on " << path;
    png_destroy_read_struct(&png, &info, nullptr);
    std::fclose(fp);
    return out;
  }
  png_init_io(png, fp);
  png_read_png(png, info, PNG_TRANSFORM_IDENTITY, nullptr);
  out.width = static_cast<int>(png_get_image_width(png, info));
  out.height = static_cast<int>(png_get_image_height(png, info));
  EXPECT_EQ(png_get_color_type(png, info), PNG_COLOR_TYPE_RGB);
  EXPECT_EQ(png_get_bit_depth(png, info), 8);
  png_bytepp rows = png_get_rows(png, info);
  for (int y = 0; y < out.height; ++y) out.rgb.insert(out.rgb.end(), rows[y], rows[y] + out.width * 3);
  png_textp text = nullptr;
  const int n = png_get_text(png, info, &text, nullptr);
  for (int i = 0; i < n; ++i) {
    EXPECT_STREQ(text[i].key, "parameters");
    const size_t len = text[i].compression >= PNG_ITXT_COMPRESSION_NONE ? text[i].itxt_length : text[i].text_length;
    out.texts.emplace_back(text[i].compression, std::string(text[i].text, len));
  }
  png_destroy_read_struct(&png, &info, nullptr);
  std::fclose(fp);
  return out;
}

bool python_has_pil() {
  static const bool ok = std::system((std::string(kPython) + " -c 'import PIL, numpy' >/dev/null 2>&1").c_str()) == 0;
  return ok;
}

}  // namespace

// Expected strings are written by hand from A1111's create_infotext rules (key order, ", "
// joins, JSON quoting of values with ',', ':' or newlines, "Negative prompt:" line, strip()).
TEST(A1111Parameters, TheDocumentedExample) {
  EXPECT_EQ(a1111_parameters(base_params(), "name", "abcd1234ef5678", "sd_mpi 0.1.0"),
            "a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7.5, "
            "Seed: 42, Size: 512x512, Model hash: abcd1234ef, Model: name, RNG: CPU, Version: sd_mpi 0.1.0");
}

TEST(A1111Parameters, OptionalFieldsAndFormatting) {
  GenerationParams p = base_params();
  p.negative_prompt = "";
  p.sampler = "pndm";
  p.schedule = "default";
  p.guidance = 7.0f;
  p.seed = UINT64_MAX;
  p.width = 768;
  p.height = 512;
  EXPECT_EQ(a1111_parameters(p, "", "", ""),
            "a cat\nSteps: 20, Sampler: PLMS, Schedule type: Automatic, CFG scale: 7.0, Seed: 18446744073709551615, "
            "Size: 768x512, RNG: CPU");
  p.sampler = "ddim";
  p.eta = 0.5f;
  p.clip_skip = 1;
  p.guidance = 0.1f;
  EXPECT_EQ(a1111_parameters(p, "my, model: v2", "0123", "sd_mpi 0.1.0 (abc)"),
            "a cat\nSteps: 20, Sampler: DDIM, Schedule type: Automatic, CFG scale: 0.1, Seed: 18446744073709551615, "
            "Size: 768x512, Model hash: 0123, Model: \"my, model: v2\", Clip skip: 2, RNG: CPU, Eta DDIM: 0.5, "
            "Version: sd_mpi 0.1.0 (abc)");
}

TEST(A1111Parameters, PromptTextIsVerbatimAndTrimmed) {
  GenerationParams p = base_params();
  p.prompt = "  (masterpiece:1.2), a \"cat\",\nsecond line  ";
  p.negative_prompt = "ugly, bad: hands ";
  EXPECT_EQ(a1111_parameters(p, "m", "", ""),
            "(masterpiece:1.2), a \"cat\",\nsecond line  \nNegative prompt: ugly, bad: hands \nSteps: 20, Sampler: "
            "Euler a, Schedule type: Karras, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: m, RNG: CPU");
  p.prompt = "\xE3\x80\x80";  // U+3000 IDEOGRAPHIC SPACE: Python's strip() removes it too
  p.negative_prompt = "";
  EXPECT_EQ(a1111_parameters(p, "", "", ""),
            "Steps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7.5, Seed: 42, Size: 512x512, RNG: CPU");
}

TEST(A1111Parameters, SamplerNames) {
  EXPECT_EQ(a1111_sampler_name("pndm"), "PLMS");
  EXPECT_EQ(a1111_sampler_name("ddim"), "DDIM");
  EXPECT_EQ(a1111_sampler_name("euler"), "Euler");
  EXPECT_EQ(a1111_sampler_name("euler_a"), "Euler a");
  EXPECT_EQ(a1111_sampler_name("dpm++2m"), "DPM++ 2M");
  EXPECT_EQ(a1111_sampler_name("lcm"), "LCM");
  EXPECT_EQ(a1111_sampler_name("unipc"), "unipc");
}

TEST(Png, PixelsAndLatin1TextChunk) {
  TempDir dir;
  const std::string path = dir / "a.png";
  const auto img = pattern_image(3, 37, 21);
  const std::string params = "Café crème\nSteps: 20";
  write_png(path, img.data(), 37, 21, params);
  const ReadBack r = read_png(path);
  EXPECT_EQ(r.width, 37);
  EXPECT_EQ(r.height, 21);
  EXPECT_EQ(r.rgb, img);
  ASSERT_EQ(r.texts.size(), 1u);
  EXPECT_EQ(r.texts[0].first, PNG_TEXT_COMPRESSION_NONE);     // tEXt
  EXPECT_EQ(r.texts[0].second, "Caf\xE9 cr\xE8me\nSteps: 20");  // stored as Latin-1 bytes
}

TEST(Png, NonLatin1TextGoesToITXt) {
  TempDir dir;
  const std::string path = dir / "b.png";
  const auto img = pattern_image(5, 8, 8);
  const std::string params = "東京の夜, 🐱\nSteps: 4";
  write_png(path, img.data(), 8, 8, params);
  const ReadBack r = read_png(path);
  ASSERT_EQ(r.texts.size(), 1u);
  EXPECT_EQ(r.texts[0].first, PNG_ITXT_COMPRESSION_NONE);
  EXPECT_EQ(r.texts[0].second, params);
}

TEST(Png, NoTextWhenParametersEmptyAndOverwritesAtomically) {
  TempDir dir;
  const std::string path = dir / "c.png";
  std::ofstream(path) << "old contents";
  const auto img = pattern_image(1, 4, 3);
  write_png(path, img.data(), 4, 3, "");
  const ReadBack r = read_png(path);
  EXPECT_EQ(r.rgb, img);
  EXPECT_TRUE(r.texts.empty());
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) files += e.is_regular_file();
  EXPECT_EQ(files, 1u) << "a temporary file was left behind";
}

TEST(Png, ErrorsNamePathAndReason) {
  TempDir dir;
  const auto img = pattern_image(1, 4, 4);
  const std::string missing = dir / "no/dir/x.png";
  try {
    write_png(missing, img.data(), 4, 4, "x");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "cannot write PNG " + missing + ": No such file or directory");
  }
  const std::string path = dir / "bad.png";
  try {
    write_png(path, img.data(), 4, 4, "bad \xFF utf-8");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "cannot write PNG " + path + ": the parameters text is not valid UTF-8 (byte 4)");
  }
  EXPECT_THROW(write_png(path, img.data(), 0, 4, ""), Error);
  EXPECT_THROW(write_png(path, nullptr, 4, 4, ""), Error);
  EXPECT_THROW(write_png(path, img.data(), 4, 4, std::string("a\0b", 3)), Error);
  EXPECT_TRUE(fs::is_empty(dir.path));
}

TEST(Png, PilReadsPixelsAndParameters) {
  if (!python_has_pil()) GTEST_SKIP() << kPython << " lacks PIL/numpy: the PIL read-back check is skipped";
  TempDir dir;
  nlohmann::json cases = nlohmann::json::array();
  struct Case {
    const char* name;
    GenerationParams params;
    const char* chunk;
    nlohmann::json fields;  // what an A1111-style parser must find (written by hand)
  };
  GenerationParams latin = base_params();
  latin.prompt = "portrait, café au lait: 1.2";
  GenerationParams unicode = base_params();
  unicode.prompt = "夜の東京, neon";
  unicode.negative_prompt = "ぼやけた";
  unicode.width = 48;
  unicode.height = 32;
  const Case list[] = {
      {"latin.png", latin, "tEXt",
       {{"Steps", "20"}, {"Sampler", "Euler a"}, {"Schedule type", "Karras"}, {"CFG scale", "7.5"}, {"Seed", "42"},
        {"Size", "512x512"}, {"Model hash", "abcd1234ef"}, {"Model", "sd15"}, {"RNG", "CPU"},
        {"Version", "sd_mpi 0.1.0"}}},
      {"unicode.png", unicode, "iTXt",
       {{"Steps", "20"}, {"Sampler", "Euler a"}, {"Seed", "42"}, {"Size", "48x32"}, {"Negative prompt", "ぼやけた"}}},
  };
  int seed = 0;
  for (const Case& c : list) {
    const int w = c.params.width / 8, h = c.params.height / 8;
    const auto img = pattern_image(seed, w, h);
    const std::string text = a1111_parameters(c.params, "sd15", "abcd1234ef5678", "sd_mpi 0.1.0");
    write_png(dir / c.name, img.data(), w, h, text);
    cases.push_back({{"path", dir / c.name}, {"seed", seed}, {"width", w}, {"height", h}, {"parameters", text},
                     {"prompt", c.params.prompt}, {"chunk", c.chunk}, {"fields", c.fields}});
    ++seed;
  }
  const std::string expect = dir / "expect.json";
  std::ofstream(expect) << cases.dump(2);
  const int rc = std::system((std::string(kPython) + " " + kChecker + " " + expect).c_str());
  EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
}

// Cost of write_png for a 512x512 image (level 6, as PIL), noise-like and smooth.
TEST(Png, DISABLED_WriteTiming) {
  TempDir dir;
  const int size = 512, n = 10;
  std::vector<uint8_t> noise(static_cast<size_t>(size) * size * 3), smooth(noise.size());
  uint32_t x = 2463534242u;
  for (auto& v : noise) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    v = static_cast<uint8_t>(x >> 24);
  }
  for (size_t i = 0; i < smooth.size(); ++i) smooth[i] = static_cast<uint8_t>((i / 3 % size + i / 3 / size) / 4);
  for (const auto* img : {&noise, &smooth}) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) write_png(dir / "t.png", img->data(), size, size, "params");
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / n;
    std::printf("%s 512x512 PNG: %.1f ms/image, %.0f KiB\n", img == &noise ? "noise " : "smooth", ms,
                static_cast<double>(fs::file_size(dir / "t.png")) / 1024.0);
  }
}

#endif  // SDMPI_HAVE_PNG
