#include "core/text.h"

#include <unordered_map>

namespace embedrank {
namespace {

inline bool is_word(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

inline char lower(unsigned char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c); }

}  // namespace

AsciiTokens ascii_word_tokens(const char* const* texts, const size_t* lengths, size_t n_texts) {
  AsciiTokens out;
  out.bounds.reserve(n_texts + 1);
  out.bounds.push_back(0);
  std::unordered_map<std::string, int32_t> ids;
  std::string token;
  for (size_t i = 0; i < n_texts; ++i) {
    const unsigned char* text = reinterpret_cast<const unsigned char*>(texts[i]);
    const size_t n = lengths[i];
    size_t pos = 0;
    while (pos < n) {
      while (pos < n && !is_word(text[pos])) ++pos;
      size_t start = pos;
      while (pos < n && is_word(text[pos])) ++pos;
      if (pos - start < 2) continue;
      token.resize(pos - start);
      for (size_t j = start; j < pos; ++j) token[j - start] = lower(text[j]);
      auto found = ids.find(token);
      if (found == ids.end()) {
        found = ids.emplace(token, static_cast<int32_t>(out.vocabulary.size())).first;
        out.vocabulary.push_back(token);
      }
      out.codes.push_back(found->second);
    }
    out.bounds.push_back(static_cast<int64_t>(out.codes.size()));
  }
  return out;
}

}  // namespace embedrank
