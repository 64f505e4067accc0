// The blocked driver shared by the exact searches.
//
// The base is cut into blocks of rows that fit in L2; each block is packed into panels of
// kPanelRows rows laid out for broadcast-and-multiply micro-kernels (no horizontal sums), and
// each tile of a few queries x one panel is folded straight into per-query selectors with a
// threshold. Work is split over (block, query chunk) tasks, block-major, so each worker sees
// the ids of one query in increasing order: ties then go to the lower id without extra work.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#include "thread_pool.h"

namespace embedrank {

constexpr size_t kPanelRows = 32;
constexpr size_t kTargetBlockBytes = 256 * 1024;

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<uint8_t, AlignedFree>;

inline AlignedBuffer aligned_buffer(size_t bytes) {
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (!p) throw std::bad_alloc();
  return AlignedBuffer(static_cast<uint8_t*>(p));
}

// Rows per block so that a packed block takes about kTargetBlockBytes.
inline size_t rows_per_block(size_t panel_bytes) {
  size_t panels = std::max<size_t>(1, kTargetBlockBytes / std::max<size_t>(1, panel_bytes));
  return std::min<size_t>(panels, 64) * kPanelRows;
}

// Bit j set when row first + j is in range and allowed.
inline uint32_t panel_lanes(size_t first, size_t n, const uint8_t* allow) {
  size_t count = std::min(kPanelRows, n - first);
  uint32_t lanes = count >= 32 ? 0xFFFFFFFFu : ((1u << count) - 1u);
  if (allow) {
    for (size_t j = 0; j < count; ++j)
      if (!allow[first + j]) lanes &= ~(1u << j);
  }
  return lanes;
}

// Calls tile(std::integral_constant<int, MR>, first_query) over `count` queries: tiles of
// kMaxQueries queries, then one tile of the remainder (MR is a compile-time tile height).
template <int MR, class Tile>
inline void remainder_tile(size_t rest, size_t offset, Tile& tile) {
  if constexpr (MR > 0) {
    if (rest == MR) return tile(std::integral_constant<int, MR>{}, offset);
    remainder_tile<MR - 1>(rest, offset, tile);
  }
}

template <int kMaxQueries, class Tile>
inline void for_each_query_tile(size_t count, Tile tile) {
  size_t i = 0;
  for (; i + kMaxQueries <= count; i += kMaxQueries) tile(std::integral_constant<int, kMaxQueries>{}, i);
  remainder_tile<kMaxQueries - 1>(count - i, i, tile);
}

// pack(first_row, row_count, dst): packs rows into ceil(row_count / 32) panels at dst.
// tile(worker, first_query, query_count, panel, first_row, lanes): scores up to max_tile_queries
//   queries against one panel and folds them into that worker's selectors.
template <class Pack, class Tile>
void run_panel_search(size_t n_queries, size_t n_rows, size_t panel_bytes, size_t max_tile_queries, int n_threads,
                      const InterruptFn& interrupted, const uint8_t* allow, Pack pack, Tile tile) {
  if (n_queries == 0 || n_rows == 0) return;
  size_t block_rows = rows_per_block(panel_bytes);
  size_t n_blocks = (n_rows + block_rows - 1) / block_rows;
  size_t threads = static_cast<size_t>(resolve_num_threads(n_threads));
  // Enough tasks to balance the workers, but query chunks of at least 64 queries.
  size_t n_chunks = std::max<size_t>(1, std::min((n_queries + 63) / 64, (4 * threads + n_blocks - 1) / n_blocks));
  size_t chunk = (n_queries + n_chunks - 1) / n_chunks;
  n_chunks = (n_queries + chunk - 1) / chunk;
  size_t n_workers = std::min(threads, n_blocks * n_chunks);
  size_t panels_per_block = block_rows / kPanelRows;

  std::vector<AlignedBuffer> packed;
  std::vector<size_t> packed_block(n_workers, SIZE_MAX);
  for (size_t w = 0; w < n_workers; ++w) packed.push_back(aligned_buffer(panels_per_block * panel_bytes));
  std::vector<uint32_t> lanes(n_workers * panels_per_block);

  parallel_for(
      n_blocks * n_chunks, static_cast<int>(n_workers),
      [&](size_t task, int worker) {
        if (cancellation_requested()) return;
        size_t block = task / n_chunks;
        size_t q_begin = (task % n_chunks) * chunk;
        size_t q_end = std::min(n_queries, q_begin + chunk);
        size_t first = block * block_rows;
        size_t rows = std::min(block_rows, n_rows - first);
        size_t panels = (rows + kPanelRows - 1) / kPanelRows;
        uint8_t* dst = packed[worker].get();
        uint32_t* block_lanes = &lanes[worker * panels_per_block];
        if (packed_block[worker] != block) {
          pack(first, rows, dst);
          for (size_t p = 0; p < panels; ++p)
            block_lanes[p] = panel_lanes(first + p * kPanelRows, n_rows, allow);
          packed_block[worker] = block;
        }
        for (size_t q = q_begin; q < q_end; q += max_tile_queries) {
          size_t count = std::min(max_tile_queries, q_end - q);
          for (size_t p = 0; p < panels; ++p) {
            if (block_lanes[p] == 0) continue;
            tile(worker, q, count, dst + p * panel_bytes, first + p * kPanelRows, block_lanes[p]);
          }
        }
      },
      interrupted);
}

}  // namespace embedrank
