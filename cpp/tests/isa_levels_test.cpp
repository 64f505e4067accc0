// Every kernel family at every ISA level this CPU supports, against the scalar level, on the
// same seeded inputs with odd sizes (dims 1, 3, 97, 385; head sizes 16, 24, 32, 64).
// Integer outputs (codes, bits, int8 and Hamming search) must be identical; float outputs
// within a small tolerance, and top-k ids identical wherever the scores are not near-ties.
// Prints one line per failure and exits non-zero if any.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/attention.h"
#include "core/dispatch.h"
#include "core/pooling.h"
#include "core/quantize.h"
#include "core/search.h"
#include "core/vector_ops.h"

using namespace embedrank;

namespace {

int g_failures = 0;
int g_checks = 0;
std::string g_case;  // the level and family being checked, for failure lines

constexpr float kTol = 1e-4f;
const size_t kDims[] = {1, 3, 97, 385};

void fail(const std::string& what) {
  ++g_failures;
  std::printf("FAIL %s: %s\n", g_case.c_str(), what.c_str());
}

template <typename T>
void expect_equal(const std::vector<T>& got, const std::vector<T>& want, const std::string& what) {
  ++g_checks;
  for (size_t i = 0; i < want.size(); ++i)
    if (got[i] != want[i])
      return fail(what + " differs at " + std::to_string(i) + ": " + std::to_string(got[i]) + " vs scalar " +
                  std::to_string(want[i]));
}

bool close(float got, float want) {
  if (std::isinf(want) || std::isinf(got)) return got == want;
  return std::fabs(got - want) <= kTol * (1.0f + std::fabs(want));
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ++g_checks;
  for (size_t i = 0; i < want.size(); ++i)
    if (!close(got[i], want[i]))
      return fail(what + " differs at " + std::to_string(i) + ": " + std::to_string(got[i]) + " vs scalar " +
                  std::to_string(want[i]));
}

// Scores close; ids equal except where the scalar scores of neighbours are within tolerance.
void expect_topk(const std::vector<float>& scores, const std::vector<int64_t>& ids,
                 const std::vector<float>& want_scores, const std::vector<int64_t>& want_ids, size_t k,
                 const std::string& what) {
  expect_close(scores, want_scores, what + " scores");
  for (size_t i = 0; i < want_ids.size(); ++i) {
    size_t col = i % k;
    bool tie = (col > 0 && close(want_scores[i - 1], want_scores[i])) ||
               (col + 1 < k && close(want_scores[i + 1], want_scores[i]));
    if (!tie && ids[i] != want_ids[i])
      return fail(what + " ids differ at " + std::to_string(i) + ": " + std::to_string(ids[i]) + " vs scalar " +
                  std::to_string(want_ids[i]));
  }
}

std::vector<float> normal(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// float32 -> IEEE half bits, truncating (every level gets the same bits).
uint16_t to_half(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  uint32_t sign = (bits >> 16) & 0x8000u;
  int exponent = static_cast<int>((bits >> 23) & 0xFF) - 127 + 15;
  uint32_t mantissa = (bits >> 13) & 0x3FFu;
  if (exponent <= 0) return static_cast<uint16_t>(sign);
  if (exponent >= 31) return static_cast<uint16_t>(sign | 0x7C00u);
  return static_cast<uint16_t>(sign | (static_cast<uint32_t>(exponent) << 10) | mantissa);
}

// ---- one function per family: outputs at the active level, compared with the scalar ones ----

struct TopK {
  std::vector<float> scores;
  std::vector<int64_t> ids;
  size_t k;
};

struct Outputs {
  std::vector<std::vector<float>> floats;
  std::vector<std::vector<int64_t>> ints;
  std::vector<TopK> topk;  // float-scored searches
};

void vector_ops_case(size_t d, std::mt19937 rng, Outputs& out) {
  const VectorOps& ops = vector_ops();
  std::vector<float> a = normal(d, rng), b = normal(d, rng), acc = normal(d, rng), scaled(d);
  std::vector<int8_t> codes(d);
  std::vector<uint16_t> halves(d);
  for (size_t i = 0; i < d; ++i) {
    codes[i] = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
    halves[i] = to_half(b[i]);
  }
  ops.add_f32(acc.data(), a.data(), d);
  ops.add_f16(acc.data(), halves.data(), d);
  ops.scale(scaled.data(), a.data(), 0.37f, d);
  out.floats.push_back(acc);
  out.floats.push_back(scaled);
  out.floats.push_back({ops.sum_squares(a.data(), d), ops.dot(a.data(), b.data(), d),
                        ops.dot_i8(a.data(), codes.data(), d)});
}

void pooling_case(size_t d, std::mt19937 rng, Outputs& out) {
  const size_t batch = 5, tokens = 7;
  std::vector<float> hidden = normal(batch * tokens * d, rng);
  std::vector<uint16_t> half(hidden.size());
  for (size_t i = 0; i < hidden.size(); ++i) half[i] = to_half(hidden[i]);
  std::vector<int64_t> mask(batch * tokens);
  for (size_t i = 0; i < mask.size(); ++i) mask[i] = (i % tokens == 0) || rng() % 3 != 0;
  for (bool normalize : {false, true}) {
    std::vector<float> pooled(batch * d), pooled_half(batch * d);
    mean_pool(hidden.data(), HiddenType::float32, mask.data(), MaskType::int64, batch, tokens, d, normalize,
              pooled.data(), 2);
    mean_pool(half.data(), HiddenType::float16, mask.data(), MaskType::int64, batch, tokens, d, normalize,
              pooled_half.data(), 2);
    out.floats.push_back(pooled);
    out.floats.push_back(pooled_half);
  }
  std::vector<float> rows = normal(300 * d, rng, 3.0f), normalized(300 * d);
  normalize_rows(rows.data(), d, 300, d, normalized.data(), 2);
  out.floats.push_back(normalized);
}

void quantize_case(size_t d, std::mt19937 rng, Outputs& out) {
  const size_t n = 600;  // more than one task of rows
  std::vector<float> x = normal(n * d, rng, 40.0f), offset = normal(d, rng), inv_scale(d);
  for (size_t j = 0; j < d; ++j) inv_scale[j] = 1.0f / static_cast<float>(1 + j % 5);
  for (size_t i = 0; i < x.size(); i += 7) x[i] = std::nearbyint(x[i]) + 0.5f;  // halfway values
  std::vector<int8_t> codes(n * d);
  std::vector<uint8_t> bits(n * ((d + 7) / 8));
  int64_t bad_codes = int8_encode(x.data(), n, d, offset.data(), inv_scale.data(), codes.data(), 2);
  int64_t bad_bits = binarize(x.data(), n, d, bits.data(), 2);
  out.ints.emplace_back(codes.begin(), codes.end());
  out.ints.emplace_back(bits.begin(), bits.end());
  out.ints.push_back({bad_codes, bad_bits});
}

void search_case(size_t d, std::mt19937 rng, Outputs& out) {
  const size_t n = 1100, k = 10;
  std::vector<float> base = normal(n * d, rng);
  std::vector<int8_t> codes(n * d);
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
  std::vector<uint8_t> allow(n);
  for (uint8_t& a : allow) a = rng() % 4 != 0;
  const size_t bytes = (d + 7) / 8;
  std::vector<uint8_t> bits(n * bytes);
  for (uint8_t& b : bits) b = static_cast<uint8_t>(rng());
  for (size_t nq : {size_t{3}, size_t{37}}) {  // the row path and the panel path
    std::vector<float> queries = normal(nq * d, rng);
    std::vector<int8_t> q8(nq * d);
    for (size_t i = 0; i < q8.size(); ++i) q8[i] = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
    std::vector<uint8_t> qbits(nq * bytes);
    for (uint8_t& b : qbits) b = static_cast<uint8_t>(rng());
    const uint8_t* allow_options[] = {nullptr, allow.data()};
    for (const uint8_t* allowed : allow_options) {
      SearchOptions o;
      o.k = k;
      o.allow = allowed;
      o.num_threads = 2;
      std::vector<float> scores(nq * k);
      std::vector<int64_t> ids(nq * k);
      topk_float32(queries.data(), nq, base.data(), n, d, o, scores.data(), ids.data());
      out.topk.push_back({scores, ids, k});
      topk_float32_int8(queries.data(), nq, codes.data(), n, d, o, scores.data(), ids.data());
      out.topk.push_back({scores, ids, k});
      topk_int8_int8(q8.data(), nq, codes.data(), n, d, o, scores.data(), ids.data());
      out.ints.emplace_back(scores.begin(), scores.end());  // integers: compared exactly
      out.ints.push_back(ids);
      std::vector<int32_t> distances(nq * k);
      topk_hamming(qbits.data(), nq, bits.data(), n, bytes, o, distances.data(), ids.data());
      out.ints.emplace_back(distances.begin(), distances.end());
      out.ints.push_back(ids);
    }
    std::vector<int64_t> candidates(nq * 15);
    for (size_t i = 0; i < candidates.size(); ++i) candidates[i] = i % 15 == 14 ? -1 : static_cast<int64_t>(rng() % n);
    SearchOptions o;
    o.k = 5;
    o.num_threads = 2;
    std::vector<float> scores(nq * 5);
    std::vector<int64_t> ids(nq * 5);
    rescore_float32(queries.data(), nq, base.data(), n, d, candidates.data(), 15, o, scores.data(), ids.data());
    out.topk.push_back({scores, ids, 5});
    rescore_int8(queries.data(), nq, codes.data(), n, d, candidates.data(), 15, o, scores.data(), ids.data());
    out.topk.push_back({scores, ids, 5});
  }
}

void attention_case(size_t head_dim, std::mt19937 rng, Outputs& out) {
  const size_t batch = 3, tokens = 19, heads = 2;
  const size_t size = batch * tokens * heads * head_dim;
  std::vector<float> q = normal(size, rng, 2.0f), k = normal(size, rng, 2.0f), v = normal(size, rng, 2.0f),
                     result(size);
  std::vector<int64_t> mask(batch * tokens);
  for (size_t i = 0; i < mask.size(); ++i) mask[i] = i >= 2 * tokens ? 0 : (i % tokens == 0 || rng() % 3 != 0);
  AttentionProblem p;
  p.q = q.data();
  p.k = k.data();
  p.v = v.data();
  p.mask = mask.data();
  p.out = result.data();
  p.batch = batch;
  p.tokens = tokens;
  p.heads = heads;
  p.head_dim = head_dim;
  p.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  attention(p, 2);
  out.floats.push_back(result);
  // with a relative position bias shared by the sequences ([1, heads, tokens, tokens]), then one per sequence
  for (size_t bias_batch : {size_t{1}, batch}) {
    std::vector<float> bias = normal(bias_batch * heads * tokens * tokens, rng, 1.0f);
    p.bias = bias.data();
    p.bias_batch = bias_batch;
    attention(p, 2);
    out.floats.push_back(result);
  }
}

struct Family {
  const char* name;
  void (*run)(size_t size, std::mt19937 rng, Outputs& out);
  std::vector<size_t> sizes;
};

}  // namespace

int main() {
  const std::vector<Family> families = {
      {"vector_ops", vector_ops_case, {1, 3, 8, 15, 16, 17, 97, 385}},
      {"pooling", pooling_case, {kDims, kDims + 4}},
      {"quantize", quantize_case, {kDims, kDims + 4}},
      {"search", search_case, {kDims, kDims + 4}},
      {"attention", attention_case, {16, 24, 32, 64, 1}},
  };
  const int highest = static_cast<int>(highest_supported_isa());
  std::printf("CPU: highest ISA level %s; features:", isa_name(highest_supported_isa()));
  for (const std::string& name : detected_feature_names()) std::printf(" %s", name.c_str());
  std::printf("\n");
  for (const Family& family : families) {
    for (size_t size : family.sizes) {
      Outputs want;
      set_active_isa(Isa::scalar);
      family.run(size, std::mt19937(static_cast<unsigned>(size) * 7919u + 11u), want);
      for (int level = 1; level <= highest; ++level) {
        Isa isa = static_cast<Isa>(level);
        set_active_isa(isa);
        g_case = std::string(isa_name(isa)) + " " + family.name + " size " + std::to_string(size);
        Outputs got;
        family.run(size, std::mt19937(static_cast<unsigned>(size) * 7919u + 11u), got);
        for (size_t f = 0; f < want.floats.size(); ++f)
          expect_close(got.floats[f], want.floats[f], "float output " + std::to_string(f));
        for (size_t i = 0; i < want.ints.size(); ++i)
          expect_equal(got.ints[i], want.ints[i], "integer output " + std::to_string(i));
        for (size_t t = 0; t < want.topk.size(); ++t)
          expect_topk(got.topk[t].scores, got.topk[t].ids, want.topk[t].scores, want.topk[t].ids, want.topk[t].k,
                      "top-k output " + std::to_string(t));
      }
    }
  }
  set_active_isa(static_cast<Isa>(highest));
  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
