#include "row_io.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>

#include "thread_pool.h"

namespace embedrank {
namespace {

// Reads one row completely (pread may return less than asked: retried until done).
int read_one(int fd, uint64_t at, size_t row_bytes, uint8_t* dst) {
  size_t done = 0;
  while (done < row_bytes) {
    ssize_t got = ::pread(fd, dst + done, row_bytes - done, static_cast<off_t>(at + done));
    if (got < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (got == 0) return -1;  // end of file inside the row
    done += static_cast<size_t>(got);
  }
  return 0;
}

}  // namespace

int read_rows(int fd, uint64_t offset, size_t row_bytes, const int64_t* rows, size_t m, uint8_t* out,
              int num_threads) {
  constexpr size_t kRowsPerTask = 256;  // a syscall each: enough per task to amortize the hand-off
  std::atomic<int> error{0};
  size_t tasks = (m + kRowsPerTask - 1) / kRowsPerTask;
  int threads = static_cast<int>(std::min<size_t>(static_cast<size_t>(resolve_num_threads(num_threads)), tasks));
  auto run = [&](size_t task, int) {
    size_t end = std::min(m, (task + 1) * kRowsPerTask);
    for (size_t i = task * kRowsPerTask; i < end && error.load(std::memory_order_relaxed) == 0; ++i) {
      int status = read_one(fd, offset + static_cast<uint64_t>(rows[i]) * row_bytes, row_bytes, out + i * row_bytes);
      if (status != 0) {
        int expected = 0;
        error.compare_exchange_strong(expected, status);
      }
    }
  };
  if (threads <= 1) {
    for (size_t t = 0; t < tasks; ++t) run(t, 0);
  } else {
    parallel_for(tasks, threads, run);
  }
  return error.load();
}

}  // namespace embedrank
