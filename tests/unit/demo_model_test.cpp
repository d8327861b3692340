// The built-in demo model (`--model demo`, tools/demo_model/):
//  - Semantic: it draws what held-out captions say. tests/data/demo/heldout_prompts.txt holds
//    captions whose (colour, shape, background) never appeared in training (dataset.py
//    --heldout 24); a classical detector reads each image: every pixel classified to the nearest
//    colour of the training palette (none when far from all: a mixed edge block), the background is
//    the commonest class, the shapes' colour the commonest other one, blobs are its 4-connected
//    components, the position their centroid (dataset.py's group_position). An image is correct
//    when background, colour, count and position all match; at least 80% must be.
//  - Exact: sd_mpi's images equal diffusers' on the committed folder within 1 level per pixel
//    (tools/golden/make_demo_golden.py), and the embedded copy draws what the folder draws.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "pipeline/demo_model.h"
#include "sdmpi/backend.h"
#include "sdmpi/pipeline.h"

using namespace sdmpi;

namespace {

const std::string kData = std::string(SDMPI_TEST_DATA);

// tools/demo_model/dataset.py: PALETTE, COUNTS, REGIONS (change them together).
struct PaletteColour {
  const char* name;
  std::array<int, 3> rgb;
};
const PaletteColour kPalette[] = {{"red", {220, 40, 40}},     {"green", {40, 180, 60}}, {"blue", {40, 70, 220}},
                                  {"yellow", {240, 220, 40}}, {"white", {245, 245, 245}}, {"black", {20, 20, 20}}};
constexpr int kColours = 6;
constexpr int kMinBlobPixels = 12;  // smaller specks are noise, not shapes (a small triangle is ~40)
// A pixel farther than this from every palette colour is a mix of two (the VAE decodes 4x4 blocks, so
// a block on a shape's edge averages shape and background, e.g. black on white gives a grey nearest
// to green) and counts as no colour. Palette colours lie >= 166 apart, so no pure colour is lost.
constexpr int kMixedColourDistance = 100;

int colour_index(const std::string& word) {
  for (int i = 0; i < kColours; ++i)
    if (word == kPalette[i].name) return i;
  return -1;
}

// What a caption of the grammar "{count} {size} {colour} {shape}[s] {position} on a {bg}
// background" asks for.
struct Expected {
  int count = 0, colour = -1, background = -1;
  std::string position;
};

Expected parse_caption(const std::string& caption) {
  std::istringstream in(caption);
  std::vector<std::string> w;
  for (std::string s; in >> s;) w.push_back(s);
  Expected e;
  // "two small red circles on the left on a blue background": 11 words
  if (w.size() != 11) return e;
  const std::map<std::string, int> counts{{"one", 1}, {"two", 2}, {"three", 3}};
  e.count = counts.count(w[0]) ? counts.at(w[0]) : 0;
  e.colour = colour_index(w[2]);
  e.position = w[6];  // left, right, top, bottom, center
  e.background = colour_index(w[9]);
  return e;
}

struct Seen {
  int background = -1, colour = -1, count = 0;
  double cx = 0, cy = 0, mean_area = 0;
  std::string position;
};

Seen detect(const std::vector<uint8_t>& rgb, int w, int h) {
  std::vector<int> cls(static_cast<size_t>(w * h));
  std::array<int, kColours> hist{};
  for (int i = 0; i < w * h; ++i) {
    int best = 0, best_d = 1 << 30;
    for (int c = 0; c < kColours; ++c) {
      int d = 0;
      for (int k = 0; k < 3; ++k) {
        int x = int(rgb[size_t(i) * 3 + size_t(k)]) - kPalette[c].rgb[size_t(k)];
        d += x * x;
      }
      if (d < best_d) best_d = d, best = c;
    }
    if (best_d > kMixedColourDistance * kMixedColourDistance) {
      cls[size_t(i)] = -1;
      continue;
    }
    cls[size_t(i)] = best;
    ++hist[size_t(best)];
  }
  Seen s;
  for (int c = 0; c < kColours; ++c)
    if (s.background < 0 || hist[size_t(c)] > hist[size_t(s.background)]) s.background = c;
  for (int c = 0; c < kColours; ++c)
    if (c != s.background && hist[size_t(c)] >= kMinBlobPixels && (s.colour < 0 || hist[size_t(c)] > hist[size_t(s.colour)]))
      s.colour = c;
  if (s.colour < 0) return s;
  // 4-connected components of the shapes' colour.
  std::vector<int> label(cls.size(), -1), stack;
  double sx = 0, sy = 0, pixels = 0;
  for (int start = 0; start < w * h; ++start) {
    if (cls[size_t(start)] != s.colour || label[size_t(start)] >= 0) continue;
    double bx = 0, by = 0;
    int area = 0;
    stack = {start};
    label[size_t(start)] = start;
    while (!stack.empty()) {
      int p = stack.back();
      stack.pop_back();
      int x = p % w, y = p / w;
      bx += x + 0.5, by += y + 0.5, ++area;
      const int nx[4] = {x - 1, x + 1, x, x}, ny[4] = {y, y, y - 1, y + 1};
      for (int k = 0; k < 4; ++k) {
        if (nx[k] < 0 || ny[k] < 0 || nx[k] >= w || ny[k] >= h) continue;
        int q = ny[k] * w + nx[k];
        if (cls[size_t(q)] == s.colour && label[size_t(q)] < 0) label[size_t(q)] = start, stack.push_back(q);
      }
    }
    if (area < kMinBlobPixels) continue;
    ++s.count;
    sx += bx, sy += by, pixels += area;
  }
  if (s.count == 0) return s;
  s.cx = sx / pixels * 64.0 / w, s.cy = sy / pixels * 64.0 / h, s.mean_area = pixels / s.count;
  // dataset.py's group_position: training pictures place each group's centre clearly in its zone.
  if (std::abs(s.cx - 32) <= 10 && std::abs(s.cy - 32) <= 10) s.position = "center";
  else if (s.cx < 28 && std::abs(s.cx - 32) > std::abs(s.cy - 32)) s.position = "left";
  else if (s.cx > 36 && std::abs(s.cx - 32) > std::abs(s.cy - 32)) s.position = "right";
  else if (s.cy < 28) s.position = "top";
  else if (s.cy > 36) s.position = "bottom";
  return s;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(f, l);)
    if (!l.empty()) lines.push_back(l);
  return lines;
}

// Binary PPM, for a look at what the test saw (SDMPI_DEMO_TEST_OUT=dir).
void write_ppm(const std::string& path, const ImageResult& r) {
  std::ofstream f(path, std::ios::binary);
  f << "P6\n" << r.width << " " << r.height << "\n255\n";
  f.write(reinterpret_cast<const char*>(r.rgb.data()), static_cast<std::streamsize>(r.rgb.size()));
}


struct Score {
  int images = 0, correct = 0;  // correct: background, colour, count and position all right
  std::map<std::string, int> right;  // per attribute
};

// Generates the held-out captions and prints each verdict.
void score_heldout(Score& score) {
  std::vector<std::string> prompts = read_lines(kData + "/demo/heldout_prompts.txt");
  ASSERT_GE(prompts.size(), 20u) << "missing or short " << kData << "/demo/heldout_prompts.txt";
  auto backend = make_cpu_backend();
  ModelSource model = ModelSource::open("demo");
  Txt2ImgPipeline pipe(model, *backend);
  std::vector<WorkItem> items;
  for (size_t i = 0; i < prompts.size(); ++i) {
    WorkItem it;
    it.index = static_cast<int64_t>(i);
    it.params.prompt = prompts[i];
    it.params.seed = 100 + i;
    // The demo model's own defaults (what `--model demo` draws with unless told otherwise), chosen
    // on 144 held-out captions disjoint from these 24 (tools/demo_model/README.md, "Guidance"),
    // never on these.
    it.params.steps = kDemoSteps;
    it.params.guidance = kDemoGuidance;
    it.params.sampler = kDemoSampler;
    it.params.width = it.params.height = 64;
    items.push_back(it);
  }
  std::vector<ImageResult> images = pipe.generate(items);
  ASSERT_EQ(images.size(), prompts.size());
  const char* out_dir = std::getenv("SDMPI_DEMO_TEST_OUT");
  int& correct = score.correct;
  std::map<std::string, int>& attribute_right = score.right;
  score.images = static_cast<int>(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(images[i].ok) << prompts[i] << ": " << images[i].error;
    Expected e = parse_caption(prompts[i]);
    ASSERT_TRUE(e.count > 0 && e.colour >= 0 && e.background >= 0) << "not a caption of the grammar: " << prompts[i];
    Seen s = detect(images[i].rgb, images[i].width, images[i].height);
    bool bg = s.background == e.background, col = s.colour == e.colour, cnt = s.count == e.count,
         pos = s.position == e.position;
    attribute_right["background"] += bg, attribute_right["colour"] += col, attribute_right["count"] += cnt,
        attribute_right["position"] += pos;
    bool ok = bg && col && cnt && pos;
    correct += ok;
    std::printf("%s  %-62s | saw %s %s on %s, %d blob(s) at (%.0f, %.0f) %s, mean area %.0f\n", ok ? "ok  " : "MISS",
                prompts[i].c_str(), s.colour >= 0 ? kPalette[s.colour].name : "-",
                cnt ? "" : "(count)", kPalette[s.background].name, s.count, s.cx, s.cy,
                s.position.empty() ? "(nowhere)" : s.position.c_str(), s.mean_area);
    if (out_dir) write_ppm(std::string(out_dir) + "/" + std::to_string(i) + ".ppm", images[i]);
  }
  std::printf("demo model: %d of %zu held-out captions drawn correctly (background %d, colour %d, count %d, position %d)\n",
              correct, prompts.size(), attribute_right["background"], attribute_right["colour"],
              attribute_right["count"], attribute_right["position"]);
}

}  // namespace

// What the committed model does: backgrounds and colours follow held-out captions (24/24 and
// 22/24 when trained; see tools/demo_model/README.md).
// Issue 16's bar: 80% of the held-out captions drawn right in every attribute (with the demo's
// defaults: 20 of 24, background 24, colour 24, count 20, position 24, since the 2400-step
// recipe). Each attribute is also held on its own, so a regression says which one it is.
TEST(DemoModel, DrawsHeldOutCaptions) {
  Score s;
  score_heldout(s);
  EXPECT_GE(s.correct * 5, s.images * 4) << "fewer than 80% of the captions drawn right in every attribute";
  for (const char* attribute : {"background", "colour", "count", "position"})
    EXPECT_GE(s.right[attribute] * 5, s.images * 4) << "fewer than 80% right in " << attribute;
}

TEST(DemoModel, WithinOneLevelOfDiffusers) {
  std::ifstream jf(kData + "/golden/demo/runs.json");
  ASSERT_TRUE(jf) << "missing " << kData << "/golden/demo/runs.json (tools/golden/make_demo_golden.py)";
  nlohmann::json doc = nlohmann::json::parse(jf);
  std::ifstream imf(kData + "/golden/demo/images.u8", std::ios::binary);
  std::vector<uint8_t> ref((std::istreambuf_iterator<char>(imf)), std::istreambuf_iterator<char>());
  auto backend = make_cpu_backend();
  ModelSource model = ModelSource::open("demo");
  Txt2ImgPipeline pipe(model, *backend);
  int runs = 0;
  for (const auto& run : doc["runs"]) {
    std::vector<WorkItem> items;
    for (size_t i = 0; i < run["prompts"].size(); ++i) {
      WorkItem it;
      it.index = static_cast<int64_t>(i);
      GenerationParams& p = it.params;
      p.prompt = run["prompts"][i];
      p.seed = run["seeds"][i].get<uint64_t>();
      p.steps = run["steps"];
      p.guidance = run["guidance"].get<float>();
      p.width = run["width"];
      p.height = run["height"];
      std::string s = run["sampler"];
      p.sampler = s == "dpm++2m karras" ? "dpm++2m" : s;
      p.schedule = s == "dpm++2m karras" ? "karras" : "default";
      items.push_back(it);
    }
    std::vector<ImageResult> got = pipe.generate(items);
    size_t off = run["images_offset"];
    auto shape = run["images_shape"].get<std::vector<size_t>>();
    size_t per = shape[1] * shape[2] * shape[3];
    ASSERT_EQ(got.size(), shape[0]);
    ASSERT_LE(off + per * shape[0], ref.size()) << "images.u8 is short";
    int worst = 0;
    size_t off_by_one = 0;
    for (size_t i = 0; i < shape[0]; ++i) {
      ASSERT_TRUE(got[i].ok) << got[i].error;
      ASSERT_EQ(got[i].rgb.size(), per);
      for (size_t k = 0; k < per; ++k) {
        int d = std::abs(int(got[i].rgb[k]) - int(ref[off + i * per + k]));
        worst = std::max(worst, d);
        off_by_one += d == 1;
      }
    }
    std::string id = run["id"];
    EXPECT_LE(worst, 1) << id << ": max pixel difference " << worst;
    std::printf("demo %-20s max |Δpixel| %d, %zu of %zu values off by one\n", id.c_str(), worst, off_by_one,
                per * shape[0]);
    ++runs;
  }
  EXPECT_GE(runs, 4);
}

TEST(DemoModel, EmbeddedCopyIsTheCommittedFolder) {
  const std::string folder = kData + "/../../tools/demo_model/model";
  ModelSource embedded = ModelSource::open("demo"), files = ModelSource::open(folder);
  EXPECT_EQ(embedded.name(), "demo");
  for (const char* c : {"unet", "vae", "text_encoder", "scheduler"}) EXPECT_EQ(embedded.config(c), files.config(c)) << c;
  // The same weights draw the same bytes (the folder's file names differ: transformers writes the
  // text encoder's keys without "text_model.", which the folder reader adds).
  auto backend = make_cpu_backend();
  Txt2ImgPipeline from_binary(embedded, *backend), from_folder(files, *backend);
  WorkItem it;
  it.params.prompt = "three large green squares at the top on a black background";
  it.params.seed = 5;
  it.params.steps = 6;
  it.params.width = it.params.height = 64;
  std::vector<ImageResult> a = from_binary.generate({it}), b = from_folder.generate({it});
  ASSERT_TRUE(a[0].ok && b[0].ok);
  EXPECT_EQ(a[0].rgb, b[0].rgb);
}
