#include "core/bm25.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <cmath>
#include <stdexcept>

#include "core/thread_pool.h"
#include "core/topk.h"

namespace embedrank {
namespace {

// The posting range of `term` in `segment`, or an empty range when the segment lacks it.
bool find_term(const PostingSegment& segment, int32_t term, int64_t& begin, int64_t& end, size_t& i) {
  const int32_t* last = segment.terms + segment.n_terms;
  const int32_t* it = std::lower_bound(segment.terms, last, term);
  if (it == last || *it != term) return false;
  i = static_cast<size_t>(it - segment.terms);
  begin = segment.offsets[i];
  end = segment.offsets[i + 1];
  if (begin < 0 || begin > end || static_cast<size_t>(end) > segment.n_postings)
    throw std::invalid_argument("bm25: posting offsets out of range (damaged index)");
  return true;
}

inline float contribution(float weight, float tf, float norm) { return weight * (tf / (tf + norm)); }

inline void check_slot(int32_t slot, size_t n_slots) {
  if (slot < 0 || static_cast<size_t>(slot) >= n_slots)
    throw std::invalid_argument("bm25: a posting points outside the index (damaged index)");
}

// The term's bound (see PostingSegment::bounds), computed once and cached.
float term_bound(const PostingSegment& segment, size_t term_index, int64_t begin, int64_t end, const float* doc_norm,
                 size_t n_slots) {
  uint32_t stored = __atomic_load_n(reinterpret_cast<const uint32_t*>(segment.bounds + term_index), __ATOMIC_RELAXED);
  float cached;
  std::memcpy(&cached, &stored, sizeof(cached));
  if (!std::isnan(cached)) return cached;
  float best = 0.0f;
  for (int64_t p = begin; p < end; ++p) {
    check_slot(segment.docs[p], n_slots);
    const float tf = segment.tfs[p];
    best = std::max(best, tf / (tf + doc_norm[segment.docs[p]]));
  }
  // several workers may store the same value: relaxed atomic stores keep that well defined
  uint32_t bits;
  static_assert(sizeof(bits) == sizeof(best), "float is 32 bits");
  std::memcpy(&bits, &best, sizeof(bits));
  __atomic_store_n(reinterpret_cast<uint32_t*>(segment.bounds + term_index), bits, __ATOMIC_RELAXED);
  return best;
}

struct Cursor {
  const int32_t* docs;
  const float* tfs;
  int64_t pos, end;
  float weight;
  float bound;  // weight x the term's bound: no posting of this list adds more
};

// First position in [pos, end) whose doc is >= target (galloping, then binary search).
inline int64_t advance(const Cursor& c, int32_t target) {
  int64_t lo = c.pos, step = 1;
  while (lo + step < c.end && c.docs[lo + step] < target) {
    lo += step;
    step <<= 1;
  }
  int64_t hi = std::min(c.end, lo + step + 1);
  return std::lower_bound(c.docs + lo, c.docs + hi, target) - c.docs;
}

// Relative slack on summed bounds: float sums in another order may round a little higher.
constexpr float BOUND_SLACK = 1.0f + 1e-5f;

// Document at a time over one segment with MaxScore pruning, into `heap`.
void maxscore_segment(std::vector<Cursor>& cursors, const float* doc_norm, size_t n_slots, const uint8_t* allow,
                      ScoreHeap& heap) {
  const size_t n = cursors.size();
  if (n == 0) return;
  std::sort(cursors.begin(), cursors.end(), [](const Cursor& a, const Cursor& b) { return a.bound < b.bound; });
  std::vector<float> cum(n);  // cum[i]: bound of cursors 0..i together
  float total = 0.0f;
  for (size_t i = 0; i < n; ++i) cum[i] = (total += cursors[i].bound) * BOUND_SLACK;
  size_t essential = 0;  // cursors [0, essential) cannot lift a document above the threshold alone
  float threshold = heap.threshold();
  auto update_essential = [&] {
    threshold = heap.threshold();
    while (essential < n && cum[essential] < threshold) ++essential;
  };
  update_essential();
  while (essential < n) {
    int32_t doc = INT32_MAX;
    for (size_t i = essential; i < n; ++i)
      if (cursors[i].pos < cursors[i].end) doc = std::min(doc, cursors[i].docs[cursors[i].pos]);
    if (doc == INT32_MAX) break;
    check_slot(doc, n_slots);
    const float norm = doc_norm[doc];
    float score = 0.0f;
    for (size_t i = essential; i < n; ++i) {
      Cursor& c = cursors[i];
      if (c.pos < c.end && c.docs[c.pos] == doc) {
        score += contribution(c.weight, c.tfs[c.pos], norm);
        ++c.pos;
      }
    }
    bool pruned = false;
    for (size_t i = essential; i-- > 0;) {
      if (score + cum[i] < threshold) {
        pruned = true;
        break;
      }
      Cursor& c = cursors[i];
      c.pos = advance(c, doc);
      if (c.pos < c.end && c.docs[c.pos] == doc) {
        score += contribution(c.weight, c.tfs[c.pos], norm);
        ++c.pos;
      }
    }
    if (pruned || (allow && !allow[doc]) || !(score > 0.0f)) continue;
    heap.push(score, doc);
    if (heap.size() == heap.capacity()) update_essential();
  }
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
        const int64_t n_terms = queries.bounds[q + 1] - queries.bounds[q];
        std::vector<float> heap_scores(k);
        std::vector<int64_t> heap_ids(k);
        ScoreHeap heap(heap_scores.data(), heap_ids.data(), k);
        bool maxscore = static_cast<size_t>(n_terms) <= MAXSCORE_MAX_TERMS;
        for (const PostingSegment& segment : segments) maxscore = maxscore && segment.bounds != nullptr;
        if (maxscore) {
          std::vector<Cursor> cursors;
          for (const PostingSegment& segment : segments) {
            cursors.clear();
            for (int64_t t = queries.bounds[q]; t < queries.bounds[q + 1]; ++t) {
              int64_t begin, end;
              size_t index;
              if (!find_term(segment, queries.terms[t], begin, end, index)) continue;
              const float weight = queries.weights[t];
              const float bound = weight * term_bound(segment, index, begin, end, doc_norm, n_slots);
              cursors.push_back(Cursor{segment.docs, segment.tfs, begin, end, weight, bound});
            }
            maxscore_segment(cursors, doc_norm, n_slots, allow, heap);
          }
        } else {
          Scratch& s = scratch[static_cast<size_t>(worker)];
          if (s.scores.size() != n_slots) s.scores.assign(n_slots, 0.0f);
          s.touched.clear();
          float* acc = s.scores.data();
          for (int64_t t = queries.bounds[q]; t < queries.bounds[q + 1]; ++t) {
            const float weight = queries.weights[t];
            for (const PostingSegment& segment : segments) {
              int64_t begin, end;
              size_t index;
              if (!find_term(segment, queries.terms[t], begin, end, index)) continue;
              for (int64_t p = begin; p < end; ++p) {
                const int32_t slot = segment.docs[p];
                check_slot(slot, n_slots);
                if (acc[slot] == 0.0f) s.touched.push_back(slot);
                acc[slot] += contribution(weight, segment.tfs[p], doc_norm[slot]);
              }
            }
          }
          for (int32_t slot : s.touched) {
            float score = acc[slot];
            acc[slot] = 0.0f;
            if (allow && !allow[slot]) continue;
            if (score > 0.0f) heap.push(score, slot);
          }
        }
        float* row_scores = out_scores + q * k;
        int64_t* row_slots = out_slots + q * k;
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
