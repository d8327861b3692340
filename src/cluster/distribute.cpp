// Shards, contiguous blocks and batches: which rank and which UNet call each work item goes to.
// None of it changes an image (docs/design.md §3); it only decides where and when it is made.
#include <algorithm>
#include <cstdlib>
#include <map>
#include <tuple>

#include "sdmpi/cluster.h"
#include "sdmpi/error.h"

namespace sdmpi {
namespace {

bool parse_int(const std::string& s, long long* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return false;
  *out = v;
  return true;
}

}  // namespace

Shard parse_shard(const std::string& text) {
  Shard shard;
  if (text.empty()) {
    const char* id = std::getenv("SLURM_ARRAY_TASK_ID");
    const char* count = std::getenv("SLURM_ARRAY_TASK_COUNT");
    if (!id || !count) return shard;
    const char* min = std::getenv("SLURM_ARRAY_TASK_MIN");
    const char* step = std::getenv("SLURM_ARRAY_TASK_STEP");
    long long i = 0, k = 0, lo = 0, st = 1;
    if (!parse_int(id, &i) || !parse_int(count, &k))
      throw InputError(std::string("cannot read the shard from SLURM_ARRAY_TASK_ID=") + id +
                       " SLURM_ARRAY_TASK_COUNT=" + count);
    if ((min && parse_int(min, &lo) && lo != 0) || (step && parse_int(step, &st) && st != 1))
      throw InputError("job arrays must be submitted as --array=0-(K-1) for automatic sharding (got " +
                       std::string("SLURM_ARRAY_TASK_MIN=") + (min ? min : "?") + ", SLURM_ARRAY_TASK_STEP=" +
                       (step ? step : "?") + "); or pass --shard i/K explicitly");
    if (k < 1 || i < 0 || i >= k)
      throw InputError("SLURM_ARRAY_TASK_ID=" + std::string(id) + " is not in [0, SLURM_ARRAY_TASK_COUNT=" + count + ")");
    shard.index = static_cast<int>(i);
    shard.count = static_cast<int>(k);
    return shard;
  }
  size_t slash = text.find('/');
  long long i = 0, k = 0;
  if (slash == std::string::npos || !parse_int(text.substr(0, slash), &i) || !parse_int(text.substr(slash + 1), &k))
    throw InputError("--shard " + text + ": expected i/K, e.g. 0/4");
  if (k < 1 || k > 1000000) throw InputError("--shard " + text + ": K must be between 1 and 1000000");
  if (i < 0 || i >= k) throw InputError("--shard " + text + ": i must be in [0, " + std::to_string(k) + ")");
  shard.index = static_cast<int>(i);
  shard.count = static_cast<int>(k);
  return shard;
}

std::pair<int64_t, int64_t> split_block(int64_t n, int parts, int i) {
  int64_t per = n / parts, extra = n % parts;
  int64_t begin = i * per + std::min<int64_t>(i, extra);
  int64_t end = begin + per + (i < extra ? 1 : 0);
  return {begin, end};
}

std::vector<std::vector<WorkItem>> make_batches(const std::vector<WorkItem>& items, int batch_size) {
  if (batch_size < 1) throw InputError("--batch-size must be >= 1");
  // Items that can share one UNet call: everything but prompt, negative prompt and seed equal
  // (init images may differ; img2img items share their strength, txt2img items have none: -1), and
  // the prompt weighting mode (the text is encoded differently), and the LoRA set (another model).
  using Key = std::tuple<int, int, int, float, std::string, std::string, float, int, float, std::string, std::string>;
  std::map<Key, size_t> open;  // key → index of the batch being filled
  std::vector<std::vector<WorkItem>> batches;
  for (const WorkItem& item : items) {
    const GenerationParams& p = item.params;
    Key key{p.steps, p.width, p.height, p.guidance, p.sampler, p.schedule, p.eta, p.clip_skip,
            p.init_image.empty() ? -1.0f : p.strength, p.prompt_weighting, lora_set_key(p.loras)};
    auto it = open.find(key);
    if (it == open.end() || batches[it->second].size() >= static_cast<size_t>(batch_size)) {
      batches.emplace_back();
      open[key] = batches.size() - 1;
      it = open.find(key);
    }
    batches[it->second].push_back(item);
  }
  // Batches of one LoRA set next to each other (the plain ones first, in their order): a rank then
  // merges each set once, not at every turn of interleaved lines. Without LoRAs nothing moves.
  std::stable_sort(batches.begin(), batches.end(), [](const std::vector<WorkItem>& a, const std::vector<WorkItem>& b) {
    return lora_set_key(a.front().params.loras) < lora_set_key(b.front().params.loras);
  });
  return batches;
}

}  // namespace sdmpi
