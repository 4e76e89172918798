// A minimal parallel loop over independent tasks with std::thread (no OpenMP runtime, so the
// wheel has no extra dependency). Tasks are handed out dynamically; every output element is
// written by exactly one task, so results do not depend on scheduling.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "../common/problem.h"

namespace jax_na {
namespace cpu {

// Worker count: JAX_NA_CPU_THREADS if set (>= 1), else hardware_concurrency; at most `tasks`,
// and at most one per ~1M multiply-adds of `work`, so small calls do not pay for starting
// threads they cannot use.
inline int num_workers(int64_t tasks, double work) {
  int64_t n = 0;
  if (const char* env = std::getenv("JAX_NA_CPU_THREADS")) n = std::atoll(env);
  if (n < 1) n = std::max(1u, std::thread::hardware_concurrency());
  const int64_t by_work = int64_t(work / double(1 << 20)) + 1;
  return int(std::max<int64_t>(1, std::min({n, tasks, by_work})));
}

// Multiply-adds of one pass over the problem: every (query, head) meets at most prod(kernel)
// keys, each costing a couple of head_dim-long products.
inline double pass_work(const Problem& p) {
  const double keys = double(p.dim[0].kernel) * p.dim[1].kernel * p.dim[2].kernel;
  return double(p.batch) * double(p.tokens()) * double(p.heads) * keys * double(p.head_dim) * 2.0;
}

// Runs fn(task, worker) for task in [0, tasks) on `workers` threads (the caller is worker 0).
// An exception thrown by a task is rethrown here after all workers stop.
template <class Fn>
void parallel_for(int64_t tasks, int workers, const Fn& fn) {
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto run = [&](int worker) {
    try {
      for (int64_t t; (t = next.fetch_add(1)) < tasks;) fn(t, worker);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next.store(tasks);
    }
  };
  std::vector<std::thread> threads;
  for (int w = 1; w < workers; ++w) {
    try {
      threads.emplace_back(run, w);
    } catch (...) {  // could not start a thread: the remaining workers take its share
      break;
    }
  }
  run(0);
  for (auto& t : threads) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace cpu
}  // namespace jax_na
