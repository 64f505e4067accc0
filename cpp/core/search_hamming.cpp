// Exact Hamming search over packed bit codes, with counting selection.
//
// Many queries: a panel holds 32 codes as 64-bit words transposed ([words][32] uint64), so
// AVX-512 VPOPCNTDQ scores 4 queries x 32 codes per word with xor + popcount + add, and
// distances below each query's bound go to its CountingTopK.
// A few queries: packing a row costs more than scoring it, so rows are scored where they lie
// (a single query over millions of codes is the first stage of a large binary cascade).
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

inline size_t words_of(size_t n_bytes) { return (n_bytes + 7) / 8; }

void pack_bit_panels(const uint8_t* rows, size_t first, size_t count, size_t n_bytes, uint8_t* dst) {
  size_t words = words_of(n_bytes);
  size_t panels = (count + kPanelRows - 1) / kPanelRows;
  for (size_t p = 0; p < panels; ++p) {
    uint64_t* panel = reinterpret_cast<uint64_t*>(dst) + p * words * kPanelRows;
    std::memset(panel, 0, words * kPanelRows * sizeof(uint64_t));
    size_t valid = std::min(kPanelRows, count - p * kPanelRows);
    for (size_t j = 0; j < valid; ++j) {
      const uint8_t* row = rows + (first + p * kPanelRows + j) * n_bytes;
      for (size_t w = 0; w < words; ++w) {
        uint64_t word = 0;
        std::memcpy(&word, row + w * 8, std::min<size_t>(8, n_bytes - w * 8));
        panel[w * kPanelRows + j] = word;
      }
    }
  }
}

using HammingTileFn = void (*)(const uint64_t* queries, size_t count, size_t words, const uint64_t* panel,
                               int64_t first, uint32_t lanes, CountingTopK* selectors);

inline void fold_distances(const int32_t* dist, int64_t first, uint32_t lanes, CountingTopK& sel) {
  while (lanes) {
    int j = __builtin_ctz(lanes);
    lanes &= lanes - 1;
    if (dist[j] < sel.bound()) sel.push(dist[j], first + j);
  }
}

void tiles_scalar(const uint64_t* q, size_t count, size_t words, const uint64_t* panel, int64_t first, uint32_t lanes,
                  CountingTopK* selectors) {
  for (size_t i = 0; i < count; ++i) {
    int32_t dist[kPanelRows] = {};
    for (size_t w = 0; w < words; ++w)
      for (size_t j = 0; j < kPanelRows; ++j)
        dist[j] += __builtin_popcountll(q[i * words + w] ^ panel[w * kPanelRows + j]);
    fold_distances(dist, first, lanes, selectors[i]);
  }
}

EMBEDRANK_TARGET_AVX2 void tiles_popcnt(const uint64_t* q, size_t count, size_t words, const uint64_t* panel, int64_t first,
                                uint32_t lanes, CountingTopK* selectors) {
  for (size_t i = 0; i < count; ++i) {
    int32_t dist[kPanelRows] = {};
    for (size_t w = 0; w < words; ++w) {
      uint64_t qw = q[i * words + w];
      const uint64_t* b = panel + w * kPanelRows;
      for (size_t j = 0; j < kPanelRows; ++j) dist[j] += static_cast<int32_t>(_mm_popcnt_u64(qw ^ b[j]));
    }
    fold_distances(dist, first, lanes, selectors[i]);
  }
}

template <int MR>
EMBEDRANK_TARGET_AVX512_VPOPCNTDQ void tile_vpopcnt(const uint64_t* q, size_t words, const uint64_t* panel, int64_t first,
                                      uint32_t lanes, CountingTopK* selectors) {
  __m512i acc[MR][4];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < 4; ++v) acc[i][v] = _mm512_setzero_si512();
  for (size_t w = 0; w < words; ++w) {
    const __m512i* b = reinterpret_cast<const __m512i*>(panel + w * kPanelRows);
    __m512i b0 = _mm512_load_si512(b), b1 = _mm512_load_si512(b + 1), b2 = _mm512_load_si512(b + 2),
            b3 = _mm512_load_si512(b + 3);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      __m512i a = _mm512_set1_epi64(static_cast<long long>(q[i * words + w]));
      acc[i][0] = _mm512_add_epi64(acc[i][0], _mm512_popcnt_epi64(_mm512_xor_si512(a, b0)));
      acc[i][1] = _mm512_add_epi64(acc[i][1], _mm512_popcnt_epi64(_mm512_xor_si512(a, b1)));
      acc[i][2] = _mm512_add_epi64(acc[i][2], _mm512_popcnt_epi64(_mm512_xor_si512(a, b2)));
      acc[i][3] = _mm512_add_epi64(acc[i][3], _mm512_popcnt_epi64(_mm512_xor_si512(a, b3)));
    }
  }
  for (int i = 0; i < MR; ++i) {
    __m512i bound = _mm512_set1_epi64(selectors[i].bound());
    uint32_t hits = 0;
    for (int v = 0; v < 4; ++v)
      hits |= static_cast<uint32_t>(_mm512_cmplt_epi64_mask(acc[i][v], bound)) << (8 * v);
    hits &= lanes;
    if (!hits) continue;
    alignas(64) int32_t dist[kPanelRows];
    for (int v = 0; v < 4; ++v)
      _mm256_store_si256(reinterpret_cast<__m256i*>(dist + 8 * v), _mm512_cvtepi64_epi32(acc[i][v]));
    fold_distances(dist, first, hits, selectors[i]);
  }
}

EMBEDRANK_TARGET_AVX512_VPOPCNTDQ void tiles_vpopcnt(const uint64_t* q, size_t count, size_t words, const uint64_t* panel,
                                       int64_t first, uint32_t lanes, CountingTopK* selectors) {
  for_each_query_tile<6>(count, [&](auto mr, size_t i) {
    tile_vpopcnt<decltype(mr)::value>(q + i * words, words, panel, first, lanes, selectors + i);
  });
}

// Within avx512: VPOPCNTDQ where present, else scalar POPCNT.
HammingTileFn hamming_tiles() {
  static const IsaTables<HammingTileFn> tables(tiles_scalar, tiles_popcnt,
                                               cpu_features().avx512_vpopcntdq ? tiles_vpopcnt : tiles_popcnt);
  return tables.active();
}

// -- a few queries: rows scored in place -----------------------------------------------------
constexpr size_t kInPlaceMaxQueries = 4;
constexpr size_t kInPlaceBlockRows = 8192;

using HammingRowsFn = void (*)(const uint64_t* q, size_t nq, size_t n_bytes, const uint8_t* base, size_t first,
                               size_t end, const uint8_t* allow, CountingTopK* selectors);

// Distance of one row to one query over kWords full 64-bit words (0: `full` words, known only
// at run time) plus `tail` trailing bytes (the prepared query is zero-padded past them).
template <size_t kWords>
__attribute__((always_inline)) inline int32_t row_distance(const uint64_t* q, const uint8_t* row, size_t full,
                                                           size_t tail) {
  size_t words = kWords ? kWords : full;
  int32_t d = 0;
#pragma GCC unroll 16
  for (size_t w = 0; w < words; ++w) {
    uint64_t x;
    std::memcpy(&x, row + w * 8, 8);
    d += __builtin_popcountll(q[w] ^ x);
  }
  if (tail) {
    uint64_t x = 0;
    std::memcpy(&x, row + words * 8, tail);
    d += __builtin_popcountll(q[words] ^ x);
  }
  return d;
}

template <size_t kWords>
__attribute__((always_inline)) inline void score_rows(const uint64_t* q, size_t nq, size_t n_bytes,
                                                      const uint8_t* base, size_t first, size_t end,
                                                      const uint8_t* allow, CountingTopK* selectors) {
  size_t full = n_bytes / 8, words = words_of(n_bytes), tail = n_bytes - full * 8;
  for (size_t r = first; r < end; ++r) {
    if (allow && !allow[r]) continue;
    const uint8_t* row = base + r * n_bytes;
    for (size_t i = 0; i < nq; ++i) {
      int32_t d = row_distance<kWords>(q + i * words, row, full, tail);
      if (d < selectors[i].bound()) selectors[i].push(d, static_cast<int64_t>(r));
    }
  }
}

// Inlined into each ISA's wrapper below, so __builtin_popcountll becomes POPCNT where the
// wrapper's target has it. Common code widths get a fully unrolled row.
__attribute__((always_inline)) inline void score_rows_in_place(const uint64_t* q, size_t nq, size_t n_bytes,
                                                               const uint8_t* base, size_t first, size_t end,
                                                               const uint8_t* allow, CountingTopK* selectors) {
  switch (n_bytes) {
    case 32: return score_rows<4>(q, nq, n_bytes, base, first, end, allow, selectors);      // 256 bits
    case 48: return score_rows<6>(q, nq, n_bytes, base, first, end, allow, selectors);      // 384 bits
    case 64: return score_rows<8>(q, nq, n_bytes, base, first, end, allow, selectors);      // 512 bits
    case 96: return score_rows<12>(q, nq, n_bytes, base, first, end, allow, selectors);     // 768 bits
    case 128: return score_rows<16>(q, nq, n_bytes, base, first, end, allow, selectors);    // 1024 bits
    default: return score_rows<0>(q, nq, n_bytes, base, first, end, allow, selectors);
  }
}

void rows_scalar(const uint64_t* q, size_t nq, size_t n_bytes, const uint8_t* base, size_t first, size_t end,
                 const uint8_t* allow, CountingTopK* selectors) {
  score_rows_in_place(q, nq, n_bytes, base, first, end, allow, selectors);
}

EMBEDRANK_TARGET_AVX2 void rows_popcnt(const uint64_t* q, size_t nq, size_t n_bytes, const uint8_t* base, size_t first,
                                       size_t end, const uint8_t* allow, CountingTopK* selectors) {
  score_rows_in_place(q, nq, n_bytes, base, first, end, allow, selectors);
}

HammingRowsFn hamming_rows() {
  static const IsaTables<HammingRowsFn> tables(rows_scalar, rows_popcnt, rows_popcnt);
  return tables.active();
}

}  // namespace

void topk_hamming(const uint8_t* queries, size_t nq, const uint8_t* base, size_t n, size_t n_bytes,
                  const SearchOptions& o, int32_t* out_distances, int64_t* out_ids) {
  size_t words = words_of(n_bytes);
  std::vector<uint64_t> prepared(nq * words, 0);
  for (size_t i = 0; i < nq; ++i) std::memcpy(&prepared[i * words], queries + i * n_bytes, n_bytes);
  size_t threads = static_cast<size_t>(resolve_num_threads(o.num_threads));
  int32_t max_distance = static_cast<int32_t>(n_bytes * 8);
  std::vector<CountingTopK> selectors(threads * nq, CountingTopK(o.k, max_distance));
  if (nq <= kInPlaceMaxQueries) {
    HammingRowsFn rows = hamming_rows();
    size_t n_tasks = (n + kInPlaceBlockRows - 1) / kInPlaceBlockRows;
    // Tasks go out in increasing order, so each worker sees increasing ids (ties: lower id).
    parallel_for(
        n_tasks, static_cast<int>(std::min(threads, std::max<size_t>(n_tasks, 1))),
        [&](size_t task, int worker) {
          if (cancellation_requested()) return;
          size_t first = task * kInPlaceBlockRows;
          rows(prepared.data(), nq, n_bytes, base, first, std::min(n, first + kInPlaceBlockRows), o.allow,
               &selectors[static_cast<size_t>(worker) * nq]);
        },
        o.interrupted);
  } else {
    HammingTileFn tiles = hamming_tiles();
  run_panel_search(
      nq, n, words * kPanelRows * sizeof(uint64_t), 24, static_cast<int>(threads), o.interrupted, o.allow,
      [&](size_t first, size_t count, uint8_t* dst) { pack_bit_panels(base, first, count, n_bytes, dst); },
      [&](int worker, size_t q, size_t count, const uint8_t* panel, size_t first, uint32_t lanes) {
        tiles(&prepared[q * words], count, words, reinterpret_cast<const uint64_t*>(panel),
              static_cast<int64_t>(first), lanes, &selectors[static_cast<size_t>(worker) * nq + q]);
      });
  }
  for (auto& s : selectors) s.prune();
  merge_counting(selectors, threads, nq, o.k, out_distances, out_ids);
}

}  // namespace embedrank
