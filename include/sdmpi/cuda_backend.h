// The CUDA backend: every op of backend.h on an NVIDIA GPU, plus what only a GPU has (device
// probing, the memory arena's statistics, CUDA-graph capture and replay).
//
// Numerics: activations and matrix/convolution weights are in the compute dtype (F16, BF16 or F32);
// biases and norm parameters stay F32; every reduction and matrix product accumulates in F32. In
// F32 no TF32 is used anywhere (cuBLASLt CUBLAS_COMPUTE_32F, cuDNN CUDNN_FMA_MATH), so results
// match the CPU reference to float32 rounding. Elementwise ops round after every op like eager
// PyTorch (__fadd_rn & co.).
//
// Execution: every op of one backend is enqueued on one CUDA stream, in call order; to_host and
// synchronize wait for it. Memory comes from a caching arena over a few large cudaMalloc blocks;
// once the shapes of a run have been seen the step loop allocates nothing from the driver.
//
// This header does not include CUDA's headers, so code built without them (the app, tests) can
// include it. In a build without CUDA the probe says so and make_cuda_backend throws
// (src/backend/cuda/no_cuda.cpp). The pipeline never includes it: it sees a Backend only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sdmpi/backend.h"

namespace sdmpi {

// ---- device probing (never throws, never crashes on a machine without a driver) -----------------

struct CudaDeviceInfo {
  int index = 0;
  std::string name;           // "NVIDIA H100 80GB HBM3"
  int cc_major = 0, cc_minor = 0;
  size_t total_memory = 0;    // bytes
  int multiprocessors = 0;
};

struct CudaProbe {
  int driver_version = 0;   // CUDA version the driver supports, e.g. 13000; 0 without a driver
  int runtime_version = 0;  // CUDA runtime this binary was built with, e.g. 13000
  std::vector<CudaDeviceInfo> devices;
  // Why no GPU can be used ("no NVIDIA driver (libcuda.so.1 not found)", "driver too old: ...",
  // "no CUDA device visible (CUDA_VISIBLE_DEVICES=...)"); empty when devices is non-empty.
  std::string reason;
  bool usable() const { return !devices.empty(); }
  // One line: "driver 13.0, runtime 13.0, 1 device: cuda:0 NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)"
  // or "no usable CUDA GPU: <reason>".
  std::string summary() const;
};

// Asks the CUDA runtime what it sees. Works (returns a reason) without libcuda.so.1, with a driver
// older than the runtime, and with no device visible. Does not create a context.
CudaProbe probe_cuda();

// "13.0" for 13000.
std::string cuda_version_string(int version);

// ---- backends --------------------------------------------------------------------------------------

// The CUDA backend on device `device` (an index among the visible devices) computing in `compute`
// (F16, BF16 or F32). Throws Error with one clear line when the device does not work: no driver,
// driver too old, no such device, a GPU this build has no kernels for (it checks with a test
// launch), or bf16 on a GPU older than sm_80.
std::unique_ptr<Backend> make_cuda_backend(int device, DType compute);

// Device choice for `--device auto|cuda` (docs/design.md §5). Tries make_cuda_backend(device, compute);
// on failure: with `required` (--device cuda) throws Error "--device cuda: <reason>"; otherwise
// (--device auto) returns nullptr and sets *why_not to the reason, so the caller can say
// "no usable GPU (<reason>); running on the CPU" and fall back. The caller logs which GPU it got
// (Backend::name()).
std::unique_ptr<Backend> open_cuda_backend(int device, DType compute, bool required,
                                           std::string* why_not);

// ---- kernel launches per op (host code: in every build, with or without CUDA) -------------------

// What one op call costs the CUDA backend: the kernel launches, memory copies and memsets it
// enqueues (the nodes it adds to a captured CUDA graph), and the path that decides it.
struct CudaOpLaunches {
  int64_t launches = 0;
  std::string path;  // "cuBLASLt, bias+residual epilogue", "cuDNN conv+bias+residual", ...
};
// The one table of launches per op, from the call's shapes and flags alone (src/backend/cuda/
// launch_table.cpp). It assumes the libraries take the fused paths the backend asks for (cuBLASLt
// has an epilogue algorithm, cuDNN runs the fused convolution in one kernel); the GPU test
// cuda_launch_count_test checks that against a captured graph's node count. Sum it over a step
// observed with Backend::set_op_observer to count the step's launches without a GPU.
CudaOpLaunches cuda_op_launches(const OpCall& call);

// ---- what only the CUDA backend has ----------------------------------------------------------------

struct CudaMemoryStats {
  size_t reserved_bytes = 0;        // held from the driver (all pools: weights, activations, graphs)
  size_t weight_bytes = 0;          // in use by uploaded weights
  size_t activation_bytes = 0;      // in use by other tensors (activations, workspaces)
  size_t peak_activation_bytes = 0;
  size_t graph_pool_bytes = 0;      // reserved by captured graphs' private pools
  int64_t device_allocations = 0;   // cudaMalloc calls so far (a step loop must not raise it)
  int64_t graph_fallbacks = 0;      // steps whose capture failed and that run eagerly (each warned)
};

class CudaBackend : public Backend {
 public:
  virtual int device_index() const = 0;
  // The stream every op is enqueued on (a cudaStream_t).
  virtual void* stream() const = 0;

  // ---- memory --------------------------------------------------------------------------------------
  virtual CudaMemoryStats memory_stats() const = 0;
  // Grows the activation pool to at least `bytes` now, in one block (call it with the size a run
  // needs, e.g. the peak of a first run, to avoid growth later).
  virtual void reserve_activations(size_t bytes) = 0;
  // With false, any further growth of the activation pool throws Error naming the request: a
  // check that a step loop allocates nothing. True again allows growth.
  virtual void allow_growth(bool allowed) = 0;
  // Debug: fill every new allocation with NaN bytes (0xFF), so unwritten outputs show up in tests.
  virtual void set_poison(bool on) = 0;

  // ---- CUDA graphs ---------------------------------------------------------------------------------
  // run_graph (backend.h) on this backend: the first call for a key copies `inputs` into static
  // buffers owned by the graph, runs fn once eagerly (warm-up: algorithm choices, cuDNN plans,
  // module loading, pool growth), captures a second run into a graph and replays it. Later calls
  // with the same key copy `inputs` into the static buffers (nothing to copy when an input already
  // is the static buffer, see graph_inputs) and replay. It returns the outputs of the captured run:
  // the same tensors every time, overwritten by each replay of the key.
  //
  // Rules for fn, because a graph replays device work only:
  //   - everything that changes between calls must come from `static_inputs` (latents, timestep
  //     embedding, text embeddings): scalars passed to ops (binary_scalar, clamp) are baked in;
  //   - no host traffic: from_host, to_host, embedding (it uploads ids) and synchronize throw
  //     while capturing;
  //   - the same sequence of ops for the same inputs (no data-dependent host branches).
  // Memory: each key's graph owns a private pool. All allocations made while fn runs (warm-up and
  // capture) come from that pool, and blocks freed inside it go back only to it, so the addresses
  // baked into the graph stay valid and unused by anyone else for as long as the graph lives.
  // An exception from fn during the capture (e.g. host traffic) propagates. If instead a library
  // call breaks the capture, the key runs fn directly on the static inputs from then on, returning
  // fresh outputs each call: one warning, counted in memory_stats().graph_fallbacks, or an Error
  // with SDMPI_CUDA_GRAPHS=require. SDMPI_CUDA_GRAPHS=0 runs every key so without a warning.
  // Whether a capture is in progress (ops that touch the host throw then).
  virtual bool capturing() const = 0;

  // ---- what only this backend computes fused ---------------------------------------------------------
  // diffusers' get_timestep_embedding for timesteps t [B] (F32, on this device), in float32 like
  // torch: exponent_k = (-ln(10000) * k) / (dim/2 - shift), arg = t * exp(exponent_k);
  // [sin | cos] or, with flip_sin_to_cos, [cos | sin]. Returns [B, dim] in the compute dtype.
  virtual Tensor timestep_embedding(const Tensor& t, int dim, bool flip_sin_to_cos, float shift) = 0;
};

// The CUDA backend behind `backend`, or nullptr when it is another backend.
inline CudaBackend* as_cuda(Backend& backend) { return dynamic_cast<CudaBackend*>(&backend); }

}  // namespace sdmpi
