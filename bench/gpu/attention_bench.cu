// Attention benchmark: our kernels on every Stable Diffusion attention shape, each compiled variant
// and the one attention_forward picks, in TFLOP/s; plus the attention time of one SD 1.5 UNet step.
//
//   attention_bench OUT.json [--dtype f16|bf16|both] [--replays N] [--quick]
//
// Method (see /work/.library/device/METHOD.md): inputs are fresh random normals (never zeros),
// in enough rotating buffer sets that one pass over them is twice the L2 cache, so no launch
// finds its inputs cached by the previous one. A CUDA graph of n >= sets launches (each on the
// next set, n long enough for ~300 µs) is replayed; each replay is timed with CUDA events and the
// median over replays, divided by n, is the time per call. Graph replay removes launch gaps, as in
// the UNet's captured step. FLOPs = 4·B·H·d·(visible query-key pairs): Nq·Nk, or for causal
// Σ_i min(Nk, i+1) (the masked half is not counted). bench/gpu/attention_torch.py times the same
// shapes with torch SDPA; bench/gpu/attention_check.sh prints the comparison. On an sm_90 GPU the
// Hopper kernel's variants are timed with the rest, and a last table sets them against the
// FA2-style Flash variants with the fraction of the H100/H200 peak.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "attention.cuh"

namespace {

using sdmpi::DType;
using sdmpi::cuda::AttentionKernel;
using sdmpi::cuda::AttentionParams;
using sdmpi::cuda::AttentionVariant;

#define CHECK_CUDA(expr)                                                                  \
  do {                                                                                    \
    const cudaError_t err_ = (expr);                                                      \
    if (err_ != cudaSuccess) {                                                            \
      std::fprintf(stderr, "attention_bench: %s failed: %s (%s:%d)\n", #expr,             \
                   cudaGetErrorString(err_), __FILE__, __LINE__);                         \
      std::exit(1);                                                                       \
    }                                                                                     \
  } while (0)

struct BenchShape {
  const char* name;
  int batch, heads, seq_q, seq_kv, head_dim;
  bool causal;
  int per_unet_step;  // calls per SD 1.5 UNet step at 512×512 with CFG (batch 2); 0: not SD 1.5 UNet
};

// SD 1.5 UNet at 512² with CFG: 8 heads; 64² latents (down 0: 2 blocks, up 3: 3), 32² (down 1: 2,
// up 2: 3), 16² (down 2: 2, up 1: 3), 8² (mid: 1); each block has one self- and one cross-attention.
const BenchShape kShapes[] = {
    {"sd15_self_64x64_d40", 2, 8, 4096, 4096, 40, false, 5},
    {"sd15_self_32x32_d80", 2, 8, 1024, 1024, 80, false, 5},
    {"sd15_self_16x16_d160", 2, 8, 256, 256, 160, false, 5},
    {"sd15_self_8x8_d160", 2, 8, 64, 64, 160, false, 1},
    {"sd15_cross_64x64_d40", 2, 8, 4096, 77, 40, false, 5},
    {"sd15_cross_32x32_d80", 2, 8, 1024, 77, 80, false, 5},
    {"sd15_cross_16x16_d160", 2, 8, 256, 77, 160, false, 5},
    {"sd15_cross_8x8_d160", 2, 8, 64, 77, 160, false, 1},
    {"sdxl_self_64x64_d64", 2, 10, 4096, 4096, 64, false, 0},
    {"sdxl_self_32x32_d64", 2, 20, 1024, 1024, 64, false, 0},
    {"sdxl_cross_64x64_d64", 2, 10, 4096, 77, 64, false, 0},
    {"sd2_self_96x96_d64", 2, 5, 9216, 9216, 64, false, 0},
    {"vae_mid_d512", 1, 1, 4096, 4096, 512, false, 0},
    {"clip_causal_77_d64", 2, 12, 77, 77, 64, true, 0},
};

double visible_pairs(const BenchShape& s) {
  if (!s.causal) return double(s.seq_q) * s.seq_kv;
  double pairs = 0;
  for (int i = 0; i < s.seq_q; ++i) pairs += std::min(s.seq_kv, i + 1);
  return pairs;
}

double flops(const BenchShape& s) {
  return 4.0 * s.batch * s.heads * s.head_dim * visible_pairs(s);
}

// Normal(0, 1) values from a counter-based hash (splitmix64 + Box-Muller): fresh data per set.
template <typename T>
__global__ void fill_normal(T* p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    uint64_t z = seed + 0x9e3779b97f4a7c15ull * (i + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const float u1 = (static_cast<uint32_t>(z) + 1.0f) * 2.3283064e-10f;  // (0, 1]
    const float u2 = static_cast<uint32_t>(z >> 32) * 2.3283064e-10f;
    const float x = sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
    p[i] = static_cast<T>(x);
  }
}

void fill(DType dt, void* p, size_t n, uint64_t seed) {
  const int blocks = static_cast<int>(std::min<size_t>((n + 255) / 256, 4096));
  if (dt == DType::F16)
    fill_normal<__half><<<blocks, 256>>>(static_cast<__half*>(p), n, seed);
  else
    fill_normal<__nv_bfloat16><<<blocks, 256>>>(static_cast<__nv_bfloat16*>(p), n, seed);
  CHECK_CUDA(cudaGetLastError());
}

struct Timing {
  std::string variant;
  double us = 0;      // median per call
  double spread = 0;  // (max - min) / median over replays
  double tflops = 0;
};

// Rotating buffer sets for one shape.
struct Buffers {
  std::vector<void*> q, k, v, out;
  ~Buffers() {
    for (auto* list : {&q, &k, &v, &out})
      for (void* p : *list) cudaFree(p);
  }
};

// Times `launch(set)` as described at the top. variant_id < 0: attention_forward.
Timing time_calls(const std::vector<AttentionParams>& sets, int variant_id, double flop,
                  int replays) {
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  auto launch = [&](int i) {
    const AttentionParams& p = sets[i % sets.size()];
    const cudaError_t err = variant_id < 0 ? sdmpi::cuda::attention_forward(p, stream)
                                           : sdmpi::cuda::attention_forward_variant(p, variant_id, stream);
    CHECK_CUDA(err);
  };
  // Warm up (module load, smem attribute) and estimate one call.
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  for (int i = 0; i < 3; ++i) launch(i);
  CHECK_CUDA(cudaEventRecord(start, stream));
  for (int i = 0; i < 3; ++i) launch(i);
  CHECK_CUDA(cudaEventRecord(stop, stream));
  CHECK_CUDA(cudaEventSynchronize(stop));
  float est_ms = 0;
  CHECK_CUDA(cudaEventElapsedTime(&est_ms, start, stop));
  const double est_us = std::max(est_ms * 1000.0 / 3, 0.5);
  const int n = std::max<int>(static_cast<int>(sets.size()),
                              std::min(512, static_cast<int>(std::ceil(300.0 / est_us))));

  cudaGraph_t graph;
  CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < n; ++i) launch(i);
  CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec;
  CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  for (int i = 0; i < 2; ++i) CHECK_CUDA(cudaGraphLaunch(exec, stream));
  std::vector<double> per_call;
  for (int r = 0; r < replays; ++r) {
    CHECK_CUDA(cudaEventRecord(start, stream));
    CHECK_CUDA(cudaGraphLaunch(exec, stream));
    CHECK_CUDA(cudaEventRecord(stop, stream));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    per_call.push_back(ms * 1000.0 / n);
  }
  CHECK_CUDA(cudaGraphExecDestroy(exec));
  CHECK_CUDA(cudaGraphDestroy(graph));
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  CHECK_CUDA(cudaStreamDestroy(stream));
  std::sort(per_call.begin(), per_call.end());
  Timing t;
  t.us = per_call[per_call.size() / 2];
  t.spread = (per_call.back() - per_call.front()) / t.us;
  t.tflops = flop / (t.us * 1e-6) / 1e12;
  return t;
}

struct ShapeResult {
  const BenchShape* shape;
  DType dtype;
  double flop;
  Timing chosen;
  std::vector<Timing> variants;
  int best = -1;  // fastest tensor-core variant in `variants`
  const Timing* fastest() const { return best < 0 ? nullptr : &variants[best]; }
};

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  std::vector<DType> dtypes = {DType::F16, DType::BF16};
  int replays = 15;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--dtype" && i + 1 < argc) {
      const std::string v = argv[++i];
      if (v == "f16") dtypes = {DType::F16};
      else if (v == "bf16") dtypes = {DType::BF16};
      else if (v == "both") dtypes = {DType::F16, DType::BF16};
      else {
        std::fprintf(stderr, "attention_bench: --dtype %s: expected f16, bf16 or both\n", v.c_str());
        return 2;
      }
    } else if (arg == "--replays" && i + 1 < argc) {
      replays = std::max(3, std::atoi(argv[++i]));
    } else if (arg == "--quick") {
      quick = true;
    } else if (!arg.empty() && arg[0] != '-' && json_path.empty()) {
      json_path = arg;
    } else {
      std::fprintf(stderr, "usage: attention_bench OUT.json [--dtype f16|bf16|both] "
                           "[--replays N] [--quick]\n");
      return 2;
    }
  }
  if (json_path.empty()) {
    std::fprintf(stderr, "usage: attention_bench OUT.json [--dtype f16|bf16|both] "
                         "[--replays N] [--quick]\n");
    return 2;
  }

  int device = 0, driver = 0, runtime = 0;
  CHECK_CUDA(cudaGetDevice(&device));
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, device));
  CHECK_CUDA(cudaDriverGetVersion(&driver));
  CHECK_CUDA(cudaRuntimeGetVersion(&runtime));
  const size_t l2 = static_cast<size_t>(prop.l2CacheSize);
  std::printf("attention_bench: %s (sm_%d%d, %d SMs, L2 %zu MB), driver %d, runtime %d\n",
              prop.name, prop.major, prop.minor, prop.multiProcessorCount, l2 >> 20, driver,
              runtime);

  std::vector<ShapeResult> results;
  for (DType dt : dtypes) {
    for (const BenchShape& s : kShapes) {
      if (quick && s.per_unet_step == 0 && std::strcmp(s.name, "vae_mid_d512") != 0) continue;
      const int W = s.heads * s.head_dim;
      const size_t q_elems = size_t{1} * s.batch * s.seq_q * W;
      const size_t kv_elems = size_t{1} * s.batch * s.seq_kv * W;
      const size_t set_bytes = (2 * q_elems + 2 * kv_elems) * 2;
      const int n_sets = static_cast<int>(
          std::clamp<size_t>((2 * l2 + set_bytes - 1) / set_bytes, 2, 64));
      Buffers buf;
      std::vector<AttentionParams> sets(n_sets);
      for (int i = 0; i < n_sets; ++i) {
        uint64_t which = 0;
        for (auto [list, n] : {std::pair{&buf.q, q_elems}, std::pair{&buf.k, kv_elems},
                               std::pair{&buf.v, kv_elems}, std::pair{&buf.out, q_elems}}) {
          void* p = nullptr;
          CHECK_CUDA(cudaMalloc(&p, n * 2));
          list->push_back(p);
          fill(dt, p, n, 1000003ull * (i + 1) + 7919ull * ++which);  // out too: never zeros
        }
        AttentionParams& p = sets[i];
        p.q = buf.q[i];
        p.k = buf.k[i];
        p.v = buf.v[i];
        p.out = buf.out[i];
        p.dtype = dt;
        p.batch = s.batch;
        p.heads = s.heads;
        p.seq_q = s.seq_q;
        p.seq_kv = s.seq_kv;
        p.head_dim = s.head_dim;
        p.causal = s.causal;
      }
      CHECK_CUDA(cudaDeviceSynchronize());

      ShapeResult r;
      r.shape = &s;
      r.dtype = dt;
      r.flop = flops(s);
      const AttentionVariant chosen = sdmpi::cuda::attention_chosen_variant(sets[0]);
      r.chosen = time_calls(sets, -1, r.flop, replays);
      r.chosen.variant = chosen.name;
      for (const AttentionVariant& v : sdmpi::cuda::attention_variants(sets[0])) {
        // The Reference kernel takes milliseconds on the large shapes: time it on small ones only.
        if (v.kernel == AttentionKernel::Reference && r.flop > 2e9) continue;
        Timing t = time_calls(sets, v.id, r.flop, replays);
        t.variant = v.name;
        r.variants.push_back(t);
      }
      for (size_t j = 0; j < r.variants.size(); ++j)
        if (r.variants[j].variant.rfind("reference", 0) != 0 &&
            (r.best < 0 || r.variants[j].us < r.variants[r.best].us))
          r.best = static_cast<int>(j);
      const Timing* best = r.fastest();
      std::printf("  %-24s %-4s %8.2f us %7.1f TFLOP/s  (%s; fastest %s %.1f)\n", s.name,
                  sdmpi::dtype_name(dt), r.chosen.us, r.chosen.tflops, chosen.name,
                  best ? best->variant.c_str() : "-", best ? best->tflops : 0.0);
      results.push_back(std::move(r));
    }
  }

  // Table: the chosen variant per shape, and the variant sweep.
  std::printf("\n%-24s %-4s %5s %5s %5s %4s %8s | %-30s %9s %8s | %-30s %8s\n", "shape", "type",
              "B*H", "Nq", "Nk", "d", "GFLOP", "chosen variant", "us", "TFLOP/s",
              "fastest variant", "TFLOP/s");
  for (const ShapeResult& r : results) {
    const BenchShape& s = *r.shape;
    std::printf("%-24s %-4s %5d %5d %5d %4d %8.2f | %-30s %9.2f %8.1f | %-30s %8.1f\n", s.name,
                sdmpi::dtype_name(r.dtype), s.batch * s.heads, s.seq_q, s.seq_kv, s.head_dim,
                r.flop / 1e9, r.chosen.variant.c_str(), r.chosen.us, r.chosen.tflops,
                r.fastest() ? r.fastest()->variant.c_str() : "-",
                r.fastest() ? r.fastest()->tflops : 0.0);
  }
  std::printf("\nSD 1.5 UNet step (512x512, CFG batch 2), attention only:\n");
  for (DType dt : dtypes) {
    double chosen_us = 0, best_us = 0, step_flop = 0;
    for (const ShapeResult& r : results) {
      if (r.dtype != dt || r.shape->per_unet_step == 0) continue;
      chosen_us += r.shape->per_unet_step * r.chosen.us;
      best_us += r.shape->per_unet_step * (r.fastest() ? r.fastest()->us : r.chosen.us);
      step_flop += r.shape->per_unet_step * r.flop;
    }
    std::printf("  %-4s %8.1f us with the chosen variants (%.1f TFLOP/s), %8.1f us with the "
                "fastest per shape; %.1f GFLOP\n",
                sdmpi::dtype_name(dt), chosen_us, step_flop / (chosen_us * 1e-6) / 1e12, best_us,
                step_flop / 1e9);
  }

  // Hopper (kernels/attention_hopper.cu) against the FA2-style Flash kernels, per shape the fastest
  // variant of each kind, and the fraction of the GPU's dense fp16/bf16 tensor-core peak. The peak
  // is the datasheet's for H100/H200 SXM (989 TFLOP/s) and H100 PCIe (756); elsewhere none is shown.
  const std::string device_name = prop.name;
  const double peak_tflops = device_name.find("PCIe") != std::string::npos &&
                                     device_name.find("H100") != std::string::npos
                                 ? 756.0
                             : device_name.find("H100") != std::string::npos ||
                                     device_name.find("H200") != std::string::npos
                                 ? 989.0
                                 : 0.0;
  std::printf("\nHopper vs FA2-style Flash (fastest variant of each kind; %% of %s peak %.0f "
              "TFLOP/s):\n",
              prop.name, peak_tflops);
  bool any_hopper = false;
  for (const ShapeResult& r : results) {
    const Timing* hopper = nullptr;
    const Timing* flash = nullptr;
    for (const Timing& t : r.variants) {
      const bool is_hopper = t.variant.rfind("hopper", 0) == 0;
      const bool is_flash = t.variant.rfind("flash", 0) == 0 || t.variant.rfind("shortkv", 0) == 0;
      if (is_hopper && (hopper == nullptr || t.us < hopper->us)) hopper = &t;
      if (is_flash && (flash == nullptr || t.us < flash->us)) flash = &t;
    }
    if (hopper == nullptr || flash == nullptr) continue;
    any_hopper = true;
    const auto pct = [&](double tflops) { return peak_tflops > 0 ? 100.0 * tflops / peak_tflops : 0.0; };
    std::printf("  %-24s %-4s hopper %8.2f us %7.1f TFLOP/s (%4.1f%%) | fa2 %8.2f us %7.1f "
                "TFLOP/s (%4.1f%%) | hopper/fa2 speed %.2fx\n",
                r.shape->name, sdmpi::dtype_name(r.dtype), hopper->us, hopper->tflops,
                pct(hopper->tflops), flash->us, flash->tflops, pct(flash->tflops),
                flash->us / hopper->us);
  }
  if (!any_hopper)
    std::printf("  no Hopper variant ran (it needs compute capability 9.0 and head dim 40 or 64)\n");

  FILE* f = std::fopen(json_path.c_str(), "w");
  if (f == nullptr) {
    std::fprintf(stderr, "attention_bench: cannot write %s\n", json_path.c_str());
    return 1;
  }
  std::fprintf(f, "{\n  \"tool\": \"attention_bench\",\n  \"device\": \"%s\",\n  \"sm\": %d,\n"
               "  \"multiprocessors\": %d,\n  \"l2_bytes\": %zu,\n  \"driver\": %d,\n"
               "  \"runtime\": %d,\n  \"replays\": %d,\n  \"results\": [\n",
               json_escape(prop.name).c_str(), prop.major * 10 + prop.minor,
               prop.multiProcessorCount, l2, driver, runtime, replays);
  for (size_t i = 0; i < results.size(); ++i) {
    const ShapeResult& r = results[i];
    const BenchShape& s = *r.shape;
    std::fprintf(f,
                 "    {\"shape\": \"%s\", \"dtype\": \"%s\", \"batch\": %d, \"heads\": %d, "
                 "\"seq_q\": %d, \"seq_kv\": %d, \"head_dim\": %d, \"causal\": %s, "
                 "\"per_unet_step\": %d, \"flop\": %.0f,\n     \"chosen\": {\"variant\": \"%s\", "
                 "\"us\": %.3f, \"tflops\": %.2f, \"spread\": %.3f},\n     \"variants\": [",
                 s.name, r.dtype == DType::F16 ? "f16" : "bf16", s.batch, s.heads, s.seq_q,
                 s.seq_kv, s.head_dim, s.causal ? "true" : "false", s.per_unet_step, r.flop,
                 r.chosen.variant.c_str(), r.chosen.us, r.chosen.tflops, r.chosen.spread);
    for (size_t j = 0; j < r.variants.size(); ++j) {
      const Timing& t = r.variants[j];
      std::fprintf(f, "%s{\"variant\": \"%s\", \"us\": %.3f, \"tflops\": %.2f, \"spread\": %.3f}",
                   j ? ", " : "", t.variant.c_str(), t.us, t.tflops, t.spread);
    }
    std::fprintf(f, "]}%s\n", i + 1 < results.size() ? "," : "");
  }
  std::fprintf(f, "  ]\n}\n");
  std::fclose(f);
  std::printf("\nwrote %s\n", json_path.c_str());
  return 0;
}
