// Word tokens of ASCII texts, for the lexical index's analyzer (embedrank/index/analysis.py).
//
// A token is a maximal run of two or more of [A-Za-z0-9_], lower-cased: exactly what Python's
// re.findall(r"\w\w+", text.lower()) gives for an ASCII text. Python handles texts with other
// characters itself (Unicode word classes), so both paths agree.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace embedrank {

struct AsciiTokens {
  std::vector<std::string> vocabulary;  // distinct tokens, in order of first appearance
  std::vector<int32_t> codes;           // every token as an index into vocabulary
  std::vector<int64_t> bounds;          // [n_texts + 1]: text i's tokens are codes[bounds[i]:bounds[i+1]]
};

// texts[i] holds lengths[i] ASCII bytes.
AsciiTokens ascii_word_tokens(const char* const* texts, const size_t* lengths, size_t n_texts);

}  // namespace embedrank
