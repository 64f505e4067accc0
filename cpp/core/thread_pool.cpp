#include "thread_pool.h"

#include <sched.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace embedrank {
namespace {

// The cancel flag of the pool job the current thread works on (null outside pool jobs, e.g.
// a one-task job run inline), so an interrupted job never leaks into another one.
thread_local const std::atomic<bool>* t_job_cancelled = nullptr;

class ThreadPool {
 public:
  static ThreadPool& instance() {
    // Leaked on purpose: joining threads during interpreter shutdown can deadlock.
    static ThreadPool* pool = new ThreadPool();
    return *pool;
  }

  void run(size_t n_tasks, int n_workers, const TaskFn& fn, const InterruptFn& interrupted) {
    std::lock_guard<std::mutex> job_lock(job_mutex_);  // one job at a time
    ensure_workers(n_workers);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = &fn;
      n_tasks_ = n_tasks;
      next_task_.store(0);
      participants_ = n_workers;
      remaining_ = n_workers;
      error_ = nullptr;
      cancelled_.store(false);
      ++generation_;
    }
    wake_.notify_all();

    std::unique_lock<std::mutex> lock(mutex_);
    while (remaining_ > 0) {
      done_.wait_for(lock, std::chrono::milliseconds(20));
      if (remaining_ > 0 && interrupted && !cancelled_.load()) {
        lock.unlock();
        bool stop = interrupted();
        lock.lock();
        if (stop) cancelled_.store(true);
      }
    }
    fn_ = nullptr;
    std::exception_ptr error = error_;
    bool cancelled = cancelled_.load();
    cancelled_.store(false);
    lock.unlock();
    if (error) std::rethrow_exception(error);
    if (cancelled) throw Interrupted();
  }


 private:
  void ensure_workers(int n) {
    while (static_cast<int>(workers_.size()) < n) {
      int index = static_cast<int>(workers_.size());
      size_t generation;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        generation = generation_;
      }
      workers_.emplace_back([this, index, generation] { worker_loop(index, generation); });
      workers_.back().detach();
    }
  }

  // `seen` is the job generation current when the worker was created (before the job that
  // needed it was published), so the worker cannot miss that job.
  void worker_loop(int index, size_t seen) {
    for (;;) {
      const TaskFn* fn;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (index >= participants_) continue;
        fn = fn_;
      }
      t_job_cancelled = &cancelled_;
      try {
        for (;;) {
          if (cancelled_.load(std::memory_order_relaxed)) break;
          size_t task = next_task_.fetch_add(1);
          if (task >= n_tasks_) break;
          (*fn)(task, index);
        }
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
        cancelled_.store(true);
      }
      t_job_cancelled = nullptr;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (--remaining_ == 0) done_.notify_all();
      }
    }
  }

  std::mutex job_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::vector<std::thread> workers_;
  const TaskFn* fn_ = nullptr;
  size_t n_tasks_ = 0;
  std::atomic<size_t> next_task_{0};
  int participants_ = 0;
  int remaining_ = 0;
  size_t generation_ = 0;
  std::exception_ptr error_;
  std::atomic<bool> cancelled_{false};
};

}  // namespace

int default_num_threads() {
  // The CPUs this process may run on (taskset, cgroup cpusets), as Python's
  // embedrank.utils.threads.available_cores() counts them.
#if defined(__linux__)
  cpu_set_t mask;
  if (sched_getaffinity(0, sizeof(mask), &mask) == 0) {
    int n = CPU_COUNT(&mask);
    if (n > 0) return n;
  }
#endif
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

int resolve_num_threads(int requested) {
  return requested <= 0 ? default_num_threads() : requested;
}

void parallel_for(size_t n_tasks, int num_threads, const TaskFn& fn, const InterruptFn& interrupted) {
  if (n_tasks == 0) return;
  if (n_tasks == 1) {  // not worth a hand-off to the pool
    fn(0, 0);
    return;
  }
  int n_workers = resolve_num_threads(num_threads);
  if (static_cast<size_t>(n_workers) > n_tasks) n_workers = static_cast<int>(n_tasks);
  ThreadPool::instance().run(n_tasks, n_workers, fn, interrupted);
}

bool cancellation_requested() {
  return t_job_cancelled != nullptr && t_job_cancelled->load(std::memory_order_relaxed);
}

}  // namespace embedrank
