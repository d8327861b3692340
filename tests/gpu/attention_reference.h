// CPU reference for multi-head attention, in double precision, one query row at a time.
//
// The textbook formula: logits l_j = scale · q_i·k_j over the visible keys (all, or j <= i when
// causal), p_j = exp(l_j - max_j l_j) / Σ exp(...), out = Σ p_j v_j, every sum in double. Subtracting
// the max keeps exp in range for any logits, so it is exact to double rounding even where the
// logits are huge. It reads float copies of exactly the fp16/bf16 values the kernel sees, so the
// only differences left are the kernel's own arithmetic. One row at a time lets a test check a
// sample of rows of a shape too large to reference in full.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace sdmpi::test {

struct AttentionRefInput {
  const float* q = nullptr;  // element (b, i, head, c) at q[b*q_batch + i*q_row + head*head_dim + c]
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t q_row = 0, k_row = 0, v_row = 0;
  int64_t q_batch = 0, k_batch = 0, v_batch = 0;
  int seq_q = 0, seq_kv = 0, head_dim = 0;
  double scale = 1.0;
  bool causal = false;
};

// out[c] for c < head_dim: attention output of query row i of (b, head).
inline void attention_reference_row(const AttentionRefInput& in, int b, int head, int i,
                                    double* out) {
  const int d = in.head_dim;
  const float* q = in.q + b * in.q_batch + i * in.q_row + static_cast<int64_t>(head) * d;
  const int n_keys = in.causal ? std::min(in.seq_kv, i + 1) : in.seq_kv;
  std::vector<double> logits(n_keys);
  double max_logit = -INFINITY;
  for (int j = 0; j < n_keys; ++j) {
    const float* k = in.k + b * in.k_batch + j * in.k_row + static_cast<int64_t>(head) * d;
    double dot = 0.0;
    for (int c = 0; c < d; ++c) dot += static_cast<double>(q[c]) * static_cast<double>(k[c]);
    logits[j] = dot * in.scale;
    max_logit = std::max(max_logit, logits[j]);
  }
  double sum = 0.0;
  for (int j = 0; j < n_keys; ++j) {
    logits[j] = std::exp(logits[j] - max_logit);
    sum += logits[j];
  }
  for (int c = 0; c < d; ++c) out[c] = 0.0;
  for (int j = 0; j < n_keys; ++j) {
    const float* v = in.v + b * in.v_batch + j * in.v_row + static_cast<int64_t>(head) * d;
    const double p = logits[j] / sum;
    for (int c = 0; c < d; ++c) out[c] += p * static_cast<double>(v[c]);
  }
}

}  // namespace sdmpi::test
