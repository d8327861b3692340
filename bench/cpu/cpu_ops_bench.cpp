// Micro-benchmark of the CPU backend's ops at Stable Diffusion 1.5 sizes (256×256 images: latents
// 32×32, CFG batch 2; VAE decode to 256×256), with FLOP counts for the matrix-product ops and their
// rate as a fraction of the machine's sgemm rate (the same GEMM path on a large square product).
//
//   cpu_ops_bench [--threads N] [--reps R] [--filter SUBSTRING] [--cpu-clock]
//
// Each op runs once to warm up, then R times; the best time is reported (the machine is shared).
// --cpu-clock measures process CPU time instead of wall time: on a loaded machine, a 1-thread run
// timed that way still compares kernels fairly.
#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/cpu_gemm.h"
#include "sdmpi/backend.h"

using namespace sdmpi;

namespace {

bool use_cpu_clock = false;

double now() {
  if (use_cpu_clock) {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double best_seconds(int reps, const std::function<void()>& fn) {
  fn();
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    double t0 = now();
    fn();
    best = std::min(best, now() - t0);
  }
  return best;
}

Tensor random_tensor(Backend& be, const Shape& s, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(shape_numel(s)));
  for (float& x : v) x = dist(gen);
  return be.from_host(v.data(), s);
}

// A conv weight as a model loads it (upload_weight, OHWI [Cout, k, k, Cin]), so the backend may
// keep per-weight state for it (Winograd's transformed weights).
Tensor random_conv_weight(Backend& be, int64_t cout, int64_t k, int64_t cin, uint32_t seed, float scale) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> oihw(static_cast<size_t>(cout * cin * k * k));
  for (float& x : oihw) x = dist(gen);
  return be.upload_weight(WeightView("w", DType::F32, {cout, cin, k, k}, oihw.data()), WeightKind::Conv);
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 0, reps = 5;
  std::string filter;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--filter" && i + 1 < argc) filter = argv[++i];
    else if (a == "--cpu-clock") use_cpu_clock = true;
    else {
      std::fprintf(stderr, "usage: %s [--threads N] [--reps R] [--filter SUBSTRING] [--cpu-clock]\n", argv[0]);
      return 2;
    }
  }
  auto be = make_cpu_backend(threads);
  const int nthreads = threads > 0 ? threads : omp_get_max_threads();
  std::printf("backend: %s\n", be->name().c_str());

  // The machine's sgemm rate: one thread on 1024^3, and all threads on 2048^3 through the same
  // tiled driver the ops use.
  double single_rate = 0.0, parallel_rate = 0.0;
  {
    const int64_t n = 1024;
    std::vector<float> A(n * n, 0.5f), B(n * n, 0.25f), C(n * n);
    double t = best_seconds(reps, [&] {
      cpu::gemm(true, n, n, n, 1.0f, A.data(), n, B.data(), n, 0.0f, C.data(), n);
    });
    single_rate = 2.0 * n * n * n / t * 1e-9;
    const int64_t m = 2048;
    std::vector<float> A2(m * m, 0.5f), B2(m * m, 0.25f), C2(m * m);
    cpu::GemmProblem p;
    p.M = p.N = p.K = m;
    p.A = A2.data();
    p.lda = m;
    p.W = B2.data();
    p.C = C2.data();
    p.ldc = m;
    t = best_seconds(reps, [&] { cpu::gemm_nt_parallel(p, nthreads); });
    parallel_rate = 2.0 * m * m * m / t * 1e-9;
  }
  std::printf("sgemm rate: %.1f GFLOP/s on 1 thread (1024^3), %.1f GFLOP/s on %d threads (2048^3)\n\n",
              single_rate, parallel_rate, nthreads);

  struct Row {
    std::string name;
    double flops;  // 0 for memory-bound ops
    std::function<void()> run;
  };
  std::vector<Row> rows;
  Backend& b = *be;

  auto conv = [&](const char* what, int64_t B, int64_t H, int64_t W, int64_t Cin, int64_t Cout, int64_t k,
                  int stride, int pad) {
    Tensor x = random_tensor(b, {B, H, W, Cin}, 1);
    Tensor w = random_conv_weight(b, Cout, k, Cin, 2, 0.05f);
    Tensor bias = random_tensor(b, {Cout}, 3);
    int64_t Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
    double flops = 2.0 * B * Ho * Wo * Cout * k * k * Cin;
    rows.push_back({std::string("conv ") + what, flops, [&b, x, w, bias, stride, pad] {
                      b.conv2d(x, w, &bias, stride, pad);
                    }});
  };
  auto linear = [&](const char* what, int64_t B, int64_t M, int64_t K, int64_t N) {
    Tensor x = random_tensor(b, {B, M, K}, 4);
    Tensor w = random_tensor(b, {N, K}, 5, 0.05f);
    rows.push_back({std::string("linear ") + what, 2.0 * B * M * N * K, [&b, x, w] { b.linear(x, w, nullptr); }});
  };
  // The feed-forward's projection and GEGLU (fused on the CPU backend) against the same as two ops.
  auto linear_geglu = [&](const char* what, int64_t B, int64_t M, int64_t K, int64_t N) {
    Tensor x = random_tensor(b, {B, M, K}, 4);
    Tensor w = random_tensor(b, {N, K}, 5, 0.05f), bias = random_tensor(b, {N}, 6);
    rows.push_back({std::string("linear_geglu ") + what, 2.0 * B * M * N * K,
                    [&b, x, w, bias] { b.linear_geglu(x, w, &bias); }});
    rows.push_back({std::string("linear+geglu ") + what, 2.0 * B * M * N * K,
                    [&b, x, w, bias] { b.geglu(b.linear(x, w, &bias)); }});
  };
  auto attention = [&](const char* what, int64_t B, int64_t Nq, int64_t Nk, int64_t heads, int64_t d, bool causal) {
    Tensor q = random_tensor(b, {B, Nq, heads * d}, 6), k = random_tensor(b, {B, Nk, heads * d}, 7);
    Tensor v = random_tensor(b, {B, Nk, heads * d}, 8);
    rows.push_back({std::string("attention ") + what, 4.0 * B * heads * Nq * Nk * d,
                    [&b, q, k, v, heads, causal] { b.attention(q, k, v, static_cast<int>(heads), causal); }});
  };
  auto group_norm = [&](const char* what, int64_t B, int64_t HW, int64_t C, bool silu) {
    Tensor x = random_tensor(b, {B, HW, C}, 9), g = random_tensor(b, {C}, 10), be_ = random_tensor(b, {C}, 11);
    rows.push_back({std::string("group_norm ") + what, 0.0, [&b, x, g, be_, silu] {
                      b.group_norm(x, 32, g, be_, 1e-5f, silu);
                    }});
  };

  // Products of few rows, the UNet's deep layers: the default (transposed: W read in place) against
  // the packed path, forced by handing the driver W packed in advance (built-in engine only). Both
  // give the same bits; the difference is packing W on every call against not packing it at all.
  auto few_rows = [&](const char* what, int64_t M, int64_t N, int64_t K) {
    if (cpu::gemm_engine() != cpu::GemmEngine::Builtin) return;
    auto A = std::make_shared<std::vector<float>>(static_cast<size_t>(M * K), 0.5f);
    auto W = std::make_shared<std::vector<float>>(static_cast<size_t>(N * K), 0.25f);
    auto C = std::make_shared<std::vector<float>>(static_cast<size_t>(M * N));
    const size_t packed_bytes = static_cast<size_t>(cpu::gemm_packed_floats(N, K)) * sizeof(float);
    std::shared_ptr<float> packed(static_cast<float*>(std::aligned_alloc(64, (packed_bytes + 63) / 64 * 64)), std::free);
    cpu::gemm_pack_weights(W->data(), N, K, packed.get());
    for (bool prepacked : {false, true}) {
      cpu::GemmProblem p;
      p.M = M, p.N = N, p.K = K, p.A = A->data(), p.lda = K, p.W = W->data(), p.C = C->data(), p.ldc = N;
      if (prepacked) p.W_packed = packed.get();
      rows.push_back({std::string("gemm ") + what + (prepacked ? " packed W" : " transposed"), 2.0 * M * N * K,
                      [p, A, W, C, packed, nthreads] { cpu::gemm_nt_parallel(p, nthreads); }});
    }
    // The same product with W coming from DRAM, as in a UNet step, which uses each weight once and
    // whose weights are ~10× the L3: each call reads the next of enough copies of W to fill 1 GiB
    // (made on the first, untimed call). The rows above reuse one W, which stays in the L3. The
    // copies are on 2 MiB pages, as the backend's weights are (cpu_memory.cpp): in 4 KiB pages
    // (a std::vector, until session 13) the 32-row product read W at ~8 GB/s and looked bound by
    // memory latency, where the model's weights stream at ~13 GB/s, near the in-cache time.
    struct HugeFree {
      void operator()(float* q) const { std::free(q); }
    };
    auto copies = std::make_shared<std::unique_ptr<float, HugeFree>>();
    auto next = std::make_shared<int64_t>(0);
    cpu::GemmProblem p;
    p.M = M, p.N = N, p.K = K, p.A = A->data(), p.lda = K, p.C = C->data(), p.ldc = N;
    rows.push_back({std::string("gemm ") + what + " transposed, W from DRAM", 2.0 * M * N * K,
                    [p, A, C, copies, next, nthreads]() mutable {
                      const int64_t per_copy = p.N * p.K;
                      const int64_t count = std::clamp<int64_t>((int64_t{1} << 28) / per_copy, 2, 64);
                      if (!*copies) {
                        const size_t bytes = static_cast<size_t>(count * per_copy) * sizeof(float);
                        void* mem = nullptr;
                        if (posix_memalign(&mem, size_t{2} << 20, bytes) != 0) throw std::bad_alloc();
                        madvise(mem, bytes, MADV_HUGEPAGE);
                        copies->reset(static_cast<float*>(mem));
                        std::fill(copies->get(), copies->get() + count * per_copy, 0.25f);
                      }
                      p.W = copies->get() + (*next)++ % count * per_copy;
                      cpu::gemm_nt_parallel(p, nthreads);
                    }});
  };
  few_rows("32x1280x11520 (conv 1280 @4)", 32, 1280, 11520);
  few_rows("128x10240x1280 (geglu @8)", 128, 10240, 1280);
  few_rows("128x1280x5120 (ff out @8)", 128, 1280, 5120);
  few_rows("256x640x5760 (conv 640 @16, 1 image)", 256, 640, 5760);
  few_rows("2x20160x1280 (time embeddings, stacked)", 2, 20160, 1280);

  // UNet at 256×256 (latents 32×32), CFG batch 2.
  conv("unet conv_in 4->320 @32", 2, 32, 32, 4, 320, 3, 1, 1);
  conv("unet 320->320 @32", 2, 32, 32, 320, 320, 3, 1, 1);
  conv("unet down 320 s2 @32", 2, 32, 32, 320, 320, 3, 2, 1);
  conv("unet 640->640 @16", 2, 16, 16, 640, 640, 3, 1, 1);
  conv("unet 1280->1280 @8", 2, 8, 8, 1280, 1280, 3, 1, 1);
  conv("unet 1280->1280 @16 (512^2)", 2, 16, 16, 1280, 1280, 3, 1, 1);
  conv("unet 1280->1280 @4", 2, 4, 4, 1280, 1280, 3, 1, 1);
  conv("unet 2560->1280 @4", 2, 4, 4, 2560, 1280, 3, 1, 1);
  conv("unet 1x1 640->320 @32", 2, 32, 32, 640, 320, 1, 1, 0);
  conv("unet conv_out 320->4 @32", 2, 32, 32, 320, 4, 3, 1, 1);
  linear("unet geglu proj 320->2560 [2,1024]", 2, 1024, 320, 2560);
  linear_geglu("unet 320->2x1280 [2,1024]", 2, 1024, 320, 2560);
  linear_geglu("unet 1280->2x5120 [2,64]", 2, 64, 1280, 10240);
  linear("unet ff out 1280->320 [2,1024]", 2, 1024, 1280, 320);
  linear("unet to_k 768->320 [2,77]", 2, 77, 768, 320);
  linear("clip fc1 768->3072 [2,77]", 2, 77, 768, 3072);
  attention("unet self 1024 tok d40 x8", 2, 1024, 1024, 8, 40, false);
  attention("unet cross 1024x77 d40 x8", 2, 1024, 77, 8, 40, false);
  attention("unet self 256 tok d80 x8", 2, 256, 256, 8, 80, false);
  attention("clip causal 77 d64 x12", 2, 77, 77, 12, 64, true);
  // VAE decode to 256×256 (latents 32×32), batch 1.
  attention("vae mid 1024 tok d512 x1", 1, 1024, 1024, 1, 512, false);
  attention("unet self 4096 tok d40 x8 (512²)", 2, 4096, 4096, 8, 40, false);
  attention("vae mid 4096 tok d512 x1 (512²)", 1, 4096, 4096, 1, 512, false);
  conv("vae 512->512 @32", 1, 32, 32, 512, 512, 3, 1, 1);
  conv("vae 512->512 @64", 1, 64, 64, 512, 512, 3, 1, 1);
  conv("vae 512->256 @128", 1, 128, 128, 512, 256, 3, 1, 1);
  conv("vae 256->256 @128", 1, 128, 128, 256, 256, 3, 1, 1);
  conv("vae 128->128 @256", 1, 256, 256, 128, 128, 3, 1, 1);
  conv("vae conv_out 128->3 @256", 1, 256, 256, 128, 3, 3, 1, 1);
  // Memory-bound glue.
  group_norm("+silu unet [2,1024,320]", 2, 1024, 320, true);
  group_norm("+silu vae [1,65536,128]", 1, 65536, 128, true);
  {
    Tensor x = random_tensor(b, {2, 1024, 2560}, 12);
    rows.push_back({"geglu [2,1024,2560]", 0.0, [&b, x] { b.geglu(x); }});
    Tensor y = random_tensor(b, {1, 256, 256, 128}, 13);
    rows.push_back({"silu [1,256,256,128]", 0.0, [&b, y] { b.activation(y, Activation::SiLU); }});
    rows.push_back({"gelu [1,256,256,128]", 0.0, [&b, y] { b.activation(y, Activation::GELU); }});
    Tensor u = random_tensor(b, {1, 128, 128, 256}, 14);
    rows.push_back({"upsample 2x [1,128,128,256]", 0.0, [&b, u] { b.upsample_nearest(u, 256, 256); }});
    Tensor t = random_tensor(b, {2, 1024, 320}, 15), g = random_tensor(b, {320}, 16);
    rows.push_back({"layer_norm [2,1024,320]", 0.0, [&b, t, g] { b.layer_norm(t, g, g, 1e-5f); }});
    rows.push_back({"binary add [2,1024,320]", 0.0, [&b, t] { b.binary(BinaryOp::Add, t, t); }});
  }

  std::printf("%-40s %10s %10s %8s\n", "op", "ms", "GFLOP/s", "of sgemm");
  double total_ms = 0.0;
  for (const Row& r : rows) {
    if (!filter.empty() && r.name.find(filter) == std::string::npos) continue;
    double t = best_seconds(reps, r.run);
    total_ms += t * 1e3;
    if (r.flops > 0)
      std::printf("%-40s %10.3f %10.1f %7.0f%%\n", r.name.c_str(), t * 1e3, r.flops / t * 1e-9,
                  100.0 * r.flops / t * 1e-9 / parallel_rate);
    else
      std::printf("%-40s %10.3f %10s %8s\n", r.name.c_str(), t * 1e3, "-", "-");
  }
  std::printf("%-40s %10.3f\n", "total", total_ms);
  return 0;
}
