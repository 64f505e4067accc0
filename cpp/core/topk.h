// Bounded top-k selection: per-query heaps for scores (higher is better) and counting
// selection for small integer distances (lower is better). Ties go to the lower id.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace embedrank {

// The k best (score, id) pairs seen so far, as a binary heap whose root is the worst kept.
// Storage is borrowed. Order: higher score first, then lower id.
class ScoreHeap {
 public:
  ScoreHeap() = default;
  ScoreHeap(float* scores, int64_t* ids, size_t k) : scores_(scores), ids_(ids), k_(k) {}

  // Scores strictly above this may enter (everything may while the heap is not full).
  float threshold() const { return size_ < k_ ? -INFINITY : scores_[0]; }
  size_t size() const { return size_; }
  size_t capacity() const { return k_; }
  const float* scores() const { return scores_; }
  const int64_t* ids() const { return ids_; }

  static bool worse(float sa, int64_t ia, float sb, int64_t ib) {
    return sa < sb || (sa == sb && ia > ib);
  }

  void push(float score, int64_t id) {
    if (size_ < k_) {
      size_t i = size_++;
      while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!worse(score, id, scores_[parent], ids_[parent])) break;
        scores_[i] = scores_[parent];
        ids_[i] = ids_[parent];
        i = parent;
      }
      scores_[i] = score;
      ids_[i] = id;
      return;
    }
    if (!worse(scores_[0], ids_[0], score, id)) return;
    if (k_ == 1) {
      scores_[0] = score;
      ids_[0] = id;
      return;
    }
    size_t i = 0;
    for (;;) {
      size_t child = 2 * i + 1;
      if (child >= k_) break;
      if (child + 1 < k_ && worse(scores_[child + 1], ids_[child + 1], scores_[child], ids_[child])) ++child;
      if (!worse(scores_[child], ids_[child], score, id)) break;
      scores_[i] = scores_[child];
      ids_[i] = ids_[child];
      i = child;
    }
    scores_[i] = score;
    ids_[i] = id;
  }

 private:
  float* scores_ = nullptr;
  int64_t* ids_ = nullptr;
  size_t k_ = 0;
  size_t size_ = 0;
};

// One heap per (worker, query), then merged into sorted [Q, k] outputs.
class HeapSet {
 public:
  HeapSet(size_t n_workers, size_t n_queries, size_t k);
  ScoreHeap* worker(size_t w) { return heaps_.data() + w * n_queries_; }
  // Merges the workers' heaps of every query into out_scores/out_ids [Q, k], best first,
  // padding with -inf / -1 where fewer than k were seen.
  void merge_into(float* out_scores, int64_t* out_ids) const;

 private:
  size_t n_workers_, n_queries_, k_;
  std::vector<float> scores_;
  std::vector<int64_t> ids_;
  std::vector<ScoreHeap> heaps_;
};

// Counting selection of the k smallest integer distances in [0, max_distance]. Candidates
// must be offered in increasing id order (true within one worker), so that among equal
// distances the earliest offered wins.
class CountingTopK {
 public:
  CountingTopK() = default;
  CountingTopK(size_t k, int32_t max_distance);
  // Distances strictly below this may enter.
  int32_t bound() const { return bound_; }
  void push(int32_t distance, int64_t id) {
    candidates_.emplace_back(distance, id);
    if (candidates_.size() >= capacity_) prune();
  }
  // Leaves at most k candidates, those of the k smallest distances (earliest first on ties).
  void prune();
  const std::vector<std::pair<int32_t, int64_t>>& candidates() const { return candidates_; }

 private:
  size_t k_ = 0;
  int32_t max_distance_ = 0;
  int32_t bound_ = 0;
  size_t capacity_ = 0;
  std::vector<std::pair<int32_t, int64_t>> candidates_;
};

// Merges per-worker CountingTopK of each query into out [Q, k] sorted by (distance, id),
// padding with INT32_MAX / -1.
void merge_counting(const std::vector<CountingTopK>& per_worker_query, size_t n_workers, size_t n_queries,
                    size_t k, int32_t* out_distances, int64_t* out_ids);

}  // namespace embedrank
