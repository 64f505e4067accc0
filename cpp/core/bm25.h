// BM25 top-k over an inverted index held as segments of compressed-sparse-row postings.
//
// A segment maps its sorted term ids to posting ranges: the postings of terms[i] are
// docs[offsets[i]:offsets[i+1]] (slots, increasing) with term frequencies tfs[...]. A query is
// a list of (term id, weight) pairs, weight = idf x the term's count in the query. A posting
// adds weight * (tf / (tf + doc_norm[slot])) to its slot's score (Lucene's BM25; doc_norm[slot]
// = k1 * (1 - b + b * length / mean length)). A document's postings all live in one segment.
//
// Two exact strategies, same results: document at a time with MaxScore pruning (Turtle and
// Flood 1995): the query's terms sorted by their score upper bound, documents that only the
// low-bound terms hold are skipped once the k-th best score passes the sum of those bounds,
// and the low-bound lists are probed by galloping search only for promising documents; used
// for queries of up to MAXSCORE_MAX_TERMS terms. Longer queries: term at a time into a dense
// per-worker accumulator. Ties go to the lower slot.
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
  // [n_terms] per term: max over its postings of tf / (tf + doc_norm[slot]), NaN until first
  // needed (filled in here; the caller resets it to NaN whenever doc_norm changes). May be null
  // (then the term-at-a-time path is used).
  float* bounds;
};

constexpr size_t MAXSCORE_MAX_TERMS = 32;

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
