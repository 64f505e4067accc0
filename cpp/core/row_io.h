// Reading scattered fixed-size rows from a file with pread: the rescoring pass of a cascade
// whose originals stay on disk reads its few candidates without mapping the file, so the
// process's resident memory holds only what it asked for.
#pragma once

#include <cstddef>
#include <cstdint>

namespace embedrank {

// out[i] = the row_bytes at offset + rows[i] * row_bytes of file descriptor fd, for i < m.
// Rows must be in [0, n_rows) (checked by the caller). Returns 0, or the errno of the first
// failed read (EIO-like), or -1 when the file ended early (a truncated file).
int read_rows(int fd, uint64_t offset, size_t row_bytes, const int64_t* rows, size_t m, uint8_t* out,
              int num_threads);

}  // namespace embedrank
