#include "core/bm25.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "core/thread_pool.h"
#include "core/topk.h"

namespace embedrank {
namespace {

// The posting range of `term` in `segment`, or an empty range when the segment lacks it.
bool find_term(const PostingSegment& segment, int32_t term, int64_t& begin, int64_t& end) {
  const int32_t* last = segment.terms + segment.n_terms;
  const int32_t* it = std::lower_bound(segment.terms, last, term);
  if (it == last || *it != term) return false;
  size_t i = static_cast<size_t>(it - segment.terms);
  begin = segment.offsets[i];
  end = segment.offsets[i + 1];
  if (begin < 0 || begin > end || static_cast<size_t>(end) > segment.n_postings)
    throw std::invalid_argument("bm25: posting offsets out of range (damaged index)");
  return true;
}

struct Scratch {
  std::vector<float> scores;     // [n_slots], 0 where untouched
  std::vector<int32_t> touched;  // slots with a score, in first-touch order
};

}  // namespace

void bm25_topk(const std::vector<PostingSegment>& segments, const Bm25Query& queries, const float* doc_norm,
               size_t n_slots, const uint8_t* allow, size_t k, float* out_scores, int64_t* out_slots,
               int num_threads, bool (*interrupted)()) {
  int workers = std::max(1, std::min<int>(resolve_num_threads(num_threads), static_cast<int>(queries.n_queries)));
  std::vector<Scratch> scratch(static_cast<size_t>(workers));
  InterruptFn poll = nullptr;
  if (interrupted) poll = [interrupted] { return interrupted(); };
  parallel_for(
      queries.n_queries, workers,
      [&](size_t q, int worker) {
        Scratch& s = scratch[static_cast<size_t>(worker)];
        if (s.scores.size() != n_slots) s.scores.assign(n_slots, 0.0f);
        s.touched.clear();
        float* acc = s.scores.data();
        for (int64_t t = queries.bounds[q]; t < queries.bounds[q + 1]; ++t) {
          const int32_t term = queries.terms[t];
          const float weight = queries.weights[t];
          for (const PostingSegment& segment : segments) {
            int64_t begin, end;
            if (!find_term(segment, term, begin, end)) continue;
            for (int64_t p = begin; p < end; ++p) {
              const int32_t slot = segment.docs[p];
              if (slot < 0 || static_cast<size_t>(slot) >= n_slots)
                throw std::invalid_argument("bm25: a posting points outside the index (damaged index)");
              const float tf = segment.tfs[p];
              if (acc[slot] == 0.0f) s.touched.push_back(slot);
              acc[slot] += weight * tf / (tf + doc_norm[slot]);
            }
          }
        }
        float* row_scores = out_scores + q * k;
        int64_t* row_slots = out_slots + q * k;
        std::vector<float> heap_scores(k);
        std::vector<int64_t> heap_ids(k);
        ScoreHeap heap(heap_scores.data(), heap_ids.data(), k);
        for (int32_t slot : s.touched) {
          float score = acc[slot];
          acc[slot] = 0.0f;
          if (allow && !allow[slot]) continue;
          if (score > 0.0f) heap.push(score, slot);
        }
        // sort the kept entries best first
        size_t n = heap.size();
        std::vector<size_t> order(n);
        for (size_t i = 0; i < n; ++i) order[i] = i;
        std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
          return ScoreHeap::worse(heap_scores[b], heap_ids[b], heap_scores[a], heap_ids[a]);
        });
        for (size_t i = 0; i < k; ++i) {
          row_scores[i] = i < n ? heap_scores[order[i]] : -INFINITY;
          row_slots[i] = i < n ? heap_ids[order[i]] : -1;
        }
      },
      poll);
}

}  // namespace embedrank
