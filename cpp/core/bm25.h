// BM25 top-k over an inverted index held as segments of compressed-sparse-row postings.
//
// A segment maps its sorted term ids to posting ranges: the postings of terms[i] are
// docs[offsets[i]:offsets[i+1]] (slots, increasing) with term frequencies tfs[...]. A query is
// a list of (term id, weight) pairs, weight = idf x the term's count in the query. A posting
// adds weight * tf / (tf + doc_norm[slot]) to its slot's score (Lucene's BM25; doc_norm[slot]
// = k1 * (1 - b + b * length / mean length)). Scores are accumulated term at a time in a dense
// per-worker array, then the k best touched slots are kept (ties to the lower slot).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace embedrank {

struct PostingSegment {
  const int32_t* terms;    // [n_terms], strictly increasing
  size_t n_terms;
  const int64_t* offsets;  // [n_terms + 1], non-decreasing, offsets[n_terms] == n_postings
  const int32_t* docs;     // [n_postings] slots
  const float* tfs;        // [n_postings] > 0
  size_t n_postings;
};

struct Bm25Query {
  const int32_t* terms;   // [n] term ids of all queries, concatenated
  const float* weights;   // [n]
  const int64_t* bounds;  // [n_queries + 1]: query q's terms are terms[bounds[q]:bounds[q+1]]
  size_t n_queries;
};

// Writes the k best (score, slot) of every query into out_scores / out_slots [n_queries, k],
// best first, padded with -inf / -1 (slots with no query term never appear). allow: nullptr or
// one byte per slot (0: skip). Throws std::invalid_argument on postings that point outside
// [0, n_slots) or offsets out of range (a damaged index), never reading out of bounds.
void bm25_topk(const std::vector<PostingSegment>& segments, const Bm25Query& queries, const float* doc_norm,
               size_t n_slots, const uint8_t* allow, size_t k, float* out_scores, int64_t* out_slots,
               int num_threads, bool (*interrupted)() = nullptr);

}  // namespace embedrank
