// Exact inner-product search with float32 queries: against float32 rows, and against int8
// codes taken as integers (the exact asymmetric path). Both share the panel micro-kernels:
// a panel holds 32 rows transposed ([d][32] floats), so a tile of queries x 32 rows is a
// sequence of broadcast-FMAs with no horizontal sums.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "dispatch.h"
#include "panel_search.h"
#include "search.h"
#include "simd.h"
#include "topk.h"
#include "vector_ops.h"

namespace embedrank {
namespace {

// Tile signature: `count` queries (rows of `queries`, stride d) x one panel starting at row
// `first`; `lanes` marks the rows that may enter; sets *nonfinite on a NaN/Inf score.
using FloatTileFn = void (*)(const float* queries, size_t count, size_t d, const float* panel, int64_t first,
                             uint32_t lanes, ScoreHeap* heaps, bool* nonfinite);

template <typename T>
void pack_panels(const T* rows, size_t first, size_t count, size_t d, float* dst) {
  size_t panels = (count + kPanelRows - 1) / kPanelRows;
  for (size_t p = 0; p < panels; ++p) {
    float* panel = dst + p * d * kPanelRows;
    size_t valid = std::min(kPanelRows, count - p * kPanelRows);
    for (size_t j = 0; j < valid; ++j) {
      const T* row = rows + (first + p * kPanelRows + j) * d;
      for (size_t c = 0; c < d; ++c) panel[c * kPanelRows + j] = static_cast<float>(row[c]);
    }
    for (size_t j = valid; j < kPanelRows; ++j)
      for (size_t c = 0; c < d; ++c) panel[c * kPanelRows + j] = 0.0f;
  }
}

// AVX-512: each panel column c (32 rows) is gathered with two 16-lane gathers.
EMBEDRANK_TARGET_AVX512 void pack_float_panels_avx512(const float* rows, size_t first, size_t count, size_t d, float* dst) {
  size_t panels = (count + kPanelRows - 1) / kPanelRows;
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i index = _mm512_mullo_epi32(lane, _mm512_set1_epi32(static_cast<int>(d)));
  for (size_t p = 0; p < panels; ++p) {
    float* panel = dst + p * d * kPanelRows;
    size_t valid = std::min(kPanelRows, count - p * kPanelRows);
    __mmask16 m0 = tail_mask16(valid);
    __mmask16 m1 = valid <= 16 ? static_cast<__mmask16>(0) : tail_mask16(valid - 16);
    const float* r0 = rows + (first + p * kPanelRows) * d;
    const float* r1 = r0 + 16 * d;
    for (size_t c = 0; c < d; ++c) {
      __m512 v0 = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m0, index, r0 + c, 4);
      __m512 v1 = m1 ? _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m1, index, r1 + c, 4) : _mm512_setzero_ps();
      _mm512_store_ps(panel + c * kPanelRows, v0);
      _mm512_store_ps(panel + c * kPanelRows + 16, v1);
    }
  }
}

inline void fold_scalar(const float* scores, int64_t first, uint32_t lanes, ScoreHeap& heap, bool* nonfinite) {
  for (size_t j = 0; j < kPanelRows; ++j) {
    if (!(lanes >> j & 1u)) continue;
    float s = scores[j];
    if (!std::isfinite(s)) {
      *nonfinite = true;
      continue;
    }
    if (s > heap.threshold()) heap.push(s, first + static_cast<int64_t>(j));
  }
}

// Pushes the scores at the set bits of `hits` (already above the threshold and finite).
inline void push_hits(const float* scores, uint32_t hits, int64_t first, ScoreHeap& heap) {
  while (hits) {
    int j = __builtin_ctz(hits);
    hits &= hits - 1;
    heap.push(scores[j], first + j);
  }
}

template <int MR>
void tile_scalar(const float* q, size_t d, const float* panel, int64_t first, uint32_t lanes, ScoreHeap* heaps,
                 bool* nonfinite) {
  float acc[MR][kPanelRows] = {};
  for (size_t c = 0; c < d; ++c) {
    const float* b = panel + c * kPanelRows;
    for (int i = 0; i < MR; ++i) {
      float a = q[i * d + c];
      for (size_t j = 0; j < kPanelRows; ++j) acc[i][j] += a * b[j];
    }
  }
  for (int i = 0; i < MR; ++i) fold_scalar(acc[i], first, lanes, heaps[i], nonfinite);
}

void tiles_scalar(const float* q, size_t count, size_t d, const float* panel, int64_t first, uint32_t lanes,
                  ScoreHeap* heaps, bool* nonfinite) {
  size_t i = 0;
  for (; i + 4 <= count; i += 4) tile_scalar<4>(q + i * d, d, panel, first, lanes, heaps + i, nonfinite);
  for (; i < count; ++i) tile_scalar<1>(q + i * d, d, panel, first, lanes, heaps + i, nonfinite);
}

// ---- AVX2: 3 queries x 32 rows in 12 ymm accumulators ------------------------------------
template <int MR>
EMBEDRANK_TARGET_AVX2 void tile_avx2(const float* q, size_t d, const float* panel, int64_t first, uint32_t lanes,
                           ScoreHeap* heaps, bool* nonfinite) {
  __m256 acc[MR][4];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < 4; ++v) acc[i][v] = _mm256_setzero_ps();
  for (size_t c = 0; c < d; ++c) {
    const float* b = panel + c * kPanelRows;
    __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8), b2 = _mm256_load_ps(b + 16),
           b3 = _mm256_load_ps(b + 24);
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
      __m256 a = _mm256_broadcast_ss(q + i * d + c);
      acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
      acc[i][2] = _mm256_fmadd_ps(a, b2, acc[i][2]);
      acc[i][3] = _mm256_fmadd_ps(a, b3, acc[i][3]);
    }
  }
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 max_finite = _mm256_set1_ps(3.402823466e38f);
  for (int i = 0; i < MR; ++i) {
    __m256 thr = _mm256_set1_ps(heaps[i].threshold());
    uint32_t hits = 0, bad = 0;
    for (int v = 0; v < 4; ++v) {
      hits |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(acc[i][v], thr, _CMP_GT_OQ))) << (8 * v);
      bad |= static_cast<uint32_t>(_mm256_movemask_ps(
                 _mm256_cmp_ps(_mm256_and_ps(acc[i][v], abs_mask), max_finite, _CMP_NLE_UQ)))
             << (8 * v);
    }
    if (bad & lanes) *nonfinite = true;
    hits &= lanes & ~bad;
    if (!hits) continue;
    alignas(32) float s[kPanelRows];
    for (int v = 0; v < 4; ++v) _mm256_store_ps(s + 8 * v, acc[i][v]);
    push_hits(s, hits, first, heaps[i]);
  }
}

EMBEDRANK_TARGET_AVX2 void tiles_avx2(const float* q, size_t count, size_t d, const float* panel, int64_t first,
                            uint32_t lanes, ScoreHeap* heaps, bool* nonfinite) {
  for_each_query_tile<3>(count, [&](auto mr, size_t i) {
    tile_avx2<decltype(mr)::value>(q + i * d, d, panel, first, lanes, heaps + i, nonfinite);
  });
}

// ---- AVX-512: 6 queries x 32 rows in 12 zmm accumulators ---------------------------------
template <int MR>
EMBEDRANK_TARGET_AVX512 void tile_avx512(const float* q, size_t d, const float* panel, int64_t first, uint32_t lanes,
                               ScoreHeap* heaps, bool* nonfinite) {
  __m512 acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (size_t c = 0; c < d; ++c) {
    const float* b = panel + c * kPanelRows;
    __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      __m512 a = _mm512_set1_ps(q[i * d + c]);
      acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    __m512 thr = _mm512_set1_ps(heaps[i].threshold());
    uint32_t hits = static_cast<uint32_t>(_mm512_cmp_ps_mask(acc[i][0], thr, _CMP_GT_OQ)) |
                    static_cast<uint32_t>(_mm512_cmp_ps_mask(acc[i][1], thr, _CMP_GT_OQ)) << 16;
    uint32_t bad = static_cast<uint32_t>(_mm512_fpclass_ps_mask(acc[i][0], 0x99)) |
                   static_cast<uint32_t>(_mm512_fpclass_ps_mask(acc[i][1], 0x99)) << 16;
    if (bad & lanes) *nonfinite = true;
    hits &= lanes & ~bad;
    if (!hits) continue;
    alignas(64) float s[kPanelRows];
    _mm512_store_ps(s, acc[i][0]);
    _mm512_store_ps(s + 16, acc[i][1]);
    push_hits(s, hits, first, heaps[i]);
  }
}

EMBEDRANK_TARGET_AVX512 void tiles_avx512(const float* q, size_t count, size_t d, const float* panel, int64_t first,
                                uint32_t lanes, ScoreHeap* heaps, bool* nonfinite) {
  for_each_query_tile<6>(count, [&](auto mr, size_t i) {
    tile_avx512<decltype(mr)::value>(q + i * d, d, panel, first, lanes, heaps + i, nonfinite);
  });
}

void pack_float_panels(const float* rows, size_t first, size_t count, size_t d, float* dst) {
  pack_panels(rows, first, count, d, dst);
}

struct FloatSearchOps {
  FloatTileFn tiles;
  // Packs float32 rows; gather-based where the row offsets fit the gathers' int32 indices.
  void (*pack_float)(const float* rows, size_t first, size_t count, size_t d, float* dst);
};

const FloatSearchOps& float_search_ops() {
  static const IsaTables<FloatSearchOps> tables({tiles_scalar, pack_float_panels}, {tiles_avx2, pack_float_panels},
                                                {tiles_avx512, pack_float_panels_avx512});
  return tables.active();
}

// Few queries: stream the rows once (memory-bound), no packing.
constexpr size_t kRowPathMaxQueries = 4;
constexpr size_t kRowsPerRowTask = 2048;

template <typename T, typename Dot>
bool row_search(const float* queries, size_t nq, const T* rows, size_t n, size_t d, const SearchOptions& o,
                Dot dot, float* out_scores, int64_t* out_ids) {
  size_t threads = static_cast<size_t>(resolve_num_threads(o.num_threads));
  HeapSet heaps(threads, nq, o.k);
  std::atomic<bool> nonfinite{false};
  size_t n_tasks = (n + kRowsPerRowTask - 1) / kRowsPerRowTask;
  parallel_for(
      n_tasks, static_cast<int>(threads),
      [&](size_t task, int worker) {
        if (cancellation_requested()) return;
        ScoreHeap* h = heaps.worker(static_cast<size_t>(worker));
        size_t end = std::min(n, (task + 1) * kRowsPerRowTask);
        bool bad = false;
        for (size_t r = task * kRowsPerRowTask; r < end; ++r) {
          if (o.allow && !o.allow[r]) continue;
          const T* row = rows + r * d;
          for (size_t q = 0; q < nq; ++q) {
            float s = dot(queries + q * d, row, d);
            if (!std::isfinite(s)) {
              bad = true;
              continue;
            }
            if (s > h[q].threshold()) h[q].push(s, static_cast<int64_t>(r));
          }
        }
        if (bad) nonfinite = true;
      },
      o.interrupted);
  heaps.merge_into(out_scores, out_ids);
  return !nonfinite.load();
}

template <typename T>
bool panel_float_search(const float* queries, size_t nq, const T* rows, size_t n, size_t d, const SearchOptions& o,
                        float* out_scores, int64_t* out_ids) {
  size_t threads = static_cast<size_t>(resolve_num_threads(o.num_threads));
  HeapSet heaps(threads, nq, o.k);
  std::vector<char> nonfinite(threads, 0);
  const FloatSearchOps& ops = float_search_ops();
  size_t panel_bytes = d * kPanelRows * sizeof(float);
  run_panel_search(
      nq, n, panel_bytes, 24, static_cast<int>(threads), o.interrupted, o.allow,
      [&](size_t first, size_t count, uint8_t* dst) {
        if constexpr (std::is_same_v<T, float>) {
          if (n * d < (size_t{1} << 31)) {
            ops.pack_float(rows, first, count, d, reinterpret_cast<float*>(dst));
            return;
          }
        }
        pack_panels(rows, first, count, d, reinterpret_cast<float*>(dst));
      },
      [&](int worker, size_t q, size_t count, const uint8_t* panel, size_t first, uint32_t lanes) {
        bool bad = false;
        ops.tiles(queries + q * d, count, d, reinterpret_cast<const float*>(panel), static_cast<int64_t>(first), lanes,
              heaps.worker(static_cast<size_t>(worker)) + q, &bad);
        if (bad) nonfinite[worker] = 1;
      });
  heaps.merge_into(out_scores, out_ids);
  return std::find(nonfinite.begin(), nonfinite.end(), 1) == nonfinite.end();
}

template <typename T, typename Dot>
bool rescore_rows(const float* queries, size_t nq, const T* rows, size_t d, const int64_t* candidates,
                  size_t n_candidates, const SearchOptions& o, Dot dot, float* out_scores, int64_t* out_ids) {
  std::atomic<bool> nonfinite{false};
  constexpr size_t kQueriesPerTask = 16;
  size_t n_tasks = (nq + kQueriesPerTask - 1) / kQueriesPerTask;
  parallel_for(
      n_tasks, o.num_threads,
      [&](size_t task, int) {
        std::vector<int64_t> ids;
        std::vector<float> heap_scores(o.k);
        std::vector<int64_t> heap_ids(o.k);
        size_t end = std::min(nq, (task + 1) * kQueriesPerTask);
        for (size_t q = task * kQueriesPerTask; q < end; ++q) {
          const int64_t* cand = candidates + q * n_candidates;
          ids.assign(cand, cand + n_candidates);
          std::sort(ids.begin(), ids.end());
          ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
          ScoreHeap heap(heap_scores.data(), heap_ids.data(), o.k);
          for (int64_t id : ids) {
            if (id < 0) continue;
            float s = dot(queries + q * d, rows + static_cast<size_t>(id) * d, d);
            if (!std::isfinite(s)) {
              nonfinite = true;
              continue;
            }
            heap.push(s, id);
          }
          // Sort the heap's content best first into the output row, padding the rest.
          std::vector<std::pair<float, int64_t>> kept;
          for (size_t i = 0; i < heap.size(); ++i) kept.emplace_back(heap.scores()[i], heap.ids()[i]);
          std::sort(kept.begin(), kept.end(), [](const auto& a, const auto& b) {
            return ScoreHeap::worse(b.first, b.second, a.first, a.second);
          });
          for (size_t i = 0; i < o.k; ++i) {
            out_scores[q * o.k + i] = i < kept.size() ? kept[i].first : -INFINITY;
            out_ids[q * o.k + i] = i < kept.size() ? kept[i].second : -1;
          }
        }
      },
      o.interrupted);
  return !nonfinite.load();
}

}  // namespace

bool topk_float32(const float* queries, size_t nq, const float* base, size_t n, size_t d, const SearchOptions& o,
                  float* out_scores, int64_t* out_ids) {
  if (nq <= kRowPathMaxQueries)
    return row_search(queries, nq, base, n, d, o, vector_ops().dot, out_scores, out_ids);
  return panel_float_search(queries, nq, base, n, d, o, out_scores, out_ids);
}

bool topk_float32_int8(const float* queries, size_t nq, const int8_t* codes, size_t n, size_t d,
                       const SearchOptions& o, float* out_scores, int64_t* out_ids) {
  if (nq <= kRowPathMaxQueries)
    return row_search(queries, nq, codes, n, d, o, vector_ops().dot_i8, out_scores, out_ids);
  return panel_float_search(queries, nq, codes, n, d, o, out_scores, out_ids);
}

bool rescore_float32(const float* queries, size_t nq, const float* base, size_t, size_t d, const int64_t* candidates,
                     size_t n_candidates, const SearchOptions& o, float* out_scores, int64_t* out_ids) {
  return rescore_rows(queries, nq, base, d, candidates, n_candidates, o, vector_ops().dot, out_scores, out_ids);
}

bool rescore_int8(const float* queries, size_t nq, const int8_t* codes, size_t, size_t d, const int64_t* candidates,
                  size_t n_candidates, const SearchOptions& o, float* out_scores, int64_t* out_ids) {
  return rescore_rows(queries, nq, codes, d, candidates, n_candidates, o, vector_ops().dot_i8, out_scores, out_ids);
}

}  // namespace embedrank
