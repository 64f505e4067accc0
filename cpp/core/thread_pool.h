// The library's one thread pool.
//
// Kernels split their work into tasks and call parallel_for. The calling thread does not
// compute: it waits for the workers and polls `interrupted` (Ctrl-C) about every 20 ms; when
// that returns true, tasks not yet started are skipped and Interrupted is thrown after the
// join. An exception thrown by a task is rethrown on the calling thread after the join.
#pragma once

#include <cstddef>
#include <functional>
#include <stdexcept>

namespace embedrank {

struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("interrupted") {}
};

// Number of CPUs in the process's affinity mask, else of hardware threads (at least 1).
int default_num_threads();

// A resolved thread count: `requested` <= 0 means default_num_threads().
int resolve_num_threads(int requested);

using TaskFn = std::function<void(size_t task, int worker)>;
using InterruptFn = std::function<bool()>;

// Runs fn(task, worker) for every task in [0, n_tasks) on min(num_threads, n_tasks) workers;
// `worker` is in [0, that count) and is stable within one task, so it can index scratch.
void parallel_for(size_t n_tasks, int num_threads, const TaskFn& fn,
                  const InterruptFn& interrupted = nullptr);

// True once the current parallel_for was interrupted; tasks should stop at a block boundary.
bool cancellation_requested();

}  // namespace embedrank
