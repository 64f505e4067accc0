// Exact integer inner-product search of int8 queries against int8 codes.
//
// A panel holds 32 rows in groups of 4 dimensions ([ceil(d/4)][32][4] bytes) followed by the
// 32 row sums (int32). AVX-512 VNNI multiplies unsigned by signed bytes, so queries are
// shifted to q + 128 and the shift is taken back with the row sums:
//   sum (q + 128) c = sum q c + 128 sum c.
// Without VNNI (AVX2, or AVX-512 without VNNI) the same layout feeds the sign trick:
//   maddubs(|q|, sign(c, q)), safe from saturation since |q| <= 127.
#include <algorithm>
#include <cstring>
#include <vector>

#include "dispatch.h"
#include "panel_search.h"
#include "search.h"
#include "simd.h"
#include "topk.h"

namespace embedrank {
namespace {

// AMX consumes 16 groups (64 bytes) of K per tile step, so its layout pads the groups.
constexpr size_t kAmxGroups = 16;
constexpr size_t kAmxQueries = 32;

inline size_t groups_of(size_t d, bool amx) {
  size_t groups = (d + 3) / 4;
  return amx ? (groups + kAmxGroups - 1) / kAmxGroups * kAmxGroups : groups;
}
inline size_t int8_panel_bytes(size_t groups) { return groups * kPanelRows * 4 + kPanelRows * sizeof(int32_t); }

int32_t row_sum(const int8_t* row, size_t d) {
  int32_t sum = 0;
  for (size_t c = 0; c < d; ++c) sum += row[c];
  return sum;
}

void pack_int8_panels(const int8_t* rows, size_t first, size_t count, size_t d, size_t groups, uint8_t* dst) {
  size_t full_groups = d / 4;
  size_t panel_bytes = int8_panel_bytes(groups);
  size_t panels = (count + kPanelRows - 1) / kPanelRows;
  for (size_t p = 0; p < panels; ++p) {
    uint8_t* panel = dst + p * panel_bytes;
    int32_t* sums = reinterpret_cast<int32_t*>(dst + p * panel_bytes + groups * kPanelRows * 4);
    size_t valid = std::min(kPanelRows, count - p * kPanelRows);
    if (valid < kPanelRows || full_groups < groups) std::memset(panel, 0, groups * kPanelRows * 4);
    for (size_t j = valid; j < kPanelRows; ++j) sums[j] = 0;
    for (size_t j = 0; j < valid; ++j) {
      const int8_t* row = rows + (first + p * kPanelRows + j) * d;
      for (size_t g = 0; g < full_groups; ++g) std::memcpy(panel + (g * kPanelRows + j) * 4, row + 4 * g, 4);
      if (full_groups < groups) std::memcpy(panel + (full_groups * kPanelRows + j) * 4, row + 4 * full_groups, d % 4);
      sums[j] = row_sum(row, d);
    }
  }
}

// Queries prepared once per call: [rows][groups * 4] bytes, signed (zero padded) and shifted
// by 128 (padded with 128, i.e. a zero query value); 32 zero rows follow the last query, so
// an AMX tile of 32 rows starting at any query stays inside the buffer.
struct PreparedQueries {
  size_t stride;
  size_t groups;
  std::vector<int8_t> signed_q;
  std::vector<uint8_t> shifted_q;
};

PreparedQueries prepare_queries(const int8_t* q, size_t nq, size_t d, size_t groups) {
  PreparedQueries p;
  p.groups = groups;
  p.stride = groups * 4;
  size_t rows = nq + kAmxQueries;
  p.signed_q.assign(rows * p.stride, 0);
  p.shifted_q.assign(rows * p.stride, 128);
  for (size_t i = 0; i < nq; ++i)
    for (size_t c = 0; c < d; ++c) {
      p.signed_q[i * p.stride + c] = q[i * d + c];
      p.shifted_q[i * p.stride + c] = static_cast<uint8_t>(static_cast<int>(q[i * d + c]) + 128);
    }
  return p;
}

using Int8TileFn = void (*)(const PreparedQueries& q, size_t q0, size_t count, const uint8_t* panel,
                            int64_t first, uint32_t lanes, ScoreHeap* heaps);

inline void fold_ints(const int32_t* raw, int64_t first, uint32_t lanes, ScoreHeap& heap) {
  while (lanes) {
    int j = __builtin_ctz(lanes);
    lanes &= lanes - 1;
    float s = static_cast<float>(raw[j]);
    if (s > heap.threshold()) heap.push(s, first + j);
  }
}

void tiles_scalar(const PreparedQueries& q, size_t q0, size_t count, const uint8_t* panel, int64_t first,
                  uint32_t lanes, ScoreHeap* heaps) {
  const int8_t* codes = reinterpret_cast<const int8_t*>(panel);
  size_t groups = q.groups;
  for (size_t i = 0; i < count; ++i) {
    const int8_t* qi = &q.signed_q[(q0 + i) * q.stride];
    int32_t raw[kPanelRows] = {};
    for (size_t g = 0; g < groups; ++g)
      for (size_t j = 0; j < kPanelRows; ++j)
        for (size_t b = 0; b < 4; ++b) raw[j] += qi[g * 4 + b] * codes[(g * kPanelRows + j) * 4 + b];
    fold_ints(raw, first, lanes, heaps[i]);
  }
}

// ---- AVX2 sign trick: 3 queries x 32 rows ---------------------------------------------------
template <int MR>
EMBEDRANK_TARGET_AVX2 void tile_avx2(const PreparedQueries& q, size_t q0, const uint8_t* panel, int64_t first,
                           uint32_t lanes, ScoreHeap* heaps) {
  size_t groups = q.groups;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[MR][4];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < 4; ++v) acc[i][v] = _mm256_setzero_si256();
  for (size_t g = 0; g < groups; ++g) {
    const __m256i* b = reinterpret_cast<const __m256i*>(panel + g * kPanelRows * 4);
    __m256i b0 = _mm256_load_si256(b), b1 = _mm256_load_si256(b + 1), b2 = _mm256_load_si256(b + 2),
            b3 = _mm256_load_si256(b + 3);
    for (int i = 0; i < MR; ++i) {
      int32_t word;
      std::memcpy(&word, &q.signed_q[(q0 + i) * q.stride + g * 4], 4);
      __m256i a = _mm256_set1_epi32(word);
      __m256i abs_a = _mm256_abs_epi8(a);
      acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(_mm256_maddubs_epi16(abs_a, _mm256_sign_epi8(b0, a)), ones));
      acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(_mm256_maddubs_epi16(abs_a, _mm256_sign_epi8(b1, a)), ones));
      acc[i][2] = _mm256_add_epi32(acc[i][2], _mm256_madd_epi16(_mm256_maddubs_epi16(abs_a, _mm256_sign_epi8(b2, a)), ones));
      acc[i][3] = _mm256_add_epi32(acc[i][3], _mm256_madd_epi16(_mm256_maddubs_epi16(abs_a, _mm256_sign_epi8(b3, a)), ones));
    }
  }
  for (int i = 0; i < MR; ++i) {
    __m256 thr = _mm256_set1_ps(heaps[i].threshold());
    uint32_t hits = 0;
    for (int v = 0; v < 4; ++v)
      hits |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_cvtepi32_ps(acc[i][v]), thr, _CMP_GT_OQ)))
              << (8 * v);
    hits &= lanes;
    if (!hits) continue;
    alignas(32) int32_t raw[kPanelRows];
    for (int v = 0; v < 4; ++v) _mm256_store_si256(reinterpret_cast<__m256i*>(raw + 8 * v), acc[i][v]);
    fold_ints(raw, first, hits, heaps[i]);
  }
}

EMBEDRANK_TARGET_AVX2 void tiles_avx2(const PreparedQueries& q, size_t q0, size_t count, const uint8_t* panel,
                            int64_t first, uint32_t lanes, ScoreHeap* heaps) {
  for_each_query_tile<3>(count, [&](auto mr, size_t i) {
    tile_avx2<decltype(mr)::value>(q, q0 + i, panel, first, lanes, heaps + i);
  });
}

// ---- AVX-512 VNNI: 6 queries x 32 rows -----------------------------------------------------
template <int MR>
EMBEDRANK_TARGET_AVX512_VNNI void tile_vnni(const PreparedQueries& q, size_t q0, const uint8_t* panel, int64_t first,
                                 uint32_t lanes, ScoreHeap* heaps) {
  size_t groups = q.groups;
  __m512i acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_si512();
  const uint8_t* qbase = &q.shifted_q[q0 * q.stride];
  for (size_t g = 0; g < groups; ++g) {
    const __m512i* b = reinterpret_cast<const __m512i*>(panel + g * kPanelRows * 4);
    __m512i b0 = _mm512_load_si512(b), b1 = _mm512_load_si512(b + 1);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      int32_t word;
      std::memcpy(&word, qbase + i * q.stride + g * 4, 4);
      __m512i a = _mm512_set1_epi32(word);
      acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], a, b0);
      acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], a, b1);
    }
  }
  const int32_t* sums = reinterpret_cast<const int32_t*>(panel + groups * kPanelRows * 4);
  __m512i shift0 = _mm512_slli_epi32(_mm512_loadu_si512(sums), 7);
  __m512i shift1 = _mm512_slli_epi32(_mm512_loadu_si512(sums + 16), 7);
  for (int i = 0; i < MR; ++i) {
    __m512i r0 = _mm512_sub_epi32(acc[i][0], shift0), r1 = _mm512_sub_epi32(acc[i][1], shift1);
    __m512 thr = _mm512_set1_ps(heaps[i].threshold());
    uint32_t hits = static_cast<uint32_t>(_mm512_cmp_ps_mask(_mm512_cvtepi32_ps(r0), thr, _CMP_GT_OQ)) |
                    static_cast<uint32_t>(_mm512_cmp_ps_mask(_mm512_cvtepi32_ps(r1), thr, _CMP_GT_OQ)) << 16;
    hits &= lanes;
    if (!hits) continue;
    alignas(64) int32_t raw[kPanelRows];
    _mm512_store_si512(raw, r0);
    _mm512_store_si512(raw + 16, r1);
    fold_ints(raw, first, hits, heaps[i]);
  }
}

EMBEDRANK_TARGET_AVX512_VNNI void tiles_vnni(const PreparedQueries& q, size_t q0, size_t count, const uint8_t* panel,
                                  int64_t first, uint32_t lanes, ScoreHeap* heaps) {
  for_each_query_tile<6>(count, [&](auto mr, size_t i) {
    tile_vnni<decltype(mr)::value>(q, q0 + i, panel, first, lanes, heaps + i);
  });
}

// ---- AMX: 32 queries x 32 rows in four 16x16 int32 tiles -----------------------------------
// tmm0..3: C (queries 0-15 | 16-31) x (rows 0-15 | 16-31); tmm4, tmm5: queries; tmm6, tmm7:
// rows. A B tile is 16 groups x 16 rows x 4 bytes, read from the panel with a 128-byte stride.
// Signed x signed (tdpbssd): no shift is needed.
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

EMBEDRANK_TARGET_AMX_INT8 void configure_tiles() {
  thread_local bool configured = false;
  if (configured) return;
  TileConfig config{};
  config.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    config.rows[t] = 16;
    config.colsb[t] = 64;
  }
  _tile_loadconfig(&config);
  configured = true;
}

EMBEDRANK_TARGET_AMX_INT8 void tiles_amx(const PreparedQueries& q, size_t q0, size_t count, const uint8_t* panel, int64_t first,
                          uint32_t lanes, ScoreHeap* heaps) {
  configure_tiles();
  const size_t groups = q.groups;
  const int8_t* a = &q.signed_q[q0 * q.stride];
  const size_t a_stride = q.stride;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (size_t g = 0; g < groups; g += kAmxGroups) {
    _tile_loadd(4, a + g * 4, a_stride);
    _tile_loadd(5, a + 16 * a_stride + g * 4, a_stride);
    _tile_loadd(6, panel + g * kPanelRows * 4, kPanelRows * 4);
    _tile_loadd(7, panel + g * kPanelRows * 4 + 64, kPanelRows * 4);
    _tile_dpbssd(0, 4, 6);
    _tile_dpbssd(1, 4, 7);
    _tile_dpbssd(2, 5, 6);
    _tile_dpbssd(3, 5, 7);
  }
  alignas(64) int32_t c[4][16][16];
  _tile_stored(0, c[0], 64);
  _tile_stored(1, c[1], 64);
  _tile_stored(2, c[2], 64);
  _tile_stored(3, c[3], 64);
  for (size_t i = 0; i < count; ++i) {
    const int32_t* lo = c[i < 16 ? 0 : 2][i % 16];
    const int32_t* hi = c[i < 16 ? 1 : 3][i % 16];
    __m512 thr = _mm512_set1_ps(heaps[i].threshold());
    uint32_t hits =
        static_cast<uint32_t>(_mm512_cmp_ps_mask(_mm512_cvtepi32_ps(_mm512_load_si512(lo)), thr, _CMP_GT_OQ)) |
        static_cast<uint32_t>(_mm512_cmp_ps_mask(_mm512_cvtepi32_ps(_mm512_load_si512(hi)), thr, _CMP_GT_OQ)) << 16;
    hits &= lanes;
    if (!hits) continue;
    alignas(64) int32_t raw[kPanelRows];
    std::memcpy(raw, lo, 64);
    std::memcpy(raw + 16, hi, 64);
    fold_ints(raw, first, hits, heaps[i]);
  }
}

struct Int8SearchOps {
  Int8TileFn tiles;
  size_t tile_queries;  // queries per tile call
  bool amx;             // AMX layout: groups padded to kAmxGroups
};

// Within avx512: AMX where usable, else VNNI, else the AVX2 sign trick.
const Int8SearchOps& int8_search_ops() {
  static const IsaTables<Int8SearchOps> tables = [] {
    const CpuFeatures& f = cpu_features();
    Int8SearchOps avx2{tiles_avx2, 24, false};
    Int8SearchOps avx512 = f.amx_int8 ? Int8SearchOps{tiles_amx, kAmxQueries, true}
                           : f.avx512_vnni ? Int8SearchOps{tiles_vnni, 24, false}
                                           : avx2;
    return IsaTables<Int8SearchOps>({tiles_scalar, 24, false}, avx2, avx512);
  }();
  return tables.active();
}

}  // namespace

void topk_int8_int8(const int8_t* queries, size_t nq, const int8_t* codes, size_t n, size_t d,
                    const SearchOptions& o, float* out_scores, int64_t* out_ids) {
  size_t threads = static_cast<size_t>(resolve_num_threads(o.num_threads));
  HeapSet heaps(threads, nq, o.k);
  const Int8SearchOps& ops = int8_search_ops();
  size_t groups = groups_of(d, ops.amx);
  PreparedQueries prepared = prepare_queries(queries, nq, d, groups);
  run_panel_search(
      nq, n, int8_panel_bytes(groups), ops.tile_queries, static_cast<int>(threads), o.interrupted, o.allow,
      [&](size_t first, size_t count, uint8_t* dst) { pack_int8_panels(codes, first, count, d, groups, dst); },
      [&](int worker, size_t q, size_t count, const uint8_t* panel, size_t first, uint32_t lanes) {
        ops.tiles(prepared, q, count, panel, static_cast<int64_t>(first), lanes,
              heaps.worker(static_cast<size_t>(worker)) + q);
      });
  heaps.merge_into(out_scores, out_ids);
}

}  // namespace embedrank
