// Fused multi-head scaled dot-product attention for encoder graphs (no causal mask). AVX-512
// and AVX2 variants for head_dim 16, 32 and 64; a portable loop for the others and at the
// scalar level.
//
// For sequence b and head h: out[b, i, h] = sum_j softmax_j(scale * q[b, i, h] . k[b, j, h]) v[b, j, h]
// over the keys j with mask[b, j] != 0; every query row i is computed, padded ones included,
// so the result equals the unfused graph's (QK^T, additive mask, Softmax, PV) on every row.
// A sequence whose mask is all zero attends to all of its keys with equal weight, as the
// additive large-negative mask of exported transformers does.
//
// bf16_dots: Q K^T and P V in bf16 (vdpbf16ps: q, the scaled k, v and the unnormalized
// softmax weights rounded to bf16 to nearest even, products summed in fp32), twice the fp32
// FMA rate; the softmax and its sum stay fp32. Runs where bf16_dots_supported(); elsewhere,
// and for head sizes other than 16, 32 and 64, the fp32 kernels run instead.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace embedrank {

struct AttentionProblem {
  // [batch, tokens, heads * head_dim] row-major; head h occupies columns
  // [h * head_dim, (h + 1) * head_dim).
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  const int64_t* mask = nullptr;  // [batch, tokens]: nonzero = attended key
  // Optional additive score bias [bias_batch, heads, tokens, tokens], bias_batch 1 (the same for
  // every sequence) or batch; nullptr: none.
  const float* bias = nullptr;
  size_t bias_batch = 0;
  float* out = nullptr;           // [batch, tokens, heads * head_dim]
  size_t batch = 0, tokens = 0, heads = 0, head_dim = 0;
  float scale = 1.0f;
  bool bf16_dots = false;

  size_t width() const { return heads * head_dim; }  // floats between consecutive tokens
};

// Per-worker buffers, grown on first use and reused across tasks.
struct AttentionScratch {
  std::vector<float> keys_t;     // [head_dim, padded keys]: scaled K^T of the attended keys
  std::vector<float> values;     // [keys, head_dim]
  std::vector<float> scores;     // [query rows in a block, padded keys]
  std::vector<uint32_t> key_index;
  // bf16_dots: pairs of bf16 per 32-bit word, as vdpbf16ps reads them
  std::vector<uint32_t> keys_bf16;    // [head_dim / 2, padded keys]
  std::vector<uint32_t> values_bf16;  // [padded keys / 2, head_dim]
  std::vector<uint32_t> probs_bf16;   // [query rows in a block, padded keys / 2]
};

// True when bf16_dots takes effect: the active ISA level is avx512 and the CPU has AVX512-BF16.
bool bf16_dots_supported();

// Throws std::invalid_argument naming the first bad field (null pointer, zero heads or head_dim,
// a bias batch other than 1 or batch).
void check_attention_problem(const AttentionProblem& p);

// One task = one (sequence, head) pair: task in [0, batch * heads).
inline size_t attention_task_count(const AttentionProblem& p) { return p.batch * p.heads; }
void attention_task(const AttentionProblem& p, size_t task, AttentionScratch& scratch);

// All tasks on the library's thread pool (num_threads <= 0: all cores).
void attention(const AttentionProblem& p, int num_threads);

}  // namespace embedrank
