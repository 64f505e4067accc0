#include "topk.h"

#include <algorithm>
#include <climits>

namespace embedrank {

HeapSet::HeapSet(size_t n_workers, size_t n_queries, size_t k)
    : n_workers_(n_workers), n_queries_(n_queries), k_(k),
      scores_(n_workers * n_queries * k), ids_(n_workers * n_queries * k) {
  heaps_.reserve(n_workers * n_queries);
  for (size_t i = 0; i < n_workers * n_queries; ++i) heaps_.emplace_back(&scores_[i * k], &ids_[i * k], k);
}

void HeapSet::merge_into(float* out_scores, int64_t* out_ids) const {
  std::vector<std::pair<float, int64_t>> all;
  for (size_t q = 0; q < n_queries_; ++q) {
    all.clear();
    for (size_t w = 0; w < n_workers_; ++w) {
      const ScoreHeap& h = heaps_[w * n_queries_ + q];
      for (size_t i = 0; i < h.size(); ++i) all.emplace_back(h.scores()[i], h.ids()[i]);
    }
    size_t take = std::min(k_, all.size());
    auto better = [](const std::pair<float, int64_t>& a, const std::pair<float, int64_t>& b) {
      return ScoreHeap::worse(b.first, b.second, a.first, a.second);
    };
    std::partial_sort(all.begin(), all.begin() + take, all.end(), better);
    for (size_t i = 0; i < k_; ++i) {
      out_scores[q * k_ + i] = i < take ? all[i].first : -INFINITY;
      out_ids[q * k_ + i] = i < take ? all[i].second : -1;
    }
  }
}

CountingTopK::CountingTopK(size_t k, int32_t max_distance)
    : k_(k), max_distance_(max_distance), bound_(max_distance + 1), capacity_(std::max<size_t>(2 * k, 64)) {}

void CountingTopK::prune() {
  if (candidates_.size() <= k_) return;
  thread_local std::vector<uint32_t> histogram_;
  histogram_.assign(static_cast<size_t>(max_distance_) + 1, 0u);
  for (const auto& c : candidates_) ++histogram_[c.first];
  // Smallest t with count(distance <= t) >= k.
  size_t below = 0;
  int32_t t = 0;
  for (; t <= max_distance_; ++t) {
    if (below + histogram_[t] >= k_) break;
    below += histogram_[t];
  }
  size_t keep_at_t = k_ - below;
  size_t out = 0;
  for (const auto& c : candidates_) {
    if (c.first < t || (c.first == t && keep_at_t > 0)) {
      if (c.first == t) --keep_at_t;
      candidates_[out++] = c;
    }
  }
  candidates_.resize(out);
  // Full with k: a later candidate (higher id) needs a strictly smaller distance.
  bound_ = t;
}

void merge_counting(const std::vector<CountingTopK>& per_worker_query, size_t n_workers, size_t n_queries,
                    size_t k, int32_t* out_distances, int64_t* out_ids) {
  std::vector<std::pair<int32_t, int64_t>> all;
  for (size_t q = 0; q < n_queries; ++q) {
    all.clear();
    for (size_t w = 0; w < n_workers; ++w) {
      const auto& c = per_worker_query[w * n_queries + q].candidates();
      all.insert(all.end(), c.begin(), c.end());
    }
    size_t take = std::min(k, all.size());
    std::partial_sort(all.begin(), all.begin() + take, all.end());
    for (size_t i = 0; i < k; ++i) {
      out_distances[q * k + i] = i < take ? all[i].first : INT32_MAX;
      out_ids[q * k + i] = i < take ? all[i].second : -1;
    }
  }
}

}  // namespace embedrank
