// Per-op GPU benchmark of the CUDA backend at Stable Diffusion 1.5's shapes (512x512, batch 2 for
// classifier-free guidance; the VAE at batch 1).
//
// Each case runs the backend op as the models call it (allocation from the pool included), a few
// warm-up calls first, then the median over repeats of (time of `iters` back-to-back calls between
// two CUDA events) / iters. It prints one JSON line per case:
//   {"bench":"cuda_ops","impl":"sd_mpi","op":"conv2d","case":"3x3 [2,64,64,320]->320","dtype":"F16",
//    "ms":0.123,"tflops":45.6,"gbps":789.0}
// tflops counts 2 per multiply-add; gbps counts each input read once and the output written once
// (the floor of the traffic). bench/gpu/ops_torch.py prints the same cases for PyTorch, and
// bench/gpu/window.sh (results_table.py) joins the two into one table.
//
// Usage: ops_bench [--dtype fp16|bf16|fp32 ...] [--quick]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "sdmpi/cuda_backend.h"
#include "sdmpi/error.h"

using namespace sdmpi;

namespace {

struct Case {
  std::string op, name;
  double flops = 0, bytes = 0;
  std::function<void()> run;
};

class Bench {
 public:
  Bench(CudaBackend& b, bool quick) : b_(b), quick_(quick), gen_(12345) {}

  Tensor random(const Shape& shape, float scale = 1.0f) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
    for (float& x : v) x = d(gen_);
    return b_.from_host(v.data(), shape);
  }
  Tensor weight(const Shape& torch_shape, WeightKind kind, float scale) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(static_cast<size_t>(shape_numel(torch_shape)));
    for (float& x : v) x = d(gen_);
    WeightView w;
    w.name = "bench";
    w.shape = torch_shape;
    w.data = v.data();
    return b_.upload_weight(w, kind);
  }

  void time(const Case& c) {
    auto stream = static_cast<cudaStream_t>(b_.stream());
    for (int i = 0; i < 3; ++i) c.run();
    b_.synchronize();
    // Calls per timed batch: about 2 ms of work, at least 3.
    cudaEvent_t start, stop;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    cudaEventRecord(start, stream);
    c.run();
    cudaEventRecord(stop, stream);
    cudaEventSynchronize(stop);
    float once = 0;
    cudaEventElapsedTime(&once, start, stop);
    const int iters = std::clamp(static_cast<int>(2.0f / std::max(once, 1e-3f)), 3, 200);
    const int repeats = quick_ ? 3 : 7;
    std::vector<float> per_call;
    for (int r = 0; r < repeats; ++r) {
      cudaEventRecord(start, stream);
      for (int i = 0; i < iters; ++i) c.run();
      cudaEventRecord(stop, stream);
      cudaEventSynchronize(stop);
      float ms = 0;
      cudaEventElapsedTime(&ms, start, stop);
      per_call.push_back(ms / static_cast<float>(iters));
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    std::sort(per_call.begin(), per_call.end());
    const double ms = per_call[per_call.size() / 2];
    std::printf(
        "{\"bench\":\"cuda_ops\",\"impl\":\"sd_mpi\",\"op\":\"%s\",\"case\":\"%s\",\"dtype\":\"%s\",\"ms\":%.5f,"
        "\"tflops\":%.3f,\"gbps\":%.1f}\n",
        c.op.c_str(), c.name.c_str(), dtype_name(b_.compute_dtype()), ms, c.flops / (ms * 1e-3) / 1e12,
        c.bytes / (ms * 1e-3) / 1e9);
    std::fflush(stdout);
  }

  CudaBackend& b() { return b_; }
  double es() const { return static_cast<double>(dtype_size(b_.compute_dtype())); }

 private:
  CudaBackend& b_;
  bool quick_;
  std::mt19937 gen_;
};

std::string dims(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ",";
    r += std::to_string(s[i]);
  }
  return r + "]";
}

void run_all(Bench& bench) {
  CudaBackend& b = bench.b();
  const double es = bench.es();

  // Matrix products: (tokens, in, out, bias, residual)
  struct Lin {
    int64_t m, k, n;
    bool bias, residual;
  };
  for (Lin l : {Lin{8192, 320, 320, false, false}, Lin{8192, 320, 2560, true, false}, Lin{8192, 1280, 320, true, true},
                Lin{154, 768, 320, false, false}, Lin{512, 1280, 10240, true, false}, Lin{2048, 640, 640, true, true}}) {
    Tensor x = bench.random({l.m, l.k});
    Tensor w = bench.weight({l.n, l.k}, WeightKind::Linear, 1.0f / std::sqrt(static_cast<float>(l.k)));
    Tensor bias = bench.weight({l.n}, WeightKind::Vector, 0.1f);
    Tensor res = bench.random({l.m, l.n});
    Case c;
    c.op = "linear";
    c.name = dims({l.m, l.k}) + "x" + dims({l.n, l.k}) + (l.bias ? "+bias" : "") + (l.residual ? "+res" : "");
    c.flops = 2.0 * l.m * l.k * l.n;
    c.bytes = es * (l.m * l.k + l.n * l.k + l.m * l.n * (l.residual ? 2 : 1));
    c.run = [&b, x, w, bias, res, l] { b.linear(x, w, l.bias ? &bias : nullptr, l.residual ? &res : nullptr); };
    bench.time(c);
  }

  // Convolutions: (input NHWC, out channels, kernel, stride, residual)
  struct Conv {
    Shape x;
    int64_t k, r;
    int stride;
    bool residual;
  };
  for (Conv v : {Conv{{2, 64, 64, 4}, 320, 3, 1, false}, Conv{{2, 64, 64, 320}, 320, 3, 1, true},
                 Conv{{2, 64, 64, 320}, 320, 3, 2, false}, Conv{{2, 32, 32, 640}, 640, 3, 1, false},
                 Conv{{2, 16, 16, 1280}, 1280, 3, 1, false}, Conv{{2, 8, 8, 2560}, 1280, 3, 1, false},
                 Conv{{2, 64, 64, 640}, 320, 1, 1, true}, Conv{{1, 64, 64, 4}, 512, 3, 1, false},
                 Conv{{1, 128, 128, 512}, 512, 3, 1, false}, Conv{{1, 256, 256, 256}, 256, 3, 1, false},
                 Conv{{1, 512, 512, 128}, 128, 3, 1, false}, Conv{{1, 512, 512, 128}, 3, 3, 1, false}}) {
    const int pad = static_cast<int>(v.r / 2);
    Tensor x = bench.random(v.x);
    Tensor w = bench.weight({v.k, v.x[3], v.r, v.r}, WeightKind::Conv,
                            1.0f / std::sqrt(static_cast<float>(v.x[3] * v.r * v.r)));
    Tensor bias = bench.weight({v.k}, WeightKind::Vector, 0.1f);
    const int64_t ho = (v.x[1] + 2 * pad - v.r) / v.stride + 1, wo = (v.x[2] + 2 * pad - v.r) / v.stride + 1;
    Tensor res = bench.random({v.x[0], ho, wo, v.k});
    Case c;
    c.op = "conv2d";
    c.name = std::to_string(v.r) + "x" + std::to_string(v.r) + (v.stride > 1 ? "/2 " : " ") + dims(v.x) + "->" +
             std::to_string(v.k) + (v.residual ? "+res" : "");
    c.flops = 2.0 * v.x[0] * ho * wo * v.k * v.x[3] * v.r * v.r;
    c.bytes = es * (shape_numel(v.x) + v.k * v.x[3] * v.r * v.r + v.x[0] * ho * wo * v.k * (v.residual ? 2 : 1));
    const int stride = v.stride;
    const bool residual = v.residual;
    c.run = [&b, x, w, bias, res, stride, pad, residual] {
      b.conv2d(x, w, &bias, stride, pad, residual ? &res : nullptr);
    };
    bench.time(c);
  }

  // Normalisation.
  for (auto [shape, silu] : {std::pair<Shape, bool>{{2, 64, 64, 320}, true}, {{2, 16, 16, 2560}, true},
                             {{2, 64, 64, 320}, false}, {{1, 512, 512, 128}, true}, {{1, 128, 128, 512}, true}}) {
    Tensor x = bench.random(shape);
    const int64_t ch = shape.back();
    Tensor gamma = bench.weight({ch}, WeightKind::Vector, 0.1f), beta = bench.weight({ch}, WeightKind::Vector, 0.1f);
    Case c;
    c.op = silu ? "group_norm_silu" : "group_norm";
    c.name = dims(shape) + " g32";
    c.bytes = es * 2.0 * static_cast<double>(shape_numel(shape));
    const bool s = silu;
    c.run = [&b, x, gamma, beta, s] { b.group_norm(x, 32, gamma, beta, 1e-5f, s); };
    bench.time(c);
  }
  for (Shape shape : {Shape{2, 4096, 320}, Shape{2, 1024, 640}, Shape{2, 77, 768}}) {
    Tensor x = bench.random(shape);
    const int64_t ch = shape.back();
    Tensor gamma = bench.weight({ch}, WeightKind::Vector, 0.1f), beta = bench.weight({ch}, WeightKind::Vector, 0.1f);
    Case c;
    c.op = "layer_norm";
    c.name = dims(shape);
    c.bytes = es * 2.0 * static_cast<double>(shape_numel(shape));
    c.run = [&b, x, gamma, beta] { b.layer_norm(x, gamma, beta, 1e-5f); };
    bench.time(c);
  }

  // Attention: (batch, query tokens, key tokens, heads, head dim)
  struct Att {
    int64_t b, nq, nk;
    int heads, d;
  };
  for (Att a : {Att{2, 4096, 4096, 8, 40}, Att{2, 4096, 77, 8, 40}, Att{2, 1024, 1024, 8, 80}, Att{2, 256, 256, 8, 160},
                Att{2, 64, 64, 8, 160}, Att{1, 4096, 4096, 1, 512}}) {
    const int64_t ch = static_cast<int64_t>(a.heads) * a.d;
    Tensor q = bench.random({a.b, a.nq, ch}), k = bench.random({a.b, a.nk, ch}), v = bench.random({a.b, a.nk, ch});
    Case c;
    c.op = "attention";
    c.name = "b" + std::to_string(a.b) + " q" + std::to_string(a.nq) + " kv" + std::to_string(a.nk) + " h" +
             std::to_string(a.heads) + " d" + std::to_string(a.d);
    c.flops = 4.0 * a.b * a.heads * a.nq * a.nk * a.d;
    c.bytes = es * (2.0 * a.b * a.nq * ch + 2.0 * a.b * a.nk * ch);
    const int heads = a.heads;
    c.run = [&b, q, k, v, heads] { b.attention(q, k, v, heads, false); };
    bench.time(c);
  }

  // Elementwise and shape ops.
  {
    Tensor x = bench.random({2, 4096, 2560});
    Case c{"geglu", dims({2, 4096, 2560}), 0, es * 1.5 * 2 * 4096 * 2560, [&b, x] { b.geglu(x); }};
    bench.time(c);
  }
  {
    Tensor x = bench.random({2, 64, 64, 320}), y = bench.random({2, 64, 64, 320});
    Case c{"add", dims({2, 64, 64, 320}), 0, es * 3.0 * 2 * 64 * 64 * 320, [&b, x, y] { b.binary(BinaryOp::Add, x, y); }};
    bench.time(c);
    Tensor t = bench.random({2, 320});
    Case d{"add_batch_channel", dims({2, 64, 64, 320}), 0, es * 2.0 * 2 * 64 * 64 * 320,
           [&b, x, t] { b.add_batch_channel(x, t); }};
    bench.time(d);
    Case e{"silu", dims({2, 64, 64, 320}), 0, es * 2.0 * 2 * 64 * 64 * 320, [&b, x] { b.activation(x, Activation::SiLU); }};
    bench.time(e);
  }
  {
    Tensor x = bench.random({2, 32, 32, 640});
    Case c{"upsample_nearest", dims({2, 32, 32, 640}) + "->64x64", 0, es * 5.0 * 2 * 32 * 32 * 640,
           [&b, x] { b.upsample_nearest(x, 64, 64); }};
    bench.time(c);
  }
  {
    Tensor x = bench.random({2, 64, 64, 640}), y = bench.random({2, 64, 64, 320});
    Case c{"concat_channels", dims({2, 64, 64, 640}) + "++320", 0, es * 2.0 * 2 * 64 * 64 * 960,
           [&b, x, y] { b.concat_channels(x, y); }};
    bench.time(c);
  }
  {
    Tensor eps = bench.random({2, 64, 64, 4});
    Case c{"guidance_combine", dims({2, 64, 64, 4}), 0, es * 1.5 * 2 * 64 * 64 * 4,
           [&b, eps] { b.guidance_combine(eps, 7.5f); }};
    bench.time(c);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<DType> dtypes;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    DType t;
    if (a == "--quick") {
      quick = true;
    } else if (a == "--dtype" && i + 1 < argc && parse_dtype(argv[i + 1], &t)) {
      dtypes.push_back(t);
      ++i;
    } else {
      std::fprintf(stderr, "usage: ops_bench [--dtype fp16|bf16|fp32 ...] [--quick]\n");
      return 2;
    }
  }
  if (dtypes.empty()) dtypes = {DType::F16};
  CudaProbe probe = probe_cuda();
  if (!probe.usable()) {
    std::fprintf(stderr, "ops_bench: %s\n", probe.summary().c_str());
    return 1;
  }
  try {
    for (DType t : dtypes) {
      std::unique_ptr<Backend> backend = make_cuda_backend(0, t);
      std::fprintf(stderr, "ops_bench: %s\n", backend->name().c_str());
      Bench bench(*as_cuda(*backend), quick);
      run_all(bench);
      backend->synchronize();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ops_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
